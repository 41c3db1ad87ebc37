"""The parallel plan of one worker: how its N ranks share one video.

A plan has four parts, each a degree of parallelism or a switch:

- ``ulysses``: Ulysses attention (all-to-all over heads) across this many ranks;
- ``ring``: ring attention (key/value chunks passed around) across this many ranks;
- ``cfg``: the guided and unguided branches of classifier-free guidance on different
  rank groups (1 or 2);
- ``vae``: the VAE decode split in horizontal bands across all ranks (on or off).

The ranks form a mesh ``cfg x ring x ulysses``; its size is the world size. The plan is
written ``"ulysses=2,cfg=2"`` (absent degrees are 1, ``vae`` is off unless named) and
parsed by :func:`parse_plan`, which refuses anything it cannot run with a short error.

This module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PARALLEL_FAMILIES", "ParallelPlan", "check_plan_for_model", "parse_plan"]

# The families whose transformer, guidance and VAE have a parallel plan (engine.parallel).
PARALLEL_FAMILIES = ("wan-t2v", "ltx-t2v", "cogvideox-t2v", "hunyuan-t2v")

# The parts of a plan that a family cannot run, and why.
_NOT_FOR: dict[tuple[str, str], str] = {
    ("hunyuan-t2v", "cfg"): "HunyuanVideo is guidance-distilled: one transformer pass a step",
}

_DEGREES = ("ulysses", "ring", "cfg")


@dataclass(frozen=True)
class ParallelPlan:
    """How many ranks do what; the world size is ``ulysses * ring * cfg``."""

    ulysses: int = 1
    ring: int = 1
    cfg: int = 1
    vae: bool = False

    @property
    def world_size(self) -> int:
        return self.ulysses * self.ring * self.cfg

    @property
    def context_parallel(self) -> bool:
        """Whether attention is split along the sequence (Ulysses, ring or both)."""
        return self.ulysses * self.ring > 1

    def describe(self) -> str:
        """The plan as it is written, e.g. ``ulysses=2,cfg=2,vae``; ``off`` for one rank."""
        parts = [f"{name}={getattr(self, name)}" for name in _DEGREES if getattr(self, name) > 1]
        if self.vae:
            parts.append("vae")
        return ",".join(parts) or "off"


def _degree(name: str, value: str) -> int:
    try:
        degree = int(value)
    except ValueError:
        raise ValueError(f"parallel {name} must be a whole number (got {value!r})") from None
    if degree < 1:
        raise ValueError(f"parallel {name} must be at least 1 (got {degree})")
    return degree


def _switch(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("on", "true", "1", ""):
        return True
    if lowered in ("off", "false", "0"):
        return False
    raise ValueError(f"parallel vae must be on or off (got {value!r})")


def parse_plan(text: str, world_size: int | None = None) -> ParallelPlan:
    """``"ulysses=2,ring=1,cfg=2,vae=on"`` to a plan; ``""`` or ``"off"`` is one rank.

    ``world_size``, when given, must equal ``ulysses * ring * cfg``.
    """
    values: dict[str, int] = {}
    vae = False
    body = text.strip()
    for item in [] if body in ("", "off") else body.split(","):
        name, _, value = item.strip().partition("=")
        name = name.strip().lower()
        if name == "vae":
            vae = _switch(value.strip())
        elif name in _DEGREES:
            if name in values:
                raise ValueError(f"parallel {name} is given twice in {text!r}")
            values[name] = _degree(name, value.strip())
        else:
            known = ", ".join((*_DEGREES, "vae"))
            raise ValueError(f"unknown parallel setting {name!r} in {text!r}; known: {known}")
    plan = ParallelPlan(vae=vae, **values)
    if plan.cfg > 2:
        raise ValueError(f"parallel cfg must be 1 or 2 (got {plan.cfg})")
    if world_size is not None and plan.world_size != world_size:
        raise ValueError(
            f"ulysses*ring*cfg must equal world size {world_size} "
            f"(got {plan.ulysses}x{plan.ring}x{plan.cfg})"
        )
    if plan.vae and plan.world_size == 1:
        raise ValueError("parallel vae needs more than one rank (ulysses*ring*cfg is 1)")
    return plan


def check_plan_for_model(plan: ParallelPlan, family: str, heads: int) -> None:
    """Refuse a plan that ``family`` (whose attention has ``heads`` heads) cannot run."""
    if plan.world_size == 1:
        return
    if family not in PARALLEL_FAMILIES:
        raise ValueError(
            f"parallel inference is not available for {family}; "
            f"available for: {', '.join(PARALLEL_FAMILIES)}"
        )
    for part, used in (("cfg", plan.cfg > 1), ("vae", plan.vae)):
        why = _NOT_FOR.get((family, part))
        if used and why:
            raise ValueError(f"parallel {part} is not available for {family}: {why}")
    if heads % plan.ulysses:
        raise ValueError(
            f"attention heads ({heads}) must be divisible by the ulysses degree ({plan.ulysses})"
        )
