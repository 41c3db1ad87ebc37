"""Preemption and crash recovery with real processes: ``cinecloud serve`` on PostgreSQL,
real workers running the default model, and the checkpoints between them.

One control plane; workers come and go. A worker told to stop mid-denoise (SIGTERM, a
spot notice) checkpoints at its next step boundary, gives the lease back and exits with
0; the next worker resumes after that step. A worker killed mid-run (SIGKILL) leaves its
lease to expire; the next worker resumes from the newest checkpoint it had stored. Both
videos equal, frame for frame, the same request run without interruption.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from cinecloud.jobs import JobStore, make_engine
from cinecloud.jobs.checkpoints import CheckpointLedger
from cinecloud.testing.fleet import Workers, first_step_after, job_events, wait_for_video
from cinecloud.testing.service import Service, quick_queue_env, running

pytestmark = pytest.mark.integration

EVERY = 3  # worker.checkpoint_every
REQUEST = {
    "prompt": "a small red circle moves left on a blue background",
    "seed": 5,
    "steps": 12,
}
SERVER_ENV = quick_queue_env(lease_ttl_s=3)


@pytest.fixture
def service(tmp_path: Path, pg_url: str) -> Iterator[Service]:
    with running(tmp_path / "home", pg_url, workers=0, env=SERVER_ENV) as svc:
        yield svc


@pytest.fixture
def workers(service: Service, tmp_path: Path) -> Iterator[Workers]:
    """Real worker processes loading the default model, one per ``start()``."""
    # The watermark holds the job id, so two jobs' frames differ by it; the resumed and
    # uninterrupted videos are compared without it.
    with Workers(
        service.url,
        service.home,
        tmp_path / "work",
        worker={"checkpoint_every": EVERY},
        provenance={"enabled": False},
    ) as fleet:
        yield fleet


def wait_for(c: httpx.Client, vid: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return wait_for_video(c, vid, pred, timeout=120)


def step_after_last(evs: list[dict[str, Any]], kind: str) -> int:
    """The first denoise step reported after the last ``kind`` event."""
    return first_step_after(evs, max(i for i, e in enumerate(evs) if e["type"] == kind))


def frames(c: httpx.Client, vid: str) -> np.ndarray:
    resp = c.get(f"/v1/videos/{vid}/content", follow_redirects=True)
    assert resp.status_code == 200, resp.text
    with av.open(io.BytesIO(resp.content)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_preempted_and_killed_workers_resume_from_their_checkpoints(
    service: Service, workers: Workers, pg_url: str
) -> None:
    ledger = CheckpointLedger(JobStore(make_engine(pg_url), clock=time.time))
    first = workers.launchers[workers.start()]
    with service.client() as c:
        # -- SIGTERM (a spot notice) mid-denoise: checkpoint, lease given back, exit 0
        j = c.post("/v1/videos", json=REQUEST).json()["id"]
        wait_for(c, j, lambda v: v["stage"] == "denoise" and (v["step"] or 0) >= 4)
        assert first.stop(timeout=60) == [0]
        second = workers.launchers[workers.start()]
        done = wait_for(c, j, lambda v: v["status"] in ("completed", "failed"))
        assert done["status"] == "completed", done
        evs = job_events(c, j)
        (requeued,) = [e for e in evs if e["type"] == "requeued"]
        saved = requeued["checkpoint_step"]  # the job's checkpoint when it was given back
        assert requeued["reason"] == "preempted" and saved >= 5, requeued
        assert done["attempts"] == 1  # the preempted attempt does not count
        assert done["engine"]["resumed_from_step"] == str(saved)
        assert step_after_last(evs, "requeued") == saved  # progress goes on from there
        assert ledger.latest(j) is None  # a finished job keeps no checkpoint

        # -- SIGKILL mid-run: the lease expires, the next lease resumes from the newest
        k = c.post("/v1/videos", json=REQUEST).json()["id"]
        wait_for(c, k, lambda v: (v["step"] or 0) >= 2 * EVERY)
        deadline = time.monotonic() + 30
        while (newest := ledger.latest(k)) is None or newest.step < 2 * EVERY:
            assert time.monotonic() < deadline, newest
            time.sleep(0.05)
        os.kill(second.pids[0], signal.SIGKILL)
        workers.start()
        done = wait_for(c, k, lambda v: v["status"] in ("completed", "failed"))
        assert done["status"] == "completed", done
        assert done["attempts"] == 2  # the killed attempt counts
        evs = job_events(c, k)
        requeue = max(i for i, e in enumerate(evs) if e["type"] == "requeued")
        assert evs[requeue]["code"] == "lease_expired"
        stored = [e["step"] for e in evs[:requeue] if e["type"] == "checkpoint"]
        assert stored and stored[-1] >= newest.step
        assert done["engine"]["resumed_from_step"] == str(stored[-1])
        assert step_after_last(evs, "requeued") == stored[-1]

        # -- the same request, uninterrupted: the same video
        r = c.post("/v1/videos", json=REQUEST).json()["id"]
        done = wait_for(c, r, lambda v: v["status"] in ("completed", "failed"))
        assert done["status"] == "completed" and "resumed_from_step" not in done["engine"]
        reference = frames(c, r)
        assert np.array_equal(frames(c, j), reference)
        assert np.array_equal(frames(c, k), reference)
