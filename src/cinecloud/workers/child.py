"""The worker's engine child: a spawned process that owns the model and the GPU(s).

It loads the worker's models, says :class:`Ready`, then runs one :class:`RunJob`
at a time on the engine, sending :class:`Progress` on every engine step. When the
engine is done it sends the ``render`` progress and, on a handoff thread, saves the
frames into the job's directory and hands them to a render process
(:mod:`cinecloud.workers.renderer`);
what that answers becomes the job's :class:`Done` (or :class:`Failed`). The engine
meanwhile takes the next :class:`RunJob`, so rendering one job overlaps denoising the
next, and the render cannot slow the engine's own process down. Between
steps it looks for :class:`Cancel` (or :class:`Shutdown`) on its pipe and stops the
run. It also stops when the parent process is gone, so a killed worker never leaves a
child holding a GPU. Every ``worker.checkpoint_every`` denoise steps it saves the job's
denoise state (:mod:`cinecloud.workers.checkpoints`); on :class:`Preempt` it saves it at
the next step boundary, stops the job and starts no other.

A :class:`RunBatch` runs its compatible jobs as one batched engine call
(``Runner.run_batch``; :mod:`cinecloud.workers.batches`): each engine step goes out as
every job's progress, a job canceled mid-batch is dropped (acknowledged at the next step,
its video discarded), each job's frames go to rendering and the quality gate on their
own, and a failed batched call runs its jobs again one by one.

Everything on the pipe is a plain dict from :mod:`cinecloud.workers.messages`.

With ``worker.parallel`` set, this child is rank 0 of N (:mod:`cinecloud.workers.ranks`):
it starts the other ranks, hands each job to them, and fails the job as retryable
(then exits, to be replaced) when a rank is lost.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import multiprocessing
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cinecloud.config import Config
from cinecloud.engine.finite import NonFiniteFrames
from cinecloud.workers.batches import BatchRun, max_batch
from cinecloud.workers.checkpoints import CheckpointWriter
from cinecloud.workers.messages import (
    Cancel,
    Done,
    Failed,
    FailureCode,
    GpuInfo,
    Message,
    Preempt,
    Progress,
    Ready,
    Render,
    Rendered,
    RunBatch,
    RunJob,
    Shutdown,
    from_dict,
    to_dict,
)
from cinecloud.workers.preview import PreviewMaker
from cinecloud.workers.renderer import RenderPool, render_pool_size, save_frames
from cinecloud.workers.tracing import engine_spans

if TYPE_CHECKING:
    from cinecloud.engine.parallel.ranks import RankGroup
    from cinecloud.engine.registry import ModelSpec
    from cinecloud.engine.runner import RunnerProtocol
    from cinecloud.workers.ranks import Followers, RankLink

__all__ = [
    "RunnerFactory",
    "child_main",
    "job_dir",
    "load_parallel_models",
    "resolve_runner_factory",
]

log = logging.getLogger(__name__)

_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_IDLE_POLL_S = 0.5
_ENGINE_STAGES = ("text_encode", "denoise", "decode")


RunnerFactory = Callable[["ModelSpec", Config], "RunnerProtocol"]
"""Builds the runner for one model in the child: ``factory(spec, cfg)``."""


def job_dir(work_dir: Path, job_id: str) -> Path:
    """The job's local directory; ``job_id`` must be a plain name (it becomes a path)."""
    if not _JOB_ID_RE.fullmatch(job_id) or ".." in job_id:
        raise ValueError(f"job id is not a safe directory name: {job_id!r}")
    return work_dir / job_id


def resolve_runner_factory(ref: str) -> RunnerFactory:
    """``"module:callable"`` → that callable; ``""`` → the real engine runner."""
    if not ref:
        return _engine_runner
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"runner_factory must look like 'module:callable' (got {ref!r})")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"runner_factory {ref!r} is not callable")
    factory: RunnerFactory = obj
    return factory


def _engine_runner(spec: ModelSpec, cfg: Config, ranks: RankGroup | None = None) -> RunnerProtocol:
    from cinecloud.engine.runner import Runner
    from cinecloud.engine.speed import set_compile_cache

    home = cfg.server.home.resolve()
    set_compile_cache(home)  # compiled blocks survive worker restarts
    return Runner(
        spec,
        device=cfg.engine.device if ranks is None else ranks.device,
        dtype=cfg.engine.dtype,
        offload=cfg.engine.offload,
        vae_tiling=cfg.engine.vae_tiling,
        attention=cfg.engine.attention,
        compile=cfg.engine.compile,
        quantize=cfg.engine.quantize,
        step_cache_threshold=cfg.engine.step_cache_threshold,
        cache_dir=home / "cache",  # measured attention choices survive them too
        ranks=ranks,
    )


