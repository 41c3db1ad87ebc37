"""The model registry: which models exist, their defaults and limits, and request validation.

This module is pure and imports neither torch nor diffusers: the API process uses it to
check a request against the chosen model before a job is stored.

To add a model, append a :class:`ModelSpec` to :func:`builtin_specs` (and, for a new
family, register the family in :mod:`cinecloud.engine.families`).
"""

from __future__ import annotations

import builtins
import math
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

from cinecloud.config import EngineConfig, repo_root
from cinecloud.engine.catalog import REAL_MODELS, RealModel, fetch_command, real_model_source
from cinecloud.engine.specs import (
    INSTALLED_MARKER,
    STEP_CACHE_FAMILIES,
    STEP_CACHES,
    GenerationParams,
    ModelDefaults,
    ModelLimits,
    ModelSpec,
)

__all__ = [
    "FRAME_RULES",
    "INPUT_IMAGE",
    "MAX_SEED",
    "STEP_CACHES",
    "GenerationParams",
    "ModelDefaults",
    "ModelLimits",
    "ModelNotInstalled",
    "ModelSpec",
    "ParamError",
    "Registry",
    "UnknownModel",
    "builtin_specs",
    "check_installed",
    "default_registry",
    "frames_for_seconds",
    "resolve_params",
    "validate_params",
]

MAX_SEED = 2**63 - 1  # seeds must fit a signed 64-bit column
_SIZE_RE = re.compile(r"([0-9]+)x([0-9]+)")
_SECONDS_RE = re.compile(r"[0-9]+")


# ---------------------------------------------------------------- errors


