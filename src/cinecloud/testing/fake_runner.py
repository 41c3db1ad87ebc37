"""A runner without torch, for fast tests of the worker.

:class:`FakeRunner` follows :class:`cinecloud.engine.runner.RunnerProtocol`: it validates
params the same way, reports steps through ``on_step``, honours ``should_cancel`` between
steps and returns a :class:`~cinecloud.engine.runner.RunResult`. Its frames are a moving
gradient that depends only on the seed and the shape, so they are deterministic and cheap
to encode. Each step "takes" ``step_s`` through the injected ``sleep``; with a
:class:`~cinecloud.testing.clock.FakeClock` pass ``sleep=clock.advance`` and no test sleeps.

For worker processes, ``WorkerConfig.runner_factory`` can name
``cinecloud.testing.fake_runner:fake_runner_factory`` (or the slow variant).

With ``checkpoints=True`` (``checkpointing_fake_runner_factory``) it also saves and
resumes its denoise loop the way the engine does (:mod:`cinecloud.engine.checkpoint`):
after every step run here it offers the step's checkpoint, and ``params.checkpoint_path``
resumes after the saved step. Its loop state is a hash chain over the steps
(:func:`fake_denoise_state`), kept in the job's engine record as ``denoise_state``: it
equals the uninterrupted run's only if every step ran exactly once, in order, however
often the run was killed and resumed. So fault tests get real checkpoints through real
workers at no model's cost.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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
    "CheckpointError",
    "FakeEngineError",
    "FakeRunner",
    "checkpointing_fake_runner_factory",
    "fake_denoise_state",
    "fake_frames",
    "fake_runner_factory",
    "slow_fake_runner_factory",
]

FAKE_CHECKPOINT_FORMAT = "cinecloud.fake-denoise/1"


class FakeEngineError(RuntimeError):
    """Raised by a :class:`FakeRunner` told to fail at a step."""


class CheckpointError(ValueError):
    """A checkpoint that does not resume this run. Named like the engine's
    (``engine.checkpoint.CheckpointError``), which the worker tells apart by name."""


def _fingerprint(params: GenerationParams) -> str:
    fields = [params.prompt, params.width, params.height, params.num_frames, params.steps]
    return hashlib.sha256(json.dumps([*fields, params.seed]).encode()).hexdigest()


def _advance(state: str, step: int) -> str:
    return hashlib.sha256(f"{state}:{step}".encode()).hexdigest()


def fake_denoise_state(params: GenerationParams, upto: int | None = None) -> str:
    """The fake loop's state after step ``upto`` (the last by default), run once through."""
    state = _fingerprint(params)
    for k in range(1, (params.steps if upto is None else upto) + 1):
        state = _advance(state, k)
    return state


def _load_checkpoint(path: str, params: GenerationParams) -> tuple[int, str]:
    """(step, state) saved in the fake checkpoint at ``path``, checked against ``params``."""
    try:
        data = json.loads(Path(path).read_bytes())
        fmt, fp, step, state = data["format"], data["fingerprint"], data["step"], data["state"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"unreadable fake checkpoint: {exc}") from None
    if fmt != FAKE_CHECKPOINT_FORMAT or fp != _fingerprint(params):
        raise CheckpointError("the checkpoint belongs to another request")
    if not isinstance(step, int) or not 0 < step < params.steps:
        raise CheckpointError(f"step {step} does not fit a run of {params.steps} steps")
    return step, str(state)


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
        checkpoints: bool = False,
    ) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.step_s = step_s
        self.load_s = load_s
        self.fail_at_step = fail_at_step
        self.require_installed = require_installed
        self.checkpoints = checkpoints
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

        first, state = 0, _fingerprint(params)
        if self.checkpoints and params.checkpoint_path:
            first, state = _load_checkpoint(params.checkpoint_path, params)
        for k in range(first, total + 1):
            if k > first:
                if self.step_s:
                    self._sleep(self.step_s)
                if k == self.fail_at_step:
                    raise FakeEngineError(f"fake failure at step {k}/{total}")
                state = _advance(state, k)
            saved = self._saver(params, k, state) if self.checkpoints and k > first else None
            on_step(StepInfo("denoise", k, total, clock() - start, saved, preview if k else None))
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
            engine=self._record(first, state),
        )

    def run_batch(
        self,
        batch: Sequence[GenerationParams],
        on_step: Callable[[StepInfo], None],
        should_cancel: Callable[[], bool],
    ) -> list[RunResult]:
        """Several videos in one loop of ``step_s`` steps, as the engine batches them
        (``engine.runner.Runner.run_batch``): each video is its solo run's, the timings
        are the batch's and ``engine["batch"]`` says how many shared them."""
        if not self.loaded:
            raise RuntimeError(f"runner for {self.spec.id} is not loaded; call load() first")
        for params in batch:
            validate_params(self.spec, params)
        clock, total = self._clock, batch[0].steps
        if should_cancel():
            raise Cancelled(0, total)
        start = clock()
        for k in range(total + 1):
            if k:
                if self.step_s:
                    self._sleep(self.step_s)
                if k == self.fail_at_step:
                    raise FakeEngineError(f"fake failure at step {k}/{total}")
            on_step(StepInfo("denoise", k, total, clock() - start))
            if should_cancel():
                raise Cancelled(k, total)
        timings = {"text_encode": 0.0, "denoise": clock() - start, "decode": 0.0}
        self.runs += len(batch)
        return [
            RunResult(
                frames=fake_frames(p),
                fps=p.fps,
                timings=dict(timings),
                seed=p.seed,
                device=self.device,
                dtype=self.dtype,
                engine={"batch": str(len(batch))},
            )
            for p in batch
        ]

    def _record(self, first: int, state: str) -> dict[str, str]:
        if not self.checkpoints:
            return {}
        resumed = {"resumed_from_step": str(first)} if first else {}
        return {"denoise_state": state, **resumed}

    @staticmethod
    def _saver(params: GenerationParams, step: int, state: str) -> Callable[[], bytes]:
        def save() -> bytes:
            body = {"format": FAKE_CHECKPOINT_FORMAT, "fingerprint": _fingerprint(params)}
            return json.dumps({**body, "step": step, "state": state}).encode()

        return save


def fake_runner_factory(spec: ModelSpec, cfg: Config) -> FakeRunner:
    """A ``runner_factory`` for worker tests: 20 ms per step."""
    return FakeRunner(spec, step_s=0.02)


def slow_fake_runner_factory(spec: ModelSpec, cfg: Config) -> FakeRunner:
    """A ``runner_factory`` for cancel and lease tests: 0.5 s per step."""
    return FakeRunner(spec, step_s=0.5)


def checkpointing_fake_runner_factory(spec: ModelSpec, cfg: Config) -> FakeRunner:
    """A ``runner_factory`` for fault tests: 0.1 s per step, with denoise checkpoints."""
    return FakeRunner(spec, step_s=0.1, checkpoints=True)
