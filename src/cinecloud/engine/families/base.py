"""What the diffusers-backed families share: loading, shape checks, the denoise call.

A family subclasses :class:`PipelineFamily`, names its pipeline class and the label its
messages use, and writes its own stages (encode, denoise, decode) with the helpers here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
import torch

from cinecloud.engine.finite import NonFiniteFrames, to_uint8
from cinecloud.engine.registry import GenerationParams

if TYPE_CHECKING:
    from PIL.Image import Image

    from cinecloud.engine.checkpoint import DenoiseCheckpoints

__all__ = [
    "TORCH_DTYPES",
    "PipelineFamily",
    "check_frames",
    "check_size",
    "decoded_to_uint8",
    "latent_preview",
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


def step_callback(
    on_step: Callable[[int], None],
    checkpoints: DenoiseCheckpoints | None = None,
    keep: Callable[[Any], None] | None = None,
) -> Callable[..., dict[str, Any]]:
    """A ``callback_on_step_end`` that reports the k-th finished step as ``on_step(k)``;
    with ``checkpoints``, k counts on from the step the run resumed after, and the
    latents the step left are handed to them first; ``keep`` is handed the step's
    latents too (a reference, no copy) when the pipeline passes them."""
    start = checkpoints.start if checkpoints is not None else 0

    def step_end(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if keep is not None and "latents" in kwargs:
            keep(kwargs["latents"])
        if checkpoints is not None:
            checkpoints.step_end(start + i + 1, kwargs["latents"])
        on_step(start + i + 1)
        return {}

    return step_end


def latent_preview(latents: torch.Tensor, layout: str) -> np.ndarray:
    """A rough RGB image (H, W, 3) uint8 of the middle frame of ``latents``: the first
    three latent channels, each stretched to 0..255. It costs one small slice and no VAE;
    the colours are false, the layout and motion are the model's. ``layout`` is
    ``"BCFHW"`` or ``"BFCHW"``."""
    if layout == "BCFHW":
        frame = latents[0, :3, latents.shape[2] // 2]
    elif layout == "BFCHW":
        frame = latents[0, latents.shape[1] // 2, :3]
    else:
        raise ValueError(f"unknown latent layout {layout!r}")
    x = frame.detach().float().cpu()
    if x.shape[0] < 3:  # fewer channels than colours: grey
        x = x[:1].expand(3, -1, -1)
    lo = x.amin(dim=(1, 2), keepdim=True)
    span = (x.amax(dim=(1, 2), keepdim=True) - lo).clamp_min(1e-6)
    rgb = ((x - lo) / span * 255.0).round().to(torch.uint8).permute(1, 2, 0)
    return np.ascontiguousarray(rgb.numpy())


def to_uint8_frames(frames: Any) -> np.ndarray:
    """The first video of a postprocessed float batch, as uint8 frames (T, H, W, 3);
    raises :class:`~cinecloud.engine.finite.NonFiniteFrames` on NaN or infinity."""
    return to_uint8(np.asarray(frames)[0])


def decoded_to_uint8(processor: Any, video: torch.Tensor) -> np.ndarray:
    """The first video of a VAE's decoded batch (B, C, F, H, W) as uint8 frames (T, H, W,
    3), converted on the device that decoded it: diffusers' ``"np"`` output copies float32
    frames to the host and rounds them there (400 MB and most of a second of CPU for a
    480x832x81 video, with the GPU idle), where the device takes milliseconds and sends a
    quarter of the bytes. The values are :func:`to_uint8_frames`'s: the same float32
    operations (the processor's denormalise and clamp, x255, round half to even).
    Raises :class:`~cinecloud.engine.finite.NonFiniteFrames` on NaN or infinity."""
    images = processor.postprocess_video(video[:1], output_type="pt")[0].float()  # F,C,H,W
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        raise NonFiniteFrames(bad, images.numel())
    frames = (images * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
    return np.ascontiguousarray(frames.cpu().numpy())


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
    # The pipeline multiplies latents it is given by the scheduler's init_noise_sigma.
    scales_given_latents: ClassVar[bool] = False
    # How the latents the step callback sees are laid out, for :meth:`preview`; None:
    # no preview (LTX's latents are a packed token sequence).
    latent_layout: str | None = "BCFHW"

    def __init__(self) -> None:
        self._pipe: PipeT | None = None
        self._device = torch.device("cpu")
        # Set by the runner for one run (engine.checkpoint): resume, and snapshot steps.
        self.checkpoints: DenoiseCheckpoints | None = None
        self._latest: Any = None  # the latents after the last finished step

    def _keep_latents(self, latents: Any) -> None:
        self._latest = latents

    def preview(self) -> np.ndarray | None:
        """A cheap image (H, W, 3) uint8 of the run's current state, or None: called by
        the worker every so often during denoising, never on its own."""
        if self._latest is None or self.latent_layout is None:
            return None
        return latent_preview(self._latest, self.latent_layout)

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
        ck = self.checkpoints
        hooks: contextlib.AbstractContextManager[dict[str, Any]] = contextlib.nullcontext({})
        if ck is not None:
            hooks = ck.hooks(self.pipe, generator, self._device, scaled=self.scales_given_latents)
        self._latest = None
        with hooks as resumed, torch.inference_mode():
            output = self.pipe(  # type: ignore[operator]
                *args,
                height=params.height,
                width=params.width,
                num_frames=params.num_frames,
                num_inference_steps=params.steps,
                generator=generator,
                output_type="latent",
                return_dict=False,
                callback_on_step_end=step_callback(on_step, ck, self._keep_latents),
                callback_on_step_end_tensor_inputs=["latents"],
                **resumed,
                **kwargs,
            )
        self._sync()
        return output
