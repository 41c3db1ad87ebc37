"""Prometheus metrics. Each app gets its own registry so tests can build many apps."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["STAGES", "Metrics"]

# The per-job timings, in the order they happen.
STAGES = (
    "queue_wait",
    "model_load",
    "text_encode",
    "denoise",
    "decode",
    "render",
    "upload",
    "total",
)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class _LiveCollector(Collector):
    """Gauges read from the job store at scrape time, so every replica agrees."""

    def __init__(
        self,
        counts: Callable[[], Mapping[tuple[str, str], int]],
        workers: Callable[[], int],
    ) -> None:
        self._counts = counts
        self._workers = workers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._counts()
        depth = GaugeMetricFamily(
            "cinecloud_queue_depth", "Jobs waiting in the queue", labels=["model"]
        )
        running = GaugeMetricFamily(
            "cinecloud_jobs_in_progress", "Jobs leased to a worker", labels=["model"]
        )
        for (status, model), n in sorted(counts.items()):
            (depth if status == "queued" else running).add_metric([model], n)
        yield depth
        yield running
        yield GaugeMetricFamily(
            "cinecloud_workers_registered", "Workers seen recently", value=self._workers()
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submitted = Counter("cinecloud_jobs_submitted", "Jobs accepted", ["model"], registry=r)
        self.completed = Counter(
            "cinecloud_jobs_completed", "Jobs completed", ["model"], registry=r
        )
        self.failed = Counter("cinecloud_jobs_failed", "Jobs failed", ["model", "code"], registry=r)
        self.canceled = Counter("cinecloud_jobs_canceled", "Jobs canceled", ["model"], registry=r)
        self.stage = Histogram(
            "cinecloud_stage_seconds",
            "Per-job stage timings",
            ["stage", "model"],
            buckets=_BUCKETS,
            registry=r,
        )
        # 1 on the replica that runs the background loops (holds the leader lock)
        self.leader = Gauge(
            "cinecloud_leader", "1 if this replica runs the loops", ["replica"], registry=r
        )
        self.gpu_seconds = Counter(
            "cinecloud_gpu_seconds", "GPU-seconds billed", ["gpu_type", "spot"], registry=r
        )
        self.dollars = Counter(
            "cinecloud_cost_dollars", "Dollars billed", ["gpu_type", "spot"], registry=r
        )
        # The autoscaler's last decision per pool: what a Kubernetes HPA/KEDA scaler or
        # another launcher reads to place workers (capacity: on_demand | spot).
        self.autoscaler_desired = Gauge(
            "cinecloud_autoscaler_desired_workers",
            "Workers the autoscaler wants per pool and capacity",
            ["pool", "capacity"],
            registry=r,
        )
        self.autoscaler_workers = Gauge(
            "cinecloud_autoscaler_current_workers",
            "Workers the autoscaler's launcher runs per pool",
            ["pool"],
            registry=r,
        )

    def watch(
        self,
        counts: Callable[[], Mapping[tuple[str, str], int]],
        workers: Callable[[], int],
    ) -> None:
        self.registry.register(_LiveCollector(counts, workers))

    def observe_timings(self, model: str, timings: Mapping[str, float]) -> None:
        for stage in STAGES:
            if stage in timings:
                self.stage.labels(stage=stage, model=model).observe(float(timings[stage]))

    def render(self) -> bytes:
        return generate_latest(self.registry)
