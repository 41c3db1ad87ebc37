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
from cinecloud.api.routers import admin, events, health, internal, models, ops, videos
from cinecloud.api.state import AppState
from cinecloud.api.studio import install_studio
from cinecloud.config import Config
from cinecloud.delivery import create_origin_router
from cinecloud.engine.registry import default_registry
from cinecloud.jobs import AccountStore, JobStore, WorkerStore, make_engine, migrate
from cinecloud.scheduler.autoscaler import autoscale_loop
from cinecloud.storage import open_store
from cinecloud.telemetry import Metrics

__all__ = ["build_state", "create_app"]

log = logging.getLogger("cinecloud.api")

# A worker counts as registered while it has been seen this recently.
WORKER_SEEN_S = 60.0


def build_state(
    cfg: Config,
    *,
    clock: Callable[[], float] = time.time,
    seeds: Callable[[], int] | None = None,
) -> AppState:
    engine = make_engine(cfg.db.url)
    migrate(engine)
    jobs = JobStore(
        engine, clock=clock, max_attempts=cfg.queue.max_attempts, job_ttl_s=cfg.queue.job_ttl_s
    )
    workers = WorkerStore(engine, clock=clock)
    metrics = Metrics()
    metrics.watch(jobs.counts, lambda: len(workers.active(WORKER_SEEN_S)))
    return AppState(
        cfg=cfg,
        jobs=jobs,
        accounts=AccountStore(engine, clock=clock),
        workers=workers,
        store=open_store(cfg.storage),
        registry=default_registry(cfg.engine),
        metrics=metrics,
        clock=clock,
        seeds=seeds or (lambda: secrets.randbelow(2**31)),
    )


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
    await _retention_once(state)


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


async def _sweeper(state: AppState) -> None:
    """Returns jobs whose lease expired to the queue; removes expired jobs' files."""
    while True:
        try:
            await _sweep_once(state)
        except Exception:  # keep sweeping through a database blip
            log.exception("lease sweep failed")
        await asyncio.sleep(state.cfg.queue.sweep_interval_s)


def create_app(cfg: Config, state: AppState | None = None) -> FastAPI:
    st = state or build_state(cfg)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        st.notifier.bind(asyncio.get_running_loop())
        st.events.bind(asyncio.get_running_loop())
        tasks = [asyncio.create_task(_sweeper(st))]
        if st.autoscaler is not None:
            loop = autoscale_loop(st.autoscaler, st.clock, cfg.autoscale.interval_s)
            tasks.append(asyncio.create_task(loop))
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
    )
    app.state.cinecloud = st
    install_error_handlers(app)
    app.include_router(videos.router)
    app.include_router(events.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(internal.router)
    app.include_router(internal.upload_router)
    app.include_router(create_origin_router(st.store, secret=cfg.delivery.secret, clock=st.clock))
    app.include_router(ops.router)
    install_studio(app)
    return app
