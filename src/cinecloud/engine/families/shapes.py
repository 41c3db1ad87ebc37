"""The ``shapes-t2v`` family: cinecloud's own small text-to-video model.

Three timed stages over :class:`~cinecloud.engine.shapes.pipeline.ShapesT2VPipeline`:
``encode_prompt`` for the text, the pipeline with ``output_type="latent"`` for the denoise
loop, and the pipeline's pixel-space decode (a rescale, no VAE).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cinecloud.engine.families.base import (
    TORCH_DTYPES,
    PipelineFamily,
    step_callback,
    to_uint8_frames,
)
from cinecloud.engine.registry import GenerationParams
from cinecloud.engine.shapes.pipeline import ShapesT2VPipeline, ShapesT2VPipelineOutput

__all__ = ["TORCH_DTYPES", "ShapesEmbeds", "ShapesT2V"]


@dataclass(frozen=True)
class ShapesEmbeds:
    prompt: torch.Tensor
    prompt_mask: torch.Tensor
    negative: torch.Tensor | None  # None when guidance is off (guidance_scale <= 1)
    negative_mask: torch.Tensor | None


class ShapesT2V(PipelineFamily[ShapesT2VPipeline]):
    """Loads a shapes-t2v pipeline directory and runs it stage by stage.

    The transformer loads in the requested dtype, the packaged text encoder in float32.
    """

    name = "shapes-t2v"
    label = "shapes-t2v"
    pipeline_class = ShapesT2VPipeline

    def _on_device(self, pipe: ShapesT2VPipeline, device: str) -> None:
        pipe.load_text_encoder()[0].to(device)  # type: ignore[arg-type]

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
        output = self._denoise_latents(
            params,
            on_step,
            prompt_embeds=encoded.prompt,
            prompt_attention_mask=encoded.prompt_mask,
            negative_prompt_embeds=encoded.negative,
            negative_prompt_attention_mask=encoded.negative_mask,
            guidance_scale=params.guidance_scale,
        )
        clips = output.frames if isinstance(output, ShapesT2VPipelineOutput) else output[0]
        if not isinstance(clips, torch.Tensor):
            raise TypeError(f"expected a clip tensor from the pipeline, got {type(clips).__name__}")
        return clips

    def preview(self) -> np.ndarray | None:
        """The middle frame of the current clip: the model works in pixels, so the
        pipeline's decode (a rescale) of one frame is the preview."""
        clips = self._latest
        if clips is None:
            return None
        middle = clips.shape[2] // 2
        with torch.inference_mode():
            frames = self.pipe.decode(clips[:1, :, middle : middle + 1], output_type="np")
        frame: np.ndarray = to_uint8_frames(frames)[0]
        return frame

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Clips to uint8 frames (T, H, W, 3) of the first (only) video."""
        with torch.inference_mode():
            frames = self.pipe.decode(latents, output_type="np")
        return to_uint8_frames(frames)

    # ------------------------------------------------------------ batches (engine.batch)

    def encode_batch(self, params: Sequence[GenerationParams]) -> ShapesEmbeds:
        """The prompts of compatible videos (one guidance scale) in one encode."""
        with torch.inference_mode():
            prompt, mask, negative, negative_mask = self.pipe.encode_prompt(
                prompt=[p.prompt for p in params],
                negative_prompt=[p.negative_prompt for p in params],
                do_classifier_free_guidance=params[0].guidance_scale > 1.0,
                device=self._device,
            )
        self._sync()
        return ShapesEmbeds(prompt, mask, negative, negative_mask)

    def denoise_batch(
        self,
        encoded: ShapesEmbeds,
        params: Sequence[GenerationParams],
        *,
        on_step: Callable[[int], None],
    ) -> torch.Tensor:
        """One denoise loop over the batch; each video's noise comes from its own seed."""
        first = params[0]
        generators = [torch.Generator(self._device).manual_seed(p.seed) for p in params]
        with torch.inference_mode():
            output = self.pipe(
                height=first.height,
                width=first.width,
                num_frames=first.num_frames,
                num_inference_steps=first.steps,
                generator=generators,
                output_type="latent",
                return_dict=False,
                callback_on_step_end=step_callback(on_step),
                callback_on_step_end_tensor_inputs=[],
                prompt_embeds=encoded.prompt,
                prompt_attention_mask=encoded.prompt_mask,
                negative_prompt_embeds=encoded.negative,
                negative_prompt_attention_mask=encoded.negative_mask,
                guidance_scale=first.guidance_scale,
            )
        self._sync()
        clips = output[0]
        if not isinstance(clips, torch.Tensor):
            raise TypeError(f"expected a clip tensor from the pipeline, got {type(clips).__name__}")
        return clips

    def decode_batch(self, latents: torch.Tensor) -> list[np.ndarray]:
        """Clips ``(B, 3, T, H, W)`` to one uint8 frame array (T, H, W, 3) per video."""
        return [self.decode(latents[i : i + 1]) for i in range(latents.shape[0])]
