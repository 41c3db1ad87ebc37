"""One video across N ranks on the CPU (gloo): each parallel mode equals the 1-rank run.

For the tiny Wan and LTX-Video checkpoints, 2 and 4 ranks are spawned once per world
size; they run every mode (Ulysses, ring, both, CFG parallel, CFG x context parallel,
the VAE decode in bands) and save what rank 0 and the others got. The tests compare
that with one rank in this process: latents and decoded video within float32 rounding.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cinecloud.config import repo_root
from cinecloud.engine.parallel import ParallelPlan, check_plan_for_model, parse_plan
from cinecloud.engine.registry import GenerationParams
from tests.scripts import load_script

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.integration

# float32 rounding: the split changes the order of sums, never the maths.
LATENT_TOL = 1e-4
VIDEO_TOL = 1e-4


@dataclass(frozen=True)
class Model:
    name: str  # the checkpoint is tiny-<name>
    family: str
    width: int
    height: int
    num_frames: int


MODELS = {
    "wan": Model("wan", "wan-t2v", width=64, height=64, num_frames=9),
    "ltx": Model("ltx", "ltx-t2v", width=64, height=128, num_frames=17),
}

# The plans run by each world size, for each model; Wan's 2 heads rule out ulysses=4.
MODES: dict[tuple[int, str], list[str]] = {
    (2, "wan"): ["ulysses=2", "ring=2", "cfg=2", "ulysses=2,vae"],
    (2, "ltx"): ["ulysses=2", "ring=2", "cfg=2", "cfg=2,vae"],
    (4, "wan"): ["ring=4", "ulysses=2,ring=2", "cfg=2,ulysses=2", "cfg=2,ring=2,vae"],
    (4, "ltx"): ["ulysses=4", "ring=4,vae", "ulysses=2,ring=2", "cfg=2,ulysses=2,vae"],
}

# Deliberately wrong splits, which the comparison must catch: attention that sees only its
# own slice of the sequence, and bands decoded without their neighbours' rows.
CONTROLS: dict[tuple[int, str], list[tuple[str, str]]] = {
    (2, "wan"): [("ring=2", "local-attention"), ("ulysses=2,vae", "no-halo")],
    (2, "ltx"): [("ulysses=2", "local-attention"), ("cfg=2,vae", "no-halo")],
    (4, "wan"): [],
    (4, "ltx"): [],
}


def params(model: Model) -> GenerationParams:
    return GenerationParams(
        prompt="a red fox running through a snowy forest",
        negative_prompt="blurry, low quality",
        width=model.width,
        height=model.height,
        num_frames=model.num_frames,
        fps=8,
        steps=2,
        guidance_scale=3.0,
        seed=42,
    )


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    load_script("scripts/make_tiny_models.py").build("ltx", root / "tiny-ltx")
    (root / "tiny-wan").symlink_to(repo_root() / "models" / "tiny-wan", target_is_directory=True)
    return root


# ---------------------------------------------------------------- one run, any ranks


def _load(model: Model, models_dir: Path, ranks: Any = None) -> Any:
    from cinecloud.engine.families import make_family

    family = make_family(model.family)
    if ranks is not None:
        from cinecloud.engine.parallel.family import ParallelFamily

        family = ParallelFamily(family, model.family, ranks)
    family.load(models_dir / f"tiny-{model.name}", device="cpu", dtype="float32")
    return family


def _latents(value: Any) -> np.ndarray:
    tensor = getattr(value, "packed", value)
    return np.asarray(tensor.float().numpy())


def _run(model: Model, family: Any) -> dict[str, np.ndarray]:
    """Latents, the VAE's float video and the frames of one run."""
    import torch

    p = params(model)
    latents = family.denoise(family.encode(p), p, on_step=lambda k: None)
    video: list[torch.Tensor] = []
    vae = family.pipe.vae
    decode = vae.decode

    def keep(*args: Any, **kwargs: Any) -> Any:
        out = decode(*args, **kwargs)
        video.append(out[0])
        return out

    vae.decode = keep
    try:
        frames = family.decode(latents)
    finally:
        vae.decode = decode
    return {"latents": _latents(latents), "video": video[0].numpy(), "frames": frames}


def _sabotaged(family: Any, how: str) -> Any:
    """``family`` with its split made wrong on purpose (a control for the comparison)."""
    import torch

    from cinecloud.engine.parallel.vae import RowBands

    if how == "local-attention":
        for module in family.denoiser().modules():
            if hasattr(module, "attn1"):
                module.attn1.processor._parallel_config = None
    elif how == "no-halo":

        def zero_halo(self: RowBands, x: torch.Tensor, rows: int) -> torch.Tensor:
            zeros = torch.zeros_like(x[..., :rows, :])
            return torch.cat([zeros, x, zeros], dim=-2)

        RowBands.halo = zero_halo  # type: ignore[method-assign]
    return family


