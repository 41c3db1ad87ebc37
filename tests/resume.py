"""Kill-and-resume at the engine level: the harness the checkpoint tests share.

:func:`resume_chain` runs one request in segments. A segment starts from the checkpoint
the last one left (the first starts fresh), in a pipeline object built afresh from the
loaded weights with a new scheduler, and is interrupted after its kill point (the runner
raises :class:`Cancelled` there, as a worker's cancel would); its checkpoint is taken at
that step and crosses to the next segment as bytes in a file. The last segment runs to
the end. Every segment is then compared with an uninterrupted run of the same request.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cinecloud.engine.checkpoint import DenoiseCheckpoint
from cinecloud.engine.registry import GenerationParams
from cinecloud.engine.runner import Cancelled, Runner, RunResult, StepInfo

__all__ = [
    "Reference",
    "Segment",
    "assert_resumes_like_reference",
    "assert_same_state",
    "fresh_pipeline",
    "kill_points",
    "reference_run",
    "resume_chain",
]


@dataclass
class Reference:
    """An uninterrupted run, with its state after every step."""

    result: RunResult
    states: dict[int, DenoiseCheckpoint]


@dataclass
class Segment:
    start: int  # the step it resumed after (0: a fresh start)
    stop: int  # the step it was interrupted after (the last step for the final segment)
    steps: list[int] = field(default_factory=list)  # the steps its progress reported
    state: DenoiseCheckpoint | None = None  # its state after ``stop``
    size: int = 0  # bytes of that checkpoint
    result: RunResult | None = None  # the final segment's result


def fresh_pipeline(runner: Runner) -> None:
    """Give the runner's family a new pipeline object, over the same (read-only) weights,
    with a scheduler built afresh from its config: nothing of an earlier run carries over."""
    family: Any = runner._family  # the loaded family; the runner exposes no setter
    pipe = family.pipe
    components = dict(pipe.components)
    components["scheduler"] = type(pipe.scheduler).from_config(pipe.scheduler.config)
    if hasattr(pipe, "load_text_encoder"):  # shapes-t2v: its packaged encoder, loaded once
        components["text_encoder"], components["tokenizer"] = pipe.load_text_encoder()
    fresh = type(pipe)(**components)
    fresh.set_progress_bar_config(disable=True)
    family._pipe = fresh


def reference_run(runner: Runner, params: GenerationParams) -> Reference:
    states: dict[int, DenoiseCheckpoint] = {}

    def on_step(info: StepInfo) -> None:
        if info.checkpoint is not None:
            states[info.step] = DenoiseCheckpoint.from_bytes(info.checkpoint())

    result = runner.run(params, on_step, lambda: False)
    return Reference(result, states)


def _segment(runner: Runner, params: GenerationParams, start: int, stop: int) -> Segment:
    seg = Segment(start, stop)

    def on_step(info: StepInfo) -> None:
        seg.steps.append(info.step)
        if info.step == stop and info.checkpoint is not None:
            data = info.checkpoint()
            seg.state, seg.size = DenoiseCheckpoint.from_bytes(data), len(data)

    def interrupted() -> bool:
        return stop < params.steps and bool(seg.steps) and seg.steps[-1] >= stop

    try:
        seg.result = runner.run(params, on_step, interrupted)
    except Cancelled as stopped:
        assert (stopped.step, stopped.total_steps) == (stop, params.steps)
    return seg


def resume_chain(
    runner: Runner, params: GenerationParams, kill_points: Sequence[int], tmp: Path
) -> list[Segment]:
    """Run ``params`` interrupted after each of ``kill_points`` (ascending), each segment
    resumed from the last one's checkpoint file in a fresh pipeline object."""
    segments: list[Segment] = []
    path: str | None = None
    start = 0
    for stop in kill_points:
        fresh_pipeline(runner)
        seg = _segment(runner, replace(params, checkpoint_path=path), start, stop)
        segments.append(seg)
        assert seg.state is not None, f"no checkpoint after step {stop}"
        file = tmp / f"after-{stop}.ckpt"
        file.write_bytes(seg.state.to_bytes())
        path, start = str(file), stop
    # The rest: after a kill point at the last step, the decode alone.
    fresh_pipeline(runner)
    segments.append(_segment(runner, replace(params, checkpoint_path=path), start, params.steps))
    return segments


def kill_points(rng: random.Random, steps: int, count: int) -> list[int]:
    """``count`` distinct random steps of ``1..steps`` in order (the last step included:
    a run stopped there resumes into the decode alone)."""
    return sorted(rng.sample(range(1, steps + 1), count))


def assert_resumes_like_reference(
    segments: Sequence[Segment], reference: Reference, *, exact: bool
) -> int:
    """Each resumed segment reported its steps from the one it resumed after, ran no
    step twice and reached its kill point (or the end) in the reference's state; the
    final frames are the reference's. Returns how many resumes matched."""
    matched = 0
    for seg in segments:
        assert seg.steps == list(range(seg.start, seg.stop + 1)), (seg.start, seg.stop)
        if seg.state is not None:
            assert_same_state(seg.state, reference.states[seg.stop], exact=exact)
        matched += seg.start > 0
    final = segments[-1].result
    assert final is not None
    diff = np.abs(final.frames.astype(np.int16) - reference.result.frames.astype(np.int16))
    assert int(diff.max()) <= (0 if exact else 1), f"frames differ by {diff.max()}"
    return matched


def assert_same_state(a: DenoiseCheckpoint, b: DenoiseCheckpoint, *, exact: bool) -> None:
    """Two loop states alike: latents, scheduler and generator (within float tolerance
    unless ``exact``)."""
    assert (a.step, a.total_steps, a.scheduler_class) == (b.step, b.total_steps, b.scheduler_class)
    _close(a.latents, b.latents, exact)
    assert a.scheduler.keys() == b.scheduler.keys()
    for name, value in a.scheduler.items():
        other = b.scheduler[name]
        if isinstance(value, torch.Tensor):
            _close(value, other, exact)
        elif isinstance(value, list | tuple):
            assert len(value) == len(other), name
            for x, y in zip(value, other, strict=True):
                if isinstance(x, torch.Tensor):
                    _close(x, y, exact)
                else:
                    assert x == y, name
        elif isinstance(value, np.ndarray):
            np.testing.assert_allclose(value, other)
        else:
            assert value == other, name
    if a.generator is None or b.generator is None:
        assert a.generator is b.generator
    else:
        assert torch.equal(a.generator, b.generator)


def _close(a: torch.Tensor, b: torch.Tensor, exact: bool) -> None:
    if exact:
        assert torch.equal(a, b), f"max difference {(a.double() - b.double()).abs().max()}"
    else:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