def load_parallel_models(cfg: Config, ranks: RankGroup) -> dict[str, RunnerProtocol]:
    """The worker's models loaded as one rank of ``ranks``; every rank calls it in step."""
    loaded, _ = _load_models(cfg, time.monotonic, ranks)
    return {model_id: entry.runner for model_id, entry in loaded.items()}


# ---------------------------------------------------------------- the engine side


@dataclass(frozen=True)
class _Loaded:
    spec: ModelSpec
    runner: RunnerProtocol


class _LoadError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _load_models(
    cfg: Config, clock: Callable[[], float], ranks: RankGroup | None = None
) -> tuple[dict[str, _Loaded], float]:
    from cinecloud.engine.registry import ModelNotInstalled, UnknownModel, default_registry

    registry = default_registry(cfg.engine)
    models = cfg.worker.models or (registry.default_id,)
    factory = resolve_runner_factory(cfg.worker.runner_factory)
    if ranks is not None and cfg.worker.runner_factory:
        raise ValueError("worker.parallel runs the real engine; unset worker.runner_factory")
    loaded: dict[str, _Loaded] = {}
    started = clock()
    for model_id in models:
        try:
            spec = registry.get(model_id)
            runner = factory(spec, cfg) if ranks is None else _engine_runner(spec, cfg, ranks)
            runner.load()
        except (UnknownModel, ModelNotInstalled) as exc:
            raise _LoadError(FailureCode.MODEL_NOT_INSTALLED, str(exc)) from exc
        loaded[model_id] = _Loaded(spec, runner)
    return loaded, clock() - started


def _probe_devices() -> tuple[str, tuple[GpuInfo, ...]]:
    """The devices the loaded engine sees. A torch-free runner (a fake) reports the CPU."""
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return "cpu", ()
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        gpus.append(GpuInfo(name=str(name), memory_total=int(total), memory_free=int(free)))
    return "cuda", tuple(gpus)


@dataclass(frozen=True)
class _EngineDone:
    """What a job's Done carries from the engine, kept while the job renders."""

    timings: dict[str, float]
    seed: int
    device: str
    dtype: str
    engine_s: float
    engine: dict[str, str]
    spans: dict[str, list[float]]

    def done(self, rendered: Rendered, now: float) -> Done:
        """The job's Done; ``now`` (wall clock) is when its render ended."""
        return Done(
            job_id=rendered.job_id,
            files=rendered.files,
            timings={**self.timings, "render": rendered.render_s, **rendered.timings},
            seed=self.seed,
            device=self.device,
            dtype=self.dtype,
            engine_s=self.engine_s,
            engine=self.engine,
            spans={**self.spans, "render": [now - rendered.render_s, now]},
            qc=rendered.qc,
        )


