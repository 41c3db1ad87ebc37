"""The limits registered for the diffusers video families (pure: no torch, no files)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cinecloud.config import EngineConfig
from cinecloud.engine.registry import (
    GenerationParams,
    ModelSpec,
    ParamError,
    Registry,
    default_registry,
    frames_for_seconds,
    resolve_params,
    validate_params,
)

pytestmark = pytest.mark.unit

MODELS = Path("/srv/cinecloud/models")
REGISTRY = default_registry(EngineConfig(models_dir=MODELS))

# id -> (family, script name, input_image)
FAMILIES = {
    "cinecloud/tiny-ltx": ("ltx-t2v", "ltx", "none"),
    "cinecloud/tiny-cogvideox": ("cogvideox-t2v", "cogvideox", "none"),
    "cinecloud/tiny-wan-i2v": ("wan-i2v", "wan-i2v", "required"),
    "cinecloud/tiny-ltx-i2v": ("ltx-i2v", "ltx-i2v", "required"),
    "cinecloud/tiny-svd": ("svd", "svd", "required"),
    "cinecloud/tiny-hunyuan": ("hunyuan-t2v", "hunyuan", "none"),
}


def params(spec: ModelSpec, **kw: Any) -> GenerationParams:
    return spec.default_params("a red fox in the snow", seed=1, **kw)


@pytest.mark.parametrize("model_id", FAMILIES)
def test_family_is_registered_with_its_build_command(model_id: str) -> None:
    family, name, input_image = FAMILIES[model_id]
    spec = REGISTRY.get(model_id)
    assert (spec.family, spec.input_image) == (family, input_image)
    assert spec.source == MODELS / f"tiny-{name}"
    assert spec.build_command == (
        f"python scripts/make_tiny_models.py --only {name} --out {MODELS}"
    )


def test_the_default_model_is_our_own() -> None:
    assert REGISTRY.default_id == "cinecloud/shapes-t2v"
    assert REGISTRY.ids[:2] == ("cinecloud/tiny-wan", "cinecloud/shapes-t2v")


@pytest.mark.parametrize("model_id", FAMILIES)
def test_defaults_fit_the_limits(model_id: str) -> None:
    spec = REGISTRY.get(model_id)
    validate_params(spec, params(spec))


VALID = [
    ("cinecloud/tiny-ltx", {"width": 1280, "height": 704, "num_frames": 257}),
    ("cinecloud/tiny-ltx", {"width": 704, "height": 1280, "num_frames": 161}),
    ("cinecloud/tiny-cogvideox", {"width": 720, "height": 480, "num_frames": 49}),
    ("cinecloud/tiny-cogvideox", {"width": 1360, "height": 768, "num_frames": 81}),
    ("cinecloud/tiny-wan-i2v", {"width": 832, "height": 480, "num_frames": 81}),
    ("cinecloud/tiny-wan-i2v", {"width": 1280, "height": 720, "num_frames": 81}),
    ("cinecloud/tiny-svd", {"width": 1024, "height": 576, "num_frames": 25}),
    ("cinecloud/tiny-svd", {"width": 40, "height": 24, "num_frames": 14}),
    ("cinecloud/tiny-hunyuan", {"width": 1280, "height": 720, "num_frames": 129}),
]


@pytest.mark.parametrize(("model_id", "kw"), VALID)
def test_real_model_shapes_are_accepted(model_id: str, kw: dict[str, Any]) -> None:
    spec = REGISTRY.get(model_id)
    validate_params(spec, params(spec, **kw))


INVALID = [
    # (model, overrides, code, message fragment)
    ("cinecloud/tiny-ltx", {"num_frames": 13}, "invalid_num_frames", "8k+1"),
    ("cinecloud/tiny-ltx", {"num_frames": 265}, "invalid_num_frames", "9..257"),
    ("cinecloud/tiny-ltx", {"width": 48}, "invalid_size", "multiples of 32"),
    (
        "cinecloud/tiny-ltx",
        {"width": 1280, "height": 1280, "num_frames": 257},
        "invalid_size",
        "pixel-frames",
    ),
    ("cinecloud/tiny-cogvideox", {"num_frames": 13}, "invalid_num_frames", "8k+1"),
    ("cinecloud/tiny-cogvideox", {"num_frames": 169}, "invalid_num_frames", "9..161"),
    ("cinecloud/tiny-cogvideox", {"height": 40}, "invalid_size", "multiples of 16"),
    ("cinecloud/tiny-cogvideox", {"width": 1376}, "invalid_size", "1360x1360"),
    ("cinecloud/tiny-wan-i2v", {"num_frames": 8}, "invalid_num_frames", "4k+1"),
    ("cinecloud/tiny-wan-i2v", {"num_frames": 85}, "invalid_num_frames", "5..81"),
    ("cinecloud/tiny-wan-i2v", {"width": 40}, "invalid_size", "multiples of 16"),
    ("cinecloud/tiny-ltx-i2v", {"num_frames": 17, "height": 80}, "invalid_size", "32"),
    ("cinecloud/tiny-svd", {"num_frames": 1}, "invalid_num_frames", "2..25"),
    ("cinecloud/tiny-svd", {"num_frames": 26}, "invalid_num_frames", "2..25"),
    ("cinecloud/tiny-svd", {"width": 36}, "invalid_size", "multiples of 8"),
    ("cinecloud/tiny-svd", {"guidance_scale": 10.5}, "invalid_guidance_scale", "0..10"),
    ("cinecloud/tiny-hunyuan", {"num_frames": 131}, "invalid_num_frames", "4k+1"),
    ("cinecloud/tiny-hunyuan", {"num_frames": 133}, "invalid_num_frames", "5..129"),
    ("cinecloud/tiny-hunyuan", {"width": 24}, "invalid_size", "multiples of 16"),
    ("cinecloud/tiny-hunyuan", {"steps": 101}, "invalid_steps", "1..100"),
    ("cinecloud/tiny-ltx", {"steps": 1}, "invalid_steps", "2..100"),
    ("cinecloud/tiny-ltx-i2v", {"steps": 1}, "invalid_steps", "2..100"),
]


@pytest.mark.parametrize(("model_id", "kw", "code", "fragment"), INVALID)
def test_out_of_limit_requests_are_refused(
    model_id: str, kw: dict[str, Any], code: str, fragment: str
) -> None:
    spec = REGISTRY.get(model_id)
    with pytest.raises(ParamError) as info:
        validate_params(spec, params(spec, **kw))
    assert info.value.code == code
    assert fragment in info.value.message
    assert model_id in info.value.message


@pytest.mark.parametrize(
    ("rule", "seconds", "fps", "frames"),
    [("8k+1", 1, 8, 9), ("8k+1", 2, 24, 49), ("8k+1", 5, 16, 81), ("4k+1", 2, 8, 17)],
)
def test_frames_for_seconds(rule: str, seconds: int, fps: int, frames: int) -> None:
    assert frames_for_seconds(rule, seconds, fps) == frames


def test_seconds_pick_an_8k_plus_1_frame_count_for_ltx() -> None:
    spec = REGISTRY.get("cinecloud/tiny-ltx")
    resolved = resolve_params(
        spec,
        prompt="a fox",
        negative_prompt=None,
        size=None,
        seconds="2",
        num_frames=None,
        fps=24,
        steps=None,
        guidance_scale=None,
        seed=3,
    )
    assert resolved.num_frames == 49
    assert resolved.image_path is None


@pytest.mark.parametrize("model_id", ["cinecloud/tiny-hunyuan", "cinecloud/tiny-svd"])
def test_a_negative_prompt_the_model_cannot_use_is_refused(model_id: str) -> None:
    spec = REGISTRY.get(model_id)
    args: dict[str, Any] = {"prompt": "a fox", "seed": 3}
    with pytest.raises(ParamError) as info:
        resolve_params(spec, negative_prompt="blurry", **args)
    assert (info.value.code, info.value.param) == ("invalid_negative_prompt", "negative_prompt")
    assert model_id in info.value.message
    for empty in (None, ""):  # not sending one is fine
        assert resolve_params(spec, negative_prompt=empty, **args).negative_prompt == ""
    ltx = REGISTRY.get("cinecloud/tiny-ltx")
    assert resolve_params(ltx, negative_prompt="blurry", **args).negative_prompt == "blurry"


def test_step_cache_is_offered_where_the_denoiser_takes_cache_hooks() -> None:
    wan = REGISTRY.get("cinecloud/tiny-wan")
    validate_params(wan, params(wan, step_cache="first_block"))
    for model_id, value, message in [
        ("cinecloud/shapes-t2v", "first_block", "has no step cache"),
        ("cinecloud/tiny-svd", "first_block", "has no step cache"),
        ("cinecloud/tiny-wan", "everything", "step_cache must be one of"),
    ]:
        spec = REGISTRY.get(model_id)
        with pytest.raises(ParamError, match=message) as info:
            validate_params(spec, params(spec, step_cache=value))
        assert (info.value.code, info.value.param) == ("invalid_step_cache", "step_cache")


def test_unknown_input_image_mode_is_refused() -> None:
    spec = replace(REGISTRY.get("cinecloud/tiny-svd"), input_image="sometimes")
    with pytest.raises(ValueError, match="input_image"):
        Registry([spec], spec.id)


def test_text_models_take_no_image_by_default() -> None:
    assert REGISTRY.get("cinecloud/tiny-wan").input_image == "none"
