"""The fault suite: real processes, real faults, and after each one every job submitted
has completed, exactly once, with the attempts the fault explains.

- a worker killed (SIGKILL) at 20 random denoise steps, a new worker started each time;
  the job resumes from its newest checkpoint;
- the control plane (``cinecloud serve`` on PostgreSQL) killed (SIGKILL) with a full
  queue, then started again;
- the object store (S3: moto's server on loopback) gone while files go up, then back;
- PostgreSQL (a private server of this test's own) restarted, then stopped for a while,
  under running jobs.

The workers are real worker processes (parent, engine child, render process) running the
checkpointing fake engine (:mod:`cinecloud.testing.fake_runner`): real leases, uploads,
checkpoints and resumes, without a model's seconds per step, so twenty kills fit in a
minute. The fake's loop state is a hash chain over the steps, so a job whose
``denoise_state`` equals the uninterrupted run's ran every step exactly once. The real
engine's resume is covered by test_preemption.py and the checkpoint tests. A run's
figures are in docs/reliability.md ("Fault suite").
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from cinecloud.engine.registry import GenerationParams
from cinecloud.jobs import JobStore, make_engine
from cinecloud.jobs import tables as t
from cinecloud.storage import open_store
from cinecloud.testing.fake_runner import fake_denoise_state
from cinecloud.testing.fleet import (
    Audit,
    Workers,
    audit,
    first_step_after,
    get_video,
    wait_until,
)
from cinecloud.testing.outage import TcpGate
from cinecloud.testing.postgres import PrivatePostgres, pg_binaries
from cinecloud.testing.s3 import make_bucket, s3_env, s3_test_config
from cinecloud.testing.service import Service, limits_env, quick_queue_env

pytestmark = pytest.mark.integration

FAKE = "cinecloud.testing.fake_runner:checkpointing_fake_runner_factory"  # 0.1 s a step
# The fake engine needs no weights; tiny-wan's shape (64x64, 5 frames, shown as made)
# keeps each job's render short.
MODEL = "cinecloud/tiny-wan"
EVERY = 2  # worker.checkpoint_every
SERVER_ENV = {
    # a full queue is submitted at once: the create rate limit would refuse part of it
    **limits_env(),
    **quick_queue_env(lease_ttl_s=3),
    # the worker-kill test kills one job several times; none may run out of attempts
    "CINECLOUD_QUEUE__MAX_ATTEMPTS": "25",
}


def report(fault: str, result: Audit) -> None:
    """One line per fault in the test's output (docs/reliability.md quotes them)."""
    print(f"\nFAULT {fault}: {result.summary()}")


def fake_workers(svc: Service, root: Path, every: int = EVERY) -> Workers:
    return Workers(
        svc.url,
        svc.home,
        root / "work",
        worker={"runner_factory": FAKE, "checkpoint_every": every, "models": [MODEL]},
        engine={"device": "cpu", "dtype": "float32", "default_model": MODEL},
        queue={"lease_long_poll_s": 1.0},
        provenance={"enabled": False},  # not under test here; it costs each job 0.3 s
    )


