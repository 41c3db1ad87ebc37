"""The worker parent: speaks the worker protocol and keeps the engine child in line.

One thread (the caller of :func:`run_worker`) leases jobs, hands each to the
spawned child, forwards its progress, uploads its files and reports the result.
It is also the watchdog: when a job must stop it sends :class:`Cancel`, and a
child that has not acknowledged within ``cancel_grace_s`` is killed and replaced.
A second thread heartbeats the held leases (quickly while a job runs, so a cancel
reaches the child fast) and raises a job's cancel flag when told to.

Overlap (``worker.overlap``, on by default): when the child reports a job's last
denoising step (only the decode is left on the engine), the parent leases the next job
and sends it; the child starts it the moment the engine is free, so the GPU denoises
job n+1 while job n renders in the child's render process and uploads here. At most two
jobs are held: the one being finished and the next, already on the engine.

Preemption: SIGTERM (a spot notice) stops the worker. The child saves the job in hand at
its next step boundary and stops; the parent uploads that checkpoint, gives the lease
back (the job is queued again, no attempt counted) and exits with 0. The child's periodic
checkpoints go up as they come (:mod:`cinecloud.workers.checkpoints`).

``gpu_seconds`` reported on completion is the wall time of the engine run
(text encode, denoise and decode; not model load, render or upload). It is
counted the same way when the engine runs on the CPU, so CPU time is billed
like GPU time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cinecloud.config import Config
from cinecloud.telemetry import gpu_type_of
from cinecloud.telemetry.gpu import GpuSample, sample_gpus
from cinecloud.telemetry.tracing import setup_tracing
from cinecloud.workers.checkpoints import CHECKPOINT_RETRY, CheckpointUploads
from cinecloud.workers.child import job_dir
from cinecloud.workers.client import (
    ControlPlaneClient,
    ControlPlaneError,
    HeldLease,
    LeaseLost,
    Unreachable,
)
from cinecloud.workers.delivery import UPLOAD_THREADS, upload_files
from cinecloud.workers.handle import ChildExited, ChildProcess
from cinecloud.workers.messages import (
    Cancel,
    Checkpoint,
    Done,
    Failed,
    FailureCode,
    Preempt,
    Progress,
    Ready,
    RunJob,
)
from cinecloud.workers.progress import (
    EVENT_INTERVAL_S,
    EventThrottle,
    progress_event,
    progress_percent,
)
from cinecloud.workers.tracing import trace_run

__all__ = [
    "BUSY_POLL_S",
    "EVENT_INTERVAL_S",
    "ChildExited",
    "ChildProcess",
    "EventThrottle",
    "Worker",
    "progress_event",
    "progress_percent",
    "run_worker",
]

log = logging.getLogger(__name__)

#: Heartbeat period while a job runs: how fast a cancel reaches the worker.
BUSY_POLL_S = 0.3
_CHILD_POLL_S = 0.05
_RETRY_PAUSE_S = 1.0
_EVENTS_PAUSE_S = 5.0
_STOPPING = "worker stopping"
# The child's acknowledgements of a stop (never reported with ``fail``).
_STOP_CODES = (FailureCode.CANCELED, FailureCode.PREEMPTED)

# ---------------------------------------------------------------- the worker


def _engine_nearly_done(msg: Progress) -> bool:
    """The job's last denoising step is done (only decode is left on the engine) or it
    renders: time to lease the next job, so it waits in the child's pipe when the engine
    frees up rather than after a lease round trip."""
    last_step = msg.stage == "denoise" and msg.total_steps > 0 and msg.step >= msg.total_steps
    return last_step or msg.stage == "render"


@dataclass
class _ActiveJob:
    job: RunJob
    dir: Path
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    sent: bool = False  # already handed to the child (a job leased ahead)
    throttle: EventThrottle = field(default_factory=EventThrottle)
    engine_done: bool = False  # its last denoising step is reported: the engine is nearly free
    leased_at: float = 0.0  # wall clock, for its trace
    load_span: tuple[float, float] | None = None  # the model load it waited for, if any

    def request_cancel(self, reason: str) -> None:
        if not self.cancel.is_set():
            self.reason = reason
            self.cancel.set()

    @property
    def held(self) -> HeldLease:
        return HeldLease(self.job.job_id, self.job.lease_id)


class Worker:
    """One worker: a parent speaking HTTP plus one engine child."""

    def __init__(
        self,
        cfg: Config,
        stop: threading.Event,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        make_client: Callable[[], ControlPlaneClient] | None = None,
        gpus: Callable[[], list[GpuSample]] = sample_gpus,
    ) -> None:
        self._cfg = cfg
        self._stop = stop
        self._clock = clock
        self._wall = wall  # stamps the events the parent itself sends (upload)
        self._make_client = make_client or (
            lambda: ControlPlaneClient(cfg.worker.server_url, cfg.worker.token)
        )
        self._client = self._make_client()
        self._child: ChildProcess | None = None
        self._ready: Ready | None = None
        self._pending_load_s = 0.0
        self._load_span: tuple[float, float] | None = None
        self._gpus = gpus  # NVML, sent with each heartbeat
        self._events_paused_until = 0.0
        self._worker_id: str | None = None
        self._hb_interval_s = cfg.queue.heartbeat_interval_s
        self._active: _ActiveJob | None = None
        self._next: _ActiveJob | None = None  # leased ahead, already on the engine
        self._early: dict[str, Done | Failed] = {}  # the next job's result, come early
        self._hb_wake = threading.Event()
        self._hb_done = threading.Event()
        self._uploads = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="cinecloud-upload")
        self._checkpoints = CheckpointUploads(
            ControlPlaneClient(cfg.worker.server_url, cfg.worker.token, retry=CHECKPOINT_RETRY)
        )

    def run(self) -> int:
        """Serve until ``stop`` is set (0) or the engine cannot start (1)."""
        self._cfg.worker.work_dir.mkdir(parents=True, exist_ok=True)
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="cinecloud-heartbeat")
        try:
            if not self._spawn_child() or not self._register():
                return 0 if self._stop.is_set() else 1
            heartbeat.start()
            return self._serve()
        finally:
            self._hb_done.set()
            self._hb_wake.set()
            if heartbeat.is_alive():
                heartbeat.join()
            if self._child is not None:
                self._child.stop(timeout=self._cfg.worker.cancel_grace_s)
            self._uploads.shutdown(wait=True)
            self._checkpoints.close()
            self._client.close()
            log.info("worker stopped")

    # ---------------------------------------------------------- setup

    def _spawn_child(self) -> bool:
        child = ChildProcess(self._cfg)
        child.start()
        self._child = child
        log.info("engine process %s loading %s", child.pid, self._cfg.worker.models or "default")
        while not self._stop.is_set():
            try:
                msg = child.recv(0.2)
            except ChildExited as exc:
                log.error("%s while loading", exc)
                return False
            if isinstance(msg, Ready):
                log.info("engine ready: %s in %.2fs on %s", msg.models, msg.load_s, msg.device)
                self._ready, self._pending_load_s = msg, msg.load_s
                self._load_span = (self._wall() - msg.load_s, self._wall())
                return True
            if isinstance(msg, Failed):
                log.error("model load failed (%s): %s", msg.code, msg.message)
                return False
        return False

    def _identity(self) -> tuple[str, dict[str, Any]]:
        """The worker's name and the capabilities it registers with."""
        assert self._ready is not None
        hostname = socket.gethostname()
        capabilities = {
            "device": self._ready.device,
            "gpus": [asdict(g) for g in self._ready.gpus],
            "models": list(self._ready.models),
            "width": self._width(),
            # for the bill: the GPU type it runs on and whether the machine is spot
            "gpu_type": self._gpu_type(),
            "spot": self._cfg.worker.spot,
            "hostname": hostname,
            "pid": os.getpid(),
        }
        return self._cfg.worker.name or f"{hostname}-{os.getpid()}", capabilities

    def _gpu_type(self) -> str:
        assert self._ready is not None
        names = [g.name for g in self._ready.gpus]
        return gpu_type_of(self._ready.device, names, self._cfg.worker.gpu_type)

    def _width(self) -> int:
        """The worker's ranks (``worker.parallel``): the scheduler places jobs by it."""
        from cinecloud.workers.ranks import worker_plan

        return worker_plan(self._cfg).world_size

    def _register(self) -> bool:
        name, capabilities = self._identity()
        while not self._stop.is_set():
            try:
                reg = self._client.register(name, self._worker_id, capabilities)
            except Unreachable as exc:
                log.warning("cannot register yet: %s", exc)
                self._stop.wait(_RETRY_PAUSE_S)
                continue
            except ControlPlaneError as exc:
                log.error("registration refused: %s", exc)
                return False
            self._worker_id, self._hb_interval_s = reg.worker_id, reg.heartbeat_interval_s
            log.info("registered as %s (%s)", reg.worker_id, name)
            return True
        return False

    # ---------------------------------------------------------- the lease loop

    def _serve(self) -> int:
        assert self._worker_id is not None
        wait_s = self._cfg.queue.lease_long_poll_s
        while not self._stop.is_set():
            if not self._ensure_child():
                return 0 if self._stop.is_set() else 1
            assert self._ready is not None
            try:
                jobs = self._client.lease(
                    self._worker_id, self._ready.models, wait_s=wait_s, width=self._width()
                )
            except (Unreachable, ControlPlaneError) as exc:
                log.warning("lease failed: %s", exc)
                self._stop.wait(_RETRY_PAUSE_S)
                continue
            for job in jobs:
                if self._stop.is_set():
                    self._checkpoints.release(job, _STOPPING)
                    continue
                self._run_job(job)
            while self._next is not None and not self._stop.is_set():
                ahead, self._next = self._next, None
                self._run_active(ahead)
        if self._next is not None:  # leased ahead: the child stops it too, then it is given back
            ahead, self._next = self._next, None
            self._run_active(ahead)
        return 0

    def _ensure_child(self) -> bool:
        if self._child is not None and self._child.alive:
            return True
        if self._child is not None:
            log.warning("engine process %s is gone; starting a new one", self._child.pid)
            self._child.kill()
        return self._spawn_child()

    def _run_job(self, job: RunJob) -> None:
        active = self._prepare(job)
        if active is not None:
            self._run_active(active)

    def _prepare(self, job: RunJob) -> _ActiveJob | None:
        """The job with its inputs fetched into its directory, or None (failure reported)."""
        try:
            path = job_dir(self._cfg.worker.work_dir, job.job_id)
        except ValueError as exc:
            self._report_failure(job, Failed(job.job_id, FailureCode.INVALID_JOB, str(exc)))
            return None
        try:
            job = self._fetch_inputs(job, path)
        except (ControlPlaneError, OSError) as exc:
            shutil.rmtree(path, ignore_errors=True)
            self._report_failure(
                job, Failed(job.job_id, FailureCode.INPUT_UNAVAILABLE, str(exc), retryable=True)
            )
            return None
        return _ActiveJob(job, path, leased_at=self._wall())

    def _run_active(self, active: _ActiveJob) -> None:
        job = active.job
        self._set_active(active)
        model_load, self._pending_load_s = self._pending_load_s, 0.0
        active.load_span, self._load_span = self._load_span, None
        log.info("job %s (attempt %d) started", job.job_id, job.attempt)
        replace_child = False
        try:
            result, replace_child = self._execute(active)
            # Its checkpoints go up first, unless it is done or canceled: a retry or the
            # next lease resumes from them.
            keep = not isinstance(result, Done) and active.reason in ("", _STOPPING)
            self._checkpoints.settle(job.job_id, keep=keep)
            if isinstance(result, Done):
                self._deliver(active, result, model_load)
            elif isinstance(result, Failed):
                self._report_failure(job, result)
                trace_run(job, active.leased_at, self._wall(), {}, error=result.code)
            else:
                log.info("job %s stopped: %s", job.job_id, active.reason or "canceled")
            stopping = self._stop.is_set() and active.reason in ("", _STOPPING)
            if stopping and not isinstance(result, Failed):  # not finished here: give it back
                self._checkpoints.release(job, "preempted")
        finally:
            self._checkpoints.settle(job.job_id, keep=False)
            self._set_active(None)
            shutil.rmtree(active.dir, ignore_errors=True)
        if replace_child and self._child is not None:
            self._child.kill()  # the next turn of the loop starts a fresh one
            self._drop_next("the engine process was replaced")

    def _lease_ahead(self) -> None:
        """Lease and send the next job while the current one renders (``worker.overlap``)."""
        if not self._cfg.worker.overlap or self._next is not None or self._stop.is_set():
            return
        assert self._worker_id is not None and self._ready is not None and self._child
        try:
            jobs = self._client.lease(
                self._worker_id, self._ready.models, wait_s=0.0, width=self._width()
            )
        except (Unreachable, ControlPlaneError) as exc:
            log.warning("lease ahead failed: %s", exc)
            return
        if not jobs:
            return
        job, *extra = jobs  # one is asked for
        for other in extra:
            log.warning("job %s leased beyond the one asked for; it expires", other.job_id)
        active = self._prepare(job)
        if active is None:
            return
        self._child.send(active.job)
        active.sent = True
        self._next = active
        self._hb_wake.set()

    def _drop_next(self, why: str) -> None:
        """The job leased ahead died with the engine: it goes back to the queue."""
        ahead, self._next = self._next, None
        if ahead is None:
            return
        self._early.pop(ahead.job.job_id, None)
        shutil.rmtree(ahead.dir, ignore_errors=True)
        crash = Failed(ahead.job.job_id, FailureCode.WORKER_CRASHED, why, retryable=True)
        self._report_failure(ahead.job, crash)

    def _fetch_inputs(self, job: RunJob, path: Path) -> RunJob:
        """Download the job's input files; the child gets their local paths in its params."""
        if not job.inputs:
            return job
        path.mkdir(parents=True, exist_ok=True)
        params = dict(job.params)
        for role, url in job.inputs.items():
            dest = self._client.download(url, path / f"input_{role}")
            params[f"{role}_path"] = str(dest)
        return dataclasses.replace(job, params=params, inputs={})

    def _set_active(self, active: _ActiveJob | None) -> None:
        self._active = active
        self._hb_wake.set()

    # ---------------------------------------------------------- one job in the child

    def _execute(self, active: _ActiveJob) -> tuple[Done | Failed | None, bool]:
        """Run the job in the child. Returns (result or None if stopped, replace the child)."""
        assert self._child is not None
        child, job_id = self._child, active.job.job_id
        if not active.sent:
            child.send(active.job)
            active.sent = True
        if active.engine_done:  # its engine work ended while the job before it finished
            self._lease_ahead()
        early = self._early.pop(job_id, None)
        if early is not None:  # it ended while the job before it was finishing
            stopped = active.cancel.is_set() or (
                isinstance(early, Failed) and early.code in _STOP_CODES
            )
            return (None if stopped else early), False
        deadline: float | None = None
        while True:
            if deadline is None and (active.cancel.is_set() or self._stop.is_set()):
                deadline = self._stop_job(active)
            elif deadline is not None and self._clock() >= deadline:
                log.warning("engine did not stop job %s in time; killing it", job_id)
                child.kill()
                return None, True
            try:
                msg = child.recv(_CHILD_POLL_S)
            except ChildExited as exc:
                if deadline is not None:
                    return None, True
                log.error("job %s: %s", job_id, exc)
                crash = Failed(job_id, FailureCode.WORKER_CRASHED, str(exc), retryable=True)
                return crash, True
            if isinstance(msg, Checkpoint):
                owner = active if msg.job_id == job_id else self._next
                if owner is not None and owner.job.job_id == msg.job_id:
                    self._checkpoints.submit(owner.job, msg)
            elif isinstance(msg, Progress) and deadline is None and msg.job_id == job_id:
                self._forward(active, msg)
                if _engine_nearly_done(msg):
                    active.engine_done = True
                    self._lease_ahead()
            elif isinstance(msg, Progress) and self._next is not None and self._is_next(msg.job_id):
                self._forward(self._next, msg)  # the job ahead, already on the engine
                self._next.engine_done |= _engine_nearly_done(msg)
            elif isinstance(msg, Done | Failed) and msg.job_id == job_id:
                stopped = active.cancel.is_set() or (
                    isinstance(msg, Failed) and msg.code in _STOP_CODES
                )
                # A parallel engine that lost a rank reports it, then is replaced.
                lost = isinstance(msg, Failed) and msg.engine_exits
                return (None if stopped else msg), lost
            elif isinstance(msg, Done | Failed) and self._is_next(msg.job_id):
                self._early[msg.job_id] = msg

    def _stop_job(self, active: _ActiveJob) -> float:
        """Tell the child to stop ``active``: a Cancel when it is canceled (or its lease
        is lost), a Preempt when the worker stops. Returns by when it must have stopped."""
        assert self._child is not None
        worker = self._cfg.worker
        if active.cancel.is_set():
            self._child.send(Cancel(active.job.job_id))
            return self._clock() + worker.cancel_grace_s
        active.request_cancel(_STOPPING)
        self._child.send(Preempt())
        return self._clock() + worker.preempt_grace_s

    def _forward(self, active: _ActiveJob, msg: Progress) -> None:
        """Send the child's progress on as an event, as often as the job's throttle allows
        (a step that brings a preview always goes)."""
        due = active.throttle.should_send(msg.stage, msg.step, msg.total_steps, self._clock())
        if due or msg.preview:
            self._send_event(
                active, msg.stage, msg.step, msg.total_steps, msg.elapsed_s, msg.at, msg.preview
            )

    def _is_next(self, job_id: str) -> bool:
        return self._next is not None and self._next.job.job_id == job_id

    def _send_event(
        self,
        active: _ActiveJob,
        stage: str,
        step: int,
        total: int,
        elapsed_s: float,
        at: float,
        preview: str = "",
    ) -> None:
        if self._clock() < self._events_paused_until:
            return
        event = progress_event(stage, step, total, elapsed_s, at, preview)
        job = active.job
        try:
            cancel = self._client.events(job.job_id, job.lease_id, [event])
        except LeaseLost:
            active.request_cancel("lease lost")
        except (Unreachable, ControlPlaneError) as exc:
            # Progress is best-effort: while the control plane is away, stop asking
            # for a while so the watchdog loop keeps up with the child.
            log.warning("progress events for %s paused: %s", job.job_id, exc)
            self._events_paused_until = self._clock() + _EVENTS_PAUSE_S
        else:
            if cancel:
                active.request_cancel("canceled by the control plane")

    # ---------------------------------------------------------- reporting

    def _stopping(self, active: _ActiveJob) -> bool:
        return active.cancel.is_set() or self._stop.is_set()

    def _deliver(self, active: _ActiveJob, done: Done, model_load: float) -> None:
        """Upload the rendered files, then complete the job (never when canceled)."""
        job = active.job
        try:
            self._send_event(active, "upload", 0, len(done.files), 0.0, self._wall())
            started, upload_at = self._clock(), self._wall()
            stopping = functools.partial(self._stopping, active)
            artifacts = upload_files(self._client, self._uploads, job, done.files, stopping)
            upload_s = self._clock() - started
            if artifacts is None:
                return
            self._client.complete(
                job.job_id,
                job.lease_id,
                artifacts=artifacts,
                timings={"model_load": model_load, **done.timings, "upload": upload_s},
                gpu_seconds=done.engine_s,
                seed=done.seed,
                engine={"device": done.device, "dtype": done.dtype, **done.engine},
                bill={
                    "gpu_type": self._gpu_type(),
                    "gpu_count": self._width(),
                    "spot": self._cfg.worker.spot,
                },
                qc=done.qc,
            )
            log.info("job %s completed", job.job_id)
            spans = {**done.spans, "upload": [upload_at, upload_at + upload_s]}
            if active.load_span is not None:
                spans["model_load"] = list(active.load_span)
            trace_run(job, active.leased_at, self._wall(), spans)
        except LeaseLost:
            log.info("job %s: lease lost during upload; dropped", job.job_id)
        except ControlPlaneError as exc:
            log.error("job %s: upload refused: %s", job.job_id, exc)
            failed = Failed(job.job_id, FailureCode.UPLOAD_FAILED, str(exc), retryable=True)
            self._report_failure(job, failed)
        except Unreachable as exc:
            log.error("job %s: %s; it is retried once its lease expires", job.job_id, exc)

    def _report_failure(self, job: RunJob, failed: Failed) -> None:
        log.warning("job %s failed (%s): %s", job.job_id, failed.code, failed.message)
        try:
            self._client.fail(
                job.job_id, job.lease_id, failed.code, failed.message, failed.retryable
            )
        except LeaseLost:
            log.info("job %s: lease already lost", job.job_id)
        except (Unreachable, ControlPlaneError) as exc:
            log.error("job %s: could not report the failure: %s", job.job_id, exc)

    # ---------------------------------------------------------- heartbeat thread

    def _heartbeat_loop(self) -> None:
        client = self._make_client()
        try:
            while not self._hb_done.is_set():
                self._hb_wake.clear()
                held = [a for a in (self._active, self._next) if a is not None]
                self._heartbeat_once(client, held)
                busy = bool(held)
                self._hb_wake.wait(BUSY_POLL_S if busy else self._hb_interval_s)
        finally:
            client.close()

    def _heartbeat_once(self, client: ControlPlaneClient, jobs: list[_ActiveJob]) -> None:
        assert self._worker_id is not None
        held = [active.held for active in jobs]
        try:
            gpus = [g.to_dict() for g in self._gpus()]
            reply = client.heartbeat(self._worker_id, held, "busy" if held else "idle", gpus)
        except LeaseLost:
            for active in jobs:  # which lease went is not said: stop every job held
                active.request_cancel("lease lost")
        except ControlPlaneError as exc:
            log.warning("heartbeat refused: %s", exc)
            if exc.status == 404:  # the control plane forgot us (e.g. a fresh database)
                self._reregister(client)
        except Unreachable as exc:
            log.warning("heartbeat failed: %s", exc)
        else:
            for active in jobs:
                if active.job.job_id in reply.cancel:
                    active.request_cancel("canceled by the control plane")

    def _reregister(self, client: ControlPlaneClient) -> None:
        name, capabilities = self._identity()
        try:
            reg = client.register(name, self._worker_id, capabilities)
        except (Unreachable, ControlPlaneError) as exc:
            log.warning("re-registration failed: %s", exc)
            return
        self._worker_id = reg.worker_id
        log.info("re-registered as %s", reg.worker_id)


# ---------------------------------------------------------------- entry point


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop`` (only the main thread can install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_worker(cfg: Config, *, stop: threading.Event | None = None) -> int:
    """Run one worker until ``stop`` is set or SIGTERM/SIGINT arrives; the exit code."""
    stop = stop if stop is not None else threading.Event()
    setup_tracing(cfg.tracing, "worker")
    with _stop_on_signals(stop):
        return Worker(cfg, stop).run()