class _Child:
    """The child's state: its pipe, its loaded models and the job in hand."""

    def __init__(
        self,
        cfg: Config,
        conn: Connection,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        followers: Followers | None = None,
    ) -> None:
        self.cfg = self._cfg = cfg
        self._conn = conn
        self._clock = clock
        self._wall = wall  # stamps progress, for the job's timeline
        # Rank 0 of a parallel worker: the other ranks and the commands they follow.
        self.followers = followers
        self.link: RankLink | None = None
        self._ranks: RankGroup | None = None
        self.broken = False  # a rank was lost: report, then exit to be replaced
        self._models: dict[str, _Loaded] = {}
        self._pending: collections.deque[Message] = collections.deque()
        self._current: str | None = None
        self._batch: BatchRun | None = None  # the batch in hand (run_batch)
        self._cancel = False
        self.shutdown = False
        self.preempting = False  # a Preempt came: stop the job in hand, start no other
        self._checkpoints = CheckpointWriter(cfg.worker.checkpoint_every, self.send)
        self._send_lock = threading.Lock()
        # worker.render_processes render side by side; a job's Done leaves when its render
        # ends, so jobs can finish in another order than they ran.
        from cinecloud.render.trusted import TrustSettings

        trust = TrustSettings.from_config(cfg).to_dict()
        size = render_pool_size(cfg.worker.render_processes)
        self._renderer = RenderPool(self._on_rendered, trust, size=size)
        self._handoff = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handoff")
        self._rendering: dict[str, _EngineDone] = {}

    def send(self, msg: Message) -> None:
        with self._send_lock:  # the engine and the render thread both report
            self._conn.send(to_dict(msg))

    def load(self) -> Ready:
        self._renderer.start()  # their imports overlap the model load
        if self.followers is not None:
            from cinecloud.workers.ranks import RankLink, join_as_rank

            self.followers.start()
            self._ranks = join_as_rank(self._cfg, 0, self.followers.port)
            self.link = RankLink()
        self._models, load_s = _load_models(self._cfg, self._clock, self._ranks)
        device, gpus = _probe_devices()
        if self._ranks is None:  # a parallel engine runs one job at a time
            most = max_batch(self._cfg.worker, device)
            for loaded in self._models.values():
                warm = getattr(loaded.runner, "warm_batches", None)
                if most > 1 and warm is not None:
                    load_s += warm(most)
        return Ready(models=tuple(self._models), load_s=load_s, device=device, gpus=gpus)

    # ---------------------------------------------------------- the pipe

    def next_message(self) -> Message | None:
        """The next order, or None after an idle wait; Shutdown if the parent is gone."""
        if self._pending:
            return self._pending.popleft()
        if not _parent_alive():
            return Shutdown()
        if not self._conn.poll(_IDLE_POLL_S):
            return None
        try:
            return from_dict(self._conn.recv())
        except EOFError:
            return Shutdown()

    def should_cancel(self) -> bool:
        """Called by the runner between steps: drain the pipe for Cancel/Shutdown."""
        if self._cancel:
            return True
        if not _parent_alive():
            self._cancel = self.shutdown = True
            return True
        while self._conn.poll(0):
            try:
                msg = from_dict(self._conn.recv())
            except EOFError:
                self._cancel = self.shutdown = True
                break
            if isinstance(msg, Shutdown):
                self._cancel = self.shutdown = True
            elif isinstance(msg, Preempt):
                self._cancel = self.preempting = True
            elif isinstance(msg, Cancel):
                self._cancel = self._cancel or msg.job_id == self._current
                batch = self._batch
                if batch is not None and msg.job_id != self._current and batch.cancel(msg.job_id):
                    # One job of a batch in the engine is dropped; the call stops once
                    # every job is (self._current is None while the batch denoises).
                    self._cancel = self._cancel or (self._current is None and batch.all_canceled)
                self.drop_waiting(msg.job_id)
            else:
                self._pending.append(msg)
        return self._cancel

    def drop_waiting(self, job_id: str) -> bool:
        """A canceled job that waits its turn here never starts: its Failed(canceled)
        answers the Cancel at once. Whether one waited."""
        for msg in self._pending:
            if isinstance(msg, RunJob) and msg.job_id == job_id:
                self._pending.remove(msg)
                self.send(_failed(msg, FailureCode.CANCELED, "canceled before it started"))
                return True
        return False

    # ---------------------------------------------------------- one job

    def run_job(self, job: RunJob) -> Done | Failed | None:
        """Run ``job`` on the engine; its render goes on the render thread, which reports
        (None here). A job that ends before rendering returns its Failed."""
        if self.preempting:
            return _failed(job, FailureCode.PREEMPTED, "the worker is being preempted")
        self._current, self._cancel = job.job_id, False
        try:
            return self._run(job)
        except Exception as exc:
            if self._lost_rank(exc):
                log.exception("job %s: a rank was lost", job.job_id)
                self.broken = True
                message = f"a parallel rank was lost: {type(exc).__name__}: {exc}"
                failed = _failed(job, FailureCode.WORKER_CRASHED, message, retryable=True)
                return dataclasses.replace(failed, engine_exits=True)
            if self._cancel:
                return self._stopped(job)
            log.exception("job %s failed", job.job_id)
            return _failed(job, *_classify(exc))
        finally:
            self._current = None

    def _stopped(self, job: RunJob) -> Failed:
        """The acknowledgement of a stop: a Cancel's, or a Preempt's."""
        if self.preempting:
            return _failed(job, FailureCode.PREEMPTED, "preempted")
        return _failed(job, FailureCode.CANCELED, "canceled")

    def _lost_rank(self, exc: Exception) -> bool:
        """Whether ``exc`` leaves the ranks out of step: a rank died, or anything but a
        refusal of the job (which every rank meets alike) or a cancel."""
        from cinecloud.engine.runner import Cancelled

        if self.followers is None:
            return False
        return not self.followers.all_alive() or not isinstance(exc, ValueError | Cancelled)

    def engine_cancel(self) -> bool:
        """The runner's cancel check: rank 0's decision, agreed by every rank."""
        cancel = self.should_cancel()
        return cancel if self.link is None else self.link.agree(cancel)

    def _prepare(self, job: RunJob) -> tuple[_Loaded, Any] | Failed:
        """The loaded model and checked params for ``job``, or why it cannot run."""
        from cinecloud.engine.registry import GenerationParams, ParamError, validate_params

        loaded = self._models.get(job.model)
        if loaded is None:
            have = ", ".join(self._models)
            message = f"model {job.model} is not loaded here (loaded: {have})"
            return _failed(job, FailureCode.MODEL_NOT_LOADED, message, retryable=True)
        try:
            params = GenerationParams(**job.params)
            validate_params(loaded.spec, params)
        except (TypeError, ParamError) as exc:
            return _failed(job, FailureCode.INVALID_PARAMS, str(exc))
        return loaded, params

    def _run(self, job: RunJob) -> Done | Failed | None:
        prepared = self._prepare(job)
        if isinstance(prepared, Failed):
            return prepared
        loaded, params = prepared
        out_dir = job_dir(self._cfg.worker.work_dir, job.job_id)
        out_dir.mkdir(parents=True, exist_ok=True)

        marks: dict[str, float] = {}  # when each stage's first step was reported
        previews = PreviewMaker(self._cfg.worker.preview_interval_s, self._clock)

        def on_step(info: Any) -> None:
            at = self._wall()
            marks.setdefault(info.stage, at)
            preview = previews.take(info.step, info.total_steps, getattr(info, "preview", None))
            self.send(
                Progress(
                    job.job_id, info.stage, info.step, info.total_steps, info.elapsed_s, at, preview
                )
            )
            self.should_cancel()  # a Preempt waiting on the pipe is seen at this boundary
            self._checkpoints.after_step(job.job_id, out_dir, info, self.preempting)

        if self.link is not None:
            self.link.run(job)  # the other ranks run it alongside
        started, started_at = self._clock(), self._wall()
        result = loaded.runner.run(params, on_step, self.engine_cancel)
        engine_s, ended_at = self._clock() - started, self._wall()
        if self.should_cancel():
            return self._stopped(job)
        # The engine is free: "render" tells the parent so; the next job runs on the engine
        # while the render process encodes this one.
        self.send(Progress(job.job_id, "render", 0, 1, 0.0, self._wall()))
        self._rendering[job.job_id] = _EngineDone(
            timings={k: float(result.timings.get(k, 0.0)) for k in _ENGINE_STAGES},
            seed=int(result.seed),
            device=str(result.device),
            dtype=str(result.dtype),
            engine_s=engine_s,
            engine=dict(getattr(result, "engine", {})),
            spans=engine_spans(started_at, marks.get("denoise"), ended_at, result.timings),
        )
        self._hand_off(job, result, out_dir, loaded)
        return None

    def _hand_off(self, job: RunJob, result: Any, out_dir: Path, loaded: _Loaded) -> None:
        """Save the job's frames where its render process reads them and queue the render,
        on the handoff thread: the frames of a full-size video are about 100 MB, whose write
        the next job's engine work should not wait for. Ordered, one job after another;
        a failed write fails the job (retryable) and its render never starts."""
        render = Render(
            job.job_id,
            str(out_dir / "frames.npy"),
            str(out_dir),
            int(result.fps),
            loaded.spec.defaults.display_size,
            job.model,
        )

        def work() -> None:
            try:
                save_frames(result.frames, Path(render.frames_path))
                self._renderer.submit(render)
            except Exception as exc:
                log.exception("handing job %s to its render failed", job.job_id)
                if self._rendering.pop(job.job_id, None) is not None:
                    message = f"could not hand the frames to the render: {exc}"
                    self.send(_failed(job, FailureCode.ENGINE_ERROR, message, retryable=True))

        self._handoff.submit(work)

    # ---------------------------------------------------------- a batch of jobs

    def run_batch(self, msg: RunBatch) -> None:
        """Run compatible jobs as one batched engine call (workers.batches); each job's
        Progress, Done or Failed go out under its own id, as if it had come alone. A job
        canceled mid-batch is acknowledged at the next step and its video discarded; a
        Preempt or Shutdown stops the whole batch (no checkpoint: every job goes back).
        If the batched call fails, its jobs run again one by one."""
        jobs = list(msg.jobs)
        if self.preempting:
            for job in jobs:
                self.send(_failed(job, FailureCode.PREEMPTED, "the worker is being preempted"))
            return
        ready: list[tuple[RunJob, _Loaded, Any]] = []
        for job in jobs:
            prepared = self._prepare(job)
            if isinstance(prepared, Failed):
                self.send(prepared)
            else:
                ready.append((job, *prepared))
        runner = ready[0][1].runner if ready else None
        batched = getattr(runner, "run_batch", None)
        same_model = len({job.model for job, _, _ in ready}) == 1
        if len(ready) < 2 or batched is None or not same_model or self.link is not None:
            # One job left, a runner without batching, or a parallel engine (whose ranks
            # follow one job at a time): one by one.
            self._run_each(BatchRun(tuple(job for job, _, _ in ready)) if ready else None)
            return
        batch = BatchRun(tuple(job for job, _, _ in ready))
        self._batch, self._current, self._cancel = batch, None, False
        try:
            self._run_batched(batch, batched, [params for _, _, params in ready], ready[0][1])
        except Exception as exc:
            self._ack_dropped(batch)
            if self._cancel:  # every job canceled, or the worker stops: acknowledge
                for job in batch.live():
                    self.send(self._stopped(job))
                return
            log.exception("batch %s failed; running its jobs one by one", batch.job_ids)
            self._cancel = False
            self._run_each(batch, first_error=exc)
        finally:
            self._batch = None

    def _run_batched(
        self, batch: BatchRun, run_batch: Callable[..., Any], params: list[Any], loaded: _Loaded
    ) -> None:
        """The batch's one engine call, then each live job's frames to the render process."""
        marks: dict[str, float] = {}

        def on_step(info: Any) -> None:
            at = self._wall()
            marks.setdefault(info.stage, at)
            self.should_cancel()  # a Cancel for one job drops it before its progress goes
            self._ack_dropped(batch)
            for progress in batch.progress(info, at):
                self.send(progress)

        started, started_at = self._clock(), self._wall()
        results = run_batch(params, on_step, self.engine_cancel)
        engine_s, ended_at = self._clock() - started, self._wall()
        self.should_cancel()
        self._ack_dropped(batch)
        if self._cancel:  # a Preempt or Shutdown came during the decode
            for job in batch.live():
                self.send(self._stopped(job))
            return
        for job in batch.live():  # the engine is free for every job of the batch
            self.send(Progress(job.job_id, "render", 0, 1, 0.0, self._wall()))
        spans = engine_spans(started_at, marks.get("denoise"), ended_at, results[0].timings)
        for share in batch.split(results, engine_s):
            job, result = share.job, share.result
            out_dir = job_dir(self._cfg.worker.work_dir, job.job_id)
            out_dir.mkdir(parents=True, exist_ok=True)
            engine = dict(getattr(result, "engine", {}))
            engine["batch_engine_s"] = f"{engine_s:.6f}"
            self._rendering[job.job_id] = _EngineDone(
                timings={k: float(result.timings.get(k, 0.0)) for k in _ENGINE_STAGES},
                seed=int(result.seed),
                device=str(result.device),
                dtype=str(result.dtype),
                engine_s=share.engine_s,
                engine=engine,
                spans=dict(spans),
            )
            self._hand_off(job, result, out_dir, loaded)

    def _run_each(self, batch: BatchRun | None, first_error: Exception | None = None) -> None:
        """The batch's live jobs one at a time on the single-job path; a job canceled
        while it waits is acknowledged without running."""
        if batch is None:
            return
        if first_error is not None:
            log.info("rerunning %d jobs alone after %s", len(batch.live()), first_error)
        self._batch = batch  # a Cancel for a waiting job is kept
        try:
            for job in batch.jobs:
                if batch.canceled(job.job_id):
                    self._ack_dropped(batch)
                    continue
                if self.shutdown:
                    self.send(self._stopped(job))
                    continue
                ended = self.run_job(job)
                if ended is not None:
                    self.send(ended)
        finally:
            self._batch = None

    def _ack_dropped(self, batch: BatchRun) -> None:
        """Acknowledge each job canceled out of ``batch`` (once)."""
        for job in batch.unacknowledged():
            self.send(_failed(job, FailureCode.CANCELED, "canceled"))

    def _on_rendered(self, result: Rendered | Failed) -> None:
        """On the render reader thread: the job's Done (or Failed) goes to the parent."""
        engine = self._rendering.pop(result.job_id, None)
        if isinstance(result, Rendered) and engine is not None:
            self.send(engine.done(result, self._wall()))
        elif isinstance(result, Failed):
            self.send(result)

    def drain(self) -> None:
        """Wait for the renders in hand to finish and report."""
        self._handoff.shutdown(wait=True)
        self._renderer.stop(timeout=self._cfg.worker.cancel_grace_s + 30.0)


