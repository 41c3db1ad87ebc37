"""The model registry and request validation (pure: no torch, no files)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cinecloud.config import EngineConfig
from cinecloud.engine.registry import (
    GenerationParams,
    ModelNotInstalled,
    ModelSpec,
    ParamError,
    Registry,
    UnknownModel,
    builtin_specs,
    default_registry,
    frames_for_seconds,
    resolve_params,
    validate_params,
)

pytestmark = pytest.mark.unit

MODELS = Path("/srv/cinecloud/models")


@pytest.fixture
def spec() -> ModelSpec:
    return builtin_specs(MODELS)[0]


def resolve(spec: ModelSpec, **kw: Any) -> GenerationParams:
    args: dict[str, Any] = {
        "prompt": "a red fox in the snow",
        "negative_prompt": None,
        "size": None,
        "seconds": None,
        "num_frames": None,
        "fps": None,
        "steps": None,
        "guidance_scale": None,
        "seed": 7,
    }
    args.update(kw)
    return resolve_params(spec, **args)


# ---------------------------------------------------------------- the table


def test_shapes_is_the_default_and_tiny_wan_is_registered() -> None:
    reg = default_registry(EngineConfig(models_dir=MODELS))
    assert reg.ids[:2] == ("cinecloud/tiny-wan", "cinecloud/shapes-t2v")
    assert reg.default_id == "cinecloud/shapes-t2v"
    assert reg.get(None) is reg.get("cinecloud/shapes-t2v")
    spec = reg.get("cinecloud/tiny-wan")
    assert spec.family == "wan-t2v"
    assert spec.source == MODELS / "tiny-wan"
    assert spec.build_command.startswith("python scripts/make_tiny_wan.py")
    assert str(MODELS / "tiny-wan") in spec.build_command  # not the repo default, so --out
    assert reg.list()[0] is spec
    assert "cinecloud/tiny-wan" in reg
    assert len(reg) == len(reg.ids) >= 2


def test_unknown_model_names_the_id_and_the_known_ones() -> None:
    reg = default_registry(EngineConfig(models_dir=MODELS))
    with pytest.raises(UnknownModel) as info:
        reg.get("acme/nope")
    assert isinstance(info.value, KeyError)
    assert "acme/nope" in str(info.value)
    assert "cinecloud/tiny-wan" in str(info.value)
    assert info.value.known[:2] == ("cinecloud/tiny-wan", "cinecloud/shapes-t2v")


def test_shapes_model_is_registered() -> None:
    spec = default_registry(EngineConfig(models_dir=MODELS)).get("cinecloud/shapes-t2v")
    assert spec.family == "shapes-t2v" and spec.source == MODELS / "shapes-t2v"
    assert (spec.defaults.width, spec.defaults.height, spec.defaults.num_frames) == (64, 64, 16)
    assert spec.defaults.display_size == (256, 256)


def test_unknown_default_is_refused() -> None:
    with pytest.raises(UnknownModel, match="acme/nope"):
        default_registry(EngineConfig(models_dir=MODELS, default_model="acme/nope"))


def test_duplicate_ids_are_refused(spec: ModelSpec) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        Registry([spec, spec], spec.id)


def test_unknown_frame_rule_is_refused(spec: ModelSpec) -> None:
    bad = replace(spec, limits=replace(spec.limits, frame_rule="16k+1"))
    with pytest.raises(ValueError, match="frame_rule"):
        Registry([bad], bad.id)


def test_model_not_installed_names_path_and_command(spec: ModelSpec) -> None:
    missing = spec.source / "model_index.json"
    exc = ModelNotInstalled(spec, missing)
    assert isinstance(exc, FileNotFoundError)
    assert str(missing) in str(exc)
    assert spec.build_command in str(exc)
    assert exc.path == missing
    assert exc.command == spec.build_command


# ---------------------------------------------------------------- resolving params


def test_defaults_fill_everything(spec: ModelSpec) -> None:
    p = resolve(spec)
    assert p == GenerationParams(
        prompt="a red fox in the snow",
        negative_prompt="",
        width=64,
        height=64,
        num_frames=9,
        fps=8,
        steps=4,
        guidance_scale=5.0,
        seed=7,
    )


def test_explicit_values_are_kept(spec: ModelSpec) -> None:
    p = resolve(
        spec,
        negative_prompt="blurry",
        size="128x32",
        num_frames=33,
        fps=24,
        steps=50,
        guidance_scale=0.0,
        seed=0,
    )
    assert (p.width, p.height, p.num_frames, p.fps, p.steps) == (128, 32, 33, 24, 50)
    assert (p.negative_prompt, p.guidance_scale, p.seed) == ("blurry", 0.0, 0)


@pytest.mark.parametrize(
    ("seconds", "fps", "frames"),
    [
        (1, 8, 9),
        ("4", 8, 33),
        (2, 16, 33),
        (1, 5, 5),  # 4k+1 >= 5 is 5 itself
        (1, 30, 33),
        (3, 10, 33),
    ],
)
def test_seconds_set_the_frame_count(
    spec: ModelSpec, seconds: int | str, fps: int, frames: int
) -> None:
    assert resolve(spec, seconds=seconds, fps=fps).num_frames == frames


@pytest.mark.parametrize(("n", "expected"), [(8, 9), (9, 9), (10, 13), (32, 33), (33, 33)])
def test_frames_for_seconds_4k1(n: int, expected: int) -> None:
    assert frames_for_seconds("4k+1", n, 1) == expected


def test_frames_for_seconds_any() -> None:
    assert frames_for_seconds("any", 3, 7) == 21


def test_seconds_and_frames_that_agree(spec: ModelSpec) -> None:
    assert resolve(spec, seconds="1", num_frames=9, fps=8).num_frames == 9
    assert resolve(spec, seconds=4, num_frames=33, fps=8).num_frames == 33


ERRORS: list[tuple[dict[str, Any], str, str | None, str]] = [
    # (request fields, code, param, part of the message)
    ({"size": "64"}, "invalid_size", "size", "64x64"),
    ({"size": "64x"}, "invalid_size", "size", "64x64"),
    ({"size": "64*64"}, "invalid_size", "size", "64x64"),
    ({"size": " 64x64"}, "invalid_size", "size", "64x64"),
    ({"size": "64x64\n"}, "invalid_size", "size", "64x64"),
    ({"size": "-64x64"}, "invalid_size", "size", "64x64"),
    ({"size": "60x64"}, "invalid_size", "size", "multiples of 16"),
    ({"size": "64x72"}, "invalid_size", "size", "multiples of 16"),
    ({"size": "512x64"}, "invalid_size", "size", "256x256"),
    ({"size": "0x64"}, "invalid_size", "size", "16x16"),
    (
        {"num_frames": 80},
        "invalid_num_frames",
        "num_frames",
        "num_frames must be 4k+1 for cinecloud/tiny-wan (got 80)",
    ),
    ({"num_frames": 1}, "invalid_num_frames", "num_frames", "5..33"),
    ({"num_frames": 37}, "invalid_num_frames", "num_frames", "5..33"),
    ({"num_frames": 0}, "invalid_num_frames", "num_frames", "4k+1"),
    ({"seconds": 9}, "invalid_seconds", "seconds", "73 frames"),
    ({"seconds": 2, "fps": 30}, "invalid_seconds", "seconds", "61 frames"),
    ({"seconds": 0}, "invalid_seconds", "seconds", "positive integer"),
    ({"seconds": -1}, "invalid_seconds", "seconds", "positive integer"),
    ({"seconds": "4.5"}, "invalid_seconds", "seconds", "positive integer"),
    ({"seconds": "four"}, "invalid_seconds", "seconds", "positive integer"),
    ({"seconds": ""}, "invalid_seconds", "seconds", "positive integer"),
    ({"seconds": True}, "invalid_seconds", "seconds", "positive integer"),
    ({"seconds": 4, "num_frames": 9}, "invalid_seconds", "seconds", "disagrees"),
    ({"seconds": 1, "num_frames": 33, "fps": 8}, "invalid_seconds", "seconds", "disagrees"),
    ({"seconds": 4, "num_frames": 80}, "invalid_num_frames", "num_frames", "4k+1"),
    ({"steps": 0}, "invalid_steps", "steps", "1..100"),
    ({"steps": 101}, "invalid_steps", "steps", "1..100"),
    ({"fps": 0}, "invalid_fps", "fps", "1..30"),
    ({"fps": 31}, "invalid_fps", "fps", "1..30"),
    ({"seconds": 1, "fps": 0}, "invalid_fps", "fps", "1..30"),
    ({"guidance_scale": -0.5}, "invalid_guidance_scale", "guidance_scale", "0..20"),
    ({"guidance_scale": 20.5}, "invalid_guidance_scale", "guidance_scale", "0..20"),
    ({"guidance_scale": float("nan")}, "invalid_guidance_scale", "guidance_scale", "0..20"),
    ({"seed": -1}, "invalid_seed", "seed", "seed"),
    ({"seed": 2**63}, "invalid_seed", "seed", "seed"),
]


@pytest.mark.parametrize(("fields", "code", "param", "text"), ERRORS)
def test_bad_requests_are_refused(
    spec: ModelSpec, fields: dict[str, Any], code: str, param: str | None, text: str
) -> None:
    with pytest.raises(ParamError) as info:
        resolve(spec, **fields)
    assert info.value.code == code
    assert info.value.param == param
    assert text in info.value.message
    assert str(info.value) == info.value.message


def test_pixel_frame_budget(spec: ModelSpec) -> None:
    small = replace(spec, limits=replace(spec.limits, max_pixel_frames=64 * 64 * 9))
    assert resolve(small, size="64x64", num_frames=9).num_frames == 9
    with pytest.raises(ParamError) as info:
        resolve(small, size="64x64", num_frames=13)
    assert info.value.code == "invalid_size"
    assert "pixel-frames" in info.value.message


def test_validate_params_checks_a_built_request(spec: ModelSpec) -> None:
    good = resolve(spec)
    validate_params(spec, good)
    with pytest.raises(ParamError, match="got 80"):
        validate_params(spec, replace(good, num_frames=80))
    with pytest.raises(ParamError, match="multiples of 16"):
        validate_params(spec, replace(good, width=40))
