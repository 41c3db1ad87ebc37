"""Our split plans for CogVideoX and HunyuanVideo (joint text-video attention, and the
VAE decode in bands through group norms) on gloo ranks.

Tiny random checkpoints of both families (CogVideoX in the layouts of 5b and of 1.5) are
run on 2 and 4 CPU ranks (started once per world size, every model in the same ranks) in
every mode they take: Ulysses, ring, both, CFG parallel with each (CogVideoX; HunyuanVideo
has no CFG), and the VAE decode in bands. Each run must equal the 1-rank run in this
process within float32 rounding. Deliberately wrong splits show that the comparison can
fail (see CONTROLS).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cinecloud.engine.parallel import check_plan_for_model, parse_plan
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
    base: str  # built from this tiny checkpoint of scripts/make_tiny_models.py
    family: str
    width: int
    height: int
    num_frames: int
    transformer: dict[str, Any] = field(default_factory=dict)  # changes to its transformer


# CogVideoX-5b's layout (rotary positions), with two blocks; CogVideoX 1.5's temporal patch
# (the pipeline pads the latent frames to it); HunyuanVideo with four heads, so that
# ulysses=4 divides them.
_COGVIDEOX_5B = {
    "use_rotary_positional_embeddings": True,
    "attention_head_dim": 16,
    "num_layers": 2,
}
_COGVIDEOX_15 = {**_COGVIDEOX_5B, "patch_size_t": 2, "sample_width": 8, "sample_height": 8}
MODELS = {
    model.name: model
    for model in (
        # 3 latent frames of 2x4 patches: 24 video tokens, and 226 text tokens
        Model("cogvideox", "cogvideox", "cogvideox-t2v", 64, 32, 9, _COGVIDEOX_5B),
        # 5 latent frames, padded to 6: 3 patches of 2 frames of 2x4 patches, 24 tokens
        Model("cogvideox15", "cogvideox", "cogvideox-t2v", 64, 32, 17, _COGVIDEOX_15),
        # 2 latent frames of 2x4 patches: 16 video tokens, and the text with its mask
        Model("hunyuan", "hunyuan", "hunyuan-t2v", 64, 32, 5, {"num_attention_heads": 4}),
    )
}

# The runs decode only where the VAE decodes in bands, and in the first mode of each model.
MODES: dict[int, dict[str, list[str]]] = {
    2: {
        "cogvideox": ["ulysses=2", "ring=2,vae", "cfg=2"],
        "cogvideox15": ["ulysses=2,vae"],
        "hunyuan": ["ulysses=2", "ring=2,vae"],
    },
    4: {
        "cogvideox": [
            "ulysses=4,vae",
            "ring=4",
            "ulysses=2,ring=2",
            "cfg=2,ulysses=2",
            "cfg=2,ring=2,vae",
        ],
        "cogvideox15": ["cfg=2,ulysses=2,vae"],
        "hunyuan": ["ulysses=4", "ring=4", "ulysses=2,ring=2,vae"],
    },
}

# Deliberately wrong splits (2 ranks), which the comparison must catch: attention over the
# rank's own video only; diffusers' own context parallel over the joint sequence; group
# norms with the statistics of their band only; zeros instead of copies of the edge row
# at the image's top and bottom (HunyuanVideo's convolutions).
CONTROLS = [
    ("cogvideox", "ring=2", "local-attention"),
    ("hunyuan", "ulysses=2", "local-attention"),
    ("cogvideox", "ulysses=2", "text-per-rank"),
    ("hunyuan", "ulysses=2", "text-per-rank"),
    ("cogvideox", "ring=2,vae", "band-norm"),
    ("hunyuan", "ring=2,vae", "edge-zeros"),
]


def decoded(world: int, name: str, text: str) -> bool:
    return "vae" in text or text == MODES[world][name][0]


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


def _build(model: Model, base: Path, out: Path) -> Path:
    """``model``'s checkpoint: the tiny ``base`` with its transformer rebuilt."""
    import torch

    shutil.copytree(base, out)
    config_file = out / "transformer" / "config.json"
    config = json.loads(config_file.read_text())
    cls = config.pop("_class_name")
    config.pop("_diffusers_version")
    module = __import__("diffusers", fromlist=[cls])
    torch.manual_seed(0)
    getattr(module, cls)(**{**config, **model.transformer}).save_pretrained(out / "transformer")
    return out


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    script = load_script("scripts/make_tiny_models.py")
    for model in MODELS.values():
        base = script.build(model.base, root / f"base-{model.base}")
        _build(model, base, root / f"tiny-{model.name}")
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


