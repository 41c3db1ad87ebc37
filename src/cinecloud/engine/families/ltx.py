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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline
from diffusers.pipelines.ltx.pipeline_ltx_image2video import LTXImageToVideoPipeline

from cinecloud.engine.families.wan import TORCH_DTYPES
from cinecloud.engine.families.wan_i2v import require_image
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


class LTXT2V:
    """The ``ltx-t2v`` family: LTX-Video text-to-video.

    The decode runs at ``decode_timestep`` 0 (no decode noise), the pipeline's default.
    """

    name = "ltx-t2v"
    pipeline_class: Any = LTXPipeline
    max_sequence_length = 128

    def __init__(self) -> None:
        self._pipe: Any = None
        self._device = torch.device("cpu")

    # ------------------------------------------------------------ load

    def load(self, source: Path, *, device: str, dtype: str) -> None:
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)} (got {dtype!r})")
        pipe = self.pipeline_class.from_pretrained(
            str(source), dtype=TORCH_DTYPES[dtype], local_files_only=True
        )
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = torch.device(device)

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            raise RuntimeError(f"{self.name} pipeline is not loaded; call load() first")
        return self._pipe

    def _grid(self, params: GenerationParams) -> tuple[int, int, int]:
        """The latent grid for ``params``; refuses shapes the pipeline would round."""
        pipe = self.pipe
        temporal = int(pipe.vae_temporal_compression_ratio)
        spatial = int(pipe.vae_spatial_compression_ratio)
        multiple = spatial * int(pipe.transformer_spatial_patch_size)
        if params.num_frames % temporal != 1:
            raise ValueError(
                f"num_frames must be {temporal}k+1 for {self.name} (got {params.num_frames})"
            )
        if params.width % multiple or params.height % multiple:
            raise ValueError(
                f"width and height must be multiples of {multiple} for {self.name} "
                f"(got {params.width}x{params.height})"
            )
        if pipe.scheduler.config.get("shift_terminal") and params.steps < 2:
            # The stretch to shift_terminal divides by zero on a one-step schedule.
            raise ValueError(f"steps must be at least 2 for {self.name} (got {params.steps})")
        frames = (params.num_frames - 1) // temporal + 1
        return frames, params.height // spatial, params.width // spatial

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _image(self, params: GenerationParams) -> Any:
        """The conditioning image; text-to-video takes none."""
        return None

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> LTXEmbeds:
        self._grid(params)
        image = self._image(params)
        with torch.inference_mode():
            prompt, mask, negative, negative_mask = self.pipe.encode_prompt(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                do_classifier_free_guidance=params.guidance_scale > 1.0,
                max_sequence_length=self.max_sequence_length,
                device=self._device,
            )
        self._sync()
        return LTXEmbeds(prompt, mask, negative, negative_mask, image)

    def denoise(
        self, encoded: LTXEmbeds, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> LTXLatents:
        frames, height, width = self._grid(params)

        def step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1)
            return {}

        extra = {} if encoded.image is None else {"image": encoded.image}
        generator = torch.Generator(self._device).manual_seed(params.seed)
        with torch.inference_mode():
            (latents,) = self.pipe(
                **extra,
                prompt_embeds=encoded.prompt,
                prompt_attention_mask=encoded.prompt_mask,
                negative_prompt_embeds=encoded.negative,
                negative_prompt_attention_mask=encoded.negative_mask,
                height=params.height,
                width=params.width,
                num_frames=params.num_frames,
                frame_rate=params.fps,
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
            frames = pipe.video_processor.postprocess_video(video, output_type="np")
        self._sync()
        return np.asarray((frames[0] * 255.0).round(), dtype=np.uint8)


class LTXI2V(LTXT2V):
    """The ``ltx-i2v`` family: LTX-Video image-to-video; the image is required."""

    name = "ltx-i2v"
    pipeline_class = LTXImageToVideoPipeline

    def _image(self, params: GenerationParams) -> Any:
        return require_image(params, family=self.name)
