"""The torch-free fake runner that worker tests use in place of the engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cinecloud.engine.registry import GenerationParams, ModelSpec, ParamError, builtin_specs
from cinecloud.engine.runner import Cancelled, RunnerProtocol, StepInfo
from cinecloud.testing.clock import FakeClock
from cinecloud.testing.fake_runner import (
    CheckpointError,
    FakeEngineError,
    FakeRunner,
    fake_denoise_state,
    fake_frames,
)

pytestmark = pytest.mark.unit

PARAMS = GenerationParams(
    prompt="a cat",
    negative_prompt="",
    width=32,
    height=16,
    num_frames=5,
    fps=8,
    steps=4,
    guidance_scale=5.0,
    seed=3,
)


@pytest.fixture
def spec() -> ModelSpec:
    return builtin_specs(Path("/srv/models"))[0]


def make(spec: ModelSpec, **kw: object) -> tuple[FakeRunner, FakeClock]:
    clock = FakeClock(0.0)
    runner = FakeRunner(spec, clock=clock, sleep=clock.advance, **kw)  # type: ignore[arg-type]
    return runner, clock


def test_follows_the_runner_protocol(spec: ModelSpec) -> None:
    runner: RunnerProtocol = FakeRunner(spec)
    assert runner.spec is spec


def test_run_reports_steps_on_the_injected_clock(spec: ModelSpec) -> None:
    runner, clock = make(spec, step_s=0.5, load_s=2.0)
    assert runner.load() == 2.0
    steps: list[StepInfo] = []
    result = runner.run(PARAMS, on_step=steps.append, should_cancel=lambda: False)
    assert [(s.step, s.elapsed_s) for s in steps] == [(0, 0), (1, 0.5), (2, 1), (3, 1.5), (4, 2)]
    assert result.frames.shape == (5, 16, 32, 3) and result.frames.dtype == np.uint8
    assert result.timings == {"text_encode": 0.0, "denoise": 2.0, "decode": 0.0}
    assert (result.fps, result.seed, result.device, result.dtype) == (8, 3, "cpu", "float32")
    assert clock() == 4.0


def test_frames_depend_only_on_seed_and_shape() -> None:
    a = fake_frames(PARAMS)
    assert np.array_equal(a, fake_frames(replace(PARAMS, prompt="something else")))
    assert not np.array_equal(a, fake_frames(replace(PARAMS, seed=4)))
    assert not np.array_equal(a[0], a[1])  # it moves


def test_cancel_between_steps(spec: ModelSpec) -> None:
    runner, _ = make(spec)
    runner.load()
    steps: list[StepInfo] = []
    with pytest.raises(Cancelled) as info:
        runner.run(PARAMS, on_step=steps.append, should_cancel=lambda: len(steps) >= 2)
    assert info.value.step == 1
    assert runner.runs == 0


def test_fail_at_step(spec: ModelSpec) -> None:
    runner, _ = make(spec, fail_at_step=2)
    runner.load()
    with pytest.raises(FakeEngineError, match="step 2/4"):
        runner.run(PARAMS, on_step=lambda s: None, should_cancel=lambda: False)


def test_validates_and_requires_load(spec: ModelSpec) -> None:
    runner, _ = make(spec)
    with pytest.raises(RuntimeError, match="not loaded"):
        runner.run(PARAMS, on_step=lambda s: None, should_cancel=lambda: False)
    runner.load()
    with pytest.raises(ParamError, match="got 6"):
        runner.run(replace(PARAMS, num_frames=6), lambda s: None, lambda: False)


def test_checkpoints_resume_after_their_step_and_keep_the_chain(
    spec: ModelSpec, tmp_path: Path
) -> None:
    params = replace(PARAMS, steps=6)
    runner, _ = make(spec, checkpoints=True)
    runner.load()
    whole = runner.run(params, lambda s: None, lambda: False)
    assert whole.engine == {"denoise_state": fake_denoise_state(params)}
    # stopped after step 2: its checkpoint resumes at 3, and the chain comes out the same
    seen: list[StepInfo] = []
    with pytest.raises(Cancelled):
        runner.run(params, seen.append, lambda: bool(seen) and seen[-1].step >= 2)
    assert seen[0].checkpoint is None  # nothing run yet to save
    saved = seen[-1].checkpoint
    assert saved is not None
    path = tmp_path / "step-2.ckpt"
    path.write_bytes(saved())
    rest: list[StepInfo] = []
    resumed = runner.run(replace(params, checkpoint_path=str(path)), rest.append, lambda: False)
    assert [s.step for s in rest] == [2, 3, 4, 5, 6] and rest[0].checkpoint is None
    assert resumed.engine == {**whole.engine, "resumed_from_step": "2"}
    # a checkpoint of another request does not resume this one
    with pytest.raises(CheckpointError, match="another request"):
        runner.run(
            replace(params, seed=9, checkpoint_path=str(path)), lambda s: None, lambda: False
        )


def test_a_plain_fake_offers_no_checkpoints(spec: ModelSpec) -> None:
    runner, _ = make(spec)
    runner.load()
    seen: list[StepInfo] = []
    assert runner.run(PARAMS, seen.append, lambda: False).engine == {}
    assert all(s.checkpoint is None for s in seen)
