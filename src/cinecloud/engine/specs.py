"""The records that describe a model and a request: limits, defaults, spec, parameters.

Torch-free; :mod:`cinecloud.engine.registry` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cinecloud.engine.memory import MemoryProfile

__all__ = [
    "INSTALLED_MARKER",
    "STEP_CACHES",
    "STEP_CACHE_FAMILIES",
    "GenerationParams",
    "ModelDefaults",
    "ModelLimits",
    "ModelSpec",
]

INSTALLED_MARKER = "model_index.json"  # every family loads a diffusers pipeline directory


@dataclass(frozen=True)
class ModelLimits:
    size_multiple: int
    min_side: int
    max_width: int
    max_height: int
    frame_rule: str  # a key of FRAME_RULES: "4k+1", "8k+1" or "any"
    min_frames: int
    max_frames: int
    max_pixel_frames: int  # width * height * num_frames
    max_steps: int
    min_fps: int
    max_fps: int
    max_guidance: float
    min_steps: int = 1


@dataclass(frozen=True)
class ModelDefaults:
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance_scale: float
    # The size render shows the video at (it may upscale to it); None keeps the generated size.
    display_size: tuple[int, int] | None


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    source: Path
    description: str
    defaults: ModelDefaults
    limits: ModelLimits
    build_command: str
    owned_by: str = "cinecloud"
    input_image: str = "none"  # a key of INPUT_IMAGE: whether a conditioning image is taken
    memory: MemoryProfile | None = None  # GPU needs, for the memory plan (real checkpoints)

    def default_params(self, prompt: str, seed: int = 0, **changes: Any) -> GenerationParams:
        """Parameters for ``prompt`` at this model's defaults, with ``changes`` applied."""
        d = self.defaults
        params = GenerationParams(
            prompt=prompt,
            negative_prompt="",
            width=d.width,
            height=d.height,
            num_frames=d.num_frames,
            fps=d.fps,
            steps=d.steps,
            guidance_scale=d.guidance_scale,
            seed=seed,
        )
        return replace(params, **changes)


# Opt-in lossy step caches a request may ask for: "first_block" is diffusers' First Block
# Cache (a step whose first block changes less than the engine's threshold reuses the
# last step's residual for the rest of the stack).
STEP_CACHES: tuple[str, ...] = ("off", "first_block")
# Families whose transformer takes diffusers' cache hooks.
STEP_CACHE_FAMILIES = frozenset(
    {"wan-t2v", "wan-i2v", "ltx-t2v", "ltx-i2v", "cogvideox-t2v", "hunyuan-t2v"}
)


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance_scale: float
    seed: int
    image_path: str | None = None  # local file of the conditioning image (image-to-video)
    step_cache: str = "off"  # a key of STEP_CACHES: an opt-in, lossy step cache
    # local file of a denoise checkpoint to resume from (engine.checkpoint); set by the worker
    checkpoint_path: str | None = None
