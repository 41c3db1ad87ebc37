"""CogVideoX text-to-video through diffusers' ``CogVideoXPipeline``.

Three timed stages: ``encode_prompt`` for the text, the pipeline with
``output_type="latent"`` for the denoise loop, and the VAE decode done here as the
pipeline does it. For CogVideoX 1.5 (a temporal patch of 2) the pipeline pads the latent
frames at the front; the denoise stage says how many, and the decode drops them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline

from cinecloud.engine.attention import dispatch_cogvideox_attention
from cinecloud.engine.families.base import (
    PipelineFamily,
    check_frames,
    check_size,
    decoded_to_uint8,
)
from cinecloud.engine.registry import GenerationParams

__all__ = ["CogVideoXEmbeds", "CogVideoXLatents", "CogVideoXT2V"]


@dataclass(frozen=True)
class CogVideoXEmbeds:
    prompt: torch.Tensor
    negative: torch.Tensor | None  # None when guidance is off (guidance_scale <= 1)


@dataclass(frozen=True)
class CogVideoXLatents:
    latents: torch.Tensor  # (B, F, C, H, W), as the pipeline returns them
    padding: int  # latent frames the pipeline added at the front


class CogVideoXT2V(PipelineFamily[CogVideoXPipeline]):
    """The ``cogvideox-t2v`` family: CogVideoX 1.0 and 1.5 text-to-video."""

    name = "cogvideox-t2v"
    label = "cogvideox"
    latent_layout = "BFCHW"
    pipeline_class = CogVideoXPipeline
    scales_given_latents = True  # its prepare_latents multiplies by init_noise_sigma
    max_sequence_length = 226

    def _padding(self, params: GenerationParams) -> int:
        """Latent frames the pipeline pads with; refuses shapes it would round or change.

        The VAE decodes latent frames in batches of two after a first one, so only an odd
        latent count decodes to the frames asked for: ``num_frames`` must be 8k+1.
        """
        pipe = self.pipe
        temporal = int(pipe.vae_scale_factor_temporal)
        period = temporal * int(pipe.vae.num_latent_frames_batch_size)
        check_frames(params, period, label=self.label)
        multiple = int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size)
        check_size(params, multiple, label=self.label)
        latent_frames = (params.num_frames - 1) // temporal + 1
        patch_t = pipe.transformer.config.patch_size_t
        if patch_t is None or latent_frames % patch_t == 0:
            return 0
        return int(patch_t - latent_frames % patch_t)

    def _on_device(self, pipe: CogVideoXPipeline, device: str) -> None:
        """Route attention through diffusers' dispatcher, so the chosen backend runs."""
        dispatch_cogvideox_attention(pipe.transformer)

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> CogVideoXEmbeds:
        self._padding(params)
        prompt, negative = self._encode_prompt(params)
        return CogVideoXEmbeds(prompt=prompt, negative=negative)

    def denoise(
        self, encoded: CogVideoXEmbeds, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> CogVideoXLatents:
        padding = self._padding(params)
        (latents,) = self._denoise_text(
            params,
            on_step,
            prompt_embeds=encoded.prompt,
            negative_prompt_embeds=encoded.negative,
        )
        return CogVideoXLatents(latents=latents, padding=padding)

    def decode(self, latents: CogVideoXLatents) -> np.ndarray:
        """Latents to uint8 frames (T, H, W, 3), as ``CogVideoXPipeline`` decodes them."""
        pipe = self.pipe
        with torch.inference_mode():
            video = pipe.decode_latents(latents.latents[:, latents.padding :])
            frames = decoded_to_uint8(pipe.video_processor, video)
        self._sync()
        return frames
