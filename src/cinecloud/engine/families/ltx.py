"""LTX-Video through diffusers' ``LTXPipeline`` and ``LTXImageToVideoPipeline``.

Three timed stages, as for Wan: ``encode_prompt`` for the text (and, for image-to-video,
reading the conditioning image, which the pipeline VAE-encodes and resizes to the
requested size inside its latent preparation, so that is timed as denoise), the pipeline with
``output_type="latent"`` for the denoise loop, and the VAE decode done here as the
pipeline does it. LTX returns its latents packed as a token sequence, so the denoise
stage hands the latent grid's shape to the decode stage along with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline
from diffusers.pipelines.ltx.pipeline_ltx_image2video import LTXImageToVideoPipeline

from cinecloud.engine.families.base import (
    PipelineFamily,
    check_frames,
    check_size,
    decoded_to_uint8,
    require_image,
)
from cinecloud.engine.registry import GenerationParams

__all__ = ["LTXI2V", "LTXT2V", "LTXEmbeds", "LTXLatents"]


@dataclass(frozen=True)
class LTXEmbeds:
    prompt: torch.Tensor
    prompt_mask: torch.Tensor
    negative: torch.Tensor | None  # None when guidance is off (guidance_scale <= 1)
    negative_mask: torch.Tensor | None
    image: Any = None  # the conditioning PIL image, for image-to-video


@dataclass(frozen=True)
class LTXLatents:
    packed: torch.Tensor  # (B, tokens, channels), as the pipeline returns them
    frames: int  # the latent grid: frames, height, width
    height: int
    width: int


class LTXT2V(PipelineFamily[Any]):
    """The ``ltx-t2v`` family: LTX-Video text-to-video.

    The decode runs at ``decode_timestep`` 0 (no decode noise), the pipeline's default.
    """

    name = "ltx-t2v"
    label = "ltx-t2v"
    latent_layout = None  # packed tokens: no cheap preview
    pipeline_class: Any = LTXPipeline
    max_sequence_length = 128

    def _grid(self, params: GenerationParams) -> tuple[int, int, int]:
        """The latent grid for ``params``; refuses shapes the pipeline would round."""
        pipe = self.pipe
        temporal = int(pipe.vae_temporal_compression_ratio)
        spatial = int(pipe.vae_spatial_compression_ratio)
        multiple = spatial * int(pipe.transformer_spatial_patch_size)
        check_frames(params, temporal, label=self.label)
        check_size(params, multiple, label=self.label)
        if pipe.scheduler.config.get("shift_terminal") and params.steps < 2:
            # The stretch to shift_terminal divides by zero on a one-step schedule.
            raise ValueError(f"steps must be at least 2 for {self.name} (got {params.steps})")
        frames = (params.num_frames - 1) // temporal + 1
        return frames, params.height // spatial, params.width // spatial

    def _image(self, params: GenerationParams) -> Any:
        """The conditioning image; text-to-video takes none."""
        return None

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> LTXEmbeds:
        self._grid(params)
        image = self._image(params)
        prompt, mask, negative, negative_mask = self._encode_prompt(params)
        return LTXEmbeds(prompt, mask, negative, negative_mask, image)

    def denoise(
        self, encoded: LTXEmbeds, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> LTXLatents:
        frames, height, width = self._grid(params)
        extra = {} if encoded.image is None else {"image": encoded.image}
        (latents,) = self._denoise_text(
            params,
            on_step,
            **extra,
            frame_rate=params.fps,
            prompt_embeds=encoded.prompt,
            prompt_attention_mask=encoded.prompt_mask,
            negative_prompt_embeds=encoded.negative,
            negative_prompt_attention_mask=encoded.negative_mask,
        )
        return LTXLatents(latents, frames, height, width)

    def decode(self, latents: LTXLatents) -> np.ndarray:
        """Latents to uint8 frames (T, H, W, 3), as ``LTXPipeline`` decodes them."""
        pipe, vae = self.pipe, self.pipe.vae
        with torch.inference_mode():
            grid = pipe._unpack_latents(
                latents.packed,
                latents.frames,
                latents.height,
                latents.width,
                pipe.transformer_spatial_patch_size,
                pipe.transformer_temporal_patch_size,
            )
            grid = pipe._denormalize_latents(
                grid, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
            ).to(vae.dtype)
            timestep = None
            if vae.config.timestep_conditioning:
                timestep = torch.zeros(grid.shape[0], device=grid.device, dtype=grid.dtype)
            video = vae.decode(grid, timestep, return_dict=False)[0]
            frames = decoded_to_uint8(pipe.video_processor, video)
        self._sync()
        return frames


class LTXI2V(LTXT2V):
    """The ``ltx-i2v`` family: LTX-Video image-to-video; the image is required."""

    name = "ltx-i2v"
    label = "ltx-i2v"
    pipeline_class = LTXImageToVideoPipeline

    def _image(self, params: GenerationParams) -> Any:
        return require_image(params, family=self.name)
