"""The render process: a job's frames to its files, beside the engine rather than in it.

The engine child starts ``worker.render_processes`` of them (:class:`RenderPool`) before
it loads its models (so their imports overlap the load) and hands each job whose engine
work is done, as a :class:`Render` record, to the one holding the fewest jobs. The
frames lie in a ``.npy`` file in the job's directory, so nothing big crosses the pipe.
Each process renders one job at a time and answers :class:`Rendered` (or
:class:`Failed`); with several, jobs finish in any order. Frames that fail the quality
gate (render.qc) answer :class:`Failed` with ``qc_failed`` and leave no file to upload;
the others are watermarked, labelled and signed as they are rendered (render.trusted,
with the worker's settings). Apart from the engine, its encoder and image work cannot
hold the engine's interpreter lock, and at a lower CPU priority (:data:`RENDER_NICE`) it
gives way to the engine when both want a core. It exits when told (:class:`Shutdown`)
or once the engine child is gone.

A render process that dies fails only the jobs it held (retryable, ``worker_crashed``);
the next job handed over starts a fresh one in its place.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cinecloud.workers.messages import (
    Failed,
    FailureCode,
    OutputFile,
    Render,
    Rendered,
    Shutdown,
    from_dict,
    to_dict,
)

if TYPE_CHECKING:
    from cinecloud.render.trusted import TrustSettings

__all__ = [
    "RENDER_NICE",
    "RenderPool",
    "default_render_processes",
    "job_threads",
    "render_job",
    "render_main",
    "render_pool_size",
    "render_threads",
    "save_frames",
]

log = logging.getLogger(__name__)

#: How much lower than the engine the render process runs (``os.nice`` increment).
RENDER_NICE = 10
_IDLE_POLL_S = 0.5

RenderResult = Rendered | Failed


def save_frames(frames: np.ndarray, path: Path) -> Path:
    """Write ``frames`` where the render process reads them (a plain ``.npy``)."""
    np.save(path, frames, allow_pickle=False)
    return path


def _use_threads(threads: int) -> None:
    """Cap this process's H.264 encoders and OpenCV at ``threads`` (0: no cap)."""
    from cinecloud.render.encode import set_encoder_threads

    set_encoder_threads(threads)
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(threads if threads else -1)  # -1: OpenCV's default


def render_job(
    msg: Render,
    settings: TrustSettings,
    clock: Callable[[], float] = time.monotonic,
    threads: int = 0,
) -> RenderResult:
    """Render one job: read (then delete) its frames file, pass the quality gate, write
    its outputs with their provenance (render.trusted). Its encoders use ``msg.threads``
    threads, else ``threads`` (the process's share; 0: no cap)."""
    from cinecloud.render.qc import QcFailed
    from cinecloud.render.trusted import render_trusted

    threads = msg.threads or threads
    _use_threads(threads)
    started = clock()
    try:
        frames_path = Path(msg.frames_path)
        frames = np.load(frames_path, allow_pickle=False)
        frames_path.unlink(missing_ok=True)
        result = render_trusted(
            frames,
            Path(msg.out_dir),
            msg.fps,
            job_id=msg.job_id,
            settings=settings,
            display_size=msg.display_size,
            model=msg.model,
        )
    except QcFailed as exc:
        log.warning("job %s failed the quality gate: %s", msg.job_id, exc)
        return Failed(msg.job_id, FailureCode.QC_FAILED, str(exc)[:1000])
    except Exception as exc:
        log.exception("job %s failed to render", msg.job_id)
        message = f"{type(exc).__name__}: {exc}"[:1000]
        return Failed(msg.job_id, FailureCode.ENGINE_ERROR, message)
    files = tuple(OutputFile(f.name, str(f.path), f.content_type) for f in result.files)
    return Rendered(msg.job_id, files, clock() - started, result.timings, result.qc, threads)


