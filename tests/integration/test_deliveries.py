"""The ``deliveries`` and multi-job ``events`` calls in-process (real app, real database,
real local blob store); this test plays the worker."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.testing.clock import FakeClock
from tests.conftest import make_config
from tests.integration.jobplay import MODEL, Player, auth


class Worker(Player):
    """The worker side, with a user to submit (``state`` and ``user`` for the checks)."""

    def __init__(self, client: TestClient, state: AppState, user_key: str) -> None:
        super().__init__(client, state)
        self.state, self.key = state, user_key
        self.user, self.auth = auth(user_key), self.wh

    def lease_many(self, n: int) -> list[dict[str, Any]]:
        for seed in range(n):
            self.submit(self.key, seed=seed)
        ask = {"worker_id": self.worker_id, "models": [MODEL], "max_jobs": n}
        jobs = self.client.post("/internal/v1/leases", json=ask, headers=self.auth).json()["jobs"]
        assert len(jobs) == n
        return list(jobs)

    def deliver(
        self, entries: list[dict[str, Any]], parts: dict[str, bytes]
    ) -> tuple[int, dict[str, Any]]:
        files = [(name, (name, data, "application/octet-stream")) for name, data in parts.items()]
        resp = self.client.post(
            "/internal/v1/deliveries",
            data={"manifest": json.dumps({"jobs": entries})},
            files=files,
            headers=self.auth,
        )
        return resp.status_code, resp.json()


def entry(run: dict[str, Any], files: dict[str, str], **more: Any) -> dict[str, Any]:
    """One job's manifest entry: ``files`` maps a file name to its form field."""
    return {
        "job_id": run["job_id"],
        "lease_id": run["lease_id"],
        "files": [
            {
                "name": name,
                "part": part,
                "content_type": "video/mp4" if name.endswith(".mp4") else "image/jpeg",
            }
            for name, part in files.items()
        ],
        "timings": {"denoise": 1.0, "render": 0.5, "upload": 0.25},
        "gpu_seconds": 1.0,
        "seed": 7,
        "engine": {"device": "cpu"},
        **more,
    }


@pytest.fixture
def worker(tmp_path: Path, db_url: str) -> Iterator[Worker]:
    cfg = make_config(tmp_path, db_url)
    state = build_state(cfg, clock=FakeClock(1_800_000_000.0))
    with TestClient(create_app(cfg, state)) as client:
        tenant = state.accounts.ensure_tenant("a")
        key, _ = state.accounts.create_key(tenant.id)
        yield Worker(client, state, key)
    state.jobs.engine.dispose()


def test_a_local_store_asks_for_deliveries(worker: Worker) -> None:
    assert worker.registration["uploads"] == "deliveries"


def test_two_jobs_files_and_completion_in_one_request(worker: Worker) -> None:
    a, b = worker.lease_many(2)
    parts = {"a0": b"mp4 of a", "a1": b"poster of a", "b0": b"mp4 of b" * 1000}
    upload = {"type": "progress", "stage": "upload", "step": 0, "total_steps": 2, "at": 1.0}
    entries = [
        entry(a, {"video.mp4": "a0", "poster.jpg": "a1"}, events=[upload]),
        entry(b, {"video.mp4": "b0"}),
    ]
    status, body = worker.deliver(entries, parts)
    assert status == 200, body
    assert body["jobs"] == {
        a["job_id"]: {"status": "completed"},
        b["job_id"]: {"status": "completed"},
    }
    for run, names in ((a, {"video.mp4": "a0", "poster.jpg": "a1"}), (b, {"video.mp4": "b0"})):
        job = worker.state.jobs.get_job(run["job_id"])
        assert job.status == "completed" and job.gpu_seconds == 1.0
        stored = {art.name: art for art in job.artifacts}
        assert set(stored) == set(names)
        for name, part in names.items():
            data = worker.state.store.get_bytes(stored[name].key)
            assert data == parts[part]
            assert stored[name].sha256 == hashlib.sha256(data).hexdigest()
        # the worker's wait, plus the server's receiving and storing
        assert job.timings is not None and job.timings["upload"] >= 0.25
    stages = [e.data.get("stage") for e in worker.state.jobs.events_after(a["job_id"], 0)]
    assert "upload" in stages

    again, body = worker.deliver(entries, parts)  # a retry of a delivery that went through
    assert again == 200 and all(v == {"status": "completed"} for v in body["jobs"].values())


def test_a_lost_lease_fails_only_its_job(worker: Worker) -> None:
    a, b = worker.lease_many(2)
    worker.state.jobs.cancel(a["job_id"], worker.state.jobs.get_job(a["job_id"]).tenant_id)
    entries = [entry(a, {"video.mp4": "a0"}), entry(b, {"video.mp4": "b0"})]
    status, body = worker.deliver(entries, {"a0": b"a", "b0": b"b"})
    assert status == 200
    assert body["jobs"][a["job_id"]]["error"]["code"] == "lease_lost"
    assert body["jobs"][b["job_id"]] == {"status": "completed"}
    assert not worker.state.jobs.get_job(a["job_id"]).artifacts
    assert worker.state.jobs.get_job(a["job_id"]).status == "canceled"


def test_bad_deliveries_are_refused_with_a_code(worker: Worker) -> None:
    (run,) = worker.lease_many(1)
    status, body = worker.deliver([entry(run, {"video.mp4": "missing"})], {"x": b"x"})
    assert status == 200 and body["jobs"][run["job_id"]]["error"]["code"] == "invalid_manifest"
    assert worker.state.jobs.get_job(run["job_id"]).status == "in_progress"

    status, body = worker.deliver([entry(run, {"../evil": "x"})], {"x": b"x"})
    assert body["jobs"][run["job_id"]]["error"]["code"] == "invalid_name"
    bad_type = entry(run, {"video.mp4": "x"})
    bad_type["files"][0]["content_type"] = "not a type"
    status, body = worker.deliver([bad_type], {"x": b"x"})
    assert body["jobs"][run["job_id"]]["error"]["code"] == "invalid_content_type"

    resp = worker.client.post(
        "/internal/v1/deliveries", data={"manifest": "{"}, headers=worker.auth
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_manifest"
    resp = worker.client.post("/internal/v1/deliveries", data={"other": "1"}, headers=worker.auth)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_form"
    resp = worker.client.post(
        "/internal/v1/deliveries", data={"manifest": json.dumps({"jobs": []})}, headers=worker.user
    )
    assert resp.status_code in (401, 403)  # workers only


def test_many_jobs_events_in_one_request(worker: Worker) -> None:
    a, b = worker.lease_many(2)
    worker.state.jobs.cancel(b["job_id"], worker.state.jobs.get_job(b["job_id"]).tenant_id)
    step = {"type": "progress", "stage": "denoise", "step": 1, "total_steps": 2}
    body = {
        "jobs": [
            {"job_id": run["job_id"], "lease_id": run["lease_id"], "events": [step]}
            for run in (a, b)
        ]
    }
    resp = worker.client.post("/internal/v1/events", json=body, headers=worker.auth)
    assert resp.status_code == 200 and resp.json() == {"lost": [b["job_id"]]}
    job = worker.state.jobs.get_job(a["job_id"])
    assert job.stage == "denoise" and job.step == 1
