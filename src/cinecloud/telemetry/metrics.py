"""Prometheus metrics. Each app gets its own registry so tests can build many apps.

``docs/metrics.md`` is the catalogue of every name below; ``deploy/grafana/cinecloud.json``
charts them, and a test checks that each name the dashboard uses is exported.

Counters and histograms count what this replica saw (sum them over replicas); the
gauges are read from the database at scrape time, so every replica reports the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["STAGES", "Metrics", "WorkerGpus"]

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class WorkerGpus:
    """A live worker and its last GPU sample (``GpuSample.to_dict`` records)."""

    worker_id: str
    gpus: tuple[Mapping[str, Any], ...]


class _LiveCollector(Collector):
    """Gauges read from the job store at scrape time, so every replica agrees.

    A failing read (the database away) drops the gauges from that scrape but keeps the
    counters: a scrape never fails because of it.
    """

    def __init__(
        self,
        counts: Callable[[], Mapping[tuple[str, str], int]],
        workers: Callable[[], int],
        models: Callable[[], Iterable[str]],
        gpus: Callable[[], Iterable[WorkerGpus]],
        webhook_backlog: Callable[[], int] | None,
    ) -> None:
        self._counts = counts
        self._workers = workers
        self._models = models
        self._gpus = gpus
        self._backlog = webhook_backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for part in (self._jobs, self._worker_gauges, self._webhooks):
            try:
                families = list(part())
            except Exception:  # the store is away: leave these gauges out of this scrape
                log.exception("metrics: reading %s failed", part.__name__)
                continue
            yield from families

    def _jobs(self) -> Iterator[GaugeMetricFamily]:
        counts = self._counts()
        depth = GaugeMetricFamily(
            "cinecloud_queue_depth", "Jobs waiting in the queue", labels=["model"]
        )
        running = GaugeMetricFamily(
            "cinecloud_jobs_in_progress", "Jobs leased to a worker", labels=["model"]
        )
        # Every known model gets a sample, 0 when idle, so charts show a line, not a gap.
        models = sorted(set(self._models()) | {m for _, m in counts})
        for model in models:
            depth.add_metric([model], counts.get(("queued", model), 0))
            running.add_metric([model], counts.get(("in_progress", model), 0))
        yield depth
        yield running

    def _worker_gauges(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "cinecloud_workers_registered", "Workers seen recently", value=self._workers()
        )
        labels = ["worker", "gpu", "name"]
        util = GaugeMetricFamily(
            "cinecloud_worker_gpu_utilization_ratio",
            "Share of time a kernel ran on the GPU (NVML), 0-1, by worker",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "cinecloud_worker_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=labels
        )
        total = GaugeMetricFamily(
            "cinecloud_worker_gpu_memory_total_bytes", "GPU memory in all (NVML)", labels=labels
        )
        for worker in self._gpus():
            for gpu in worker.gpus:
                values = [worker.worker_id, str(gpu["index"]), str(gpu["name"])]
                util.add_metric(values, float(gpu["utilization"]))
                used.add_metric(values, float(gpu["memory_used"]))
                total.add_metric(values, float(gpu["memory_total"]))
        yield util
        yield used
        yield total

    def _webhooks(self) -> Iterator[GaugeMetricFamily]:
        if self._backlog is None:
            return
        yield GaugeMetricFamily(
            "cinecloud_webhook_backlog",
            "Webhook messages not yet delivered (pending or being sent)",
            value=self._backlog(),
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
        self.limited = Counter(
            "cinecloud_requests_limited",
            "Requests refused by a rate limit, a quota or the request budget",
            ["code"],
            registry=r,
        )
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
        self.billed_gpu_seconds = Counter(
            "cinecloud_billed_gpu_seconds",
            "GPU-seconds billed, by GPU type and capacity",
            ["gpu_type", "spot"],
            registry=r,
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
        self.gpu_seconds = Counter(
            "cinecloud_gpu_seconds",
            "Engine seconds of completed jobs (the usage billed as gpu_seconds)",
            ["model"],
            registry=r,
        )
        self.http_requests = Counter(
            "cinecloud_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.webhook_attempts = Counter(
            "cinecloud_webhook_attempts",
            "Webhook HTTP attempts by outcome: delivered, failed, forbidden",
            ["outcome"],
            registry=r,
        )

    def watch(
        self,
        counts: Callable[[], Mapping[tuple[str, str], int]],
        workers: Callable[[], int],
        *,
        models: Callable[[], Iterable[str]] = tuple,
        gpus: Callable[[], Iterable[WorkerGpus]] = tuple,
        webhook_backlog: Callable[[], int] | None = None,
    ) -> None:
        self.registry.register(_LiveCollector(counts, workers, models, gpus, webhook_backlog))

    def observe_timings(self, model: str, timings: Mapping[str, float]) -> None:
        for stage in STAGES:
            if stage in timings:
                self.stage.labels(stage=stage, model=model).observe(float(timings[stage]))

    def render(self) -> bytes:
        return generate_latest(self.registry)
