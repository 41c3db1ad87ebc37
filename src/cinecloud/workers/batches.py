"""Several leased jobs as one batched engine call (``worker.max_batch``).

Small jobs leave a GPU mostly idle; compatible ones (the same model, size, frame count,
steps, guidance and step cache: :func:`batch_key`) denoise together in one engine call
(:meth:`cinecloud.engine.runner.Runner.run_batch`) at little more than the cost of one.
The worker asks the control plane for up to ``max_batch`` jobs; the scheduler hands out
the best job and the queued ones that batch with it. This module holds what the worker
does with them, free of processes and pipes so it can be tested alone:

* :func:`max_batch` resolves ``worker.max_batch`` (0 = auto: 8 on a GPU, 1 on a CPU);
* :func:`group_jobs` splits leased jobs into batches by :func:`batch_key`;
* :class:`BatchRun` is the engine child's record of one batch while the engine runs it:
  which jobs are still wanted (a canceled job is dropped: it gets no more progress, is
  acknowledged at once and its video is discarded at the end; the engine stops only when
  every job is canceled), the per-job progress fan-out of each engine step, and the
  split of the batched result back into one result per job;
* :func:`engine_share`: each job is billed the batch's engine seconds split evenly.

A job that resumes from a checkpoint or has input files (image-to-video) always runs
alone, and a batch takes no checkpoints: on a preemption every job of the batch is given
back and starts over (docs/worker-protocol.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cinecloud.config import WorkerConfig
from cinecloud.telemetry.gpu import GpuSample
from cinecloud.workers.messages import Progress, RunJob

__all__ = [
    "AUTO_MAX_BATCH_GPU",
    "BatchRun",
    "JobShare",
    "batch_key",
    "engine_share",
    "free_memory",
    "group_jobs",
    "max_batch",
]

#: ``worker.max_batch = 0`` on a GPU. On an H200 the engine alone runs 8 small jobs of
#: ``cinecloud/shapes-t2v`` in about the time of 2 (benchmarks/batching.py).
AUTO_MAX_BATCH_GPU = 8


def max_batch(cfg: WorkerConfig, device: str) -> int:
    """``worker.max_batch`` for an engine on ``device`` (``"cuda"``, ``"cpu"``, ...): 0
    means 8 on a GPU and 1 (no batching) on a CPU, whose cores one job already keeps busy."""
    if cfg.max_batch > 0:
        return cfg.max_batch
    return AUTO_MAX_BATCH_GPU if device.startswith("cuda") else 1


def free_memory(gpus: Sequence[GpuSample]) -> float | None:
    """The GPU memory free for a batch (bytes), by the worker's NVML sample: the least
    any of its GPUs has; None without GPUs (then ``max_batch`` alone bounds a batch).
    Memory the engine's allocator caches counts as used, so this errs on the small side,
    and the scheduler always hands out at least one job."""
    if not gpus:
        return None
    return float(max(0, min(g.memory_total - g.memory_used for g in gpus)))


def batch_key(job: RunJob) -> tuple[object, ...] | None:
    """What ``job`` must share with others to run in one batch, or None: it runs alone.

    The same fields as the engine's key (``engine.batch.batch_key``) and the scheduler's
    (``scheduler.lease.batch_key``), read from the leased params; a job with input files
    (a conditioning image, a checkpoint to resume from) or a step cache never batches.
    Malformed params make a job run alone too: the engine child reports them.
    """
    p = job.params
    if job.inputs or p.get("image_path") or p.get("checkpoint_path"):
        return None
    if p.get("step_cache", "off") != "off":
        return None
    try:
        return (
            job.model,
            int(p["width"]),
            int(p["height"]),
            int(p["num_frames"]),
            int(p["steps"]),
            float(p["guidance_scale"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def group_jobs(jobs: Sequence[RunJob], limit: int) -> list[list[RunJob]]:
    """``jobs`` in batches of at most ``limit`` compatible ones, in lease order (a batch
    sits where its first job was leased); a job that cannot batch is a batch of one."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1 (got {limit})")
    batches: list[list[RunJob]] = []
    open_batch: dict[tuple[object, ...], list[RunJob]] = {}
    for job in jobs:
        key = batch_key(job) if limit > 1 else None
        current = open_batch.get(key) if key is not None else None
        if current is None or len(current) >= limit:
            current = [job]
            batches.append(current)
            if key is not None:
                open_batch[key] = current
        else:
            current.append(job)
    return batches


def engine_share(engine_s: float, size: int) -> float:
    """One job's billed engine seconds from a batch of ``size`` that took ``engine_s``:
    an even split, so a job never pays more for having shared the engine (a canceled
    job's share is not billed to the others)."""
    if size < 1:
        raise ValueError(f"size must be at least 1 (got {size})")
    return engine_s / size


class StepLike(Protocol):
    """What a batch's engine step reports (``engine.runner.StepInfo``)."""

    @property
    def stage(self) -> str: ...

    @property
    def step(self) -> int: ...

    @property
    def total_steps(self) -> int: ...

    @property
    def elapsed_s(self) -> float: ...


@dataclass(frozen=True)
class JobShare:
    """One job's part of a batched engine run: its own result and its billed seconds."""

    job: RunJob
    result: Any  # engine.runner.RunResult (this module does not import the engine)
    engine_s: float


@dataclass
class BatchRun:
    """One batch in the engine child: the jobs in engine order and what became of each."""

    jobs: tuple[RunJob, ...]
    _canceled: set[str] = field(default_factory=set)
    _acknowledged: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        ids = [j.job_id for j in self.jobs]
        if not ids:
            raise ValueError("a batch needs at least one job")
        if len(set(ids)) != len(ids):
            raise ValueError(f"a job appears twice in one batch: {ids}")

    @property
    def job_ids(self) -> tuple[str, ...]:
        return tuple(j.job_id for j in self.jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.job_ids

    def __len__(self) -> int:
        return len(self.jobs)

    def cancel(self, job_id: str) -> bool:
        """Drop ``job_id`` from the batch; False when it is not in it (or already dropped)."""
        if job_id not in self or job_id in self._canceled:
            return False
        self._canceled.add(job_id)
        return True

    def canceled(self, job_id: str) -> bool:
        return job_id in self._canceled

    @property
    def all_canceled(self) -> bool:
        """Every job is dropped: the engine call itself can stop."""
        return len(self._canceled) == len(self.jobs)

    def live(self) -> list[RunJob]:
        """The jobs still wanted, in engine order."""
        return [j for j in self.jobs if j.job_id not in self._canceled]

    def unacknowledged(self) -> Iterator[RunJob]:
        """The dropped jobs whose cancel is not acknowledged yet; each is yielded once."""
        for job in self.jobs:
            if job.job_id in self._canceled and job.job_id not in self._acknowledged:
                self._acknowledged.add(job.job_id)
                yield job

    def progress(self, info: StepLike, at: float) -> list[Progress]:
        """One engine step as each live job's own progress."""
        return [
            Progress(j.job_id, info.stage, info.step, info.total_steps, info.elapsed_s, at)
            for j in self.live()
        ]

    def split(self, results: Sequence[Any], engine_s: float) -> list[JobShare]:
        """The batched engine's ``results`` (one per job, in engine order) as the live
        jobs' own, each billed an even share of ``engine_s``."""
        if len(results) != len(self.jobs):
            raise ValueError(f"{len(results)} results for a batch of {len(self.jobs)} jobs")
        share = engine_share(engine_s, len(self.jobs))
        return [
            JobShare(job, result, share)
            for job, result in zip(self.jobs, results, strict=True)
            if job.job_id not in self._canceled
        ]
