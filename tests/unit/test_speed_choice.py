"""Choosing an attention backend by measurement (the selection logic, on a stand-in model
whose backends differ only in how long a step takes)."""

from __future__ import annotations

import pytest

from cinecloud.engine.speed import choose_attention
from cinecloud.testing.clock import FakeClock

pytestmark = pytest.mark.unit


class Model:
    def __init__(self, clock: FakeClock, costs: dict[str, float | None]) -> None:
        self.clock, self.costs, self.backend = clock, costs, "native"

    def set_attention_backend(self, name: str) -> None:
        self.backend = name

    def step(self) -> None:
        cost = self.costs[self.backend]
        if cost is None:
            raise RuntimeError(f"{self.backend} has no kernel here")
        self.clock.advance(cost)


def test_the_fastest_backend_that_runs_is_kept() -> None:
    clock = FakeClock()
    model = Model(clock, {"_native_cudnn": 0.8, "_native_flash": None, "flash": 0.5, "native": 1.0})
    chosen, timings = choose_attention(
        model, ("_native_cudnn", "_native_flash", "flash", "native"), model.step, clock=clock
    )
    assert chosen == "flash" and model.backend == "flash"
    assert timings == pytest.approx({"_native_cudnn": 0.8, "flash": 0.5, "native": 1.0})


def test_nothing_runs_falls_back_to_native() -> None:
    clock = FakeClock()
    model = Model(clock, {"flash": None, "native": 1.0})
    assert choose_attention(model, ("flash",), model.step, clock=clock) == ("native", {})
    assert model.backend == "native"


def test_a_model_without_dispatch_runs_native() -> None:
    assert choose_attention(object(), ("flash",), lambda: None) == ("native", {})
