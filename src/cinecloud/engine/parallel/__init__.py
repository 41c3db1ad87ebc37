"""Parallel inference of one video across N ranks (torch.distributed).

- :mod:`.plan`: the plan (Ulysses, ring, CFG degrees, parallel VAE) and its checks;
  importing it does not import torch.
- :mod:`.ranks`: the process group on the loopback address, the ``cfg x ring x ulysses``
  mesh, and the small broadcasts the ranks agree by.
- :mod:`.attention`: context parallel self-attention through diffusers' hooks.
- :mod:`.joint`: our split plan for joint text-video attention (CogVideoX, HunyuanVideo).
- :mod:`.guidance`: the CFG split.
- :mod:`.vae`: the VAE decode in bands.
- :mod:`.family`: a family run by the ranks, as the runner drives it.
"""

from __future__ import annotations

from cinecloud.engine.parallel.plan import (
    PARALLEL_FAMILIES,
    ParallelPlan,
    check_plan_for_model,
    parse_plan,
)

__all__ = ["PARALLEL_FAMILIES", "ParallelPlan", "check_plan_for_model", "parse_plan"]
