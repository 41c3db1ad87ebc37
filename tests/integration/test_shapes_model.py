"""shapes-t2v end to end on CPU: train the tiny config, export it, load it, run it."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from cinecloud.config import EngineConfig, repo_root
from cinecloud.engine.registry import GenerationParams, ModelSpec, ParamError, default_registry
from cinecloud.engine.runner import Cancelled, Runner, RunResult, StepInfo
from cinecloud.engine.shapes.model import ShapesDiT, patchify, unpatchify
from cinecloud.engine.shapes.pipeline import (
    ShapesT2VPipeline,
    load_packaged_text_encoder,
    load_text_encoder_dir,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.integration

MODEL_ID = "cinecloud/shapes-t2v"
PROMPT = "a red circle moving left on a black background"
SMOKE = [
    "--config", "tiny", "--device", "cpu", "--seed", "7", "--lr", "2e-3", "--warmup", "5",
    "--batch-size", "4", "--max-text-len", "24", "--log-every", "1", "--save-every", "0",
]  # fmt: skip


def _load(name: str) -> ModuleType:
    """A script of ``scripts/`` as a module."""
    spec = importlib.util.spec_from_file_location(name, repo_root() / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trainer() -> ModuleType:
    return _load("train_shapes")


@pytest.fixture(scope="session")
def trained(trainer: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny config trained 40 steps, exported in float32 under a models directory."""
    root = tmp_path_factory.mktemp("shapes")
    models = root / "models"
    argv = [*SMOKE, "--max-steps", "40", "--ckpt-dir", str(root / "ckpt")]
    argv += ["--export", str(models / "shapes-t2v"), "--export-dtype", "float32"]
    state, losses = trainer.train(trainer.parse_args(argv))
    return {"state": state, "losses": losses, "models": models, "root": root}


@pytest.fixture(scope="session")
def pipe(trained: dict[str, Any]) -> ShapesT2VPipeline:
    loaded = ShapesT2VPipeline.from_pretrained(str(trained["models"] / "shapes-t2v"))
    loaded.set_progress_bar_config(disable=True)
    return loaded


def _generate(pipe: ShapesT2VPipeline, seed: int, **kw: Any) -> Any:
    return pipe(PROMPT, generator=torch.Generator().manual_seed(seed), **kw).frames


# ---------------------------------------------------------------- training


