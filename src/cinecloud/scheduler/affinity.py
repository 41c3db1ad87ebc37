"""Model affinity: prefer the worker that already holds a job's model.

A worker may run any model it lists (``models`` in its lease call) but holds only some
in memory (``loaded``). A job whose model it does not hold is **cold** there: starting
it costs the model's load time first (``load_s``, a per-model estimate). Placement
counts that cost in the choice:

- a cold job competes as if its tenant had already used its load time: a warm job of
  the same tenant goes first, and so does a warm job of another tenant unless that
  tenant is ahead by more than the load (per unit of weight). A worker serving two
  tenants of two models therefore switches models about once per load time of work,
  not at every job. Among jobs as cold as each other, the load also counts in their
  size (a narrow worker takes the smallest job; a wide one the largest gain);
- a cold job is **deferred** (left in the queue) while another worker that holds its
  model and may run it is idle: that worker takes it without a load. Jobs past the
  aging bound are never deferred.

Once a worker is handed a cold job its model counts as loaded for the rest of that
lease's choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol

__all__ = ["Affinity", "Placeable"]


class Placeable(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def parallel(self) -> int | None: ...


@dataclass(frozen=True)
class Affinity:
    """What the leasing worker holds, what loads cost, and who else is idle and warm.

    ``loaded`` None means the worker holds every model it may run (workers that do not
    say). ``idle_warm`` holds ``(model, width)`` for every other idle worker.
    """

    loaded: frozenset[str] | None = None
    load_s: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    default_load_s: float = 30.0
    idle_warm: frozenset[tuple[str, int]] = frozenset()

    def cold_s(self, model: str) -> float:
        """Seconds this worker spends loading ``model`` first (0 when it holds it)."""
        if self.loaded is None or model in self.loaded:
            return 0.0
        return self.load_s.get(model, self.default_load_s)

    def defer(self, job: Placeable) -> bool:
        """Whether to leave ``job`` to an idle worker that holds its model."""
        if self.cold_s(job.model) == 0.0:
            return False
        return any(
            model == job.model and (job.parallel is None or job.parallel == width)
            for model, width in self.idle_warm
        )

    def warmed(self, model: str) -> Affinity:
        """The same, once this worker has loaded ``model``."""
        if self.loaded is None or model in self.loaded:
            return self
        return replace(self, loaded=self.loaded | {model})
