"""The end-to-end engine benchmark (``benchmarks/gpu_engine.py``): its FLOP counts, and its
whole code path at tiny sizes on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_engine.py"
MODELS = ("wan2.1-1.3b", "ltx-2b", "cogvideox-2b")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_engine_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_wan_1_3b_forward_is_283_tflop(bench: ModuleType) -> None:
    case = bench.CASES["wan2.1-1.3b"]
    assert case.latent == (16, 21, 60, 104) and case.tokens == 32_760
    assert bench.wan_flops(case, 1) == pytest.approx(283e12, rel=0.01)


@pytest.mark.parametrize("model", MODELS)
def test_flops_are_positive_and_linear_in_batch(bench: ModuleType, model: str) -> None:
    case = bench.CASES[model]
    flops = bench.FLOPS[case.family]
    one = flops(case, 1)
    assert one > 0
    assert flops(case, 3) == pytest.approx(3 * one)
    # every step, both guidance branches
    assert bench.video_flops(case) == pytest.approx(case.video.steps * 2 * one)


@pytest.mark.slow
def test_tiny_run_on_cpu(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert bench.main(["--tiny", "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["tiny"] is True
    assert result["torch"] and result["diffusers"] and result["ceiling"]["tflops"] > 0
    assert set(result["models"]) == set(MODELS)
    for name, r in result["models"].items():
        assert "error" not in r, (name, r.get("error"))
        for side in ("plain", "cinecloud"):
            for key in ("denoise_s", "decode_s", "total_s"):
                assert r[side][key] > 0, (name, side, key)
            assert r[side]["counted_tflops"] > 0
        # float32 eager on the CPU: the tuned forward must match the reference closely
        assert r["equivalence"]["rel_err"] < 1e-3, name
        assert r["equivalence"]["ok"] is True
        plain, ours = r["plain"]["video_shape"], r["cinecloud"]["video_shape"]
        assert plain == ours and len(plain) == 5, name  # (batch, frames, height, width, 3)
        assert plain[1:] == [r["video"]["frames"], r["video"]["height"], r["video"]["width"], 3]
