"""The engine end to end on CPU with the tiny random-weight Wan model built locally."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cinecloud.config import EngineConfig
from cinecloud.engine.registry import (
    GenerationParams,
    ModelNotInstalled,
    ModelSpec,
    ParamError,
    default_registry,
)
from cinecloud.engine.runner import Cancelled, Runner, RunResult, StepInfo
from tests.scripts import load_script

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    load_script("scripts/make_tiny_wan.py").build_tiny_wan(root / "tiny-wan")
    return root


@pytest.fixture(scope="session")
def spec(models_dir: Path) -> ModelSpec:
    return default_registry(EngineConfig(models_dir=models_dir)).get("cinecloud/tiny-wan")


@pytest.fixture(scope="session")
def runner(spec: ModelSpec) -> Runner:
    r = Runner(spec, device="cpu", dtype="auto")
    assert r.load() >= 0.0
    return r


def params(**kw: object) -> GenerationParams:
    base = GenerationParams(
        prompt="a red fox running through a snowy forest",
        negative_prompt="blurry, low quality",
        width=32,
        height=32,
        num_frames=5,
        fps=8,
        steps=3,
        guidance_scale=5.0,
        seed=42,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def run(
    runner: Runner, p: GenerationParams, cancel: Callable[[list[StepInfo]], bool] | None = None
) -> tuple[RunResult, list[StepInfo]]:
    steps: list[StepInfo] = []
    result = runner.run(
        p,
        on_step=steps.append,
        should_cancel=lambda: cancel is not None and cancel(steps),
    )
    return result, steps


def test_run_returns_frames_steps_and_timings(runner: Runner) -> None:
    result, steps = run(runner, params())
    assert result.frames.shape == (5, 32, 32, 3)
    assert result.frames.dtype == np.uint8
    assert [s.step for s in steps] == [0, 1, 2, 3]
    assert {s.total_steps for s in steps} == {3}
    assert {s.stage for s in steps} == {"denoise"}
    elapsed = [s.elapsed_s for s in steps]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0.0
    assert set(result.timings) == {"text_encode", "denoise", "decode"}
    assert all(v >= 0.0 for v in result.timings.values())
    assert (result.fps, result.seed, result.device, result.dtype) == (8, 42, "cpu", "float32")


def test_same_seed_same_frames_other_seed_other_frames(runner: Runner) -> None:
    a, _ = run(runner, params(seed=1))
    b, _ = run(runner, params(seed=1))
    c, _ = run(runner, params(seed=2))
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_without_guidance(runner: Runner) -> None:
    result, steps = run(runner, params(guidance_scale=1.0, steps=1, width=48, height=16))
    assert result.frames.shape == (5, 16, 48, 3)
    assert len(steps) == 2


def test_cancel_after_step_one(runner: Runner) -> None:
    with pytest.raises(Cancelled) as info:
        run(runner, params(), cancel=lambda steps: bool(steps) and steps[-1].step >= 1)
    assert (info.value.step, info.value.total_steps) == (1, 3)


def test_cancel_before_start(runner: Runner) -> None:
    with pytest.raises(Cancelled) as info:
        run(runner, params(), cancel=lambda steps: True)
    assert info.value.step == 0


def test_runner_still_works_after_a_cancel(runner: Runner) -> None:
    with pytest.raises(Cancelled):
        run(runner, params(seed=5), cancel=lambda steps: len(steps) >= 2)
    after, _ = run(runner, params(seed=5))
    again, _ = run(runner, params(seed=5))
    assert np.array_equal(after.frames, again.frames)


def test_params_are_validated_before_work(runner: Runner) -> None:
    calls: list[StepInfo] = []
    with pytest.raises(ParamError, match="got 80"):
        runner.run(params(num_frames=80), on_step=calls.append, should_cancel=lambda: False)
    assert calls == []


def test_run_before_load_is_an_error(spec: ModelSpec) -> None:
    with pytest.raises(RuntimeError, match="not loaded"):
        Runner(spec, device="cpu").run(params(), on_step=print, should_cancel=lambda: False)


def test_missing_model_names_path_and_command(spec: ModelSpec, tmp_path: Path) -> None:
    missing = default_registry(EngineConfig(models_dir=tmp_path)).get(spec.id)
    with pytest.raises(ModelNotInstalled) as info:
        Runner(missing, device="cpu").load()
    assert str(tmp_path / "tiny-wan") in str(info.value)
    assert "python scripts/make_tiny_wan.py" in str(info.value)


def test_bad_device_and_dtype(spec: ModelSpec) -> None:
    with pytest.raises(ValueError, match="dtype must be one of"):
        Runner(spec, device="cpu", dtype="fp8").load()


def test_tiny_model_is_small(models_dir: Path) -> None:
    size = sum(p.stat().st_size for p in (models_dir / "tiny-wan").rglob("*") if p.is_file())
    assert size < 5_000_000


def test_registry_and_fake_runner_do_not_import_torch() -> None:
    code = (
        "import sys, cinecloud.engine, cinecloud.engine.registry, cinecloud.testing.fake_runner;"
        "bad = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules);"
        "print(','.join(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_memory_plan_is_applied_and_recorded(spec: ModelSpec, runner: Runner) -> None:
    """Group offload (blocks streamed from CPU memory) and VAE tiling give the same video;
    each run records the plan it ran under."""
    plain = runner.run(params(), on_step=lambda s: None, should_cancel=lambda: False)
    assert plain.engine == {
        "offload": "none",
        "vae_tiling": "off",
        "memory_reason": "not a GPU",
        "attention": "native",
        "attention_source": "fixed",
        "compile": "off",
        "warmup_s": plain.engine["warmup_s"],
        "quantize": "off",
        "step_cache": "off",
    }
    lean = Runner(spec, device="cpu", offload="group", vae_tiling="on")
    lean.load()
    result = lean.run(params(), on_step=lambda s: None, should_cancel=lambda: False)
    assert (result.engine["offload"], result.engine["vae_tiling"]) == ("group", "on")
    assert result.engine["memory_reason"] == "configured"
    assert np.array_equal(result.frames, plain.frames)
    with pytest.raises(ValueError, match="offload must be one of"):
        Runner(spec, device="cpu", offload="disk").load()


def test_step_cache_is_opt_in_per_request(spec: ModelSpec, runner: Runner) -> None:
    """A request that asks for First Block Cache gets it (here with a threshold so high
    that every step after the first reuses the first step's residual, so the video
    changes); the next request without it is exact again: the hooks come off."""
    exact = runner.run(params(), on_step=lambda s: None, should_cancel=lambda: False)
    lossy_runner = Runner(spec, device="cpu", step_cache_threshold=1e6)
    lossy_runner.load()
    cached = lossy_runner.run(
        params(step_cache="first_block"), on_step=lambda s: None, should_cancel=lambda: False
    )
    assert cached.engine["step_cache"] == "first_block@1e+06"
    assert cached.frames.shape == exact.frames.shape
    assert not np.array_equal(cached.frames, exact.frames)
    again = lossy_runner.run(params(), on_step=lambda s: None, should_cancel=lambda: False)
    assert again.engine["step_cache"] == "off"
    assert np.array_equal(again.frames, exact.frames)


def test_fp8_needs_a_gpu(spec: ModelSpec) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        Runner(spec, device="cpu", quantize="fp8").load()
    with pytest.raises(ValueError, match="quantize must be one of"):
        Runner(spec, device="cpu", quantize="int3")


def test_a_measured_attention_choice_is_remembered_across_loads(
    spec: ModelSpec, runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load measures and stores its choice; the next sets it without measuring;
    a remembered backend that no longer runs is forgotten and measured again."""
    import json

    from cinecloud.engine import runner as runner_module

    # Two CPU kernels to choose between, and one (cuDNN) that cannot run on a CPU.
    monkeypatch.setattr(
        runner_module, "CPU_ATTENTION_CANDIDATES", ("_native_cudnn", "_native_math", "native")
    )
    store = tmp_path / "cache" / "attention.json"
    loads = []
    for _ in range(2):
        r = Runner(spec, device="cpu", cache_dir=tmp_path / "cache")
        r.load()
        loads.append(r.run(params(), on_step=lambda s: None, should_cancel=lambda: False))
    first, second = (result.engine for result in loads)
    assert first["attention_source"] == "measured"
    assert second["attention_source"] == "remembered"
    assert first["attention"] == second["attention"] in ("_native_math", "native")
    ((key, entry),) = json.loads(store.read_text()).items()
    assert key.startswith("cinecloud/tiny-wan|") and entry["choice"] == first["attention"]
    assert set(entry["timings_s"]) == {"_native_math", "native"}  # cuDNN failed, skipped
    reference = runner.run(params(), on_step=lambda s: None, should_cancel=lambda: False)
    for result in loads:  # the backends differ only in kernels; the video is the same
        diff = np.abs(result.frames.astype(np.int16) - reference.frames.astype(np.int16))
        assert diff.max() <= 2, diff.max()

    store.write_text(json.dumps({key: {"choice": "_native_cudnn", "timings_s": {}}}))
    r = Runner(spec, device="cpu", cache_dir=tmp_path / "cache")
    r.load()
    assert r.tuning["attention_source"] == "measured"
    assert json.loads(store.read_text())[key]["choice"] in ("_native_math", "native")


