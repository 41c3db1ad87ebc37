"""A runner without torch, for fast tests of the worker.

:class:`FakeRunner` follows :class:`cinecloud.engine.runner.RunnerProtocol`: it validates
params the same way, reports steps through ``on_step``, honours ``should_cancel`` between
steps and returns a :class:`~cinecloud.engine.runner.RunResult`. Its frames are a moving
gradient that depends only on the seed and the shape, so they are deterministic and cheap
to encode. Each step "takes" ``step_s`` through the injected ``sleep``; with a
:class:`~cinecloud.testing.clock.FakeClock` pass ``sleep=clock.advance`` and no test sleeps.

For worker processes, ``WorkerConfig.runner_factory`` can name
``cinecloud.testing.fake_runner:fake_runner_factory`` (or the slow variant).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from cinecloud.config import Config
from cinecloud.engine.registry import (
    GenerationParams,
    ModelSpec,
    check_installed,
    validate_params,
)
from cinecloud.engine.runner import Cancelled, RunResult, StepInfo

__all__ = [
    "FakeEngineError",
    "FakeRunner",
    "fake_frames",
    "fake_runner_factory",
    "slow_fake_runner_factory",
]


class FakeEngineError(RuntimeError):
    """Raised by a :class:`FakeRunner` told to fail at a step."""


def fake_frames(params: GenerationParams) -> np.ndarray:
    """uint8 frames (T, H, W, 3): a diagonal gradient, tinted by the seed, moving each frame."""
    rng = np.random.default_rng(params.seed)
    tint = rng.integers(0, 256, size=3, dtype=np.int64)
    speed = int(rng.integers(1, 9))
    t = np.arange(params.num_frames, dtype=np.int64)[:, None, None, None]
    y = np.arange(params.height, dtype=np.int64)[None, :, None, None]
    x = np.arange(params.width, dtype=np.int64)[None, None, :, None]
    c = np.arange(3, dtype=np.int64)[None, None, None, :]
    ramp = (x + y) * 255 // max(1, params.width + params.height - 2)
    value = tint + ramp * (c + 1) + t * speed
    return (value % 256).astype(np.uint8)


class FakeRunner:
    """Same interface as :class:`cinecloud.engine.runner.Runner`, without a model."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], object] = time.sleep,
        step_s: float = 0.0,
        load_s: float = 0.0,
        fail_at_step: int | None = None,
        require_installed: bool = False,
    ) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.step_s = step_s
        self.load_s = load_s
        self.fail_at_step = fail_at_step
        self.require_installed = require_installed
        self._clock = clock
        self._sleep = sleep
        self.loaded = False
        self.runs = 0  # completed runs

    def load(self) -> float:
        if self.require_installed:
            check_installed(self.spec)
        start = self._clock()
        if self.load_s:
            self._sleep(self.load_s)
        self.loaded = True
        return self._clock() - start

    def run(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None],
        should_cancel: Callable[[], bool],
    ) -> RunResult:
        if not self.loaded:
            raise RuntimeError(f"runner for {self.spec.id} is not loaded; call load() first")
        validate_params(self.spec, params)
        clock, total = self._clock, params.steps
        if should_cancel():
            raise Cancelled(0, total)
        timings = {"text_encode": 0.0}

        start = clock()

        def preview() -> np.ndarray:
            frame: np.ndarray = fake_frames(params)[params.num_frames // 2]
            return frame

        for k in range(total + 1):
            if k:
                if self.step_s:
                    self._sleep(self.step_s)
                if k == self.fail_at_step:
                    raise FakeEngineError(f"fake failure at step {k}/{total}")
            on_step(StepInfo("denoise", k, total, clock() - start, preview=preview if k else None))
            if should_cancel():
                raise Cancelled(k, total)
        timings["denoise"] = clock() - start

        start = clock()
        frames = fake_frames(params)
        timings["decode"] = clock() - start
        self.runs += 1
        return RunResult(
            frames=frames,
            fps=params.fps,
            timings=timings,
            seed=params.seed,
            device=self.device,
            dtype=self.dtype,
        )


def fake_runner_factory(spec: ModelSpec, cfg: Config) -> FakeRunner:
    """A ``runner_factory`` for worker tests: 20 ms per step."""
    return FakeRunner(spec, step_s=0.02)


def slow_fake_runner_factory(spec: ModelSpec, cfg: Config) -> FakeRunner:
    """A ``runner_factory`` for cancel and lease tests: 0.5 s per step."""
    return FakeRunner(spec, step_s=0.5)
