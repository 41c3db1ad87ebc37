"""Fault injection for the quality gate: a runner whose prompt plants a bad output.

``PlantedRunner`` is the :class:`~cinecloud.testing.fake_runner.FakeRunner` (moving
gradients), except that a prompt starting with ``planted:`` spoils its frames the way a
broken model does, before the engine's own float-to-uint8 conversion
(:func:`cinecloud.engine.finite.to_uint8`), exactly where a real family converts:

- ``planted:nan``: one NaN among the decoded values;
- ``planted:black``: every frame black (with a little sensor-like noise);
- ``planted:frozen``: the first frame repeated.

Any other prompt renders normally. For worker processes, set ``worker.runner_factory``
to ``cinecloud.testing.planted:planted_runner_factory``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from cinecloud.config import Config
from cinecloud.engine.finite import to_uint8
from cinecloud.engine.registry import GenerationParams, ModelSpec
from cinecloud.engine.runner import RunResult, StepInfo
from cinecloud.testing.fake_runner import FakeRunner

__all__ = ["PLANTS", "PlantedRunner", "plant", "planted_runner_factory"]

PLANTS = ("nan", "black", "frozen")
PREFIX = "planted:"


def plant(frames: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """``frames`` (uint8) as the decoder's float frames in [0, 1], spoiled by ``kind``."""
    floats = frames.astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    if kind == "nan":
        index = tuple(int(rng.integers(0, n)) for n in floats.shape)
        floats[index] = np.nan
    elif kind == "black":
        floats = rng.uniform(0.0, 3 / 255, floats.shape).astype(np.float32)
    elif kind == "frozen":
        floats[:] = floats[0]
    else:
        raise ValueError(f"unknown plant {kind!r} (one of {', '.join(PLANTS)})")
    return floats


class PlantedRunner(FakeRunner):
    """A fake runner whose ``planted:KIND`` prompts give bad frames."""

    def run(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None],
        should_cancel: Callable[[], bool],
    ) -> RunResult:
        result = super().run(params, on_step, should_cancel)
        if not params.prompt.startswith(PREFIX):
            return result
        floats = plant(result.frames, params.prompt.removeprefix(PREFIX).strip(), params.seed)
        return dataclasses.replace(result, frames=to_uint8(floats))


def planted_runner_factory(spec: ModelSpec, cfg: Config) -> PlantedRunner:
    """A ``runner_factory`` for quality-gate tests: 20 ms per step."""
    return PlantedRunner(spec, step_s=0.02)
