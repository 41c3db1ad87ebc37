"""Weighted fair share between tenants: no tenant's backlog starves another's jobs.

A tenant's **usage** is the work (estimated one-GPU seconds, the service model's
``work``) of its jobs that started within the last ``window_s`` seconds, plus every job
of it still running. Its **share** is ``usage / weight``. Among jobs of one priority the
tenant with the smallest share goes first; each job placed adds its work to its
tenant's usage, so over a busy window the work done per tenant approaches the ratio of
their weights. A tenant whose usage has left the window has share 0 and goes first,
so a tenant that waits is never passed over for long: every job another tenant starts
raises that tenant's share until the waiting tenant's is the smallest.

Weights are configured per tenant (by id or name); a tenant not named gets
``default_weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

__all__ = ["FairShare", "resolve_weights"]


@dataclass(frozen=True)
class FairShare:
    """Usage (seconds) and weights per tenant id."""

    usage: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    default_weight: float = 1.0

    def __post_init__(self) -> None:
        bad = {t: w for t, w in self.weights.items() if not w > 0}
        if bad or not self.default_weight > 0:
            raise ValueError(f"tenant weights must be positive (got {bad or self.default_weight})")

    def weight(self, tenant_id: str) -> float:
        return self.weights.get(tenant_id, self.default_weight)

    def share(self, tenant_id: str, extra_s: float = 0.0) -> float:
        """The tenant's usage plus ``extra_s``, per unit of weight."""
        return (self.usage.get(tenant_id, 0.0) + extra_s) / self.weight(tenant_id)

    def charge(self, tenant_id: str, seconds: float) -> FairShare:
        """The same shares after the tenant starts ``seconds`` more work."""
        usage = dict(self.usage)
        usage[tenant_id] = usage.get(tenant_id, 0.0) + seconds
        return replace(self, usage=MappingProxyType(usage))


def resolve_weights(
    configured: Mapping[str, float], tenants: Mapping[str, str]
) -> dict[str, float]:
    """Weights by tenant id from weights configured by id or name (``tenants``: id to
    name). A weight given by id wins over one given by name."""
    by_id: dict[str, float] = {}
    for tenant_id, name in tenants.items():
        if tenant_id in configured:
            by_id[tenant_id] = configured[tenant_id]
        elif name in configured:
            by_id[tenant_id] = configured[name]
    return by_id