def _run(model: Model, family: Any, *, decode: bool = True) -> dict[str, np.ndarray]:
    """Latents, the VAE's float video and the frames of one run (latents only without
    ``decode``)."""
    p = params(model)
    block = family.denoiser().transformer_blocks[0]
    layer = getattr(block, "attn1", None) or block.attn
    tokens: list[int] = []  # the video tokens the first attention layer sees

    def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        tokens.append(int(kwargs["hidden_states"].shape[1]))

    handle = layer.register_forward_pre_hook(count, with_kwargs=True)
    try:
        latents = family.denoise(family.encode(p), p, on_step=lambda k: None)
    finally:
        handle.remove()
    tensor = getattr(latents, "latents", latents)
    result = {"latents": tensor.float().numpy(), "tokens": np.array(sorted(set(tokens)))}
    if not decode:
        return result
    video: list[Any] = []
    vae = family.pipe.vae
    vae_decode = vae.decode

    def keep(*args: Any, **kwargs: Any) -> Any:
        out = vae_decode(*args, **kwargs)
        video.append(out[0])
        return out

    vae.decode = keep
    try:
        frames = family.decode(latents)
    finally:
        vae.decode = vae_decode
    return {**result, "video": video[0].numpy(), "frames": frames}


def _text_per_rank(family: Any) -> Callable[[], None]:
    """Diffusers' own context parallel on the joint sequence: every rank holds the text, so
    its keys count once per rank. Returns the undo."""
    import torch
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    from cinecloud.engine.parallel import joint

    config = family.denoiser()._parallel_config

    def joined(video: Any, text: Any, *, text_first: bool, text_mask: Any, **_: Any) -> Any:
        q, k, v = (
            torch.cat((t, x) if text_first else (x, t), dim=1)
            for x, t in zip(video, text, strict=True)
        )
        mask = None
        if text_mask is not None:
            ones = torch.ones(text_mask.shape[0], video[1].shape[1], dtype=torch.bool)
            mask = torch.cat((ones, text_mask.bool()), dim=1)[:, None, None, :]
        out = dispatch_attention_fn(q, k, v, attn_mask=mask, parallel_config=config)
        text_len = text[0].shape[1]
        if text_first:
            return out[:, text_len:], out[:, :text_len]
        return out[:, :-text_len], out[:, -text_len:]

    return _replace(joint, "joint_attention", joined)


def _replace(owner: Any, name: str, value: Any) -> Callable[[], None]:
    """Set ``owner.name`` to ``value``; the undo."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    return lambda: setattr(owner, name, original)


def _sabotage(family: Any, how: str) -> Callable[[], None]:
    """Make ``family``'s split wrong on purpose (a control for the comparison); the undo."""
    from cinecloud.engine.parallel.vae import RowBands

    if how == "local-attention":
        for module in family.denoiser().modules():
            processor: Any = getattr(module, "processor", None)
            if hasattr(processor, "split"):
                processor.split = None
        return lambda: None
    if how == "text-per-rank":
        return _text_per_rank(family)
    if how == "band-norm":
        return _replace(RowBands, "total", lambda self, x: x.clone())
    halo = RowBands.halo
    return _replace(RowBands, "halo", lambda self, x, rows, **_: halo(self, x, rows))


def _rank_main(rank: int, world: int, port: int, models_dir: str, out_dir: str) -> None:
    import torch

    from cinecloud.engine.parallel.ranks import join_ranks, open_store, rank_group

    torch.set_num_threads(1)  # the ranks share the machine's few cores: no thread pools
    store = open_store(port, world, 60.0, master=False)
    join_ranks(world, rank, store, device="cpu", timeout_s=60.0)
    runs = [(name, text, "") for name, texts in MODES[world].items() for text in texts]
    if world == 2:
        runs += CONTROLS
    for name, text, sabotage in runs:
        ranks = rank_group(parse_plan(text, world), "cpu")
        family = _load(MODELS[name], Path(models_dir), ranks)
        undo = _sabotage(family, sabotage) if sabotage else (lambda: None)
        try:
            result = _run(MODELS[name], family, decode=decoded(world, name, text))
        finally:
            undo()
        np.savez(Path(out_dir) / f"{name}-{text}{sabotage}-rank{rank}.npz", **result)


