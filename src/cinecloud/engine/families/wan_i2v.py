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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.pipelines.wan.pipeline_wan import WanPipeline
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline

from cinecloud.engine.families.wan import TORCH_DTYPES
from cinecloud.engine.registry import GenerationParams

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["WanI2V", "WanI2VEmbeds", "decode_wan_latents", "require_image"]


def require_image(params: GenerationParams, *, family: str) -> Image:
    """The conditioning image at ``params.image_path``, as RGB; a short error if missing."""
    import PIL.Image
    from PIL import UnidentifiedImageError

    if params.image_path is None:
        raise ValueError(f"{family} needs a conditioning image (image_path is missing)")
    try:
        with PIL.Image.open(params.image_path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"conditioning image not found: {params.image_path}") from None
    except UnidentifiedImageError:
        raise ValueError(
            f"conditioning image is not a readable image: {params.image_path}"
        ) from None


def decode_wan_latents(pipe: Any, latents: torch.Tensor) -> np.ndarray:
    """Wan latents to uint8 frames (T, H, W, 3), as the Wan pipelines decode them."""
    vae = pipe.vae
    z_dim = vae.config.z_dim
    with torch.inference_mode():
        latents = latents.to(vae.device, dtype=vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1)
        latents = latents / inv_std.to(latents) + mean.to(latents)
        video = vae.decode(latents, return_dict=False)[0]
        frames = pipe.video_processor.postprocess_video(video, output_type="np")
    return np.asarray((frames[0] * 255.0).round(), dtype=np.uint8)


@dataclass(frozen=True)
class WanI2VEmbeds:
    image: Image
    prompt: torch.Tensor
    negative: torch.Tensor | None  # None when guidance is off (guidance_scale <= 1)


class WanI2V:
    """The ``wan-i2v`` family: Wan image-to-video; the image is required."""

    name = "wan-i2v"
    max_sequence_length = 512

    def __init__(self) -> None:
        self._pipe: WanImageToVideoPipeline | None = None
        self._device = torch.device("cpu")

    # ------------------------------------------------------------ load

    def load(self, source: Path, *, device: str, dtype: str) -> None:
        """Load the pipeline from a local directory; the VAE stays float32, as Wan's does."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)} (got {dtype!r})")
        vae = AutoencoderKLWan.from_pretrained(
            str(source), subfolder="vae", dtype=torch.float32, local_files_only=True
        )
        pipe = WanImageToVideoPipeline.from_pretrained(
            str(source), vae=vae, dtype=TORCH_DTYPES[dtype], local_files_only=True
        )
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = torch.device(device)

    @property
    def pipe(self) -> WanImageToVideoPipeline:
        if self._pipe is None:
            raise RuntimeError("wan-i2v pipeline is not loaded; call load() first")
        return self._pipe

    def _check_shape(self, params: GenerationParams) -> None:
        """Refuse shapes the pipeline would otherwise round silently."""
        pipe = self.pipe
        temporal = int(pipe.vae_scale_factor_temporal)
        if params.num_frames % temporal != 1:
            raise ValueError(
                f"num_frames must be {temporal}k+1 for wan-i2v (got {params.num_frames})"
            )
        model = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        multiple = int(pipe.vae_scale_factor_spatial) * int(model.config.patch_size[1])
        if params.width % multiple or params.height % multiple:
            raise ValueError(
                f"width and height must be multiples of {multiple} for wan-i2v "
                f"(got {params.width}x{params.height})"
            )

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

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

        def step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1)
            return {}

        generator = torch.Generator(self._device).manual_seed(params.seed)
        with torch.inference_mode():
            (latents,) = self.pipe(
                image=encoded.image,
                prompt_embeds=encoded.prompt,
                negative_prompt_embeds=encoded.negative,
                height=params.height,
                width=params.width,
                num_frames=params.num_frames,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                generator=generator,
                output_type="latent",
                return_dict=False,
                callback_on_step_end=step_end,
                callback_on_step_end_tensor_inputs=[],
                max_sequence_length=self.max_sequence_length,
            )
        self._sync()
        return latents  # type: ignore[no-any-return]

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        frames = decode_wan_latents(self.pipe, latents)
        self._sync()
        return frames
