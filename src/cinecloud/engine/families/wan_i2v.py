"""Wan 2.1 / 2.2 image-to-video through diffusers' ``WanImageToVideoPipeline``.

Three timed stages, as for Wan text-to-video: the encode stage runs the text encoder and
reads the conditioning image; the pipeline with ``output_type="latent"`` runs the denoise
loop; the VAE decode is done here as the pipeline does it. The image's own encoders run
inside the denoise stage: the pipeline VAE-encodes the image while preparing its latents,
and it refuses precomputed CLIP ``image_embeds`` alongside the image it needs for that, so
Wan 2.1's CLIP image encode (a transformer with ``image_dim``) is timed as denoise too.

The conditioning image is read from ``params.image_path`` and resized by the pipeline to
the requested width and height, as diffusers does for every image-to-video pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers.pipelines.wan.pipeline_wan import WanPipeline
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline

from cinecloud.engine.families.base import require_image
from cinecloud.engine.families.wan import WanFamily, decode_wan_latents
from cinecloud.engine.registry import GenerationParams

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["WanI2V", "WanI2VEmbeds", "decode_wan_latents", "require_image"]


@dataclass(frozen=True)
class WanI2VEmbeds:
    image: Image
    prompt: torch.Tensor
    negative: torch.Tensor | None  # None when guidance is off (guidance_scale <= 1)


class WanI2V(WanFamily[WanImageToVideoPipeline]):
    """The ``wan-i2v`` family: Wan image-to-video; the image is required.

    The pipeline loads from a local directory; the VAE stays float32, as Wan's does.
    """

    name = "wan-i2v"
    label = "wan-i2v"
    pipeline_class = WanImageToVideoPipeline
    max_sequence_length = 512

    def _encode_text(self, text: str) -> torch.Tensor:
        embeds = WanPipeline._get_t5_prompt_embeds(
            self.pipe,  # type: ignore[arg-type]
            prompt=text,
            max_sequence_length=self.max_sequence_length,
            device=self._device,
        )
        return embeds  # type: ignore[no-any-return]

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> WanI2VEmbeds:
        self._check_shape(params)
        image = require_image(params, family=self.name)
        with torch.inference_mode():
            # WanPipeline's text encoding is the same code (diffusers copies it), but it
            # cleans text with ftfy only when installed, where the image-to-video module
            # needs ftfy unconditionally.
            prompt = self._encode_text(params.prompt)
            negative = None
            if params.guidance_scale > 1.0:
                negative = self._encode_text(params.negative_prompt)
        self._sync()
        return WanI2VEmbeds(image, prompt, negative)

    def denoise(
        self, encoded: WanI2VEmbeds, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> torch.Tensor:
        self._check_shape(params)
        (latents,) = self._denoise_text(
            params,
            on_step,
            image=encoded.image,
            prompt_embeds=encoded.prompt,
            negative_prompt_embeds=encoded.negative,
        )
        return latents  # type: ignore[no-any-return]

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        frames = decode_wan_latents(self.pipe, latents)
        self._sync()
        return frames