def _failed(job: RunJob, code: str, message: str, retryable: bool = False) -> Failed:
    return Failed(job_id=job.job_id, code=code, message=message[:1000], retryable=retryable)


def _classify(exc: Exception) -> tuple[str, str, bool]:
    """(code, message, retryable) for an engine exception."""
    message = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "CheckpointError":  # engine.checkpoint, without importing torch
        return FailureCode.CHECKPOINT_INVALID, message, True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without torch
        return FailureCode.OUT_OF_MEMORY, message, True
    if isinstance(exc, NonFiniteFrames):  # the first step of the quality gate
        return FailureCode.QC_FAILED, f"quality check failed: {exc}", False
    return FailureCode.ENGINE_ERROR, message, False


def _parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


# ---------------------------------------------------------------- entry point


def child_main(cfg: Config, conn: Connection, log_level: int = logging.INFO) -> None:
    """Target of the spawned child process."""
    logging.basicConfig(level=log_level, format="%(asctime)s child %(levelname)s %(message)s")
    # Ctrl-C (or a SIGTERM to the process group, a spot notice) reaches this process
    # too; the parent decides how to stop (a preemption checkpoints first).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = _Child(cfg, conn, followers=_followers(cfg, log_level))
    try:
        child.send(child.load())
    except Exception as exc:
        code = exc.code if isinstance(exc, _LoadError) else FailureCode.ENGINE_ERROR
        log.exception("model load failed")
        child.send(Failed("", code, f"{type(exc).__name__}: {exc}"[:1000], retryable=True))
        _stop_ranks(child, clean=False)
        sys.exit(1)
    try:
        _serve(child)
    except Exception:  # a collective failed while idle: a rank is gone
        log.exception("the parallel ranks are out of step")
        child.broken = True
    child.drain()
    _stop_ranks(child, clean=not child.broken)
    if child.broken:
        sys.exit(1)


