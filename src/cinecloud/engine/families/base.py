"""What the diffusers-backed families share: loading, shape checks, the denoise call.

A family subclasses :class:`PipelineFamily`, names its pipeline class and the label its
messages use, and writes its own stages (encode, denoise, decode) with the helpers here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import torch

from cinecloud.engine.finite import to_uint8
from cinecloud.engine.registry import GenerationParams

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "TORCH_DTYPES",
    "PipelineFamily",
    "check_frames",
    "check_size",
    "require_image",
    "step_callback",
    "to_uint8_frames",
]

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

PipeT = TypeVar("PipeT")


def check_frames(params: GenerationParams, period: int, *, label: str) -> None:
    """Refuse a ``num_frames`` that is not ``period``k+1."""
    if params.num_frames % period != 1:
        raise ValueError(f"num_frames must be {period}k+1 for {label} (got {params.num_frames})")


def check_size(params: GenerationParams, multiple: int, *, label: str) -> None:
    """Refuse a width or height that is not a multiple of ``multiple``."""
    if params.width % multiple or params.height % multiple:
        raise ValueError(
            f"width and height must be multiples of {multiple} for {label} "
            f"(got {params.width}x{params.height})"
        )


def step_callback(on_step: Callable[[int], None]) -> Callable[..., dict[str, Any]]:
    """A ``callback_on_step_end`` that reports the k-th finished step as ``on_step(k)``."""

    def step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
        on_step(i + 1)
        return {}

    return step_end


def to_uint8_frames(frames: Any) -> np.ndarray:
    """The first video of a postprocessed float batch, as uint8 frames (T, H, W, 3);
    raises :class:`~cinecloud.engine.finite.NonFiniteFrames` on NaN or infinity."""
    return to_uint8(np.asarray(frames)[0])


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


class PipelineFamily(Generic[PipeT]):
    """A family driven through one diffusers pipeline, loaded from a local directory.

    ``label`` names the family in its error messages.
    """

    name: str
    label: str
    pipeline_class: Any
    max_sequence_length: int  # for the families that encode text

    def __init__(self) -> None:
        self._pipe: PipeT | None = None
        self._device = torch.device("cpu")

    # ------------------------------------------------------------ load

    def load(self, source: Path, *, device: str, dtype: str, offload: str = "none") -> None:
        """Load from ``source``; ``offload`` is a memory plan's mode (engine.memory)."""
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)} (got {dtype!r})")
        pipe = self.pipeline_class.from_pretrained(
            str(source),
            **self._components(source),
            dtype=TORCH_DTYPES[dtype],
            local_files_only=True,
        )
        if offload == "none":
            pipe.to(device)
        elif offload == "model":  # whole components move in turn
            pipe.enable_model_cpu_offload(device=device)
        elif offload == "group":  # the transformer streams its blocks; others by leaf
            pipe.enable_group_offload(
                onload_device=torch.device(device),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=device.startswith("cuda"),
            )
        else:
            raise ValueError(f"offload must be none, model or group (got {offload!r})")
        self._on_device(pipe, device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._device = torch.device(device)

    def _components(self, source: Path) -> dict[str, Any]:
        """Components loaded apart from the pipeline and handed to it; none by default."""
        return {}

    def _on_device(self, pipe: PipeT, device: str) -> None:
        """Anything more to move to ``device`` once the pipeline is there; none by default."""

    def denoiser(self) -> Any:
        """The pipeline's denoising network (its transformer, or SVD's UNet)."""
        return getattr(self.pipe, "transformer", None) or getattr(self.pipe, "unet", None)

    def set_vae_tiling(self, on: bool) -> None:
        """Decode in tiles (or not) from the next run on, where the VAE can."""
        vae = getattr(self.pipe, "vae", None)
        method = getattr(vae, "enable_tiling" if on else "disable_tiling", None)
        if method is not None:
            method()

    @property
    def pipe(self) -> PipeT:
        if self._pipe is None:
            raise RuntimeError(f"{self.label} pipeline is not loaded; call load() first")
        return self._pipe

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    # ------------------------------------------------------------ stages

    def _encode_prompt(self, params: GenerationParams) -> Any:
        """The pipeline's ``encode_prompt`` for ``params``; the negative only under guidance."""
        with torch.inference_mode():
            embeds = self.pipe.encode_prompt(  # type: ignore[attr-defined]
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                do_classifier_free_guidance=params.guidance_scale > 1.0,
                max_sequence_length=self.max_sequence_length,
                device=self._device,
            )
        self._sync()
        return embeds

    def _denoise_text(
        self, params: GenerationParams, on_step: Callable[[int], None], **kwargs: Any
    ) -> Any:
        """:meth:`_denoise_latents` with ``params``' guidance and the text length."""
        return self._denoise_latents(
            params,
            on_step,
            **kwargs,
            guidance_scale=params.guidance_scale,
            max_sequence_length=self.max_sequence_length,
        )

    def _denoise_latents(
        self,
        params: GenerationParams,
        on_step: Callable[[int], None],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Run the pipeline to latents with ``params``' shape, steps and seed.

        ``args`` and ``kwargs`` are the family's own arguments (conditioning, guidance);
        the pipeline's output is returned as it comes, after a device sync.
        """
        generator = torch.Generator(self._device).manual_seed(params.seed)
        with torch.inference_mode():
            output = self.pipe(  # type: ignore[operator]
                *args,
                height=params.height,
                width=params.width,
                num_frames=params.num_frames,
                num_inference_steps=params.steps,
                generator=generator,
                output_type="latent",
                return_dict=False,
                callback_on_step_end=step_callback(on_step),
                callback_on_step_end_tensor_inputs=[],
                **kwargs,
            )
        self._sync()
        return output