def _rank_main(rank: int, world: int, name: str, port: int, models_dir: str, out_dir: str) -> None:
    from cinecloud.engine.parallel.ranks import join_ranks, open_store, rank_group

    store = open_store(port, world, 60.0, master=False)
    join_ranks(world, rank, store, device="cpu", timeout_s=60.0)
    model = MODELS[name]
    runs = [(text, "") for text in MODES[world, name]] + CONTROLS[world, name]
    for text, sabotage in runs:  # sabotaged runs last: they change the process
        ranks = rank_group(parse_plan(text, world), "cpu")
        family = _sabotaged(_load(model, Path(models_dir), ranks), sabotage)
        result = _run(model, family)
        np.savez(Path(out_dir) / f"{name}-{text}{sabotage}-rank{rank}.npz", **result)


def _spawn(world: int, name: str, models_dir: Path, out_dir: Path) -> None:
    import torch.multiprocessing as mp

    from cinecloud.engine.parallel.ranks import open_store

    master = open_store(0, world, 60.0, master=True)
    args = (world, name, master.port, str(models_dir), str(out_dir))
    mp.spawn(_rank_main, args=args, nprocs=world)


@pytest.fixture(scope="module")
def serial(models_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    return {name: _run(model, _load(model, models_dir)) for name, model in MODELS.items()}


@pytest.fixture(scope="module")
def ranked(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[int, str], Path]:
    """The directory of one model's runs on ``world`` ranks (spawned at the first ask)."""
    done: dict[tuple[int, str], Path] = {}

    def runs(world: int, name: str) -> Path:
        if (world, name) not in done:
            done[world, name] = tmp_path_factory.mktemp(f"ranks{world}-{name}")
            _spawn(world, name, models_dir, done[world, name])
        return done[world, name]

    return runs


CASES = [(world, name, text) for (world, name), texts in MODES.items() for text in texts]
CONTROL_CASES = [(name, text, how) for (_, name), runs in CONTROLS.items() for text, how in runs]


def _max_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


@pytest.mark.parametrize(
    ("world", "name", "text"), CASES, ids=[f"{w}-{n}-{t}" for w, n, t in CASES]
)
def test_ranks_equal_one_rank(
    world: int,
    name: str,
    text: str,
    serial: dict[str, dict[str, np.ndarray]],
    ranked: Callable[[int, str], Path],
) -> None:
    want = serial[name]
    out = ranked(world, name)
    results = [np.load(out / f"{name}-{text}-rank{r}.npz") for r in range(world)]
    for rank, got in enumerate(results):
        assert got["latents"].shape == want["latents"].shape
        err = _max_error(got["latents"], want["latents"])
        assert err < LATENT_TOL, f"rank {rank}: latents differ by {err:.3g}"
        err = _max_error(got["video"], want["video"])
        assert err < VIDEO_TOL, f"rank {rank}: video differs by {err:.3g}"
        assert _max_error(got["frames"], want["frames"]) <= 1  # uint8 rounding at .5
    for got in results[1:]:  # every rank ends with the same latents
        assert np.array_equal(got["latents"], results[0]["latents"])


@pytest.mark.parametrize(
    ("name", "text", "sabotage"), CONTROL_CASES, ids=[f"{n}-{t}-{s}" for n, t, s in CONTROL_CASES]
)
def test_a_wrong_split_is_caught(
    name: str,
    text: str,
    sabotage: str,
    serial: dict[str, dict[str, np.ndarray]],
    ranked: Callable[[int, str], Path],
) -> None:
    want = serial[name]
    got = np.load(ranked(2, name) / f"{name}-{text}{sabotage}-rank0.npz")
    key, tol = ("latents", LATENT_TOL) if sabotage == "local-attention" else ("video", VIDEO_TOL)
    assert _max_error(got[key], want[key]) > 100 * tol


def test_plans_are_checked() -> None:
    assert parse_plan("ulysses=2,cfg=2,vae", 4) == ParallelPlan(ulysses=2, cfg=2, vae=True)
    assert parse_plan("") == ParallelPlan()
    with pytest.raises(
        ValueError, match=r"ulysses\*ring\*cfg must equal world size 4 \(got 2x1x1\)"
    ):
        parse_plan("ulysses=2", 4)
    with pytest.raises(ValueError, match="unknown parallel setting 'tp'"):
        parse_plan("tp=2")
    with pytest.raises(ValueError, match="cfg must be 1 or 2"):
        parse_plan("cfg=4")
    with pytest.raises(
        ValueError, match=r"heads \(2\) must be divisible by the ulysses degree \(4\)"
    ):
        check_plan_for_model(parse_plan("ulysses=4"), "wan-t2v", heads=2)
    with pytest.raises(ValueError, match="not available for svd"):
        check_plan_for_model(parse_plan("ring=2"), "svd", heads=8)
