"""The autoscaler wired to the control plane: pools from the config, service-time
estimates from the model registry, the store's workers and the app's metrics."""

from __future__ import annotations

from cinecloud.api.state import AppState
from cinecloud.config import AutoscaleConfig
from cinecloud.scheduler import JobShape
from cinecloud.scheduler.autoscale import PoolPolicy
from cinecloud.scheduler.autoscaler import Autoscaler, Launcher, ObservedLauncher

__all__ = ["WORKER_SEEN_S", "make_autoscaler", "observed_launcher", "pool_policy"]

# A worker counts as running while it has been seen this recently.
WORKER_SEEN_S = 60.0


def pool_policy(cfg: AutoscaleConfig) -> PoolPolicy:
    """The policy settings of every pool (refuses inconsistent ones)."""
    return PoolPolicy(
        min_workers=cfg.min_workers,
        max_workers=cfg.max_workers,
        target_wait_s=cfg.target_wait_s,
        wait_quantile=cfg.wait_quantile,
        cold_start_s=cfg.cold_start_s,
        idle_to_zero_s=cfg.idle_to_zero_s,
        upscale_delay_s=cfg.upscale_delay_s,
        downscale_delay_s=cfg.downscale_delay_s,
        on_demand_base=cfg.on_demand_base,
        on_demand_share=cfg.on_demand_share,
    )


def observed_launcher(state: AppState) -> ObservedLauncher:
    """Counts the registered workers that serve each pool's model; starts nothing."""

    def registered() -> list[list[str]]:
        seen = state.workers.active(WORKER_SEEN_S)
        return [list(w.capabilities.get("models", [])) for w in seen]

    return ObservedLauncher(registered)


def make_autoscaler(state: AppState, launcher: Launcher, name: str = "local") -> Autoscaler:
    """The autoscaler of ``state``'s pools (``autoscale.pools``, or the default model).

    A pool's fallback service time is its model's default request on one worker.
    """
    cfg = state.cfg.autoscale
    reg = state.registry
    pools = list(cfg.pools) or [reg.default_id]
    unknown = [p for p in pools if p not in reg]
    if unknown:
        raise ValueError(f"autoscale.pools names unknown models: {', '.join(unknown)}")

    def family_of(model: str) -> str:
        return reg.get(model).family if model in reg else model

    fallback = {}
    for pool in pools:
        d = reg.get(pool).defaults
        shape = JobShape(d.width, d.height, d.num_frames, d.steps, d.guidance_scale)
        fallback[pool] = state.service.service_s(family_of(pool), shape, 1)
    return Autoscaler(
        jobs=state.jobs,
        launcher=launcher,
        pools=pools,
        policy=pool_policy(cfg),
        service=state.service,
        family_of=family_of,
        fallback_service_s=fallback,
        half_life_s=cfg.arrival_half_life_s,
        metrics=state.metrics,
        history=cfg.history,
        launcher_name=name,
    )