class ParamError(ValueError):
    """A request parameter the chosen model cannot accept."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


class UnknownModel(KeyError):
    """No model with this id is registered."""

    def __init__(self, model_id: str, known: Iterable[str]) -> None:
        self.model_id = model_id
        self.known = tuple(known)
        self.message = f"unknown model {model_id!r}; known models: {', '.join(self.known)}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class ModelNotInstalled(FileNotFoundError):
    """The model's files are not on this machine."""

    def __init__(self, spec: ModelSpec, missing: Path) -> None:
        self.model_id = spec.id
        self.path = missing
        self.command = spec.build_command
        self.message = (
            f"model {spec.id} is not installed: {missing} not found; "
            f"build it with: {spec.build_command}"
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------- frame rules

FRAME_RULES = ("4k+1", "8k+1", "any")
INPUT_IMAGE = ("none", "optional", "required")


def _frames_valid(rule: str, n: int) -> bool:
    if rule == "4k+1":
        return n % 4 == 1
    if rule == "8k+1":
        return n % 8 == 1
    if rule == "any":
        return True
    raise ValueError(f"unknown frame_rule {rule!r}; known: {', '.join(FRAME_RULES)}")


def frames_for_seconds(rule: str, seconds: int, fps: int) -> int:
    """The smallest frame count valid under ``rule`` with at least ``seconds * fps`` frames.

    For "4k+1" that is ``4 * ceil((seconds * fps - 1) / 4) + 1``: 4 s at 8 fps gives 33;
    "8k+1" is the same with 8.
    """
    wanted = seconds * fps
    if rule == "4k+1":
        return 4 * math.ceil((wanted - 1) / 4) + 1
    if rule == "8k+1":
        return 8 * math.ceil((wanted - 1) / 8) + 1
    if rule == "any":
        return wanted
    raise ValueError(f"unknown frame_rule {rule!r}; known: {', '.join(FRAME_RULES)}")


# ---------------------------------------------------------------- the registry


class Registry:
    """The models this deployment knows, in registration order."""

    def __init__(self, specs: Iterable[ModelSpec], default_id: str) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.id in self._specs:
                raise ValueError(f"model {spec.id!r} is registered twice")
            if spec.limits.frame_rule not in FRAME_RULES:
                raise ValueError(
                    f"model {spec.id!r} has unknown frame_rule {spec.limits.frame_rule!r}"
                )
            if spec.input_image not in INPUT_IMAGE:
                raise ValueError(f"model {spec.id!r} has unknown input_image {spec.input_image!r}")
            self._specs[spec.id] = spec
        if default_id not in self._specs:
            raise UnknownModel(default_id, self._specs)
        self._default_id = default_id

    @property
    def default_id(self) -> str:
        return self._default_id

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def get(self, model_id: str | None) -> ModelSpec:
        """The spec for ``model_id``; ``None`` means the default model."""
        key = self._default_id if model_id is None else model_id
        try:
            return self._specs[key]
        except KeyError:
            raise UnknownModel(key, self._specs) from None

    def list(self) -> builtins.list[ModelSpec]:
        return builtins.list(self._specs.values())

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    def __len__(self) -> int:
        return len(self._specs)


def _tiny_wan(models_dir: Path) -> ModelSpec:
    source = models_dir / "tiny-wan"
    command = "python scripts/make_tiny_wan.py"
    if source.resolve() != (repo_root() / "models" / "tiny-wan").resolve():
        command += f" --out {shlex.quote(str(source))}"
    return ModelSpec(
        id="cinecloud/tiny-wan",
        family="wan-t2v",
        source=source,
        description="Tiny random-weight Wan text-to-video model for local runs and tests",
        defaults=ModelDefaults(
            width=64,
            height=64,
            num_frames=9,
            fps=8,
            steps=4,
            guidance_scale=5.0,
            display_size=None,
        ),
        limits=ModelLimits(
            size_multiple=16,
            min_side=16,
            max_width=256,
            max_height=256,
            frame_rule="4k+1",
            min_frames=5,
            max_frames=33,
            max_pixel_frames=256 * 256 * 33,
            max_steps=100,
            min_fps=1,
            max_fps=30,
            max_guidance=20.0,
        ),
        build_command=command,
    )


def _shapes_t2v(models_dir: Path) -> ModelSpec:
    source = models_dir / "shapes-t2v"
    command = (
        "python scripts/train_shapes.py --config full --total-steps 18000 --max-steps 18000 "
        f"--compile --export {shlex.quote(str(source))}"
    )
    return ModelSpec(
        id="cinecloud/shapes-t2v",
        family="shapes-t2v",
        source=source,
        description="cinecloud's own text-to-video model: one coloured shape moving on a "
        "background, 16 frames at 64x64",
        defaults=ModelDefaults(
            width=64,
            height=64,
            num_frames=16,
            fps=8,
            steps=24,
            guidance_scale=3.0,
            display_size=(256, 256),
        ),
        limits=ModelLimits(
            size_multiple=64,
            min_side=64,
            max_width=64,
            max_height=64,
            frame_rule="any",
            min_frames=16,
            max_frames=16,
            max_pixel_frames=64 * 64 * 16,
            max_steps=100,
            min_fps=1,
            max_fps=30,
            max_guidance=15.0,
        ),
        build_command=command,
    )


def _family_limits(
    multiple: int,
    frames: tuple[str, int, int],
    max_area: tuple[int, int],
    max_guidance: float = 20.0,
    min_steps: int = 1,
) -> ModelLimits:
    """A real model's limits: side multiple, (frame rule, min, max), trained max size.

    Either side may be the long one (up to the long side of ``max_area``); the
    pixel-frame budget is ``max_area`` at the most frames.
    """
    rule, min_frames, max_frames = frames
    long_side = max(max_area)
    return ModelLimits(
        size_multiple=multiple,
        min_side=multiple if multiple >= 16 else 16,
        max_width=long_side,
        max_height=long_side,
        frame_rule=rule,
        min_frames=min_frames,
        max_frames=max_frames,
        max_pixel_frames=max_area[0] * max_area[1] * max_frames,
        max_steps=100,
        min_fps=1,
        max_fps=30,
        max_guidance=max_guidance,
        min_steps=min_steps,
    )


def _tiny_spec(
    models_dir: Path,
    name: str,
    family: str,
    what: str,
    defaults: tuple[int, int, int, float],
    limits: ModelLimits,
    input_image: str,
) -> ModelSpec:
    """A tiny random-weight checkpoint of a real family, built by make_tiny_models.py.

    ``defaults`` is (side, num_frames, steps, guidance), sized so a CPU run is quick.
    """
    command = f"python scripts/make_tiny_models.py --only {name}"
    if models_dir.resolve() != (repo_root() / "models").resolve():
        command += f" --out {shlex.quote(str(models_dir))}"
    side, num_frames, steps, guidance = defaults
    return ModelSpec(
        id=f"cinecloud/tiny-{name}",
        family=family,
        source=models_dir / f"tiny-{name}",
        description=f"Tiny random-weight {what} model for tests",
        defaults=ModelDefaults(side, side, num_frames, 8, steps, guidance, None),
        limits=limits,
        build_command=command,
        input_image=input_image,
    )


# The real families' limits. Sides are multiples of the VAE's spatial factor times the
# transformer's patch; frame rules follow the VAE's temporal factor.
# LTX-Video: 32x spatial / 8x temporal VAE; up to 1280x720 and 257 frames.
# LTX's scheduler stretches its shifted sigmas to a terminal value: one step divides by zero.
_LTX_LIMITS = _family_limits(32, ("8k+1", 9, 257), (1280, 720), min_steps=2)
# CogVideoX: 8x VAE and 2x2 patch; 4x temporal, decoded in pairs of latent frames after
# the first, so 8k+1 frames (49 for 1.0; 81, 161 for 1.5); up to 1360x768 (1.5).
_COGVIDEOX_LIMITS = _family_limits(16, ("8k+1", 9, 161), (1360, 768))
# Wan 2.1 / 2.2 image-to-video: 8x VAE and 2x2 patch; 4x temporal; up to 1280x720, 81.
_WAN_I2V_LIMITS = _family_limits(16, ("4k+1", 5, 81), (1280, 720))
# Stable Video Diffusion: 8x VAE (the pipeline checks multiples of 8); any frame count,
# 14 (SVD) or 25 (SVD-XT) as trained, at 1024x576.
_SVD_LIMITS = _family_limits(8, ("any", 2, 25), (1024, 576), max_guidance=10.0)
# HunyuanVideo: 8x VAE and 2x2 patch; 4x temporal; up to 1280x720 and 129 frames.
_HUNYUAN_LIMITS = _family_limits(16, ("4k+1", 5, 129), (1280, 720))


# (name, family, what, (side, num_frames, steps, guidance), limits, input_image)
_FAMILY_TABLE: tuple[tuple[str, str, str, tuple[int, int, int, float], ModelLimits, str], ...] = (
    ("ltx", "ltx-t2v", "LTX-Video T2V", (64, 9, 4, 3.0), _LTX_LIMITS, "none"),
    ("cogvideox", "cogvideox-t2v", "CogVideoX T2V", (32, 9, 4, 6.0), _COGVIDEOX_LIMITS, "none"),
    ("wan-i2v", "wan-i2v", "Wan I2V", (32, 5, 4, 5.0), _WAN_I2V_LIMITS, "required"),
    ("ltx-i2v", "ltx-i2v", "LTX-Video I2V", (64, 9, 4, 3.0), _LTX_LIMITS, "required"),
    ("svd", "svd", "Stable Video Diffusion I2V", (32, 4, 4, 3.0), _SVD_LIMITS, "required"),
    ("hunyuan", "hunyuan-t2v", "HunyuanVideo T2V", (32, 5, 4, 6.0), _HUNYUAN_LIMITS, "none"),
)


_REAL_LIMITS: dict[str, ModelLimits] = {
    "wan-t2v": _WAN_I2V_LIMITS,  # Wan T2V and I2V share the VAE and the patch
    "wan-i2v": _WAN_I2V_LIMITS,
    "ltx": _LTX_LIMITS,
    "cogvideox": _COGVIDEOX_LIMITS,
    "hunyuan": _HUNYUAN_LIMITS,
    "svd": _SVD_LIMITS,
}


def _real_spec(model: RealModel, models_dir: Path) -> ModelSpec:
    """A published checkpoint (:mod:`cinecloud.engine.catalog`), from disk or the HF cache."""
    width, height, num_frames, fps, steps, guidance = model.defaults
    return ModelSpec(
        id=model.model_id,
        family=model.family,
        source=real_model_source(model, models_dir),
        description=model.what,
        defaults=ModelDefaults(width, height, num_frames, fps, steps, guidance, None),
        limits=_REAL_LIMITS[model.limits],
        build_command=fetch_command(model, models_dir),
        owned_by=model.repo.split("/")[0],
        input_image=model.input_image,
        memory=model.memory,
    )


def builtin_specs(models_dir: Path) -> builtins.list[ModelSpec]:
    """The models cinecloud knows, with their files under ``models_dir``.

    Ours first (the default, then the tiny test checkpoints of each family), then the
    published checkpoints of the real families.
    """
    families = [_tiny_spec(models_dir, *row) for row in _FAMILY_TABLE]
    real = [_real_spec(m, models_dir) for m in REAL_MODELS]
    return [_tiny_wan(models_dir), _shapes_t2v(models_dir), *families, *real]


def default_registry(cfg: EngineConfig) -> Registry:
    return Registry(builtin_specs(cfg.models_dir), cfg.default_model)


def check_installed(spec: ModelSpec) -> None:
    """Raise :class:`ModelNotInstalled` unless the model's files are present."""
    marker = spec.source / INSTALLED_MARKER
    if not marker.is_file():
        raise ModelNotInstalled(spec, marker)


# ---------------------------------------------------------------- request validation


def _parse_size(size: str) -> tuple[int, int]:
    match = _SIZE_RE.fullmatch(size)
    if match is None:
        raise ParamError("invalid_size", f"size must look like 64x64 (got {size!r})", "size")
    return int(match.group(1)), int(match.group(2))


def _parse_seconds(seconds: str | int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, str | int):
        raise ParamError(
            "invalid_seconds", f"seconds must be a positive integer (got {seconds!r})", "seconds"
        )
    text = str(seconds)
    if not _SECONDS_RE.fullmatch(text) or int(text) < 1:
        raise ParamError(
            "invalid_seconds", f"seconds must be a positive integer (got {seconds!r})", "seconds"
        )
    return int(text)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _frames_from_seconds(spec: ModelSpec, seconds: int, fps: int) -> int:
    lim = spec.limits
    frames = frames_for_seconds(lim.frame_rule, seconds, fps)
    if not lim.min_frames <= frames <= lim.max_frames:
        raise ParamError(
            "invalid_seconds",
            f"seconds={seconds} at {fps} fps needs {frames} frames; "
            f"{spec.id} allows {lim.min_frames}..{lim.max_frames}",
            "seconds",
        )
    return frames


def _check_seconds_agree(seconds: int, num_frames: int, fps: int) -> None:
    if _round_half_up(num_frames / fps) != seconds:
        raise ParamError(
            "invalid_seconds",
            f"seconds={seconds} disagrees with num_frames={num_frames} at {fps} fps "
            f"({num_frames / fps:.3g} s)",
            "seconds",
        )


def _check_size(spec: ModelSpec, width: int, height: int) -> None:
    lim = spec.limits
    m = lim.size_multiple
    if width % m or height % m:
        raise ParamError(
            "invalid_size",
            f"width and height must be multiples of {m} for {spec.id} (got {width}x{height})",
            "size",
        )
    if not (lim.min_side <= width <= lim.max_width and lim.min_side <= height <= lim.max_height):
        raise ParamError(
            "invalid_size",
            f"size must be between {lim.min_side}x{lim.min_side} and "
            f"{lim.max_width}x{lim.max_height} for {spec.id} (got {width}x{height})",
            "size",
        )


def _check_frames(spec: ModelSpec, num_frames: int) -> None:
    lim = spec.limits
    if not _frames_valid(lim.frame_rule, num_frames):
        raise ParamError(
            "invalid_num_frames",
            f"num_frames must be {lim.frame_rule} for {spec.id} (got {num_frames})",
            "num_frames",
        )
    if not lim.min_frames <= num_frames <= lim.max_frames:
        raise ParamError(
            "invalid_num_frames",
            f"num_frames must be in {lim.min_frames}..{lim.max_frames} for {spec.id} "
            f"(got {num_frames})",
            "num_frames",
        )


def _check_budget(spec: ModelSpec, p: GenerationParams) -> None:
    total = p.width * p.height * p.num_frames
    if total > spec.limits.max_pixel_frames:
        raise ParamError(
            "invalid_size",
            f"{p.width}x{p.height} x {p.num_frames} frames is {total} pixel-frames; "
            f"{spec.id} allows at most {spec.limits.max_pixel_frames}",
            "size",
        )


def _check_fps(spec: ModelSpec, fps: int) -> None:
    lim = spec.limits
    if not lim.min_fps <= fps <= lim.max_fps:
        raise ParamError(
            "invalid_fps",
            f"fps must be in {lim.min_fps}..{lim.max_fps} for {spec.id} (got {fps})",
            "fps",
        )


def _check_scalars(spec: ModelSpec, p: GenerationParams) -> None:
    lim = spec.limits
    if not lim.min_steps <= p.steps <= lim.max_steps:
        raise ParamError(
            "invalid_steps",
            f"steps must be in {lim.min_steps}..{lim.max_steps} for {spec.id} (got {p.steps})",
            "steps",
        )
    if not 0.0 <= p.guidance_scale <= lim.max_guidance:
        raise ParamError(
            "invalid_guidance_scale",
            f"guidance_scale must be in 0..{lim.max_guidance:g} for {spec.id} "
            f"(got {p.guidance_scale})",
            "guidance_scale",
        )
    if not 0 <= p.seed <= MAX_SEED:
        raise ParamError("invalid_seed", f"seed must be in 0..2**63-1 (got {p.seed})", "seed")


def _check_step_cache(spec: ModelSpec, step_cache: str) -> None:
    if step_cache not in STEP_CACHES:
        raise ParamError(
            "invalid_step_cache",
            f"step_cache must be one of {', '.join(STEP_CACHES)} (got {step_cache!r})",
            "step_cache",
        )
    if step_cache != "off" and spec.family not in STEP_CACHE_FAMILIES:
        raise ParamError(
            "invalid_step_cache",
            f"{spec.id} has no step cache: its denoiser takes no diffusers cache hooks",
            "step_cache",
        )


def validate_params(spec: ModelSpec, params: GenerationParams) -> None:
    """Raise :class:`ParamError` unless ``params`` fit ``spec``'s limits."""
    _check_size(spec, params.width, params.height)
    _check_frames(spec, params.num_frames)
    _check_budget(spec, params)
    _check_fps(spec, params.fps)
    _check_scalars(spec, params)
    _check_step_cache(spec, params.step_cache)


# Families whose pipeline has no use for a negative prompt, and why: a request that
# sends one is refused rather than silently ignored.
NO_NEGATIVE_PROMPT: dict[str, str] = {
    "hunyuan-t2v": "is guidance-distilled: it takes no negative prompt",
    "svd": "takes no text: it is conditioned on the image alone",
}


def resolve_params(
    spec: ModelSpec,
    *,
    prompt: str,
    seed: int,
    negative_prompt: str | None = None,
    size: str | None = None,
    seconds: str | int | None = None,
    num_frames: int | None = None,
    fps: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    step_cache: str | None = None,
) -> GenerationParams:
    """Fill a request's missing fields from ``spec``'s defaults and check it fits the model.

    ``seconds`` sets the frame count when ``num_frames`` is not given; when both are given,
    ``num_frames / fps`` rounded to the nearest integer must equal ``seconds``.
    """
    d = spec.defaults
    if negative_prompt and spec.family in NO_NEGATIVE_PROMPT:
        why = NO_NEGATIVE_PROMPT[spec.family]
        raise ParamError("invalid_negative_prompt", f"{spec.id} {why}", "negative_prompt")
    width, height = (d.width, d.height) if size is None else _parse_size(size)
    _check_size(spec, width, height)
    fps = d.fps if fps is None else fps
    _check_fps(spec, fps)
    secs = None if seconds is None else _parse_seconds(seconds)
    if num_frames is not None:
        _check_frames(spec, num_frames)
        if secs is not None:
            _check_seconds_agree(secs, num_frames, fps)
    elif secs is not None:
        num_frames = _frames_from_seconds(spec, secs, fps)
    else:
        num_frames = d.num_frames
    params = GenerationParams(
        prompt=prompt,
        negative_prompt="" if negative_prompt is None else negative_prompt,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        steps=d.steps if steps is None else steps,
        guidance_scale=d.guidance_scale if guidance_scale is None else guidance_scale,
        seed=seed,
        step_cache="off" if step_cache is None else step_cache,
    )
    validate_params(spec, params)
    return params
