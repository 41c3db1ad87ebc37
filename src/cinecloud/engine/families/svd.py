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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)

from cinecloud.engine.families.wan import TORCH_DTYPES
from cinecloud.engine.families.wan_i2v import require_image
from cinecloud.engine.registry import GenerationParams

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["SVDImage", "StableVideoDiffusion"]

MIN_GUIDANCE = 1.0


@dataclass(frozen=True)
class SVDImage:
    image: Image


class StableVideoDiffusion:
    """The ``svd`` family: Stable Video Diffusion (SVD, SVD-XT); the image is required."""

    name = "svd"

    def __init__(self) -> None:
        self._pipe: StableVideoDiffusionPipeline | None = None
        self._device = torch.device("cpu")

    # ------------------------------------------------------------ load

    def load(self, source: Path, *, device: str, dtype: str) -> None:
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)} (got {dtype!r})")
        pipe = StableVideoDiffusionPipeline.from_pretrained(
            str(source), dtype=TORCH_DTYPES[dtype], local_files_only=True
        )
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = torch.device(device)

    @property
    def pipe(self) -> StableVideoDiffusionPipeline:
        if self._pipe is None:
            raise RuntimeError("svd pipeline is not loaded; call load() first")
        return self._pipe

    def _check_shape(self, params: GenerationParams) -> None:
        multiple = int(self.pipe.vae_scale_factor)
        if params.width % multiple or params.height % multiple:
            raise ValueError(
                f"width and height must be multiples of {multiple} for svd "
                f"(got {params.width}x{params.height})"
            )

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> SVDImage:
        self._check_shape(params)
        return SVDImage(require_image(params, family=self.name))

    def denoise(
        self, encoded: SVDImage, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> torch.Tensor:
        self._check_shape(params)

        def step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1)
            return {}

        generator = torch.Generator(self._device).manual_seed(params.seed)
        with torch.inference_mode():
            latents = self.pipe(
                encoded.image,
                height=params.height,
                width=params.width,
                num_frames=params.num_frames,
                num_inference_steps=params.steps,
                min_guidance_scale=MIN_GUIDANCE,
                max_guidance_scale=params.guidance_scale,
                fps=params.fps,
                generator=generator,
                output_type="latent",
                return_dict=False,
                callback_on_step_end=step_end,
                callback_on_step_end_tensor_inputs=[],
            )
        self._sync()
        if not isinstance(latents, torch.Tensor):
            raise TypeError(f"expected latents from the pipeline, got {type(latents).__name__}")
        return latents

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, F, C, H, W) to uint8 frames (T, H, W, 3), as the pipeline decodes."""
        pipe = self.pipe
        num_frames = latents.shape[1]
        with torch.inference_mode():
            video = pipe.decode_latents(latents.to(pipe.vae.dtype), num_frames, num_frames)
            frames = pipe.video_processor.postprocess_video(video=video, output_type="np")
        self._sync()
        return np.asarray((np.asarray(frames)[0] * 255.0).round(), dtype=np.uint8)
