"""Published checkpoints in the registry, where their weights are looked for, and the
memory plan chosen from a GPU's free memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinecloud.config import EngineConfig
from cinecloud.engine.catalog import REAL_MODELS, real_model_source
from cinecloud.engine.memory import MemoryProfile, plan_memory
from cinecloud.engine.registry import (
    ModelNotInstalled,
    check_installed,
    default_registry,
    resolve_params,
    validate_params,
)

pytestmark = pytest.mark.unit

FAMILIES = {"wan-t2v", "wan-i2v", "ltx-t2v", "ltx-i2v", "cogvideox-t2v", "hunyuan-t2v", "svd"}
WAN_13B = next(m for m in REAL_MODELS if m.repo == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")


def test_every_family_has_a_published_checkpoint(tmp_path: Path) -> None:
    reg = default_registry(EngineConfig(models_dir=tmp_path))
    assert {m.family for m in REAL_MODELS} == FAMILIES
    for model in REAL_MODELS:
        spec = reg.get(model.repo)
        assert spec.family == model.family and spec.memory is model.memory
        params = resolve_params(spec, prompt="a fox", seed=1)
        validate_params(spec, params)  # the published defaults fit the limits


def test_missing_weights_name_the_path_and_the_fetch_command(tmp_path: Path) -> None:
    spec = default_registry(EngineConfig(models_dir=tmp_path)).get(WAN_13B.repo)
    assert spec.source == tmp_path / WAN_13B.name
    with pytest.raises(ModelNotInstalled) as info:
        check_installed(spec)
    assert str(tmp_path / WAN_13B.name / "model_index.json") in str(info.value)
    assert f"hf download {WAN_13B.repo} --local-dir {tmp_path / WAN_13B.name}" in str(info.value)


def test_a_local_directory_is_used(tmp_path: Path) -> None:
    local = tmp_path / WAN_13B.name
    local.mkdir()
    (local / "model_index.json").write_text("{}")
    spec = default_registry(EngineConfig(models_dir=tmp_path)).get(WAN_13B.repo)
    assert spec.source == local
    check_installed(spec)


def test_the_hugging_face_cache_is_used(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    repo_dir = cache / ("models--" + WAN_13B.repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("a" * 40)
    assert real_model_source(WAN_13B, tmp_path / "models", cache) == snapshot
    # an incomplete snapshot (no pipeline index) does not count
    (snapshot / "model_index.json").unlink()
    assert (
        real_model_source(WAN_13B, tmp_path / "models", cache) == tmp_path / "models" / WAN_13B.name
    )


def plan(free_gib: float | None, device: str = "cuda", **kw: str) -> tuple[str, bool, str]:
    p = plan_memory(
        WAN_13B.memory,
        device=device,
        free_gib=free_gib,
        width=832,
        height=480,
        num_frames=81,
        **kw,
    )
    return p.offload, p.vae_tiling, p.reason


def test_the_plan_follows_free_memory() -> None:
    assert plan(78.0) == ("none", False, "fits")
    assert plan(30.0)[:2] == ("none", True)  # weights fit; the decode is tiled
    assert plan(22.0)[:2] == ("model", False)  # one component at a time
    assert plan(16.0)[:2] == ("model", True)
    assert plan(14.0)[:2] == ("group", True)  # the transformer streams its blocks
    assert plan(4.0) == ("group", True, "leanest plan; may not fit")


def test_the_plan_can_be_overridden_and_is_recorded() -> None:
    assert plan(78.0, offload="group", vae_tiling="on") == ("group", True, "configured")
    assert plan(None, device="cpu") == ("none", False, "not a GPU")
    record = plan_memory(
        WAN_13B.memory, device="cuda", free_gib=22.0, width=832, height=480, num_frames=81
    ).record()
    assert record == {
        "offload": "model",
        "vae_tiling": "off",
        "memory_reason": "auto: smallest that fits",
    }


def test_bad_overrides_are_refused() -> None:
    with pytest.raises(ValueError, match="offload must be one of"):
        plan(78.0, offload="disk")
    with pytest.raises(ValueError, match="vae_tiling must be one of"):
        plan(78.0, vae_tiling="maybe")


def test_peak_estimates_grow_with_the_video() -> None:
    profile = MemoryProfile(10.0, 5.0, 1.0, denoise_gib_per_mpf=1.0, decode_gib_per_mpf=2.0)
    small = plan_memory(profile, device="cuda", free_gib=80, width=64, height=64, num_frames=9)
    big = plan_memory(profile, device="cuda", free_gib=80, width=832, height=480, num_frames=81)
    assert small.peak_gib < big.peak_gib
