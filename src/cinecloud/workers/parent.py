"""The worker parent: speaks the worker protocol and keeps the engine child in line.

Threads, each with one job:

- the **lease thread** (:meth:`Worker._lease_loop`) keeps jobs leased ahead: whenever
  the limits leave room it asks for up to that many jobs (:meth:`Worker._take`, the one
  place the worker leases), fetches their inputs and holds them (:mod:`.held`);
- the **engine loop** (the caller of :func:`run_worker`) hands held jobs to the spawned
  child in lease order, forwards its progress, and is the watchdog: a job that must stop
  gets :class:`Cancel` (a child that has not answered within ``cancel_grace_s`` is killed
  and replaced);
- a **finisher** per ended job uploads its files and completes it, reports its failure,
  or gives its lease back, so a slow upload never holds up the engine or the leasing;
- the **heartbeat** thread renews every held lease (quickly while any is held, so a
  cancel reaches the worker fast) and raises a job's cancel flag when told to.

Overlap (``worker.overlap``, on by default): the worker holds the job on the engine and
the next one, already waiting on the child's pipe, so the engine starts it the moment it
frees up; meanwhile earlier jobs render in the child's render processes
(``worker.render_processes``, side by side) and upload here. A job stops counting
against that look-ahead when its engine work ends (the child's ``render`` progress);
at most ``2 x render_processes + 2`` jobs are held in all, so rendering or uploading
that falls behind the engine stops the leasing instead of piling up leases. Without
overlap the worker holds one job at a time. A job canceled before it reached the engine
is dropped (the child drops one still waiting on its pipe); one rendering is dropped
when its render ends.

Batching (``worker.max_batch``; 0, the default, is 8 on a GPU and none on a CPU): the
lease thread waits for room for a whole batch and asks for up to ``max_batch`` jobs; the
scheduler hands out the best job and the queued ones that batch with it. The engine loop
sends the compatible jobs of one lease (:func:`.batches.group_jobs`) as one
:class:`RunBatch`: one engine call denoises them together, and from then on each is a
job like any other here (its own progress, cancel, render, upload and result). The
look-ahead and the cap above count in batches then: two batches short of the end of
their engine work, ``2 x render_processes + 2 x max_batch`` jobs in all.

When the engine child dies, the jobs it held short of the end of their engine work
fail as retryable (``worker_crashed``: one of them is the cause); those already
rendering are given back (``release``, no attempt counted), and so is every other job
when the child is killed for one job's sake (a cancel it ignored) or a parallel rank is
lost.

Preemption: SIGTERM (a spot notice) stops the worker. It leases no more and gives back
every job it holds: those not on the engine at once, and the child saves the job in hand
at its next step boundary and stops; the parent uploads that checkpoint, gives the lease
back (the job is queued again, no attempt counted) and exits with 0 once nothing is
held. A child that has not stopped within ``preempt_grace_s`` is killed first. The
child's periodic checkpoints go up as they come (:mod:`cinecloud.workers.checkpoints`).

``gpu_seconds`` reported on completion is the wall time of the engine run
(text encode, denoise and decode; not model load, render or upload). It is
counted the same way when the engine runs on the CPU, so CPU time is billed
like GPU time. A batch's engine time is split evenly among its jobs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cinecloud.config import Config
from cinecloud.telemetry import gpu_type_of
from cinecloud.telemetry.gpu import GpuSample, sample_gpus
from cinecloud.telemetry.tracing import setup_tracing
from cinecloud.workers.batches import AUTO_MAX_BATCH_GPU, free_memory, group_jobs, max_batch
from cinecloud.workers.checkpoints import CHECKPOINT_RETRY, CheckpointUploads
from cinecloud.workers.child import job_dir
from cinecloud.workers.client import (
    ControlPlaneClient,
    ControlPlaneError,
    Delivered,
    Delivery,
    LeaseLost,
    Unreachable,
    outcome,
)
from cinecloud.workers.delivery import (
    BATCH_DELIVERY_WAIT_S,
    UPLOAD_THREADS,
    DeliveryGroup,
    upload_files,
)
from cinecloud.workers.handle import ChildExited, ChildProcess
from cinecloud.workers.held import HeldJob, HeldJobs, lease_limits
from cinecloud.workers.messages import (
    Cancel,
    Checkpoint,
    Done,
    Failed,
    FailureCode,
    Message,
    Preempt,
    Progress,
    Ready,
    RunBatch,
    RunJob,
)
from cinecloud.workers.outbox import EventOutbox
from cinecloud.workers.progress import (
    EVENT_INTERVAL_S,
    EventThrottle,
    progress_event,
    progress_percent,
)
from cinecloud.workers.renderer import render_pool_size
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
#: Messages from the child handled in one round before its events go out.
_MESSAGES_PER_ROUND = 64
_ROOM_POLL_S = 0.5
_STOPPING = "worker stopping"
# Why a job the engine child held is given back when the child is replaced for another
# job's sake (a kill after a cancel, a lost rank): it did nothing wrong.
_ENGINE_REPLACED = "engine_replaced"
# The child's acknowledgements of a stop (never reported with ``fail``).
_STOP_CODES = (FailureCode.CANCELED, FailureCode.PREEMPTED)

# ---------------------------------------------------------------- the worker


def _engine_ends_within(msg: Progress, seconds: float) -> bool:
    """Whether the job's engine work ends within ``seconds``, by its steps so far (the
    decode after the last step is not counted: it is short beside a denoise)."""
    if msg.stage == "decode":
        return True
    if msg.stage != "denoise" or msg.step < 1 or msg.total_steps < 1:
        return False
    left = msg.elapsed_s / msg.step * max(0, msg.total_steps - msg.step)
    return left <= seconds


class _Wakeup:
    """Wakes the engine loop's wait on the child's pipe when the lease thread holds a new
    job. A socket pair, because ``multiprocessing.connection.wait`` waits on file
    descriptors alongside the pipe (a threading.Event cannot be waited on with them)."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)

    def fileno(self) -> int:
        return self._read.fileno()

    def set(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is already pending
            self._write.send(b"\0")

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            while self._read.recv(4096):
                pass

    def close(self) -> None:
        self._read.close()
        self._write.close()


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
        # events of one round of the child's messages, sent together
        self._events = EventOutbox(self._client, clock)
        self._worker_id: str | None = None
        self._deliveries = False  # files and completion in one request (the registration's)
        self._hb_interval_s = cfg.queue.heartbeat_interval_s
        self._wake = _Wakeup()
        self._hb_wake = threading.Event()
        self._hb_done = threading.Event()
        render = render_pool_size(cfg.worker.render_processes)
        # Jobs per batch (worker.max_batch): known once the engine says its device.
        self._batch = 1
        self._lease_round = 0
        self.limits = lease_limits(cfg.worker.overlap, render)
        self._held = HeldJobs(self.limits, on_change=self._wake.set)
        self._lease_ahead_s = cfg.worker.lease_ahead_s
        # each model's last engine call (seconds): a model this quick leases ahead at once
        self._last_engine_s: dict[str, float] = {}
        most = lease_limits(cfg.worker.overlap, render, cfg.worker.max_batch or AUTO_MAX_BATCH_GPU)
        self._closed = threading.Event()  # no more leases: stopping, or the engine is gone
        self._preempt_deadline: float | None = None
        # Each ended job uploads and reports on a thread of its own: one per held job.
        self._finishers = ThreadPoolExecutor(most.cap, thread_name_prefix="cinecloud-finish")
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
            self._finishers.shutdown(wait=True)
            self._uploads.shutdown(wait=True)
            self._checkpoints.close()
            self._client.close()
            self._wake.close()
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
                self._set_batch(msg.device)
                return True
            if isinstance(msg, Failed):
                log.error("model load failed (%s): %s", msg.code, msg.message)
                return False
        return False

    def _set_batch(self, device: str) -> None:
        """Lease for batches of ``worker.max_batch`` on ``device`` (a parallel engine's
        ranks follow one job at a time: no batches)."""
        self._batch = max_batch(self._cfg.worker, device) if self._width() == 1 else 1
        render = render_pool_size(self._cfg.worker.render_processes)
        self.limits = lease_limits(self._cfg.worker.overlap, render, self._batch)
        self._held.limits = self.limits
        if self._batch > 1:
            log.info("batching up to %d compatible jobs per engine call", self._batch)

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
            self._deliveries = reg.uploads == "deliveries"
            log.info("registered as %s (%s)", reg.worker_id, name)
            return True
        return False

    # ---------------------------------------------------------- the lease thread

    def _lease_loop(self) -> None:
        """Keep jobs leased ahead, as many as :attr:`limits` leave room for (the engine
        loop hands them to the child). On a client of its own: a long poll here must not
        hold up the engine loop's progress events."""
        client = self._make_client()
        try:
            while not self._closed.is_set():
                # Batching: lease a whole batch at a time (the scheduler hands out the
                # best job and the queued ones that batch with it).
                batch = self._batch
                room = self._held.wait_for_room(timeout=_ROOM_POLL_S, at_least=batch)
                if room == 0 or self._closed.is_set():
                    continue
                self._admit(self._take(client, min(room, batch) if batch > 1 else room))
        finally:
            client.close()

    def _take(self, client: ControlPlaneClient, k: int) -> list[RunJob]:
        """Lease up to ``k`` jobs: the one place the worker asks for work. Waits (a long
        poll) while the queue is empty; [] on a failure, after a pause."""
        assert self._worker_id is not None and self._ready is not None
        # a batch holds no more jobs than the GPU has memory for (docs/scheduling.md)
        free = free_memory(self._gpus()) if self._batch > 1 else None
        try:
            return client.lease(
                self._worker_id,
                self._ready.models,
                max_jobs=k,
                wait_s=self._cfg.queue.lease_long_poll_s,
                width=self._width(),
                free_memory=free,
            )
        except (Unreachable, ControlPlaneError) as exc:
            log.warning("lease failed: %s", exc)
            self._closed.wait(_RETRY_PAUSE_S)
            return []

    def _admit(self, jobs: list[RunJob]) -> None:
        """Hold the jobs of one lease, their inputs fetched, all at once (so the engine
        loop never sends part of a batch); given straight back when stopping."""
        self._lease_round += 1
        ready: list[HeldJob] = []
        for job in jobs:
            self._held.wait_gone(job.job_id, self._closed.is_set)
            if self._closed.is_set():
                self._checkpoints.release(job, _STOPPING)
                continue
            held = self._prepare(job)
            if held is not None:
                held.lease_round = self._lease_round
                ready.append(held)
        if not ready:
            return
        if not self._held.admit_all(ready, self._closed.is_set):
            for held in ready:
                shutil.rmtree(held.dir, ignore_errors=True)
                self._checkpoints.release(held.job, _STOPPING)
            return
        for held in ready:
            log.info("job %s (attempt %d) leased", held.job_id, held.job.attempt)
        # (their leases join the next heartbeat, at most BUSY_POLL_S away: a wake-up for
        # each lease would be one more heartbeat per job at a high job rate)

    def _prepare(self, job: RunJob) -> HeldJob | None:
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
        return HeldJob(job, path, leased_at=self._wall())

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

    # ---------------------------------------------------------- the engine loop

    def _serve(self) -> int:
        """The engine loop: hand held jobs to the child, follow its messages, stop jobs
        when told (the watchdog), until stopped with nothing held."""
        leaser = threading.Thread(target=self._lease_loop, name="cinecloud-lease")
        leaser.start()
        code = 0
        try:
            while not self._held.empty_if(self._closed.is_set):
                if self._stop.is_set():
                    self._begin_stop()
                elif not self._ensure_child():
                    code = 0 if self._stop.is_set() else 1
                    break
                self._dispatch()
                self._watch()
                self._pump()
        finally:
            self._closed.set()
            self._wake.set()
            leaser.join()
            self._give_back_all()
        return code

    def _ensure_child(self) -> bool:
        if self._child is not None and self._child.alive:
            return True
        if self._child is not None:
            self._child_gone(f"engine process {self._child.pid} is gone", crashed=True)
        log.warning("starting a new engine process")
        return self._spawn_child()

    def _begin_stop(self) -> None:
        """SIGTERM: lease no more; jobs not on the engine yet go back at once, the child
        stops the rest at a step boundary (with a checkpoint) within ``preempt_grace_s``."""
        if self._closed.is_set():
            return
        self._closed.set()
        log.info("stopping: giving back %d held job(s)", len(self._held))
        for held in self._held.all():
            held.request_cancel(_STOPPING)
            if not held.sent:
                self._end(held, None)
        if self._held.in_child() and self._child is not None:
            self._child.send(Preempt())
            self._preempt_deadline = self._clock() + self._cfg.worker.preempt_grace_s

    def _dispatch(self) -> None:
        """Hand the child the jobs leased for it, in lease order: it runs them one after
        another, the next waiting on its pipe while the engine works."""
        if self._child is None or self._closed.is_set():
            return
        # never started if canceled: the watchdog drops it
        waiting = [h for h in self._held.unsent() if not h.cancel.is_set()]
        for group in self._batches(waiting):
            held = group[0]
            held.model_load, self._pending_load_s = self._pending_load_s, 0.0
            held.load_span, self._load_span = self._load_span, None
            if len(group) == 1:
                self._child.send(held.job)
            else:  # one engine call for them all (workers.batches), delivered together
                self._child.send(RunBatch(tuple(h.job for h in group)))
                together = DeliveryGroup([h.job_id for h in group], BATCH_DELIVERY_WAIT_S)
                for h in group:
                    h.delivery = together
            for h in group:
                h.sent = True
                if self._last_engine_s.get(h.job.model, math.inf) <= self._lease_ahead_s:
                    # its model's last call was this short: the next may come at once
                    self._held.mark_near_end(h)
                log.info("job %s (attempt %d) sent to the engine", h.job_id, h.job.attempt)
            if len(group) > 1:
                log.info("batch of %d sent: %s", len(group), ", ".join(h.job_id for h in group))

    def _batches(self, waiting: list[HeldJob]) -> list[list[HeldJob]]:
        """``waiting`` (in lease order) as batches of compatible jobs leased together."""
        by_id = {h.job_id: h for h in waiting}
        rounds: dict[int, list[RunJob]] = {}
        for h in waiting:
            rounds.setdefault(h.lease_round, []).append(h.job)
        return [
            [by_id[job.job_id] for job in group]
            for jobs in rounds.values()
            for group in group_jobs(jobs, self._batch)
        ]

    def _watch(self) -> None:
        """Stop the jobs that must stop: a Cancel for one the engine has (killed with
        the child if not answered within ``cancel_grace_s``); one not sent yet is
        dropped at once; one rendering is dropped when its render ends."""
        now = self._clock()
        for held in self._held.all():
            if held.ended or not held.cancel.is_set() or held.reason == _STOPPING:
                continue
            if not held.sent:
                self._end(held, None)
            elif held.engine_done:
                continue
            elif held.stop_deadline is None and self._child is not None:
                self._child.send(Cancel(held.job_id))
                held.stop_deadline = now + self._cfg.worker.cancel_grace_s
            elif held.stop_deadline is not None and now >= held.stop_deadline:
                log.warning("engine did not stop job %s in time; killing it", held.job_id)
                self._child_gone("the engine process was replaced", crashed=False)
                return
        deadline = self._preempt_deadline
        if deadline is not None and now >= deadline and self._held.in_child():
            log.warning(
                "engine did not stop in %.0f s; killing it", self._cfg.worker.preempt_grace_s
            )
            self._child_gone("the worker stopped", crashed=False)

    def _pump(self) -> None:
        """Wait for one message from the child (or a wake-up) and act on it."""
        self._wake.clear()
        if self._child is None:  # stopping with the engine gone: the finishers end
            self._stop.wait(_CHILD_POLL_S)
            return
        try:
            msg = self._child.recv(_CHILD_POLL_S, wake=[self._wake])
            # and what else the child has sent meanwhile (a batch's jobs report each
            # step together): their events go in one request
            handled = 0
            while msg is not None:
                self._on_message(msg)
                handled += 1
                if handled >= _MESSAGES_PER_ROUND or self._child is None:
                    break
                msg = self._child.recv(0)
        except ChildExited as exc:
            log.error("%s", exc)
            self._child_gone(str(exc), crashed=not self._stop.is_set())
        finally:
            self._events.flush()

    def _on_message(self, msg: Message) -> None:
        job_id = getattr(msg, "job_id", "")
        held = self._held.get(job_id) if job_id else None
        if held is None or held.ended or not held.sent:
            return  # a job already dropped
        if not isinstance(msg, Progress):
            self._events.flush()  # a job's events go before its end (or checkpoint)
        if isinstance(msg, Checkpoint):
            self._checkpoints.submit(held.job, msg)
        elif isinstance(msg, Progress):
            if not held.started:
                held.started = True
                log.info("job %s started on the engine", job_id)
            if msg.stage == "render":  # the engine is free: room to lease one more
                self._held.mark_engine_done(held)
            elif _engine_ends_within(msg, self._lease_ahead_s):
                self._held.mark_near_end(held)
            if held.stop_deadline is None:
                self._forward(held, msg)
        elif isinstance(msg, Done | Failed):
            if isinstance(msg, Done):
                self._last_engine_s[held.job.model] = msg.engine_s
            self._end(held, msg)
            if isinstance(msg, Failed) and msg.engine_exits:
                # A parallel engine that lost a rank reports it, then is replaced.
                self._child_gone("a parallel rank was lost", crashed=False)

    def _child_gone(self, why: str, *, crashed: bool) -> None:
        """The engine child is gone (or is killed now): what it held ends with it. When it
        crashed, the jobs short of the end of their engine work fail as retryable (one of
        them is the cause; the attempts count); the others (rendering, or innocent of a
        kill) are given back, no attempt counted. A fresh child starts unless stopping."""
        child, self._child = self._child, None
        if child is not None:
            child.kill()
        for held in self._held.in_child():
            if crashed and not held.engine_done and not held.cancel.is_set():
                crash = Failed(held.job_id, FailureCode.WORKER_CRASHED, why, retryable=True)
                self._end(held, crash)
            else:
                self._end(held, None, give_back=_ENGINE_REPLACED)
        self._preempt_deadline = None

    def _give_back_all(self) -> None:
        """On the way out: wait for the jobs finishing, give back any still held."""
        for held in self._held.all():
            held.request_cancel(_STOPPING)
            self._end(held, None)
        self._finishers.shutdown(wait=True)

    # ---------------------------------------------------------- a job's end

    def _end(self, held: HeldJob, result: Done | Failed | None, give_back: str = "") -> None:
        """``held`` left the child (``result`` None: it never reached the engine, or the
        child is gone): finish it on a thread of its own."""
        if self._held.mark_ended(held):
            self._finishers.submit(self._finish, held, result, give_back)

    def _finish(self, held: HeldJob, result: Done | Failed | None, give_back: str) -> None:
        """Upload and complete, report the failure, drop (canceled) or give the lease
        back (stopping, or an innocent job of a replaced engine), then forget the job."""
        job = held.job
        stopping = held.reason == _STOPPING
        canceled = held.cancel.is_set() and not stopping
        stop_code = isinstance(result, Failed) and result.code in _STOP_CODES
        try:
            # Its checkpoints go up first unless it is done or canceled: the next lease
            # resumes from them.
            self._checkpoints.settle(job.job_id, keep=not isinstance(result, Done) and not canceled)
            if canceled:
                log.info("job %s stopped: %s", job.job_id, held.reason or "canceled")
            elif isinstance(result, Done) and not stopping:
                if not self._deliver(held, result):  # the worker stopped during the upload
                    self._checkpoints.release(job, "preempted")
            elif isinstance(result, Failed) and not stop_code:
                self._report_failure(job, result)
                trace_run(job, held.leased_at, self._wall(), {}, error=result.code)
            else:  # not finished here: give it back, no attempt counted
                self._checkpoints.release(job, give_back or "preempted")
        except Exception:
            log.exception("job %s: finishing failed; its lease expires", job.job_id)
        finally:
            if held.delivery is not None:
                held.delivery.leave(job.job_id)  # its batch does not wait for it
            self._checkpoints.settle(job.job_id, keep=False)
            shutil.rmtree(held.dir, ignore_errors=True)
            self._held.remove(held)

    def _stop_job_requested(self, held: HeldJob) -> bool:
        return held.cancel.is_set() or self._stop.is_set()

    def _forward(self, held: HeldJob, msg: Progress) -> None:
        """Send the child's progress on as an event, as often as the job's throttle allows
        (a step that brings a preview always goes)."""
        due = held.throttle.should_send(msg.stage, msg.step, msg.total_steps, self._clock())
        if due or msg.preview:
            event = progress_event(
                msg.stage, msg.step, msg.total_steps, msg.elapsed_s, msg.at, msg.preview
            )
            self._events.add(held, event)

    # ---------------------------------------------------------- reporting

    def _deliver(self, held: HeldJob, done: Done) -> bool:
        """Upload the rendered files and complete the job (never when it must stop).
        False when it stopped before completing (the caller gives it back)."""
        job = held.job
        try:
            started, upload_at = self._clock(), self._wall()
            report = outcome(
                timings={"model_load": held.model_load, **done.timings},
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
            if self._deliveries:
                answer = self._send_delivery(held, done, report, started)
                if answer.code == "lease_lost":
                    raise LeaseLost(409, answer.code, answer.message)
                if answer.code:
                    raise ControlPlaneError(400, answer.code, answer.message)
            else:
                upload = progress_event("upload", 0, len(done.files), 0.0, self._wall())
                self._events.send_now(held, [upload])
                stopping = functools.partial(self._stop_job_requested, held)
                artifacts = upload_files(self._client, self._uploads, job, done.files, stopping)
                if artifacts is None:
                    return held.cancel.is_set() and held.reason != _STOPPING
                report["timings"]["upload"] = self._clock() - started
                self._client.complete(job.job_id, job.lease_id, artifacts=artifacts, outcome=report)
            upload_s = self._clock() - started
            log.info("job %s completed", job.job_id)
            spans = {**done.spans, "upload": [upload_at, upload_at + upload_s]}
            if held.load_span is not None:
                spans["model_load"] = list(held.load_span)
            trace_run(job, held.leased_at, self._wall(), spans)
        except LeaseLost:
            log.info("job %s: lease lost during upload; dropped", job.job_id)
        except ControlPlaneError as exc:
            log.error("job %s: upload refused: %s", job.job_id, exc)
            failed = Failed(job.job_id, FailureCode.UPLOAD_FAILED, str(exc), retryable=True)
            self._report_failure(job, failed)
        except Unreachable as exc:
            log.error("job %s: %s; it is retried once its lease expires", job.job_id, exc)
        return True

    def _send_delivery(
        self, held: HeldJob, done: Done, report: dict[str, Any], ready_at: float
    ) -> Delivered:
        """The job's files and outcome in one ``deliveries`` request, with the rest of
        its batch (workers.delivery). Its "upload" timing is the wait for the request
        (the batch's other renders); the control plane adds the request's own time."""

        def send(items: Sequence[Delivery]) -> dict[str, Delivered]:
            now = self._clock()
            for item in items:
                item.outcome["timings"]["upload"] = now - item.ready_at
            return self._client.deliver(items)

        job = held.job
        files = [(f.name, Path(f.path), f.content_type) for f in done.files]
        upload = progress_event("upload", 0, len(files), 0.0, self._wall())
        item = Delivery(job.job_id, job.lease_id, files, {**report, "events": [upload]}, ready_at)
        if held.delivery is None:  # a job alone goes at once
            return send([item])[job.job_id]
        return held.delivery.deliver(item, send)

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
                held = self._held.all()
                self._heartbeat_once(client, held)
                busy = bool(held)
                self._hb_wake.wait(BUSY_POLL_S if busy else self._hb_interval_s)
        finally:
            client.close()

    def _heartbeat_once(self, client: ControlPlaneClient, jobs: list[HeldJob]) -> None:
        assert self._worker_id is not None
        held = [active.held for active in jobs]
        try:
            gpus = [g.to_dict() for g in self._gpus()]
            status = "stopping" if self._closed.is_set() else "busy" if held else "idle"
            reply = client.heartbeat(self._worker_id, held, status, gpus)
        except LeaseLost:
            self._find_lost(client, jobs)
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

    def _find_lost(self, client: ControlPlaneClient, jobs: list[HeldJob]) -> None:
        """The heartbeat does not say which lease is lost: with several held, an empty
        events call for each answers ``lease_lost`` for the lost ones, and only those
        stop. One that cannot be asked now is asked again at the next heartbeat."""
        if len(jobs) == 1:
            jobs[0].request_cancel("lease lost")
            return
        for held in jobs:
            try:
                client.events(held.job_id, held.job.lease_id, [])
            except LeaseLost:
                held.request_cancel("lease lost")
            except (Unreachable, ControlPlaneError) as exc:
                log.warning("cannot check the lease of %s: %s", held.job_id, exc)

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
