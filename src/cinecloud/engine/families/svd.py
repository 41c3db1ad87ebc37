"""Stable Video Diffusion image-to-video through diffusers' ``StableVideoDiffusionPipeline``.

SVD takes no text: the prompt and negative prompt of a request are not used. Its
conditioning is the image, which the pipeline CLIP-encodes and VAE-encodes inside its
call; the pipeline takes no precomputed embeddings, so the encode stage only reads the
image, and both image encodes are timed as denoise. The denoise runs with
``output_type="latent"``; the decode is done here as the pipeline does it, all frames in
one VAE chunk (the pipeline's default).

``guidance_scale`` is SVD's ``max_guidance_scale``: guidance ramps linearly over the
frames from ``min_guidance_scale`` 1.0 (the pipeline's default) to it. ``fps`` is the
pipeline's ``fps`` micro-condition. The image is resized by the pipeline to the requested
width and height.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)

from cinecloud.engine.families.base import (
    PipelineFamily,
    check_size,
    decoded_to_uint8,
    require_image,
)
from cinecloud.engine.registry import GenerationParams

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["SVDImage", "StableVideoDiffusion"]

MIN_GUIDANCE = 1.0


@dataclass(frozen=True)
class SVDImage:
    image: Image


class StableVideoDiffusion(PipelineFamily[StableVideoDiffusionPipeline]):
    """The ``svd`` family: Stable Video Diffusion (SVD, SVD-XT); the image is required."""

    name = "svd"
    label = "svd"
    latent_layout = "BFCHW"
    pipeline_class = StableVideoDiffusionPipeline
    scales_given_latents = True  # its prepare_latents multiplies by init_noise_sigma

    def _check_shape(self, params: GenerationParams) -> None:
        check_size(params, int(self.pipe.vae_scale_factor), label=self.label)

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> SVDImage:
        self._check_shape(params)
        return SVDImage(require_image(params, family=self.name))

    def denoise(
        self, encoded: SVDImage, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> torch.Tensor:
        self._check_shape(params)
        latents = self._denoise_latents(
            params,
            on_step,
            encoded.image,
            min_guidance_scale=MIN_GUIDANCE,
            max_guidance_scale=params.guidance_scale,
            fps=params.fps,
        )
        if not isinstance(latents, torch.Tensor):
            raise TypeError(f"expected latents from the pipeline, got {type(latents).__name__}")
        return latents

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, F, C, H, W) to uint8 frames (T, H, W, 3), as the pipeline decodes."""
        pipe = self.pipe
        num_frames = latents.shape[1]
        with torch.inference_mode():
            video = pipe.decode_latents(latents.to(pipe.vae.dtype), num_frames, num_frames)
            frames = decoded_to_uint8(pipe.video_processor, video)
        self._sync()
        return frames
