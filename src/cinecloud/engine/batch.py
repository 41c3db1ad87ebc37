"""Several compatible videos in one batched denoise.

Small jobs leave a GPU mostly idle: a 64x64, 16-frame clip of our own model is a few
thousand tokens, and its step is bound by kernel launches, not arithmetic. Jobs that
share a model, size, frame count, steps and guidance (:func:`batch_key`) can run as one
batch: one text encode, one denoise loop over a batch of latents (each drawn from its
own job's seed, so each video equals its solo run within float tolerance), then one
decode, split back into one result per job.

A family that can do this has ``encode_batch``, ``denoise_batch`` and ``decode_batch``
(:class:`BatchFamily`); :func:`run_batch` runs any other family's jobs one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from cinecloud.engine.registry import GenerationParams

__all__ = [
    "BatchFamily",
    "batch_key",
    "batch_shapes",
    "can_batch",
    "padded_size",
    "split_compatible",
]


def batch_key(params: GenerationParams) -> tuple[Any, ...]:
    """What must be equal for two videos to share one denoise."""
    return (
        params.width,
        params.height,
        params.num_frames,
        params.steps,
        params.guidance_scale,
        params.step_cache,
        params.image_path is None,
    )


def padded_size(jobs: int, most: int) -> int:
    """The batch a denoiser of static shapes (CUDA graphs) runs ``jobs`` videos in, on a
    worker that batches up to ``most``: the next power of two, at most ``most``. A worker
    then meets at most log2(most) + 2 batch shapes, each compiled and recorded once (at
    start, :meth:`Runner.warm_batches <cinecloud.engine.runner.Runner.warm_batches>`),
    instead of one per batch size a queue happens to leave (a first batch of 7 cost
    seconds of compile mid-queue)."""
    if jobs < 1:
        raise ValueError(f"a batch holds at least one video (got {jobs})")
    return max(jobs, min(1 << (jobs - 1).bit_length(), most))


def batch_shapes(most: int) -> list[int]:
    """The padded batch sizes of 2 to ``most`` videos (:func:`padded_size`)."""
    return sorted({padded_size(n, most) for n in range(2, most + 1)})


def split_compatible(params: Sequence[GenerationParams]) -> list[list[int]]:
    """Indices of ``params`` grouped by :func:`batch_key`, in first-seen order."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault(batch_key(p), []).append(i)
    return list(groups.values())


@runtime_checkable
class BatchFamily(Protocol):
    """A family that runs compatible videos as one batch."""

    def encode_batch(self, params: Sequence[GenerationParams]) -> Any: ...

    def denoise_batch(
        self,
        encoded: Any,
        params: Sequence[GenerationParams],
        *,
        on_step: Callable[[int], None],
    ) -> Any: ...

    def decode_batch(self, latents: Any) -> list[Any]: ...


def can_batch(family: object, params: Sequence[GenerationParams]) -> bool:
    """Whether ``family`` can run all of ``params`` as one batch."""
    return (
        len(params) > 1
        and isinstance(family, BatchFamily)
        and len(split_compatible(params)) == 1
        and all(p.step_cache == "off" and p.image_path is None for p in params)
    )