def submit(c: httpx.Client, i: int, steps: int) -> str:
    body = {"prompt": f"fault job {i}", "seed": i, "steps": steps, "model": MODEL}
    body |= {"size": "64x64", "num_frames": 5}
    resp = c.post("/v1/videos", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def statuses(c: httpx.Client, ids: list[str]) -> dict[str, int]:
    """How many of ``ids`` are in each status (none while the control plane is away)."""
    counts: dict[str, int] = {}
    for video_id in ids:
        video = get_video(c, video_id)
        if video is not None:
            counts[video["status"]] = counts.get(video["status"], 0) + 1
    return counts


def requeues(result: Audit, job: str) -> list[int]:
    """Indices of the job's ``requeued`` events."""
    return [i for i, e in enumerate(result.events[job]) if e["type"] == "requeued"]


def assert_attempts_follow_requeues(result: Audit) -> None:
    """Each attempt past the first has its requeue: a lease that ran out."""
    for job in result.submitted:
        evs = result.events[job]
        again = [evs[i] for i in requeues(result, job)]
        assert result.attempts[job] == 1 + len(again), (job, result.attempts[job], again)
        assert all(e["code"] == "lease_expired" for e in again), again


# ---------------------------------------------------------------- worker kills

KILLS = 20
KILL_SEED = 20261202
STEPS = 20
WORKERS = 4  # at once: the kills spread over their jobs


@dataclass(frozen=True)
class Kill:
    target: int  # the planned step
    job: str  # the job whose step reached it
    step: int  # the step it had reported when its worker was killed
    worker_id: str  # the worker killed


def _running(engine: Engine) -> list[tuple[str, str, str, int, str | None, int | None]]:
    """(job, worker id, worker name, attempt, stage, step) of every job running now."""
    j, w = t.jobs.c, t.workers.c
    q = (
        select(j.id, w.id, w.name, j.attempts, j.stage, j.step)
        .join_from(t.jobs, t.workers, j.lease_owner == w.id)
        .where(j.status == "in_progress")
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(q)]  # type: ignore[misc]


def _held_by(engine: Engine, worker_id: str) -> dict[str, int]:
    """The jobs the worker holds now, with their attempts."""
    j = t.jobs.c
    q = select(j.id, j.attempts).where(j.status == "in_progress", j.lease_owner == worker_id)
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(q)}


def _unfinished(engine: Engine) -> int:
    q = select(t.jobs.c.id).where(t.jobs.c.status.in_(("queued", "in_progress")))
    with engine.connect() as conn:
        return len(conn.execute(q).all())


def _params(video: dict[str, Any]) -> GenerationParams:
    width, height = (int(x) for x in video["size"].split("x"))
    return GenerationParams(
        prompt=video["prompt"],
        negative_prompt=video["negative_prompt"],
        width=width,
        height=height,
        num_frames=video["num_frames"],
        fps=video["fps"],
        steps=video["steps"],
        guidance_scale=video["guidance_scale"],
        seed=video["seed"],
    )


def _assert_resumed_from_checkpoints(result: Audit, job: str) -> int:
    """After each lost lease the job went on from its newest stored checkpoint (no step
    before it ran again); the last resume's step."""
    evs = result.events[job]
    resumed = 0
    for i in requeues(result, job):
        stored = [e["step"] for e in evs[:i] if e["type"] == "checkpoint"]
        resumed = max(stored, default=0)
        assert first_step_after(evs, i) == resumed, (job, i, stored)
    return resumed


