"""The control-plane app: public API, worker API, origin, metrics, background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from cinecloud.api.errors import install_error_handlers
from cinecloud.api.limits import AbuseLimits
from cinecloud.api.loops import Loop, replica_name, run_leader_loops
from cinecloud.api.openapi import install_openapi
from cinecloud.api.request_metrics import CountRequests
from cinecloud.api.routers import (
    admin,
    checkpoints,
    completion,
    events,
    health,
    internal,
    limits,
    models,
    ops,
    usage,
    videos,
    webhooks,
)
from cinecloud.api.state import AppState
from cinecloud.api.studio import install_studio
from cinecloud.api.tracing import fastapi_telemetry
from cinecloud.api.webhook_loop import webhook_loop
from cinecloud.config import Config
from cinecloud.delivery import create_origin_router
from cinecloud.engine.registry import default_registry
from cinecloud.jobs import AccountStore, JobStore, WorkerStore, make_engine, migrate
from cinecloud.jobs.deadlines import expire_deadlines
from cinecloud.jobs.leader import leader_lock
from cinecloud.jobs.usage import UsageLedger
from cinecloud.jobs.webhooks import WebhookStore
from cinecloud.scheduler.autoscaler import autoscale_loop, autoscale_once
from cinecloud.storage import open_store
from cinecloud.telemetry import Metrics, WorkerGpus
from cinecloud.webhooks import Resolver, system_resolver

__all__ = ["build_state", "create_app"]

log = logging.getLogger("cinecloud.api")

# A worker counts as registered while it has been seen this recently.
WORKER_SEEN_S = 60.0


def build_state(
    cfg: Config,
    *,
    clock: Callable[[], float] = time.time,
    seeds: Callable[[], int] | None = None,
    resolver: Resolver | None = None,
) -> AppState:
    engine = make_engine(cfg.db.url)
    migrate(engine)
    jobs = JobStore(
        engine, clock=clock, max_attempts=cfg.queue.max_attempts, job_ttl_s=cfg.queue.job_ttl_s
    )
    workers = WorkerStore(engine, clock=clock)
    hooks = WebhookStore(engine, clock=clock)
    registry = default_registry(cfg.engine)
    metrics = Metrics()
    metrics.watch(
        jobs.counts,
        lambda: len(workers.active(WORKER_SEEN_S)),
        models=lambda: registry.ids,
        gpus=lambda: _worker_gpus(workers),
        webhook_backlog=hooks.backlog,
    )
    return AppState(
        cfg=cfg,
        jobs=jobs,
        accounts=AccountStore(engine, clock=clock),
        workers=workers,
        store=open_store(cfg.storage),
        registry=registry,
        metrics=metrics,
        clock=clock,
        seeds=seeds or (lambda: secrets.randbelow(2**31)),
        webhooks=hooks,
        limits=AbuseLimits(cfg.limits, lambda tid: UsageLedger(engine).tenants([tid]).get(tid)),
        resolver=resolver or system_resolver,
    )


def _worker_gpus(workers: WorkerStore) -> list[WorkerGpus]:
    """The GPU samples of the workers seen recently (sent with their heartbeats)."""
    return [
        WorkerGpus(w.id, tuple((w.gpu_stats or {}).get("gpus", ())))
        for w in workers.active(WORKER_SEEN_S)
    ]


async def _sweep_once(state: AppState) -> None:
    expired = await run_in_threadpool(state.jobs.expire_leases)
    for job_id in expired:
        job = await run_in_threadpool(state.jobs.get_job, job_id)
        if job.status == "failed":
            state.metrics.failed.labels(model=job.model, code=job.error_code or "").inc()
            await run_in_threadpool(state.store.delete_prefix, f"t/{job.tenant_id}/v/{job.id}/")
        log.warning("lease on %s expired; job is now %s", job_id, job.status)
    if expired:
        state.notifier.notify()
        state.events.notify()
    await _deadlines_once(state)
    await _retention_once(state)


async def _deadlines_once(state: AppState) -> None:
    """Fail the queued jobs whose ``Cancel-After`` deadline came before they started."""
    late = await run_in_threadpool(expire_deadlines, state.jobs)
    for job in late:
        state.metrics.failed.labels(model=job.model, code=job.error_code or "").inc()
        log.info("job %s did not start before its deadline; it failed", job.id)
    if late:
        state.events.notify()


async def _retention_once(state: AppState) -> None:
    """Remove the files of jobs past their ``expires_at`` (``queue.job_ttl_s`` after
    completion): the blobs first, then the records, so a crash between the two only
    means the next sweep removes nothing and forgets them."""
    due = await run_in_threadpool(state.jobs.past_retention)
    for job in due:
        await run_in_threadpool(state.store.delete_prefix, f"t/{job.tenant_id}/v/{job.id}/")
        await run_in_threadpool(state.jobs.drop_files, job.id)
        log.info("job %s expired; its %d files are removed", job.id, len(job.artifacts))
    if due:
        state.events.notify()


def _sweep_loop(cfg: Config) -> Loop:
    return Loop("sweep", _sweep_once, cfg.queue.sweep_interval_s)


async def _autoscale_once(state: AppState) -> None:
    if state.autoscaler is not None:
        await asyncio.to_thread(autoscale_once, state.autoscaler, state.clock())


def _autoscale_loop(cfg: Config) -> Loop:
    return Loop("autoscale", _autoscale_once, cfg.autoscale.interval_s)


def create_app(cfg: Config, state: AppState | None = None) -> FastAPI:
    st = state or build_state(cfg)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        st.notifier.bind(asyncio.get_running_loop())
        st.events.bind(asyncio.get_running_loop())
        # Expired leases and retries, deadlines and retention: on the leading replica only.
        st.loops.setdefault("sweep", _sweep_loop(cfg))
        tasks = []
        if st.autoscaler is not None and cfg.autoscale.launcher == "observe":
            # Starts nothing, only publishes the desired-workers gauge: every replica
            # keeps its own fresh, so a scaler reading any of them sees the same.
            loop = autoscale_loop(st.autoscaler, st.clock, cfg.autoscale.interval_s)
            tasks.append(asyncio.create_task(loop))
        elif st.autoscaler is not None:  # it launches workers: one replica does
            st.loops.setdefault("autoscale", _autoscale_loop(cfg))
        st.leadership.replica = replica_name(cfg.leader.replica, cfg.server.port)
        lock = leader_lock(st.jobs.engine, cfg.leader.lock_key)
        tasks.append(asyncio.create_task(run_leader_loops(st, lock)))
        # Webhook delivery: its attempts are recorded per message in one transaction.
        tasks.append(asyncio.create_task(webhook_loop(st)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="cinecloud",
        version="0.1.0",
        description="Text to video as a service, shaped like the OpenAI Videos API.",
        lifespan=lifespan,
        **fastapi_telemetry(),
    )
    app.state.cinecloud = st
    install_error_handlers(app)
    app.add_middleware(CountRequests, metrics=st.metrics)  # outermost: every request
    app.include_router(videos.router)
    app.include_router(events.router)
    app.include_router(models.router)
    app.include_router(usage.router)
    app.include_router(limits.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(internal.router)
    app.include_router(internal.upload_router)
    app.include_router(completion.router)
    app.include_router(checkpoints.router)
    app.include_router(webhooks.router)
    app.include_router(create_origin_router(st.store, secret=cfg.delivery.secret, clock=st.clock))
    app.include_router(ops.router)
    install_studio(app)
    install_openapi(app, st.registry.ids, st.registry.default_id)
    return app
