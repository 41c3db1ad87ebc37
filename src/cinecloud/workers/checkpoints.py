"""Denoise checkpoints on the worker: the engine child saves them, the parent uploads them.

In the child, :class:`CheckpointWriter` looks at every denoise step the runner reports.
Every ``worker.checkpoint_every`` steps, and at once when the worker is preempted, it
takes the step's checkpoint (:mod:`cinecloud.engine.checkpoint`), writes it into the
job's directory and tells the parent with a :class:`Checkpoint` message.

In the parent, :class:`CheckpointUploads` uploads each one on its own thread, in order,
like an artifact (a signed PUT under the job's key prefix), then points the job at it
with the ``checkpoint`` call. A checkpoint still waiting when a newer one of the same job
arrives is skipped. When the worker is preempted the parent waits for the job's uploads,
then gives the lease back with ``release`` (docs/checkpoints.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from cinecloud.workers.client import (
    ControlPlaneClient,
    ControlPlaneError,
    LeaseLost,
    RetryPolicy,
    Unreachable,
)
from cinecloud.workers.messages import Checkpoint, Message, RunJob

__all__ = [
    "CHECKPOINT_RETRY",
    "CONTENT_TYPE",
    "CheckpointUploads",
    "CheckpointWriter",
    "checkpoint_name",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/octet-stream"
#: Checkpoints are best-effort, and a stopping worker must not wait long on a control
#: plane that is gone: each of their calls gives up sooner than the others.
CHECKPOINT_RETRY = RetryPolicy(deadline_s=10.0, first_delay_s=0.1, max_delay_s=1.0)


def checkpoint_name(step: int) -> str:
    """The file name (in the job's directory, and under its key prefix) of a checkpoint."""
    return f"checkpoints/step-{step:06d}.ckpt"


class CheckpointWriter:
    """In the engine child: saves a job's denoise state when one is due."""

    def __init__(self, every: int, send: Callable[[Message], None]) -> None:
        self.every = every
        self._send = send

    def due(self, info: Any, preempting: bool) -> bool:
        """A checkpoint is due after ``info``'s step: at once when preempted, else every
        ``every`` steps short of the last (the decode follows the last step at once)."""
        if getattr(info, "checkpoint", None) is None or info.stage != "denoise":
            return False
        if preempting:
            return True
        return self.every > 0 and info.step % self.every == 0 and info.step < info.total_steps

    def after_step(self, job_id: str, out_dir: Path, info: Any, preempting: bool) -> bool:
        """Save and announce a checkpoint if one is due; whether one was. A checkpoint that
        cannot be taken is logged and skipped: the job runs on without it."""
        if not self.due(info, preempting):
            return False
        path = out_dir / checkpoint_name(info.step)
        try:
            data = info.checkpoint()
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_suffix(".part")
            part.write_bytes(data)
            part.replace(path)
        except Exception:
            log.exception("job %s: no checkpoint after step %d", job_id, info.step)
            return False
        self._send(Checkpoint(job_id, info.step, info.total_steps, str(path)))
        return True


class CheckpointUploads:
    """In the worker parent: uploads the child's checkpoints and records them, over a
    client of its own (made with :data:`CHECKPOINT_RETRY`; closed by :meth:`close`)."""

    def __init__(self, client: ControlPlaneClient) -> None:
        self._client = client
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cinecloud-checkpoint")
        self._lock = threading.Lock()
        self._pending: dict[str, list[Future[None]]] = {}
        self._newest: dict[str, int] = {}  # job id -> the newest step handed in

    def submit(self, job: RunJob, msg: Checkpoint) -> None:
        with self._lock:
            self._newest[job.job_id] = max(msg.step, self._newest.get(job.job_id, 0))
            future = self._pool.submit(self._upload, job, msg)
            self._pending.setdefault(job.job_id, []).append(future)

    def settle(self, job_id: str, *, keep: bool) -> None:
        """Wait for ``job_id``'s uploads. ``keep`` False: the job needs no more (it is
        done, or canceled), so those not started yet are skipped."""
        with self._lock:
            if not keep and job_id in self._pending:
                self._newest[job_id] = 2**62  # every waiting one is moot
            futures = self._pending.pop(job_id, [])
        wait(futures)
        with self._lock:
            if job_id not in self._pending:
                self._newest.pop(job_id, None)

    def release(self, job: RunJob, reason: str) -> None:
        """Give ``job``'s lease back (it is queued again at once, no attempt counted);
        if that fails, the lease expires and the job returns to the queue anyway."""
        try:
            status = self._client.release(job.job_id, job.lease_id, reason)
        except LeaseLost:
            log.info("job %s: lease already gone", job.job_id)
        except (Unreachable, ControlPlaneError) as exc:
            log.warning("job %s: could not give the lease back (%s); it expires", job.job_id, exc)
        else:
            log.info("job %s: lease given back (%s); the job is %s", job.job_id, reason, status)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def _moot(self, job_id: str, step: int) -> bool:
        with self._lock:
            return self._newest.get(job_id, step) > step

    def _upload(self, job: RunJob, msg: Checkpoint) -> None:
        path = Path(msg.path)
        try:
            if self._moot(job.job_id, msg.step):
                return
            name = checkpoint_name(msg.step)
            target = self._client.uploads(job.job_id, job.lease_id, [name])[name]
            stored = self._client.put_file(name, target, path, CONTENT_TYPE)
            newest = self._client.checkpoint(
                job.job_id, job.lease_id, msg.step, msg.total_steps, stored
            )
            log.info(
                "job %s: checkpoint after step %d/%d stored (%d bytes; newest: step %d)",
                job.job_id,
                msg.step,
                msg.total_steps,
                stored.size,
                newest,
            )
        except LeaseLost:
            log.info("job %s: lease lost; checkpoint after step %d dropped", job.job_id, msg.step)
        except (ControlPlaneError, Unreachable, OSError) as exc:
            step = msg.step
            log.warning("job %s: checkpoint after step %d not stored: %s", job.job_id, step, exc)
        finally:
            path.unlink(missing_ok=True)
