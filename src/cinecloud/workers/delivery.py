"""Getting a finished job's files to the control plane, and the job completed.

Two ways, as the registration says (``uploads``):

- ``"direct"`` (an S3 store): each file goes straight into the bucket through its own
  presigned URL, all of a job's files at once on a small thread pool, then ``complete``.
- ``"deliveries"`` (the control plane stores the files): one ``deliveries`` request
  carries the files and the outcome of a job, or of every job of a batch. A job's nine
  files and its completion were eleven requests to the one control-plane process; a
  batch of eight was eighty-eight. Jobs denoised together finish rendering within a
  render's time of each other (their render processes run side by side), so the first
  ones wait for the rest (:class:`DeliveryGroup`, at most ``wait_s``) and the last one
  to arrive sends them all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cinecloud.workers.client import Artifact, ControlPlaneClient, Delivered, Delivery
from cinecloud.workers.messages import OutputFile, RunJob

__all__ = ["BATCH_DELIVERY_WAIT_S", "UPLOAD_THREADS", "DeliveryGroup", "upload_files"]

#: Files of one job uploaded at once: a job has the video, four images and its HLS
#: ladder (a master playlist plus, per rendition, a playlist, an init segment and one
#: media segment per 6 s), so a short clip's files all go up in one round.
UPLOAD_THREADS = 16

#: How long a batch's finished jobs wait for the rest of it before going without them.
BATCH_DELIVERY_WAIT_S = 5.0


def upload_files(
    client: ControlPlaneClient,
    pool: ThreadPoolExecutor,
    job: RunJob,
    files: Sequence[OutputFile],
    stopping: Callable[[], bool],
) -> list[Artifact] | None:
    """Upload ``files`` in parallel; their artifacts in the order given, or None when
    ``stopping`` turned true (nothing more is started then). Protocol errors raise."""
    targets = client.uploads(job.job_id, job.lease_id, [f.name for f in files])
    if stopping():
        return None
    futures = [
        pool.submit(client.put_file, f.name, targets[f.name], Path(f.path), f.content_type)
        for f in files
    ]
    artifacts = [future.result() for future in futures]
    return None if stopping() else artifacts


Send = Callable[[Sequence[Delivery]], dict[str, Delivered]]


class DeliveryGroup:
    """The jobs of one batch, delivered together: each finished job :meth:`deliver`\\ s
    (its thread waits for its answer), each that ends otherwise :meth:`leave`\\ s. The
    pending jobs go out in one request once no member is still expected, or once the
    earliest waiting one has waited ``wait_s`` (a slow render holds no one up for long;
    it then goes in a later request)."""

    def __init__(
        self,
        job_ids: Iterable[str],
        wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._expected = set(job_ids)
        self._wait_s = wait_s
        self._clock = clock
        self._pending: list[Delivery] = []
        self._since: float | None = None  # when the oldest pending job arrived
        self._answers: dict[str, Delivered | BaseException] = {}
        self._sending = False
        self._cond = threading.Condition()

    def leave(self, job_id: str) -> None:
        """``job_id`` will not be delivered here (failed, canceled, given back, or
        already delivered): nobody waits for it."""
        with self._cond:
            self._expected.discard(job_id)
            self._cond.notify_all()

    def deliver(self, item: Delivery, send: Send) -> Delivered:
        """Deliver ``item`` with the others; its answer. What ``send`` raised for the
        request that carried it is raised here (in every job's thread)."""
        with self._cond:
            self._expected.discard(item.job_id)
            self._pending.append(item)
            if self._since is None:
                self._since = self._clock()
            while item.job_id not in self._answers:
                due = self._since + self._wait_s if self._since is not None else 0.0
                if (
                    self._pending
                    and not self._sending
                    and (not self._expected or self._clock() >= due)
                ):
                    self._send_pending(send)
                else:
                    self._cond.wait(max(0.001, due - self._clock()) if self._pending else None)
            answer = self._answers.pop(item.job_id)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _send_pending(self, send: Send) -> None:
        """Send what is pending (the lock held on entry and on return, not meanwhile)."""
        batch, self._pending, self._since = self._pending, [], None
        self._sending = True
        self._cond.release()
        try:
            answers: dict[str, Delivered | BaseException] = dict(send(batch))
        except BaseException as exc:  # every job of the request learns of it
            answers = {d.job_id: exc for d in batch}
        finally:
            self._cond.acquire()
            self._sending = False
        self._answers.update(answers)
        self._cond.notify_all()
