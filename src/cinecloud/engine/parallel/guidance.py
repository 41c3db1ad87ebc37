"""CFG parallel: the guided and unguided branches on different rank groups.

The mesh's ``cfg`` dimension has two groups. Group 0 computes the conditional noise
prediction, group 1 the unconditional one, at the same time; an all-gather over the
``cfg`` dimension then gives every rank both, and the pipeline applies its own guidance
formula on every rank, so the latents stay identical everywhere.

The hook sits on the transformer and follows how the pipeline calls it:

- ``batched`` (LTX-Video): one call with the batch ``[uncond, cond]``. Group ``i`` runs
  sample ``i``; the outputs are gathered back into the batch.
- ``paired`` (Wan): a ``cond`` call, then an ``uncond`` call with the same latents and
  the negative text. At the cond call group 1 already runs the uncond branch (the
  negative text is armed before the run); the uncond call then returns the gathered
  result without running the model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from diffusers.hooks.hooks import HookRegistry, ModelHook

from cinecloud.engine.parallel.ranks import RankGroup

__all__ = ["CFG_HOOK", "CfgParallelHook", "cfg_hook", "enable_cfg_parallel"]

CFG_HOOK = "cinecloud_cfg_parallel"
MODES = ("batched", "paired")


def _gather(tensor: torch.Tensor, ranks: RankGroup) -> list[torch.Tensor]:
    """``tensor`` from each cfg group, in group order."""
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(ranks.plan.cfg)]
    dist.all_gather(parts, tensor, group=ranks.cfg_group)
    return parts


class CfgParallelHook(ModelHook):  # type: ignore[misc]
    """Splits classifier-free guidance across the ``cfg`` groups of ``ranks``."""

    def __init__(self, ranks: RankGroup, mode: str) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"cfg parallel mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.ranks = ranks
        self.mode = mode
        self._uncond: dict[str, Any] | None = None  # paired: what the uncond call changes
        # paired: (the latents of the cond call, the uncond output, the rest of the output)
        self._pending: tuple[torch.Tensor, torch.Tensor, tuple[Any, ...]] | None = None

    def arm(self, uncond: dict[str, Any] | None) -> None:
        """Before a run: the keyword arguments that make a call unconditional (paired mode),
        or None when the run has no guidance (every call then runs as it comes)."""
        self._uncond, self._pending = uncond, None

    def new_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs.get("return_dict", True):
            raise ValueError("cfg parallel needs keyword arguments and return_dict=False")
        if self.mode == "batched":
            return self._batched(kwargs)
        return self._paired(kwargs)

    def _run(self, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        kwargs = {**kwargs, "return_dict": False}
        forward: Any = self.fn_ref.original_forward
        return tuple(forward(**kwargs))

    def _batched(self, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        batch = int(kwargs["hidden_states"].shape[0])
        if batch != self.ranks.plan.cfg:  # no guidance in this run: every group runs it all
            return self._run(kwargs)
        index = self.ranks.cfg_index
        mine = {
            k: v[index : index + 1]
            if isinstance(v, torch.Tensor) and v.shape[:1] == (batch,)
            else v
            for k, v in kwargs.items()
        }
        sample, *rest = self._run(mine)
        return (torch.cat(_gather(sample, self.ranks)), *rest)

    def _paired(self, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if self._uncond is None:
            return self._run(kwargs)
        latents = kwargs["hidden_states"]
        if self._pending is not None:  # the uncond call of the pair
            cond_latents, uncond, rest = self._pending
            self._pending = None
            if latents is not cond_latents:
                raise RuntimeError("cfg parallel: an uncond call without its cond call")
            return (uncond, *rest)
        branch = kwargs if self.ranks.cfg_index == 0 else {**kwargs, **self._uncond}
        sample, *others = self._run(branch)
        cond, uncond = _gather(sample, self.ranks)
        rest = tuple(others)
        self._pending = (latents, uncond, rest)
        return (cond, *rest)


def enable_cfg_parallel(transformer: Any, ranks: RankGroup, mode: str) -> CfgParallelHook:
    """Put the cfg parallel hook on ``transformer`` (outermost of its hooks)."""
    hook = CfgParallelHook(ranks, mode)
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, CFG_HOOK)
    return hook


def cfg_hook(transformer: Any) -> CfgParallelHook | None:
    """The cfg parallel hook on ``transformer``, if any."""
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    hook = registry.get_hook(CFG_HOOK)
    return hook if isinstance(hook, CfgParallelHook) else None
