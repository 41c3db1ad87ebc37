"""The ``checkpoint`` and ``release`` calls in-process (real app, real database, real
local blob store); this test plays the worker."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.jobs.checkpoints import CheckpointLedger
from cinecloud.testing.clock import FakeClock
from tests.conftest import make_config

MODEL = "cinecloud/shapes-t2v"
STEPS = 12


class Worker:
    """The worker side of the protocol (and a user who submits), over the test client."""

    def __init__(self, client: TestClient, state: AppState, user_key: str) -> None:
        self.client, self.state = client, state
        self.user = {"Authorization": f"Bearer {user_key}"}
        self.auth = {"Authorization": f"Bearer {state.cfg.worker.token}"}
        reg = client.post("/internal/v1/workers/register", json={"name": "t"}, headers=self.auth)
        self.worker_id = reg.json()["worker_id"]

    def submit(self) -> str:
        body = {"prompt": "a red ball moving left", "steps": STEPS}
        resp = self.client.post("/v1/videos", json=body, headers=self.user)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["id"])

    def lease(self) -> dict[str, Any]:
        body = {"worker_id": self.worker_id, "models": [MODEL]}
        (run,) = self.client.post("/internal/v1/leases", json=body, headers=self.auth).json()[
            "jobs"
        ]
        return dict(run)

    def beat(self, status: str) -> None:
        """A heartbeat holding nothing (``idle`` after a release for stopping: it stays)."""
        body = {"jobs": [], "status": status}
        url = f"/internal/v1/workers/{self.worker_id}/heartbeat"
        assert self.client.post(url, json=body, headers=self.auth).status_code == 200

    def post(self, run: dict[str, Any], call: str, **body: Any) -> Any:
        body = {"lease_id": run["lease_id"], **body}
        return self.client.post(
            f"/internal/v1/jobs/{run['job_id']}/{call}", json=body, headers=self.auth
        )

    def upload(self, run: dict[str, Any], step: int, data: bytes) -> dict[str, Any]:
        name = f"checkpoints/step-{step:06d}.ckpt"
        target = self.post(run, "uploads", names=[name]).json()["uploads"][name]
        url = target["url"].split("127.0.0.1:8000", 1)[1]
        put = self.client.put(
            url, content=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert put.status_code == 200, put.text
        return dict(put.json())

    def checkpoint(self, run: dict[str, Any], step: int, data: bytes, **change: Any) -> Any:
        stored = self.upload(run, step, data)
        body = {"step": step, "total_steps": STEPS, "key": stored["key"]}
        body.update(sha256=stored["sha256"], size=stored["size"])
        return self.post(run, "checkpoint", **{**body, **change})


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[tuple[Worker, AppState, FakeClock]]:
    cfg = make_config(tmp_path, db_url)
    clock = FakeClock(1_800_000_000.0)
    state = build_state(cfg, clock=clock)
    with TestClient(create_app(cfg, state)) as client:
        tenant = state.accounts.ensure_tenant("a")
        key, _ = state.accounts.create_key(tenant.id)
        yield Worker(client, state, key), state, clock
    state.jobs.engine.dispose()


def expect_error(resp: Any, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code


def test_the_newest_checkpoint_of_the_lease_goes_with_the_next_lease(
    api: tuple[Worker, AppState, FakeClock],
) -> None:
    worker, state, _ = api
    client, ledger = worker.client, CheckpointLedger(state.jobs)
    job = worker.submit()
    run = worker.lease()
    assert run["inputs"] == {} and run["attempt"] == 1

    first = worker.checkpoint(run, 3, b"after three")
    assert first.status_code == 200 and first.json()["step"] == 3
    again = worker.post(run, "checkpoint", **_body(ledger, job))
    assert again.json() == first.json()  # a retry changes nothing
    newer = worker.checkpoint(run, 6, b"after six")
    assert newer.json()["step"] == 6
    three = f"t/{_tenant(state, job)}/v/{job}/checkpoints/step-000003.ckpt"
    assert state.store.stat(three) is None  # the one replaced is removed
    late = worker.checkpoint(run, 3, b"after three")  # an older one arriving late
    assert late.json()["step"] == 6 and state.store.stat(three) is None

    released = worker.post(run, "release", reason="preempted")
    assert released.json() == {"status": "queued", "checkpoint_step": 6}
    assert worker.post(run, "release", reason="preempted").json()["status"] == "queued"
    too_late = _body_for(state, job, 9, b"too late")
    expect_error(worker.post(run, "uploads", names=["checkpoints/x"]), 409, "lease_lost")
    expect_error(worker.post(run, "checkpoint", **too_late), 409, "lease_lost")
    video = client.get(f"/v1/videos/{job}", headers=worker.user).json()
    assert (video["status"], video["attempts"]) == ("queued", 0)  # not counted

    worker.beat("idle")  # a release for preemption drained it; it stays after all
    rerun = worker.lease()
    assert rerun["attempt"] == 1
    url = rerun["inputs"]["checkpoint"]
    assert client.get(url.split("127.0.0.1:8000", 1)[1]).content == b"after six"
    _finish(worker, rerun)
    assert ledger.latest(job) is None  # done: no resume needs it
    assert not list(state.store.list(f"t/{_tenant(state, job)}/v/{job}/checkpoints/"))


def test_a_checkpoint_that_does_not_fit_is_refused(
    api: tuple[Worker, AppState, FakeClock],
) -> None:
    worker, state, _ = api
    job = worker.submit()
    run = worker.lease()
    outside = f"t/{_tenant(state, job)}/v/{job}/a.ckpt"  # not under checkpoints/
    expect_error(worker.checkpoint(run, 3, b"x", key=outside), 400, "invalid_checkpoint")
    expect_error(worker.checkpoint(run, 3, b"x", total_steps=STEPS + 1), 400, "invalid_checkpoint")
    expect_error(worker.checkpoint(run, STEPS + 1, b"x"), 400, "invalid_checkpoint")
    expect_error(worker.checkpoint(run, 3, b"x", sha256="0" * 64), 400, "checkpoint_mismatch")
    expect_error(worker.checkpoint(run, 3, b"x", size=2), 400, "checkpoint_mismatch")
    body = _body_for(state, job, 4, b"never uploaded")
    expect_error(worker.post(run, "checkpoint", **body), 400, "checkpoint_missing")
    other = {**run, "lease_id": "lse_other"}
    expect_error(worker.post(other, "checkpoint", **body), 409, "lease_lost")
    expect_error(worker.post(other, "release"), 409, "lease_lost")
    assert CheckpointLedger(state.jobs).latest(job) is None


def test_a_lost_lease_keeps_the_checkpoint_and_counts_the_attempt(
    api: tuple[Worker, AppState, FakeClock],
) -> None:
    worker, state, clock = api
    job = worker.submit()
    run = worker.lease()
    assert worker.checkpoint(run, 9, b"after nine").status_code == 200
    clock.advance(60.0)
    assert state.jobs.expire_leases() == [job]
    rerun = worker.lease()
    assert rerun["attempt"] == 2
    assert rerun["inputs"]["checkpoint"].split("?")[0].endswith("step-000009.ckpt")


def test_a_checkpoint_that_cannot_resume_is_dropped(
    api: tuple[Worker, AppState, FakeClock],
) -> None:
    worker, state, _ = api
    job = worker.submit()
    run = worker.lease()
    assert worker.checkpoint(run, 6, b"damaged").status_code == 200
    failed = worker.post(
        run, "fail", code="checkpoint_invalid", message="CheckpointError: ...", retryable=True
    )
    assert failed.json() == {"status": "queued"}
    assert CheckpointLedger(state.jobs).latest(job) is None
    assert worker.lease()["inputs"] == {}  # the retry starts afresh


# ---------------------------------------------------------------- helpers


def _tenant(state: AppState, job: str) -> str:
    return state.jobs.get_job(job).tenant_id


def _body(ledger: CheckpointLedger, job: str) -> dict[str, Any]:
    record = ledger.latest(job)
    assert record is not None
    return {
        "step": record.step,
        "total_steps": record.total_steps,
        "key": record.key,
        "sha256": record.sha256,
        "size": record.size,
    }


def _body_for(state: AppState, job: str, step: int, data: bytes) -> dict[str, Any]:
    key = f"t/{_tenant(state, job)}/v/{job}/checkpoints/step-{step:06d}.ckpt"
    digest = hashlib.sha256(data).hexdigest()
    return {"step": step, "total_steps": STEPS, "key": key, "sha256": digest, "size": len(data)}


def _finish(worker: Worker, run: dict[str, Any]) -> None:
    ups = worker.post(run, "uploads", names=["video.mp4"]).json()["uploads"]
    url = ups["video.mp4"]["url"].split("127.0.0.1:8000", 1)[1]
    put = worker.client.put(url, content=b"0" * 100, headers={"Content-Type": "video/mp4"})
    art = {"name": "video.mp4", **put.json()}
    done = worker.post(run, "complete", artifacts=[art], timings={"denoise": 0.5})
    assert done.status_code == 200, done.text


@pytest.mark.parametrize(
    ("reason", "drains"),
    [("preempted", True), ("worker stopping", True), ("engine_replaced", False)],
)
def test_a_worker_that_gives_back_for_stopping_leases_nothing_more(
    api: tuple[Worker, AppState, FakeClock], reason: str, drains: bool
) -> None:
    # Its own long poll, in flight when it stopped, must not lease the job straight back;
    # a worker whose engine was replaced goes on leasing.
    w, state, _ = api
    w.submit()
    run = w.lease()
    assert w.post(run, "release", reason=reason).status_code == 200
    ask = {"worker_id": w.worker_id, "models": [MODEL], "wait_s": 0}
    leased = w.client.post("/internal/v1/leases", json=ask, headers=w.auth).json()["jobs"]
    worker = state.workers.get(w.worker_id)
    assert worker is not None and (worker.status == "stopping") == drains
    assert [j["job_id"] for j in leased] == ([] if drains else [run["job_id"]])
    if drains:
        w.beat("idle")  # it stayed after all: leases again
        assert w.lease()["job_id"] == run["job_id"]