# Twenty-four worker starts (about 2 CPU seconds each): on a busy 2-core machine they can
# take minutes, more than the default limit.
@pytest.mark.timeout(600)
def test_kill_9_workers_at_20_random_denoise_steps(tmp_path: Path) -> None:
    rng = random.Random(KILL_SEED)
    targets = [rng.randint(1, STEPS - 1) for _ in range(KILLS)]
    url = f"sqlite:///{tmp_path / 'cinecloud.db'}"  # the one-machine default
    svc = Service(tmp_path / "home", url, workers=0, env=SERVER_ENV).start()
    engine = make_engine(url)
    kills: list[Kill] = []
    try:
        with fake_workers(svc, tmp_path) as fleet, svc.client() as c:
            for _ in range(WORKERS):
                fleet.start()
            ids = [submit(c, i, STEPS) for i in range(WORKERS + 2)]
            killed: dict[str, int] = {}  # job -> its attempt that was killed last
            for target in targets:

                def victim(target: int = target) -> tuple[str, str, str, int] | None:
                    alive = fleet.alive()
                    for job, wid, worker, attempt, stage, step in _running(engine):
                        fresh = killed.get(job) != attempt  # not an attempt already killed
                        at = stage == "denoise" and step is not None and target <= step < STEPS
                        if fresh and at and worker in alive:
                            return job, wid, worker, int(step or 0)
                    # keep work in hand: a job that ends takes no more kills
                    if _unfinished(engine) < WORKERS + 1:
                        ids.append(submit(c, len(ids), STEPS))
                    return None

                job, wid, worker, step = wait_until(f"step {target}", victim, 90, 0.05)
                os.kill(fleet.pid(worker), signal.SIGKILL)
                kills.append(Kill(target, job, step, wid))
                killed.update(_held_by(engine, wid))  # its jobs are lost until their leases go
                fleet.start()
            result = audit(c, ids, timeout=120)
            videos = {j: get_video(c, j) for j in ids}
    finally:
        svc.stop()
        engine.dispose()

    report(f"SIGKILL a worker at {KILLS} random denoise steps", result)
    result.assert_clean()
    assert len(kills) == KILLS
    assert_attempts_follow_requeues(result)
    dead = {k.worker_id for k in kills}
    resumed_from: dict[str, int] = {}
    for j in ids:
        video, evs = videos[j], result.events[j]
        assert video is not None
        # exactly the attempts that a killed worker held went back to the queue (a worker
        # killed in a long-poll may have been handed a job it never saw: that one too)
        lost = {e["attempt"] for e in evs if e["type"] == "started" and e["worker_id"] in dead}
        requeued = {e["attempt"] for e in evs if e["type"] == "requeued"}
        assert requeued == lost - {result.attempts[j]}, (j, requeued, lost)
        assert result.attempts[j] not in lost  # the last attempt's worker lived
        starters = {e["worker_id"] for e in evs if e["type"] == "started"}
        assert all(k.worker_id in starters for k in kills if k.job == j)
        resumed_from[j] = _assert_resumed_from_checkpoints(result, j)
        # every step ran exactly once, in order, across all of the job's workers
        assert video["engine"]["denoise_state"] == fake_denoise_state(_params(video)), j
        if resumed_from[j]:
            assert video["engine"]["resumed_from_step"] == str(resumed_from[j])
    assert all(k.step >= k.target for k in kills), kills
    assert len({k.job for k in kills}) >= 3  # over several jobs
    assert sum(1 for s in resumed_from.values() if s) >= 3  # resumes from checkpoints
    print(f"kills (target step, step at the kill): {[(k.target, k.step) for k in kills]}")
    print(f"attempts per job: {sorted(result.attempts.values())}; last resumed after steps:")
    print(sorted(resumed_from.values()))


# ---------------------------------------------------------------- control plane kill