_COMPILED_RUN = """
import json, sys
from pathlib import Path
from cinecloud.engine.speed import set_compile_cache
set_compile_cache(Path(sys.argv[2]))
from cinecloud.config import EngineConfig
from cinecloud.engine.registry import GenerationParams, default_registry
from cinecloud.engine.runner import Runner
spec = default_registry(EngineConfig(models_dir=Path(sys.argv[1]))).get("cinecloud/tiny-wan")
runner = Runner(spec, device="cpu", compile="regional")
runner.load()
p = GenerationParams("a red fox", "", 32, 32, 5, 8, 3, 5.0, 42)
result = runner.run(p, on_step=lambda s: None, should_cancel=lambda: False)
print(json.dumps({"engine": result.engine, "frames": result.frames.tolist()}))
"""


def test_regional_compile_matches_eager_and_its_cache_survives_a_restart(
    models_dir: Path, runner: Runner, tmp_path: Path
) -> None:
    """Each repeated block is compiled; a second process finds the compiled code on disk."""
    import json

    eager = runner.run(
        params(prompt="a red fox", negative_prompt="", width=32, height=32, num_frames=5, seed=42),
        on_step=lambda s: None,
        should_cancel=lambda: False,
    )
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _COMPILED_RUN, str(models_dir), str(tmp_path / "home")],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = (float(r["engine"]["warmup_s"]) for r in runs)
    assert runs[0]["engine"]["compile"] == "regional"
    assert any((tmp_path / "home" / "cache" / "inductor").rglob("*"))
    assert second < first / 2, (first, second)  # the restart reused the compiled blocks
    for r in runs:  # compiled kernels reorder float sums; random weights amplify a few
        diff = np.abs(np.asarray(r["frames"], dtype=np.int16) - eager.frames.astype(np.int16))
        assert diff.mean() < 1.0 and (diff > 16).mean() < 0.01, (diff.max(), diff.mean())
