"""CogVideoX text-to-video through diffusers' ``CogVideoXPipeline``.

Three timed stages: ``encode_prompt`` for the text, the pipeline with
``output_type="latent"`` for the denoise loop, and the VAE decode done here as the
pipeline does it. For CogVideoX 1.5 (a temporal patch of 2) the pipeline pads the latent
frames at the front; the denoise stage says how many, and the decode drops them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline

from cinecloud.engine.families.wan import TORCH_DTYPES
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


class CogVideoXT2V:
    """The ``cogvideox-t2v`` family: CogVideoX 1.0 and 1.5 text-to-video."""

    name = "cogvideox-t2v"
    max_sequence_length = 226

    def __init__(self) -> None:
        self._pipe: CogVideoXPipeline | None = None
        self._device = torch.device("cpu")

    # ------------------------------------------------------------ load

    def load(self, source: Path, *, device: str, dtype: str) -> None:
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)} (got {dtype!r})")
        pipe = CogVideoXPipeline.from_pretrained(
            str(source), dtype=TORCH_DTYPES[dtype], local_files_only=True
        )
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = torch.device(device)

    @property
    def pipe(self) -> CogVideoXPipeline:
        if self._pipe is None:
            raise RuntimeError("cogvideox pipeline is not loaded; call load() first")
        return self._pipe

    def _padding(self, params: GenerationParams) -> int:
        """Latent frames the pipeline pads with; refuses shapes it would round or change.

        The VAE decodes latent frames in batches of two after a first one, so only an odd
        latent count decodes to the frames asked for: ``num_frames`` must be 8k+1.
        """
        pipe = self.pipe
        temporal = int(pipe.vae_scale_factor_temporal)
        period = temporal * int(pipe.vae.num_latent_frames_batch_size)
        if params.num_frames % period != 1:
            raise ValueError(
                f"num_frames must be {period}k+1 for cogvideox (got {params.num_frames})"
            )
        multiple = int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size)
        if params.width % multiple or params.height % multiple:
            raise ValueError(
                f"width and height must be multiples of {multiple} for cogvideox "
                f"(got {params.width}x{params.height})"
            )
        latent_frames = (params.num_frames - 1) // temporal + 1
        patch_t = pipe.transformer.config.patch_size_t
        if patch_t is None or latent_frames % patch_t == 0:
            return 0
        return int(patch_t - latent_frames % patch_t)

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> CogVideoXEmbeds:
        self._padding(params)
        with torch.inference_mode():
            prompt, negative = self.pipe.encode_prompt(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                do_classifier_free_guidance=params.guidance_scale > 1.0,
                max_sequence_length=self.max_sequence_length,
                device=self._device,
            )
        self._sync()
        return CogVideoXEmbeds(prompt=prompt, negative=negative)

    def denoise(
        self, encoded: CogVideoXEmbeds, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> CogVideoXLatents:
        padding = self._padding(params)

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
        return CogVideoXLatents(latents=latents, padding=padding)

    def decode(self, latents: CogVideoXLatents) -> np.ndarray:
        """Latents to uint8 frames (T, H, W, 3), as ``CogVideoXPipeline`` decodes them."""
        pipe = self.pipe
        with torch.inference_mode():
            video = pipe.decode_latents(latents.latents[:, latents.padding :])
            frames = pipe.video_processor.postprocess_video(video=video, output_type="np")
        self._sync()
        return np.asarray((np.asarray(frames)[0] * 255.0).round(), dtype=np.uint8)