def _serve(child: _Child) -> None:
    while not child.shutdown and not child.broken:
        msg = child.next_message()
        if isinstance(msg, Shutdown):
            break
        if isinstance(msg, Preempt):
            child.preempting = True
        elif isinstance(msg, RunJob):
            ended = child.run_job(msg)
            if ended is not None:
                child.send(ended)
        elif isinstance(msg, RunBatch):
            child.run_batch(msg)
        elif child.link is not None:
            child.link.idle()  # keeps the other ranks' wait for a command short
        elif isinstance(msg, Cancel):
            child.drop_waiting(msg.job_id)  # else stale: its job already ended


def _followers(cfg: Config, log_level: int) -> Followers | None:
    """Ranks 1..N-1 of a parallel worker (not started yet); None for one rank."""
    if not cfg.worker.parallel:
        return None
    from cinecloud.workers.ranks import Followers, worker_plan

    return Followers(cfg, log_level) if worker_plan(cfg).world_size > 1 else None


def _stop_ranks(child: _Child, *, clean: bool) -> None:
    """End ranks 1..N-1: told to shut down when they are in step, else killed."""
    if child.followers is None:
        return
    grace = child.cfg.worker.cancel_grace_s
    if clean and child.link is not None:
        try:
            child.link.shutdown()
        except Exception:
            log.exception("could not tell the ranks to stop")
            grace = 0.0
    child.followers.stop(grace if clean else 0.0)