def render_main(
    conn: Connection,
    settings: dict[str, Any],
    nice: int = RENDER_NICE,
    log_level: int = logging.INFO,
    threads: int = 0,
) -> None:
    """Target of the spawned render process; ``settings`` is a :class:`TrustSettings` as
    a plain dict; ``threads`` caps the encoders' and OpenCV's threads (0: no cap) for
    a job that does not name its own (:attr:`Render.threads`)."""
    from cinecloud.render.trusted import TrustSettings

    logging.basicConfig(level=log_level, format="%(asctime)s render %(levelname)s %(message)s")
    trust = TrustSettings.from_dict(settings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker parent decides how to stop
    with contextlib.suppress(OSError):
        os.nice(nice)
    parent = multiprocessing.parent_process()
    while parent is None or parent.is_alive():
        if not conn.poll(_IDLE_POLL_S):
            continue
        try:
            msg = from_dict(conn.recv())
        except EOFError:
            return
        if isinstance(msg, Shutdown):
            return
        if isinstance(msg, Render):
            conn.send(to_dict(render_job(msg, trust, threads=threads)))


@dataclass
class _Link:
    """One render process, its pipe, and the jobs it holds (sent, not yet answered)."""

    proc: BaseProcess
    conn: Connection
    held: list[str] = field(default_factory=list)


def render_threads(pool_size: int, cpus: int | None = None) -> int:
    """Threads each of ``pool_size`` render processes may use: the CPUs shared among
    them, at least one."""
    count = os.cpu_count() if cpus is None else cpus
    return max(1, (count or 1) // max(1, pool_size))


def job_threads(rendering: int, share: int, cpus: int | None = None) -> int:
    """Threads for a job's encoders when ``rendering`` render processes (this job's
    included) hold a job: the CPUs shared among those, never fewer than each process's
    fixed ``share``.

    A lone render (the last job of a queue, or jobs far apart, as a large model's are)
    then uses every CPU instead of its process's quarter, which shortens the wait for
    the last video of a queue. A render that starts while others run gets what they
    leave; one already running keeps its threads until it ends, so a burst oversubscribes
    the CPUs for one render's time at most, at a lower priority than the engine.
    """
    count = os.cpu_count() if cpus is None else cpus
    return max(share, (count or 1) // max(1, rendering))


# Read by numpy's BLAS and OpenMP as a spawned render process imports them.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _thread_environment(threads: int) -> Iterator[None]:
    """The thread caps in the environment a process spawned within inherits; this
    process's own environment is as it was afterwards."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def default_render_processes(cpus: int | None = None) -> int:
    """``worker.render_processes`` when not set: a quarter of the CPUs, 1 to 4."""
    count = os.cpu_count() if cpus is None else cpus
    return max(1, min(4, (count or 1) // 4))


class RenderPool:
    """The engine child's render processes: ``size`` of them, each rendering one job at
    a time.

    ``submit`` hands a job to the process holding the fewest jobs (ties: the next in
    turn), so one job's frames are rendered by one process and a slow job does not hold
    up the others. Each job's :class:`Rendered` or :class:`Failed` arrives through
    ``on_result``, in whatever order the processes finish, called on a reader thread
    per process that only waits on its pipe. A process that dies fails the jobs it held
    (retryable) and is replaced by a fresh one at the next ``submit``.
    """

    def __init__(
        self,
        on_result: Callable[[RenderResult], None],
        settings: dict[str, Any],
        *,
        size: int = 1,
        nice: int = RENDER_NICE,
        cpus: int | None = None,
    ) -> None:
        self._on_result = on_result
        self._nice = nice
        self._settings = settings
        self._size = max(1, size)
        self._cpus = cpus  # None: this machine's
        self._threads = render_threads(self._size, cpus)
        self._lock = threading.Lock()
        self._links: list[_Link | None] = [None] * self._size
        self._turn = 0
        self._readers: list[threading.Thread] = []

    @property
    def size(self) -> int:
        return self._size

    @property
    def pids(self) -> list[int | None]:
        with self._lock:
            return [None if link is None else link.proc.pid for link in self._links]

    def start(self) -> None:
        """Start every render process (those already there, if any, are left to end)."""
        with self._lock:
            for slot in range(self._size):
                self._links[slot] = self._spawn()

    def _spawn(self) -> _Link:
        ctx = multiprocessing.get_context("spawn")
        conn, theirs = ctx.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        proc = ctx.Process(
            target=render_main,
            args=(theirs, self._settings, self._nice, level, self._threads),
            name="cinecloud-render",
        )
        proc.daemon = True  # ends with the engine child
        with _thread_environment(self._threads):
            proc.start()
        theirs.close()  # so the reader sees EOF when the render process dies
        link = _Link(proc, conn)
        reader = threading.Thread(
            target=self._read, args=(link,), name="cinecloud-render-reader", daemon=True
        )
        self._readers.append(reader)
        reader.start()
        return link

    def _pick(self) -> _Link:
        """The live process holding the fewest jobs (a dead one is replaced first); on a
        tie, the first at or after this turn's slot. Called under the lock."""
        for slot, link in enumerate(self._links):
            if link is None or not link.proc.is_alive():
                self._links[slot] = self._spawn()
        order = [(self._turn + i) % self._size for i in range(self._size)]
        slot = min(order, key=lambda s: len(self._links[s].held))  # type: ignore[union-attr]
        self._turn = (slot + 1) % self._size
        link = self._links[slot]
        assert link is not None
        return link

    def submit(self, msg: Render) -> None:
        with self._lock:
            link = self._pick()
            link.held.append(msg.job_id)
            rendering = sum(1 for other in self._links if other is not None and other.held)
            msg = replace(msg, threads=job_threads(rendering, self._threads, self._cpus))
            with contextlib.suppress(OSError):  # a dead process fails the job in _read
                link.conn.send(to_dict(msg))

    def stop(self, timeout: float) -> None:
        """Let the held jobs finish (up to ``timeout`` in all), then end the processes."""
        with self._lock:
            links = [link for link in self._links if link is not None]
        for link in links:
            with contextlib.suppress(OSError):
                link.conn.send(to_dict(Shutdown()))
        deadline = time.monotonic() + timeout
        for link in links:
            link.proc.join(max(0.0, deadline - time.monotonic()))
            if link.proc.is_alive():
                link.proc.kill()
                link.proc.join(1.0)
        for reader in self._readers:
            reader.join(timeout=1.0)

    def _read(self, link: _Link) -> None:
        while True:
            try:
                msg = from_dict(link.conn.recv())
            except (EOFError, OSError):
                break
            if not isinstance(msg, Rendered | Failed):
                continue
            with self._lock:
                if msg.job_id in link.held:
                    link.held.remove(msg.job_id)
            self._on_result(msg)
        link.proc.join(1.0)
        with self._lock:
            orphans, link.held = link.held, []
        why = f"render process exited with code {link.proc.exitcode}"
        for job_id in orphans:
            self._on_result(Failed(job_id, FailureCode.WORKER_CRASHED, why, retryable=True))
        link.conn.close()


def render_pool_size(configured: int | None, cpus: int | None = None) -> int:
    """How many render processes ``worker.render_processes`` asks for (None: the default)."""
    return default_render_processes(cpus) if configured is None else max(1, configured)
