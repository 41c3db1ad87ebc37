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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import HunyuanVideoPipeline

from cinecloud.engine.families.wan import TORCH_DTYPES
from cinecloud.engine.registry import GenerationParams

__all__ = ["HunyuanEmbeds", "HunyuanT2V"]


@dataclass(frozen=True)
class HunyuanEmbeds:
    prompt: torch.Tensor
    pooled: torch.Tensor
    mask: torch.Tensor


class HunyuanT2V:
    """The ``hunyuan-t2v`` family: HunyuanVideo text-to-video."""

    name = "hunyuan-t2v"
    max_sequence_length = 256

    def __init__(self) -> None:
        self._pipe: HunyuanVideoPipeline | None = None
        self._device = torch.device("cpu")

    # ------------------------------------------------------------ load

    def load(self, source: Path, *, device: str, dtype: str) -> None:
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)} (got {dtype!r})")
        pipe = HunyuanVideoPipeline.from_pretrained(
            str(source), dtype=TORCH_DTYPES[dtype], local_files_only=True
        )
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = torch.device(device)

    @property
    def pipe(self) -> HunyuanVideoPipeline:
        if self._pipe is None:
            raise RuntimeError("hunyuan pipeline is not loaded; call load() first")
        return self._pipe

    def _check_shape(self, params: GenerationParams) -> None:
        """Refuse shapes the pipeline would otherwise round silently."""
        pipe = self.pipe
        temporal = int(pipe.vae_scale_factor_temporal)
        if params.num_frames % temporal != 1:
            raise ValueError(
                f"num_frames must be {temporal}k+1 for hunyuan (got {params.num_frames})"
            )
        multiple = int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size)
        if params.width % multiple or params.height % multiple:
            raise ValueError(
                f"width and height must be multiples of {multiple} for hunyuan "
                f"(got {params.width}x{params.height})"
            )

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

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

        def step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1)
            return {}

        generator = torch.Generator(self._device).manual_seed(params.seed)
        with torch.inference_mode():
            (latents,) = self.pipe(
                prompt_embeds=encoded.prompt,
                pooled_prompt_embeds=encoded.pooled,
                prompt_attention_mask=encoded.mask,
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
        """Latents to uint8 frames (T, H, W, 3), as ``HunyuanVideoPipeline`` decodes them."""
        pipe, vae = self.pipe, self.pipe.vae
        with torch.inference_mode():
            latents = latents.to(vae.dtype) / vae.config.scaling_factor
            video = vae.decode(latents, return_dict=False)[0]
            frames = pipe.video_processor.postprocess_video(video, output_type="np")
        self._sync()
        return np.asarray((frames[0] * 255.0).round(), dtype=np.uint8)
