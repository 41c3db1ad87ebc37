"""A family run by N ranks: the same stages, with the parallel plan applied at load.

:class:`ParallelFamily` wraps a loaded family (see :mod:`cinecloud.engine.families`) and
follows the same protocol, so the runner drives it as it drives one rank. At load it
applies the plan to the pipeline: context parallel on the transformer's self-attention,
the CFG split on its calls, the VAE decode in bands. Every rank runs every stage with the
same inputs and seed, and ends with the same latents and frames.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from cinecloud.engine.parallel.attention import enable_context_parallel
from cinecloud.engine.parallel.guidance import CfgParallelHook, enable_cfg_parallel
from cinecloud.engine.parallel.plan import check_plan_for_model
from cinecloud.engine.parallel.ranks import RankGroup
from cinecloud.engine.parallel.vae import enable_parallel_vae

if TYPE_CHECKING:
    import numpy as np

    from cinecloud.engine.families import Family
    from cinecloud.engine.registry import GenerationParams

__all__ = ["CFG_MODES", "ParallelFamily", "sequence_length"]

# How each family's pipeline calls its transformer under guidance (engine.parallel.guidance).
CFG_MODES = {"wan-t2v": "paired", "ltx-t2v": "batched", "cogvideox-t2v": "batched"}


def sequence_length(family: str, pipe: Any, params: GenerationParams) -> int:
    """The number of video tokens the transformer sees for ``params``."""
    if family == "ltx-t2v":
        temporal, spatial = pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio
        frames = (params.num_frames - 1) // temporal + 1
        return int(frames * (params.height // spatial) * (params.width // spatial))
    config = pipe.transformer.config
    if family == "wan-t2v":
        patch_t, patch_h, patch_w = config.patch_size
    else:  # cogvideox-t2v, hunyuan-t2v: a square patch, and a temporal one (or none)
        patch_t, patch_h, patch_w = config.patch_size_t or 1, config.patch_size, config.patch_size
    temporal, spatial = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    frames = (params.num_frames - 1) // temporal + 1
    frames = -(-frames // patch_t)  # CogVideoX 1.5 pads the latent frames to its patch
    rows, cols = params.height // spatial // patch_h, params.width // spatial // patch_w
    return int(frames * rows * cols)


class ParallelFamily:
    """``inner`` run across the ranks of ``ranks`` by their plan."""

    def __init__(self, inner: Family, name: str, ranks: RankGroup) -> None:
        self.inner = inner
        self.name = name
        self.ranks = ranks
        self._cfg: CfgParallelHook | None = None

    @property
    def pipe(self) -> Any:
        return getattr(self.inner, "pipe")  # noqa: B009 - the pipeline families have one

    def load(self, source: Path, *, device: str, dtype: str, offload: str = "none") -> None:
        if offload != "none":
            raise ValueError(f"parallel inference needs offload none (got {offload})")
        if device != self.ranks.device:
            raise ValueError(f"rank {self.ranks.rank} runs on {self.ranks.device} (got {device})")
        self.inner.load(source, device=device, dtype=dtype, offload=offload)
        self.apply_plan()

    def apply_plan(self) -> None:
        """Apply the ranks' plan to the loaded pipeline (one rank: nothing to apply)."""
        plan, transformer = self.ranks.plan, self.inner.denoiser()
        check_plan_for_model(plan, self.name, int(transformer.config.num_attention_heads))
        if plan.context_parallel:
            enable_context_parallel(transformer, self.name, self.ranks)
        if plan.cfg > 1:
            self._cfg = enable_cfg_parallel(transformer, self.ranks, CFG_MODES[self.name])
        if plan.vae:
            enable_parallel_vae(self.pipe.vae, dist.group.WORLD)

    def set_vae_tiling(self, on: bool) -> None:
        if not self.ranks.plan.vae:  # decoding in bands replaces tiling
            self.inner.set_vae_tiling(on)

    def denoiser(self) -> Any:
        return self.inner.denoiser()

    def encode(self, params: GenerationParams) -> Any:
        self._check(params)
        return self.inner.encode(params)

    def denoise(
        self, encoded: Any, params: GenerationParams, *, on_step: Callable[[int], None]
    ) -> Any:
        self._check(params)
        if self._cfg is not None:
            self._cfg.arm(self._uncond(encoded))
        try:
            return self.inner.denoise(encoded, params, on_step=on_step)
        finally:
            if self._cfg is not None:
                self._cfg.arm(None)

    def decode(self, latents: Any) -> np.ndarray:
        return self.inner.decode(latents)

    def preview(self) -> np.ndarray | None:
        preview = getattr(self.inner, "preview", None)
        return preview() if preview is not None else None

    def _check(self, params: GenerationParams) -> None:
        plan = self.ranks.plan
        if params.step_cache != "off":
            raise ValueError("step_cache is not available with parallel inference")
        degree = plan.ulysses * plan.ring
        tokens = sequence_length(self.name, self.pipe, params)
        if tokens % degree:
            raise ValueError(
                f"video tokens ({tokens}) must be divisible by ulysses*ring ({degree}) "
                f"for parallel {self.name}; change width, height or num_frames"
            )

    def _uncond(self, encoded: Any) -> dict[str, Any] | None:
        """What makes a transformer call unconditional (the paired mode only)."""
        negative = getattr(encoded, "negative", None)
        if CFG_MODES[self.name] != "paired" or negative is None:
            return None
        return {"encoder_hidden_states": negative.to(self.inner.denoiser().dtype)}
