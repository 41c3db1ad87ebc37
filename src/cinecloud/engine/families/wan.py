"""Wan text-to-video through diffusers' ``WanPipeline``.

The pipeline is driven in three timed stages: ``encode_prompt`` for the text, the
pipeline itself with ``output_type="latent"`` for the denoise loop, and the VAE decode
done here exactly as ``WanPipeline`` does it internally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.pipelines.wan.pipeline_wan import WanPipeline

from cinecloud.engine.families.base import (
    TORCH_DTYPES,
    PipelineFamily,
    PipeT,
    check_frames,
    check_size,
    decoded_to_uint8,
)
from cinecloud.engine.registry import GenerationParams

__all__ = ["TORCH_DTYPES", "WanEmbeds", "WanT2V", "decode_wan_latents", "load_wan_vae"]


def load_wan_vae(source: Path) -> dict[str, Any]:
    """The Wan VAE, kept float32 as Wan's is, as a ``vae=`` component for the pipeline."""
    vae = AutoencoderKLWan.from_pretrained(
        str(source), subfolder="vae", dtype=torch.float32, local_files_only=True
    )
    return {"vae": vae}


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
        return decoded_to_uint8(pipe.video_processor, video)


@dataclass(frozen=True)
class WanEmbeds:
    prompt: torch.Tensor
    negative: torch.Tensor | None  # None when guidance is off (guidance_scale <= 1)


class WanFamily(PipelineFamily[PipeT]):
    """What every Wan pipeline shares: the float32 VAE and the shape rules."""

    def _components(self, source: Path) -> dict[str, Any]:
        return load_wan_vae(source)

    def _check_shape(self, params: GenerationParams) -> None:
        """Refuse shapes the pipeline would otherwise round silently."""
        pipe: Any = self.pipe
        check_frames(params, int(pipe.vae_scale_factor_temporal), label=self.label)
        # Wan 2.2 may hold only the second (low-noise) transformer
        model = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        multiple = int(pipe.vae_scale_factor_spatial) * int(model.config.patch_size[1])
        check_size(params, multiple, label=self.label)


class WanT2V(WanFamily[WanPipeline]):
    """The ``wan-t2v`` family: Wan 2.1-style text-to-video.

    The pipeline loads from a local directory; the VAE stays float32, as Wan's does.
    """

    name = "wan-t2v"
    label = "wan"
    pipeline_class = WanPipeline
    max_sequence_length = 226

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> WanEmbeds:
        self._check_shape(params)
        prompt, negative = self._encode_prompt(params)
        return WanEmbeds(prompt=prompt, negative=negative)

    def denoise(
        self, encoded: WanEmbeds, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> torch.Tensor:
        self._check_shape(params)
        (latents,) = self._denoise_text(
            params,
            on_step,
            prompt_embeds=encoded.prompt,
            negative_prompt_embeds=encoded.negative,
        )
        return latents  # type: ignore[no-any-return]

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to uint8 frames (T, H, W, 3), as ``WanPipeline`` decodes them."""
        frames = decode_wan_latents(self.pipe, latents)
        self._sync()
        return frames
