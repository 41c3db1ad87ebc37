"""The ``shapes-t2v`` family: cinecloud's own small text-to-video model.

Three timed stages over :class:`~cinecloud.engine.shapes.pipeline.ShapesT2VPipeline`:
``encode_prompt`` for the text, the pipeline with ``output_type="latent"`` for the denoise
loop, and the pipeline's pixel-space decode (a rescale, no VAE).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cinecloud.engine.registry import GenerationParams
from cinecloud.engine.shapes.pipeline import ShapesT2VPipeline, ShapesT2VPipelineOutput

__all__ = ["TORCH_DTYPES", "ShapesEmbeds", "ShapesT2V"]

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class ShapesEmbeds:
    prompt: torch.Tensor
    prompt_mask: torch.Tensor
    negative: torch.Tensor | None  # None when guidance is off (guidance_scale <= 1)
    negative_mask: torch.Tensor | None


class ShapesT2V:
    """Loads a shapes-t2v pipeline directory and runs it stage by stage."""

    name = "shapes-t2v"

    def __init__(self) -> None:
        self._pipe: ShapesT2VPipeline | None = None
        self._device = torch.device("cpu")

    # ------------------------------------------------------------ load

    def load(self, source: Path, *, device: str, dtype: str) -> None:
        """Load the transformer in ``dtype`` and the packaged text encoder (float32)."""
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)} (got {dtype!r})")
        pipe = ShapesT2VPipeline.from_pretrained(
            str(source), dtype=TORCH_DTYPES[dtype], local_files_only=True
        )
        pipe.to(device)
        pipe.load_text_encoder()[0].to(device)  # type: ignore[arg-type]
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = torch.device(device)

    @property
    def pipe(self) -> ShapesT2VPipeline:
        if self._pipe is None:
            raise RuntimeError("shapes-t2v pipeline is not loaded; call load() first")
        return self._pipe

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    # ------------------------------------------------------------ stages

    def encode(self, params: GenerationParams) -> ShapesEmbeds:
        with torch.inference_mode():
            prompt, mask, negative, negative_mask = self.pipe.encode_prompt(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                do_classifier_free_guidance=params.guidance_scale > 1.0,
                device=self._device,
            )
        self._sync()
        return ShapesEmbeds(prompt, mask, negative, negative_mask)

    def denoise(
        self, encoded: ShapesEmbeds, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> torch.Tensor:
        def step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1)
            return {}

        generator = torch.Generator(self._device).manual_seed(params.seed)
        with torch.inference_mode():
            output = self.pipe(
                prompt_embeds=encoded.prompt,
                prompt_attention_mask=encoded.prompt_mask,
                negative_prompt_embeds=encoded.negative,
                negative_prompt_attention_mask=encoded.negative_mask,
                num_frames=params.num_frames,
                height=params.height,
                width=params.width,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                generator=generator,
                output_type="latent",
                callback_on_step_end=step_end,
            )
        self._sync()
        clips = output.frames if isinstance(output, ShapesT2VPipelineOutput) else output[0]
        if not isinstance(clips, torch.Tensor):
            raise TypeError(f"expected a clip tensor from the pipeline, got {type(clips).__name__}")
        return clips

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Clips to uint8 frames (T, H, W, 3) of the first (only) video."""
        with torch.inference_mode():
            frames = self.pipe.decode(latents, output_type="np")
        return np.asarray((np.asarray(frames)[0] * 255.0).round(), dtype=np.uint8)
