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

from cinecloud.engine.registry import GenerationParams

__all__ = ["TORCH_DTYPES", "WanEmbeds", "WanT2V"]

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class WanEmbeds:
    prompt: torch.Tensor
    negative: torch.Tensor | None  # None when guidance is off (guidance_scale <= 1)


class WanT2V:
    """The ``wan-t2v`` family: Wan 2.1-style text-to-video."""

    name = "wan-t2v"
    max_sequence_length = 226

    def __init__(self) -> None:
        self._pipe: WanPipeline | None = None
        self._device = torch.device("cpu")

    # ------------------------------------------------------------ load

    def load(self, source: Path, *, device: str, dtype: str) -> None:
        """Load the pipeline from a local directory; the VAE stays float32, as Wan's does."""
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)} (got {dtype!r})")
        vae = AutoencoderKLWan.from_pretrained(
            str(source), subfolder="vae", dtype=torch.float32, local_files_only=True
        )
        pipe = WanPipeline.from_pretrained(
            str(source), vae=vae, dtype=TORCH_DTYPES[dtype], local_files_only=True
        )
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = torch.device(device)

    @property
    def pipe(self) -> WanPipeline:
        if self._pipe is None:
            raise RuntimeError("wan pipeline is not loaded; call load() first")
        return self._pipe

    def _check_shape(self, params: GenerationParams) -> None:
        """Refuse shapes the pipeline would otherwise round silently."""
        pipe = self.pipe
        temporal = int(pipe.vae_scale_factor_temporal)
        if params.num_frames % temporal != 1:
            raise ValueError(f"num_frames must be {temporal}k+1 for wan (got {params.num_frames})")
        multiple = int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size[1])
        if params.width % multiple or params.height % multiple:
            raise ValueError(
                f"width and height must be multiples of {multiple} for wan "
                f"(got {params.width}x{params.height})"
            )

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> WanEmbeds:
        self._check_shape(params)
        with torch.inference_mode():
            prompt, negative = self.pipe.encode_prompt(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                do_classifier_free_guidance=params.guidance_scale > 1.0,
                max_sequence_length=self.max_sequence_length,
                device=self._device,
            )
        self._sync()
        return WanEmbeds(prompt=prompt, negative=negative)

    def denoise(
        self, encoded: WanEmbeds, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> torch.Tensor:
        self._check_shape(params)

        def step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1)
            return {}

        generator = torch.Generator(self._device).manual_seed(params.seed)
        with torch.inference_mode():
            (latents,) = self.pipe(
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
        """Latents to uint8 frames (T, H, W, 3), as ``WanPipeline`` decodes them."""
        vae = self.pipe.vae
        z_dim = vae.config.z_dim
        with torch.inference_mode():
            latents = latents.to(vae.device, dtype=vae.dtype)
            mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1)
            inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1)
            latents = latents / inv_std.to(latents) + mean.to(latents)
            video = vae.decode(latents, return_dict=False)[0]
            frames = self.pipe.video_processor.postprocess_video(video, output_type="np")
        self._sync()
        return np.asarray((frames[0] * 255.0).round(), dtype=np.uint8)