@pytest.mark.slow
def test_tiny_training_loss_decreases(trained: dict[str, Any]) -> None:
    losses = trained["losses"]
    assert len(losses) == 40
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.7 * first, (first, last)
    log = (trained["root"] / "ckpt" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 40


@pytest.mark.slow
def test_resume_continues_exactly(trainer: ModuleType, tmp_path: Path) -> None:
    common = [*SMOKE, "--batch-size", "2"]
    straight, _ = trainer.train(
        trainer.parse_args([*common, "--max-steps", "4", "--ckpt-dir", str(tmp_path / "a")])
    )
    trainer.train(
        trainer.parse_args([*common, "--max-steps", "2", "--ckpt-dir", str(tmp_path / "b")])
    )
    # hyperparameters (config, seed, batch size, lr, ...) come back from the checkpoint
    again = ["--resume", str(tmp_path / "b"), "--max-steps", "4", "--device", "cpu"]
    resumed, _ = trainer.train(trainer.parse_args(again))
    assert resumed.step == straight.step == 4
    for name, value in straight.ema.state_dict().items():
        assert torch.equal(value, resumed.ema.state_dict()[name]), name
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_resume_refuses_another_config(trainer: ModuleType, trained: dict[str, Any]) -> None:
    args = trainer.parse_args(
        ["--config", "full", "--seed", "7", "--resume", str(trained["root"] / "ckpt")]
    )
    with pytest.raises(ValueError, match="checkpoint is --config tiny"):
        trainer.load_checkpoint(args.resume, args, torch.device("cpu"))


# ---------------------------------------------------------------- export and pipeline


def test_export_layout(trained: dict[str, Any]) -> None:
    out = trained["models"] / "shapes-t2v"
    assert (out / "model_index.json").is_file()
    assert not (out / "text_encoder").exists() and not (out / "tokenizer").exists()
    weights = list((out / "transformer").glob("*.safetensors"))
    assert weights and all(w.stat().st_size <= 15_000_000 for w in weights)


def test_round_trip_is_bit_identical(trained: dict[str, Any], pipe: ShapesT2VPipeline) -> None:
    scheduler = pipe.scheduler
    in_memory = ShapesT2VPipeline(transformer=trained["state"].ema, scheduler=scheduler)
    in_memory.set_progress_bar_config(disable=True)
    assert np.array_equal(_generate(in_memory, 3), _generate(pipe, 3))


def test_same_seed_same_frames(pipe: ShapesT2VPipeline) -> None:
    a, b, c = _generate(pipe, 1), _generate(pipe, 1), _generate(pipe, 2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_output_shape_dtype_range(pipe: ShapesT2VPipeline) -> None:
    frames = _generate(pipe, 0, num_inference_steps=2)
    assert isinstance(frames, np.ndarray)
    assert frames.shape == (1, 16, 64, 64, 3) and frames.dtype == np.float32
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    pt = _generate(pipe, 0, num_inference_steps=2, output_type="pt")
    assert isinstance(pt, torch.Tensor) and np.array_equal(pt.numpy(), frames)
    latent = _generate(pipe, 0, num_inference_steps=2, output_type="latent", guidance_scale=1.0)
    assert latent.shape == (1, 3, 16, 64, 64)


def test_batched_prompts(pipe: ShapesT2VPipeline) -> None:
    out = pipe([PROMPT, "a blue star rotating on grass"], num_inference_steps=2).frames
    assert out.shape == (2, 16, 64, 64, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 17}, "num_frames must be 16"),
        ({"height": 32, "width": 32}, "size must be 64x64"),
        ({"num_inference_steps": 0}, "num_inference_steps must be >= 1"),
        ({"output_type": "pil"}, "output_type must be one of"),
    ],
)
def test_invalid_inputs(pipe: ShapesT2VPipeline, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pipe(PROMPT, **kwargs)


def test_patchify_round_trip() -> None:
    x = torch.randn(2, 3, 16, 64, 64)
    tokens = patchify(x, 2, 8)
    assert tokens.shape == (2, 512, 384)
    assert torch.equal(unpatchify(tokens, (3, 16, 64, 64), 2, 8), x)


def test_full_config_size() -> None:
    model = ShapesDiT()
    params = sum(p.numel() for p in model.parameters())
    assert model.tokens_per_clip == 512
    assert 2 * params < 30_000_000  # float16 weights fit the 30 MB budget


# ---------------------------------------------------------------- the runner


@pytest.fixture(scope="session")
def spec(trained: dict[str, Any]) -> ModelSpec:
    return default_registry(EngineConfig(models_dir=trained["models"])).get(MODEL_ID)


@pytest.fixture(scope="session")
def runner(spec: ModelSpec) -> Runner:
    r = Runner(spec, device="cpu", dtype="auto")
    assert r.load() >= 0.0
    return r


def params(**kw: object) -> GenerationParams:
    base = GenerationParams(
        prompt=PROMPT,
        negative_prompt="",
        width=64,
        height=64,
        num_frames=16,
        fps=8,
        steps=3,
        guidance_scale=4.0,
        seed=42,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def run(
    runner: Runner, p: GenerationParams, cancel: Callable[[list[StepInfo]], bool] | None = None
) -> tuple[RunResult, list[StepInfo]]:
    steps: list[StepInfo] = []
    result = runner.run(
        p, on_step=steps.append, should_cancel=lambda: cancel is not None and cancel(steps)
    )
    return result, steps


def test_runner_frames_steps_and_timings(runner: Runner, pipe: ShapesT2VPipeline) -> None:
    result, steps = run(runner, params())
    assert result.frames.shape == (16, 64, 64, 3) and result.frames.dtype == np.uint8
    assert [s.step for s in steps] == [0, 1, 2, 3]
    assert set(result.timings) == {"text_encode", "denoise", "decode"}
    assert (result.device, result.dtype) == ("cpu", "float32")
    direct = _generate(pipe, 42, num_inference_steps=3, guidance_scale=4.0)
    assert np.array_equal(result.frames, (direct[0] * 255.0).round().astype(np.uint8))


def test_runner_same_seed_same_frames(runner: Runner) -> None:
    a, _ = run(runner, params(seed=5))
    b, _ = run(runner, params(seed=5))
    assert np.array_equal(a.frames, b.frames)


def test_runner_without_guidance(runner: Runner) -> None:
    result, steps = run(runner, params(guidance_scale=1.0, steps=1))
    assert result.frames.shape == (16, 64, 64, 3)
    assert len(steps) == 2


def test_runner_cancel_after_step_one(runner: Runner) -> None:
    with pytest.raises(Cancelled) as info:
        run(runner, params(), cancel=lambda steps: bool(steps) and steps[-1].step >= 1)
    assert (info.value.step, info.value.total_steps) == (1, 3)
    after, _ = run(runner, params())
    assert after.frames.shape == (16, 64, 64, 3)


def test_runner_refuses_other_shapes(runner: Runner) -> None:
    with pytest.raises(ParamError, match="num_frames"):
        runner.run(params(num_frames=17), on_step=print, should_cancel=lambda: False)
    with pytest.raises(ParamError, match="size"):
        runner.run(params(width=128, height=128), on_step=print, should_cancel=lambda: False)


# ---------------------------------------------------------------- text encoder copies and --init


@pytest.fixture(scope="session")
def pruned_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("te") / "pruned"
    return _load("export_text_encoder").export_text_encoder(out, "float16", prune_vocab=True)


def test_pruned_text_encoder_matches_the_package(pruned_encoder: Path) -> None:
    encoder, tokenizer, kept = load_text_encoder_dir(pruned_encoder)
    full, _ = load_packaged_text_encoder()
    assert kept is not None and 50 < len(kept) < 1000
    size = sum(p.stat().st_size for p in pruned_encoder.rglob("*") if p.is_file())
    assert size < 25_000_000
    tokens = tokenizer([PROMPT, ""], padding="max_length", max_length=24, return_tensors="pt")
    assert torch.isin(tokens.input_ids, kept).all()
    with torch.no_grad():
        got = encoder(**tokens).last_hidden_state
        want = full(**tokens).last_hidden_state
    valid = tokens.attention_mask.bool()
    assert torch.allclose(got[valid], want[valid], atol=2e-2)


def test_train_with_pruned_encoder_and_init(
    trainer: ModuleType, trained: dict[str, Any], pruned_encoder: Path, tmp_path: Path
) -> None:
    export = trained["models"] / "shapes-t2v"
    argv = [*SMOKE, "--text-encoder", str(pruned_encoder), "--ckpt-dir", str(tmp_path)]
    argv += ["--init", str(export), "--init-step", "40", "--max-steps", "42"]
    state, losses = trainer.train(trainer.parse_args(argv))
    assert (state.step, state.warm_from, len(losses)) == (42, 40, 2)
    assert np.isfinite(losses).all()