def test_kill_9_the_control_plane_with_a_full_queue(tmp_path: Path, pg_url: str) -> None:
    # A lease outlives the control plane's restart: the workers' jobs go on through it.
    env = {**SERVER_ENV, "CINECLOUD_QUEUE__LEASE_TTL_S": "6"}
    svc = Service(tmp_path / "home", pg_url, workers=0, env=env).start()
    try:
        with fake_workers(svc, tmp_path) as fleet, svc.client() as c:
            fleet.start()
            fleet.start()
            ids = [submit(c, i, 10) for i in range(20)]

            def busy() -> dict[str, int] | None:
                now = statuses(c, ids)
                return now if now.get("completed", 0) >= 2 and now.get("in_progress") else None

            at_kill = wait_until("a busy queue", busy, 60)
            assert svc.proc is not None
            killed_at = time.time()
            os.kill(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait(10)
            time.sleep(1.0)  # down: the workers keep running and retrying
            svc.start()
            result = audit(c, ids, timeout=120)
            assert fleet.alive() == ["w1-1", "w2-1"]  # no worker fell over
    finally:
        svc.stop()

    report(f"SIGKILL the control plane (at the kill: {at_kill})", result)
    result.assert_clean()
    assert_attempts_follow_requeues(result)
    # the jobs still queued at the kill started after it, and ran once
    first_start = {
        j: min(e["created_at"] for e in result.events[j] if e["type"] == "started") for j in ids
    }
    queued = [j for j in ids if first_start[j] > killed_at]
    assert len(queued) >= 10, at_kill  # the queue was full
    assert all(result.attempts[j] == 1 for j in queued), result.attempts


# ---------------------------------------------------------------- storage outage

OUTAGE_S = 5.0  # at least; and until an upload has waited HELD_S on it
HELD_S = 2.0


def test_storage_unavailable_during_uploads_then_back(
    tmp_path: Path, pg_url: str, s3_endpoint: str
) -> None:
    bucket = make_bucket(s3_endpoint)
    host, port = s3_endpoint.removeprefix("http://").split(":")
    gate = TcpGate((host, int(port))).open()  # everyone reaches the bucket through it
    env = {**SERVER_ENV, **s3_env(gate.url, bucket)}
    svc = Service(tmp_path / "home", pg_url, workers=0, env=env).start()
    try:
        # No checkpoints: a finished job waits for its checkpoint upload in flight, which
        # would meet the outage first; here the files' upload must meet it.
        with fake_workers(svc, tmp_path, every=0) as fleet, svc.client() as c:
            fleet.start()
            fleet.start()
            ids = [submit(c, i, 6) for i in range(6)]
            gate.close()  # the bucket is unreachable: connections refused, open ones cut
            closed = time.monotonic()
            uploading: dict[str, float] = {}  # job -> when it was first seen uploading

            def held_upload() -> str | None:
                for j in ids:
                    video = get_video(c, j)
                    if video is not None and video["stage"] == "upload":
                        since = uploading.setdefault(j, time.monotonic())
                        if time.monotonic() - since >= HELD_S:
                            return j
                return None

            held = wait_until("an upload held up by the outage", held_upload, 90)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - closed)))
            outage_s = time.monotonic() - closed
            gate.open()
            result = audit(c, ids, timeout=120)
            videos = {j: get_video(c, j) for j in ids}
    finally:
        svc.stop()
        gate.close()
    store_engine = make_engine(pg_url)
    artifacts = {j: JobStore(store_engine, clock=time.time).get_job(j).artifacts for j in ids}
    store_engine.dispose()
    store = open_store(s3_test_config(s3_endpoint, bucket))

    report(f"S3 unreachable for {outage_s:.1f} s while jobs uploaded", result)
    result.assert_clean()
    # the worker retried the uploads (and the control plane its checks): nothing ran again
    assert all(result.attempts[j] == 1 for j in ids), result.attempts
    held_video = videos[held]
    assert held_video is not None and held_video["timings"]["upload"] >= HELD_S
    # nothing lost: every artifact is in the bucket as recorded
    for arts in artifacts.values():
        assert {a.name for a in arts} >= {"video.mp4", "poster.jpg"}, arts
        for a in arts:
            info = store.stat(a.key)
            assert info is not None and (info.size, info.sha256) == (a.size, a.sha256), a


# ---------------------------------------------------------------- PostgreSQL restart


def test_postgres_restart_under_running_jobs(tmp_path: Path) -> None:
    if pg_binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("initdb/pg_ctl are missing, and CI must run this test")
        pytest.skip("initdb/pg_ctl are missing")
    with PrivatePostgres() as pg:
        svc = Service(tmp_path / "home", pg.url, workers=0, env=SERVER_ENV).start()
        try:
            with fake_workers(svc, tmp_path) as fleet, svc.client() as c:
                fleet.start()
                fleet.start()
                ids = [submit(c, i, 10) for i in range(12)]

                def done(n: int) -> bool:
                    now = statuses(c, ids)
                    return now.get("completed", 0) >= n and bool(now.get("in_progress"))

                wait_until("jobs under way", lambda: done(1), 60)
                pg.restart("fast")  # every session cut, back at once
                wait_until("more jobs done", lambda: done(5), 60)
                pg.stop("fast")  # and gone for a while
                down = c.get(f"/v1/videos/{ids[-1]}")
                time.sleep(2.0)
                pg.start()
                result = audit(c, ids, timeout=120)
                assert svc.proc is not None and svc.proc.poll() is None  # it rode it out
                assert fleet.alive() == ["w1-1", "w2-1"]
        finally:
            svc.stop()

    report("PostgreSQL restarted, then down for 2 s", result)
    result.assert_clean()
    assert_attempts_follow_requeues(result)
    # while it was down the API said so, in its error shape, and when to try again
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "database_unavailable"
    assert down.headers["retry-after"] == "1"
