"""A parallel worker (2 gloo ranks on the CPU) serves jobs; a killed rank fails the job
cleanly: it is retried and completes, the worker lives on, and no rank is left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cinecloud.config import load_config, repo_root
from cinecloud.testing.fake_control_plane import FakeControlPlane
from cinecloud.workers import LocalLauncher
from cinecloud.workers.ranks import RANK_ENV

pytestmark = pytest.mark.integration

JOB = {
    "prompt": "a red fox running through a snowy forest",
    "negative_prompt": "blurry",
    "width": 64,
    "height": 64,
    "num_frames": 9,
    "fps": 8,
    "steps": 12,
    "guidance_scale": 3.0,
    "seed": 1,
}


def _followers(worker_pid: int) -> list[psutil.Process]:
    """The worker's ranks 1..N-1 (they carry their rank in their environment)."""
    found = []
    for proc in psutil.Process(worker_pid).children(recursive=True):
        try:
            if RANK_ENV in proc.environ():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def _parallel_worker(tmp_path: Path, cp: FakeControlPlane) -> Iterator[int]:
    """One worker of 2 ranks (``ulysses=2``) on tiny Wan; yields the worker's pid and,
    once stopped, checks that it left no process behind."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny-wan").symlink_to(repo_root() / "models" / "tiny-wan", target_is_directory=True)
    cfg = load_config(
        server={"home": tmp_path / "home"},
        delivery={"secret": "test"},
        queue={"lease_long_poll_s": 1.0},
        engine={"models_dir": models, "device": "cpu", "dtype": "float32"},
        worker={
            "token": cp.token,
            "models": ["cinecloud/tiny-wan"],
            "work_dir": tmp_path / "work",
            "parallel": "ulysses=2",
            "parallel_timeout_s": 10.0,
            "overlap": False,
        },
    )
    launcher = LocalLauncher(cfg, 1, server_url=cp.url, env=dict(os.environ))
    launcher.start()
    (worker_pid,) = launcher.pids
    try:
        yield worker_pid
    finally:
        descendants = psutil.Process(worker_pid).children(recursive=True)
        launcher.stop(timeout=20)
    assert _wait(lambda: all(_gone(p.pid) for p in descendants), 10)


def _at_step(cp: FakeControlPlane, job_id: str, step: int) -> bool:
    """Wait until ``job_id`` reports its ``step``-th denoising step."""
    return cp.wait_for(
        lambda: any(e.get("step", 0) >= step for e in cp.job(job_id).events), timeout=120
    )


def test_a_killed_rank_fails_the_job_cleanly_and_it_is_retried(tmp_path: Path) -> None:
    with (
        FakeControlPlane(tmp_path / "blobs", heartbeat_interval_s=0.5) as cp,
        _parallel_worker(tmp_path, cp) as worker_pid,
    ):
        job_id = cp.submit(JOB, model="cinecloud/tiny-wan")
        assert _at_step(cp, job_id, 2), cp.job(job_id)
        (rank1,) = _followers(worker_pid)
        engine = rank1.parent()  # rank 0, the engine child: it and all it started
        first = [engine, *engine.children(recursive=True)]
        os.kill(rank1.pid, signal.SIGKILL)
        assert cp.wait_for(lambda: cp.job(job_id).status == "completed", timeout=180), (
            cp.job(job_id).status,
            cp.job(job_id).failures,
        )
        job = cp.job(job_id)
        assert job.attempt == 2
        (failure,) = job.failures
        assert failure["code"] == "worker_crashed" and failure["retryable"] is True
        # The worker parent lives on; every process of the first engine is gone.
        assert psutil.Process(worker_pid).is_running()
        assert _wait(lambda: all(_gone(p.pid) for p in first), 10), [
            (p.pid, p.status()) for p in first if not _gone(p.pid)
        ]
        assert len(_followers(worker_pid)) == 1  # the fresh engine's rank 1
        record = job.result["engine"] if job.result else {}
        assert record.get("parallel") == "ulysses=2"


def test_cancel_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    with (
        FakeControlPlane(tmp_path / "blobs", heartbeat_interval_s=0.5) as cp,
        _parallel_worker(tmp_path, cp) as worker_pid,
    ):
        canceled = cp.submit(JOB, model="cinecloud/tiny-wan")
        assert _at_step(cp, canceled, 2), cp.job(canceled)
        ranks = [p.pid for p in _followers(worker_pid)]
        cp.cancel(canceled)
        # The ranks stay in step: the next job runs on the same processes.
        done = cp.submit({**JOB, "steps": 2}, model="cinecloud/tiny-wan")
        assert cp.wait_for(lambda: cp.job(done).status == "completed", timeout=120), cp.job(done)
        stopped = cp.job(canceled)
        assert stopped.status == "canceled" and stopped.result is None
        assert max(e.get("step", 0) for e in stopped.events) < JOB["steps"]  # type: ignore[operator]
        assert [p.pid for p in _followers(worker_pid)] == ranks
        assert cp.job(done).attempt == 1
        # the scheduler learns the worker's width at register and at every lease
        assert next(iter(cp.workers.values()))["width"] == 2
        assert cp.lease_widths and set(cp.lease_widths) == {2}