# The ranks are forked from one server process that imports these once; a spawned rank
# would import torch, diffusers and the pipelines itself (about 6 s of CPU each here).
PRELOAD = [
    __name__,
    "cinecloud.engine.families.cogvideox",
    "cinecloud.engine.families.hunyuan",
    "cinecloud.engine.parallel.family",
]


def _spawn(world: int, models_dir: Path, out_dir: Path) -> None:
    import multiprocessing

    import torch.multiprocessing as mp

    from cinecloud.engine.parallel.ranks import open_store

    master = open_store(0, world, 60.0, master=True)
    multiprocessing.set_forkserver_preload(PRELOAD)
    mp.start_processes(
        _rank_main,
        args=(world, master.port, str(models_dir), str(out_dir)),
        nprocs=world,
        start_method="forkserver",
    )


@pytest.fixture(scope="module")
def serial(models_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    return {name: _run(model, _load(model, models_dir)) for name, model in MODELS.items()}


@pytest.fixture(scope="module")
def ranked(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """The directory of the runs on ``world`` ranks (spawned at the first ask)."""
    done: dict[int, Path] = {}

    def runs(world: int) -> Path:
        if world not in done:
            done[world] = tmp_path_factory.mktemp(f"ranks{world}")
            _spawn(world, models_dir, done[world])
        return done[world]

    return runs


CASES = [
    (w, name, text) for w, models in MODES.items() for name, ts in models.items() for text in ts
]


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
    ranked: Callable[[int], Path],
) -> None:
    want = serial[name]
    out = ranked(world)
    results = [np.load(out / f"{name}-{text}-rank{r}.npz") for r in range(world)]
    plan = parse_plan(text, world)
    for got in results:  # each rank's attention saw its share of the video
        assert list(got["tokens"] * plan.ulysses * plan.ring) == list(want["tokens"])
    worst = {"latents": 0.0, **({"video": 0.0} if decoded(world, name, text) else {})}
    for rank, got in enumerate(results):
        assert got["latents"].shape == want["latents"].shape
        err = _max_error(got["latents"], want["latents"])
        assert err < LATENT_TOL, f"rank {rank}: latents differ by {err:.3g}"
        worst["latents"] = max(worst["latents"], err)
        if decoded(world, name, text):
            err = _max_error(got["video"], want["video"])
            assert err < VIDEO_TOL, f"rank {rank}: video differs by {err:.3g}"
            assert _max_error(got["frames"], want["frames"]) <= 1  # uint8 rounding at .5
            worst["video"] = max(worst["video"], err)
    print(f"{world} ranks, {name}, {text}: " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    for got in results[1:]:  # every rank ends with the same latents
        assert np.array_equal(got["latents"], results[0]["latents"])


@pytest.mark.parametrize(
    ("name", "text", "sabotage"), CONTROLS, ids=[f"{n}-{t}-{s}" for n, t, s in CONTROLS]
)
def test_a_wrong_split_is_caught(
    name: str,
    text: str,
    sabotage: str,
    serial: dict[str, dict[str, np.ndarray]],
    ranked: Callable[[int], Path],
) -> None:
    got = np.load(ranked(2) / f"{name}-{text}{sabotage}-rank0.npz")
    key, tol = ("video", VIDEO_TOL) if "vae" in text else ("latents", LATENT_TOL)
    err = _max_error(got[key], serial[name][key])
    print(f"{name}, {text}, {sabotage}: {key} {err:.2g}")
    assert err > 10 * tol


def test_plans_are_checked_for_these_families() -> None:
    check_plan_for_model(parse_plan("cfg=2,ulysses=2,ring=2,vae"), "cogvideox-t2v", heads=4)
    check_plan_for_model(parse_plan("ulysses=2,ring=2,vae"), "hunyuan-t2v", heads=2)
    with pytest.raises(ValueError, match=r"cfg is not available for hunyuan-t2v: .*distilled"):
        check_plan_for_model(parse_plan("cfg=2"), "hunyuan-t2v", heads=2)
    with pytest.raises(ValueError, match=r"heads \(2\) must be divisible by the ulysses degree"):
        check_plan_for_model(parse_plan("ulysses=4"), "hunyuan-t2v", heads=2)
