"""The scheduler's policies fed from the control plane's state: what one lease knows
(tenant shares, who holds which model, memory per job) and what a completed job costs.

The decisions are the scheduler's pure functions; this module only gathers their
inputs from the database, the configuration and the model registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cinecloud.api.state import AppState
from cinecloud.jobs import Billing, JobRecord, LeaseOrder
from cinecloud.jobs.usage import UsageLedger
from cinecloud.scheduler import (
    Affinity,
    FairShare,
    LeaseContext,
    PlacementPolicy,
    job_shape,
    lease_order,
    resolve_weights,
)
from cinecloud.telemetry import UNKNOWN_GPU, gpu_type_of, job_dollars, price_for

__all__ = ["LeaseAsk", "LeasePlan", "affinity", "billing_for", "fair_share", "placement"]

GIB = 1024**3
# A worker counts as idle and able to take a job while its last heartbeat said idle
# this many heartbeat intervals ago at most.
IDLE_HEARTBEATS = 3.0
# Fair share reads the queue heads of this many tenants (the smallest shares), this
# many jobs each, besides the store's candidates by priority and by age: a tenant
# whose jobs are all younger and lower than another's flood is still among them.
FAIR_TENANTS = 16
PER_TENANT = 4


class LeaseAsk:
    """What a worker's lease call states about itself."""

    def __init__(
        self,
        worker_id: str,
        models: Sequence[str],
        width: int = 1,
        max_jobs: int = 1,
        loaded: Sequence[str] | None = None,
        free_memory: float | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.models = list(models)
        self.width = width
        self.max_jobs = max_jobs
        self.loaded = None if loaded is None else frozenset(loaded)
        self.free_memory = free_memory


def fair_share(state: AppState, ask: LeaseAsk) -> tuple[FairShare, tuple[str, ...]]:
    """Each tenant's recent work and configured weight, and the tenants whose queue
    heads the lease must read: those with jobs waiting, the smallest shares first."""
    s = state.cfg.scheduler
    ledger = UsageLedger(state.jobs.engine)
    seen = ledger.fair_inputs(ask.models, state.clock() - s.fair_window_s, s.tenant_weights)
    weights = resolve_weights(s.tenant_weights, seen.tenants)
    fair = FairShare(usage=seen.usage, weights=weights, default_weight=s.default_weight)
    lowest = sorted(seen.queued_tenants, key=lambda tenant: (fair.share(tenant), tenant))
    return fair, tuple(lowest[:FAIR_TENANTS])


def _holds(caps: dict[str, Any]) -> list[str]:
    return [str(m) for m in caps.get("loaded", caps.get("models", []))]


def affinity(state: AppState, ask: LeaseAsk) -> Affinity:
    """The leasing worker's models in memory, load estimates, and the other idle workers
    that hold a model. A worker that does not say what it holds holds all it runs."""
    s = state.cfg.scheduler
    if ask.loaded is None:
        return Affinity(load_s=s.model_load_s, default_load_s=s.default_load_s)
    state.workers.note_loaded(ask.worker_id, sorted(ask.loaded))
    seen = IDLE_HEARTBEATS * state.cfg.queue.heartbeat_interval_s
    idle_warm = {
        (model, int(w.capabilities.get("width", 1)))
        for w in state.workers.active(seen)
        if w.id != ask.worker_id and w.status == "idle"
        for model in _holds(w.capabilities)
    }
    return Affinity(
        loaded=ask.loaded,
        load_s=s.model_load_s,
        default_load_s=s.default_load_s,
        idle_warm=frozenset(idle_warm),
    )


@dataclass(frozen=True)
class LeasePlan:
    """How the store claims for one lease: the policy's order, and the tenants whose
    queue heads it must read (the smallest fair shares first)."""

    order: LeaseOrder
    tenants: tuple[str, ...]
    per_tenant: int = PER_TENANT


def _family_of(state: AppState, model: str) -> str:
    return state.registry.get(model).family if model in state.registry else model


def _memory_of(state: AppState, job: JobRecord) -> float:
    """Bytes one more job of this shape adds to a batch: its denoising activations."""
    if job.model not in state.registry:
        return 0.0
    profile = state.registry.get(job.model).memory
    if profile is None:
        return 0.0
    shape = job_shape(job)
    return profile.job_activation_gib(shape.width, shape.height, shape.num_frames) * GIB


def placement(state: AppState, ask: LeaseAsk) -> LeasePlan:
    """The store's lease plan for this worker: the policies over this lease's context.
    Runs in a worker thread (it reads the database)."""
    s = state.cfg.scheduler
    fair, tenants = fair_share(state, ask)
    ctx = LeaseContext(fair=fair, affinity=affinity(state, ask))
    order = lease_order(
        ask.width,
        PlacementPolicy(aging_s=s.aging_s, max_parallel=s.max_parallel),
        state.service,
        lambda model: _family_of(state, model),
        ctx,
        max_jobs=ask.max_jobs,
        free_bytes=ask.free_memory,
        memory_of=lambda job: _memory_of(state, job),
    )
    return LeasePlan(order, tenants)


def billing_for(
    state: AppState,
    job: JobRecord,
    gpu_seconds: float,
    *,
    gpu_type: str | None = None,
    gpu_count: int | None = None,
    spot: bool | None = None,
) -> Billing:
    """The bill of ``job``: what the worker said at completion, else what it registered
    with; priced from ``cost.prices``. Runs in a worker thread (it reads the database)."""
    worker = state.workers.get(job.lease_owner) if job.lease_owner else None
    caps: dict[str, Any] = worker.capabilities if worker is not None else {}
    if not gpu_type:
        names = [str(g.get("name", "")) for g in caps.get("gpus", []) if isinstance(g, dict)]
        gpu_type = str(caps.get("gpu_type") or "") or gpu_type_of(
            str(caps.get("device", "")), names
        )
    gpu_type = gpu_type or UNKNOWN_GPU
    count = gpu_count or int(caps.get("width", 1) or 1)
    on_spot = bool(caps.get("spot", False)) if spot is None else spot
    price = price_for(state.cfg.cost.prices, gpu_type)
    dollars = job_dollars(gpu_seconds * count, price, on_spot)
    return Billing(gpu_type=gpu_type, gpu_count=count, spot=on_spot, cost_usd=dollars)
