"""How a model fits on its GPU: the memory profile of a checkpoint and the plan for a device.

The plan is chosen from the GPU's free memory when the worker loads the model and can
be overridden in the configuration (``engine.offload``, ``engine.vae_tiling``). Every
job records the plan it ran under (the job's ``engine`` field).

Offload modes, from fastest to leanest:

- ``none``: every component lives on the GPU.
- ``model``: components move to the GPU in turn (text encoder, then transformer, then
  VAE), so the peak is the largest one; diffusers' ``enable_model_cpu_offload``.
- ``group``: the transformer streams its blocks from CPU memory as it runs, so the
  peak is a few blocks; diffusers' group offloading.

VAE tiling decodes the video in overlapping tiles, capping the decode's activations.

Torch-free, so the API and the CLI can explain a plan without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "OFFLOAD_MODES",
    "TILING_MODES",
    "MemoryPlan",
    "MemoryProfile",
    "plan_memory",
]

OFFLOAD_MODES = ("auto", "none", "model", "group")
TILING_MODES = ("auto", "on", "off")
HEADROOM = 0.9  # plan within 90% of the free memory: the allocator and CUDA need the rest
TILED_DECODE_GIB = 1.5  # decode activations with tiling, about constant in the video size
GROUP_RESIDENT_GIB = 1.0  # the transformer blocks resident at once under group offload


@dataclass(frozen=True)
class MemoryProfile:
    """A checkpoint's GPU needs in GiB, weights at 16 bits.

    Activations grow with the video: ``*_per_mpf`` is GiB per million pixel-frames
    (width x height x frames / 1e6), for denoising (guidance batched) and for a decode
    without tiling.
    """

    transformer_gib: float
    text_encoder_gib: float
    other_gib: float  # VAE, image encoder
    denoise_gib_per_mpf: float
    decode_gib_per_mpf: float

    @property
    def weights_gib(self) -> float:
        return self.transformer_gib + self.text_encoder_gib + self.other_gib

    def job_activation_gib(self, width: int, height: int, frames: int) -> float:
        """GiB one more video of this shape adds to a batched denoise: its activations."""
        return self.denoise_gib_per_mpf * width * height * frames / 1e6


@dataclass(frozen=True)
class MemoryPlan:
    offload: str  # none | model | group
    vae_tiling: bool
    peak_gib: float  # the estimate the choice was made on
    free_gib: float | None  # None: not a GPU, or unknown
    reason: str

    def record(self) -> dict[str, str]:
        """The plan as the job records it."""
        return {
            "offload": self.offload,
            "vae_tiling": "on" if self.vae_tiling else "off",
            "memory_reason": self.reason,
        }


def _peaks(profile: MemoryProfile, mpf: float) -> dict[tuple[str, bool], float]:
    """Estimated peak GiB for each (offload, tiling) choice."""
    denoise = profile.denoise_gib_per_mpf * mpf
    decode = {False: profile.decode_gib_per_mpf * mpf, True: TILED_DECODE_GIB}
    largest = max(profile.transformer_gib, profile.text_encoder_gib)
    peaks = {}
    for tiling in (False, True):
        work = max(denoise, decode[tiling])
        peaks[("none", tiling)] = profile.weights_gib + work
        peaks[("model", tiling)] = max(
            profile.text_encoder_gib,
            profile.transformer_gib + denoise,
            profile.other_gib + decode[tiling],
        )
        peaks[("group", tiling)] = max(
            min(largest, GROUP_RESIDENT_GIB) + denoise, profile.other_gib + decode[tiling]
        )
    return peaks


def plan_memory(
    profile: MemoryProfile | None,
    *,
    device: str,
    free_gib: float | None,
    width: int,
    height: int,
    num_frames: int,
    offload: str = "auto",
    vae_tiling: str = "auto",
) -> MemoryPlan:
    """The fastest plan whose estimated peak fits ``free_gib`` (with headroom).

    ``offload`` and ``vae_tiling`` other than ``"auto"`` are taken as given. Off the GPU,
    or without a profile, nothing is offloaded and nothing tiled unless asked.
    """
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)} (got {offload!r})")
    if vae_tiling not in TILING_MODES:
        raise ValueError(
            f"vae_tiling must be one of {', '.join(TILING_MODES)} (got {vae_tiling!r})"
        )
    mpf = width * height * num_frames / 1e6
    tiling_choices = [False, True] if vae_tiling == "auto" else [vae_tiling == "on"]
    offload_choices = ["none", "model", "group"] if offload == "auto" else [offload]
    on_gpu = device.startswith("cuda") and free_gib is not None
    if profile is None or not on_gpu:
        chosen_offload = "none" if offload == "auto" else offload
        tiling = vae_tiling == "on"
        why = "configured" if (offload, vae_tiling) != ("auto", "auto") else "not a GPU"
        if profile is None and on_gpu:
            why = "no memory profile"
        return MemoryPlan(chosen_offload, tiling, 0.0, free_gib, why)

    assert free_gib is not None
    peaks = _peaks(profile, mpf)
    budget = free_gib * HEADROOM
    for mode in offload_choices:
        for tiling in tiling_choices:
            if peaks[(mode, tiling)] <= budget:
                why = "fits" if (mode, tiling) == ("none", False) else "auto: smallest that fits"
                if offload != "auto" or vae_tiling != "auto":
                    why = "configured"
                return MemoryPlan(mode, tiling, peaks[(mode, tiling)], free_gib, why)
    mode, tiling = offload_choices[-1], tiling_choices[-1]
    return MemoryPlan(mode, tiling, peaks[(mode, tiling)], free_gib, "leanest plan; may not fit")
