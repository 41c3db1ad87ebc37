"""HunyuanVideo text-to-video through diffusers' ``HunyuanVideoPipeline``.

Three timed stages: ``encode_prompt`` (Llama with the pipeline's prompt template, and
CLIP for the pooled embedding) for the text, the pipeline with ``output_type="latent"``
for the denoise loop, and the VAE decode done here as the pipeline does it.

HunyuanVideo is guidance-distilled: ``guidance_scale`` is the embedded guidance the
transformer is conditioned on, and each step is one transformer pass. The pipeline's
true classifier-free guidance (``true_cfg_scale``) stays off, so a request's negative
prompt is not used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import HunyuanVideoPipeline

from cinecloud.engine.families.base import (
    PipelineFamily,
    check_frames,
    check_size,
    decoded_to_uint8,
)
from cinecloud.engine.registry import GenerationParams

__all__ = ["HunyuanEmbeds", "HunyuanT2V"]


@dataclass(frozen=True)
class HunyuanEmbeds:
    prompt: torch.Tensor
    pooled: torch.Tensor
    mask: torch.Tensor


class HunyuanT2V(PipelineFamily[HunyuanVideoPipeline]):
    """The ``hunyuan-t2v`` family: HunyuanVideo text-to-video."""

    name = "hunyuan-t2v"
    label = "hunyuan"
    pipeline_class = HunyuanVideoPipeline
    max_sequence_length = 256

    def _check_shape(self, params: GenerationParams) -> None:
        """Refuse shapes the pipeline would otherwise round silently."""
        pipe = self.pipe
        check_frames(params, int(pipe.vae_scale_factor_temporal), label=self.label)
        multiple = int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size)
        check_size(params, multiple, label=self.label)

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> HunyuanEmbeds:
        self._check_shape(params)
        with torch.inference_mode():
            prompt, pooled, mask = self.pipe.encode_prompt(
                prompt=params.prompt,
                max_sequence_length=self.max_sequence_length,
                device=self._device,
            )
        self._sync()
        return HunyuanEmbeds(prompt=prompt, pooled=pooled, mask=mask)

    def denoise(
        self, encoded: HunyuanEmbeds, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> torch.Tensor:
        self._check_shape(params)
        (latents,) = self._denoise_text(
            params,
            on_step,
            prompt_embeds=encoded.prompt,
            pooled_prompt_embeds=encoded.pooled,
            prompt_attention_mask=encoded.mask,
        )
        return latents  # type: ignore[no-any-return]

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to uint8 frames (T, H, W, 3), as ``HunyuanVideoPipeline`` decodes them."""
        pipe, vae = self.pipe, self.pipe.vae
        with torch.inference_mode():
            latents = latents.to(vae.dtype) / vae.config.scaling_factor
            video = vae.decode(latents, return_dict=False)[0]
            frames = decoded_to_uint8(pipe.video_processor, video)
        self._sync()
        return frames
