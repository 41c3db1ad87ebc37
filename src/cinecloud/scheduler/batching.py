"""Batching: the compatible jobs one worker may run together.

Jobs batch when one pipeline call can denoise them together: the same model, size,
frame count, steps, guidance scale and step cache (their ``batch`` key). Prompts,
negative prompts and seeds may differ. A worker asks for up to ``max_jobs``; when it
also states its free GPU memory, the batch holds no more jobs than fit in it, at the
extra memory one more job of that shape needs (its ``mem_bytes``; 0 when the model
has no memory profile, and then only ``max_jobs`` bounds it). The first job is
always handed out: the worker plans its memory for one job itself.
"""

from __future__ import annotations

import math
from typing import Protocol

__all__ = ["Batchable", "batch_limit", "same_batch"]


class Batchable(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def batch(self) -> tuple[object, ...]: ...


def batch_limit(max_jobs: int, free_bytes: float | None, per_job_bytes: float) -> int:
    """How many jobs of one shape a worker takes: ``max_jobs``, fewer if memory is short."""
    if max_jobs < 1:
        raise ValueError(f"max_jobs must be at least 1 (got {max_jobs})")
    if free_bytes is None or per_job_bytes <= 0:
        return max_jobs
    return max(1, min(max_jobs, math.floor(free_bytes / per_job_bytes)))


def same_batch(a: Batchable, b: Batchable) -> bool:
    """Whether ``a`` and ``b`` can run in one pipeline call."""
    return a.model == b.model and a.batch == b.batch
