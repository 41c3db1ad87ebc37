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


def test_auto_compile_graphs_a_small_model_on_one_gpu_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from cinecloud.engine import speed

    small = torch.nn.Linear(64, 64)  # 4,160 parameters
    assert speed.auto_compile_mode(small, cuda=True, parallel=False, quantized=False) == "graphs"
    assert speed.auto_compile_mode(small, cuda=False, parallel=False, quantized=False) == "off"
    assert speed.auto_compile_mode(small, cuda=True, parallel=True, quantized=False) == "regional"
    assert speed.auto_compile_mode(small, cuda=True, parallel=False, quantized=True) == "regional"
    assert speed.auto_compile_mode(None, cuda=True, parallel=False, quantized=False) == "regional"
    monkeypatch.setattr(speed, "GRAPH_MAX_PARAMS", 4_159)  # one parameter too many
    assert speed.auto_compile_mode(small, cuda=True, parallel=False, quantized=False) == "regional"


@pytest.mark.gpu
def test_graphed_shapes_model_matches_regional_compile() -> None:
    """On a GPU, the CUDA-graphed denoiser gives the frames regional compile gives."""
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")

    from cinecloud.config import EngineConfig, repo_root
    from cinecloud.engine.registry import default_registry
    from cinecloud.engine.runner import Runner

    spec = default_registry(EngineConfig(models_dir=repo_root() / "models")).get(
        "cinecloud/shapes-t2v"
    )
    params = spec.default_params("a red star moving to the left on a sky background")
    frames = {}
    for mode in ("regional", "graphs"):
        runner = Runner(spec, device="cuda", compile=mode)
        runner.load()
        assert runner.tuning["compile"] == mode
        frames[mode] = runner.run(params, lambda s: None, lambda: False).frames.astype(np.int16)
    diff = np.abs(frames["graphs"] - frames["regional"])
    assert diff.mean() < 2.0, (diff.mean(), diff.max())
