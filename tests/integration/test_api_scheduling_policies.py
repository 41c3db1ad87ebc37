"""Priority classes, fair share, model affinity, batching and deadlines through the real
API and lease path, on SQLite and PostgreSQL, on a fake clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from cinecloud.api.scheduling import GIB
from cinecloud.api.state import AppState
from cinecloud.testing.clock import FakeClock
from tests.conftest import make_config

WAN = "cinecloud/tiny-wan"
SHAPES = "cinecloud/shapes-t2v"
REAL = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # has a memory profile; never run here
SMALL: dict[str, Any] = {"size": "64x64", "num_frames": 5, "steps": 2}
OTHER: dict[str, Any] = {"size": "64x64", "num_frames": 9, "steps": 2}


class Api:
    def __init__(self, client: TestClient, state: AppState, clock: FakeClock) -> None:
        self.client, self.state, self.clock = client, state, clock
        self.keys: dict[str, str] = {}
        self.worker_headers = {"Authorization": f"Bearer {state.cfg.worker.token}"}

    def key(self, tenant: str) -> str:
        if tenant not in self.keys:
            tid = self.state.accounts.ensure_tenant(tenant).id
            self.keys[tenant] = self.state.accounts.create_key(tid)[0]
        return self.keys[tenant]

    def submit(self, tenant: str = "a", headers: dict[str, str] | None = None, **body: Any) -> Any:
        body.setdefault("prompt", "a red ball moving left")
        body.setdefault("model", WAN)
        auth = {"Authorization": f"Bearer {self.key(tenant)}", **(headers or {})}
        return self.client.post("/v1/videos", json=body, headers=auth)

    def video(self, tenant: str, video_id: str) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {self.key(tenant)}"}
        out: dict[str, Any] = self.client.get(f"/v1/videos/{video_id}", headers=auth).json()
        return out

    def register(self, name: str, **caps: Any) -> str:
        caps.setdefault("models", [WAN])
        body = {"name": name, "capabilities": caps}
        resp = self.client.post(
            "/internal/v1/workers/register", json=body, headers=self.worker_headers
        )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["worker_id"])

    def heartbeat(self, worker_id: str, status: str) -> None:
        resp = self.client.post(
            f"/internal/v1/workers/{worker_id}/heartbeat",
            json={"jobs": [], "status": status},
            headers=self.worker_headers,
        )
        assert resp.status_code == 200, resp.text

    def lease(self, worker_id: str, **body: Any) -> list[dict[str, Any]]:
        body.setdefault("models", [WAN])
        resp = self.client.post(
            "/internal/v1/leases",
            json={"worker_id": worker_id, **body},
            headers=self.worker_headers,
        )
        assert resp.status_code == 200, resp.text
        jobs: list[dict[str, Any]] = resp.json()["jobs"]
        return jobs


def make_api(tmp_path: Path, db_url: str, **sections: dict[str, object]) -> Iterator[Api]:
    cfg = make_config(tmp_path, db_url, **sections)
    clock = FakeClock()
    state = build_state(cfg, clock=clock)
    with TestClient(create_app(cfg, state)) as client:
        yield Api(client, state, clock)
    state.jobs.engine.dispose()


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[Api]:
    yield from make_api(tmp_path, db_url, scheduler={"aging_s": 1000.0})


# ---------------------------------------------------------------- priority classes


def test_priority_classes_are_numbers_and_order_the_lease(api: Api) -> None:
    low = api.submit(priority="low").json()
    api.clock.advance(1)
    normal = api.submit().json()
    api.clock.advance(1)
    high = api.submit(priority="high").json()
    api.clock.advance(1)
    form = api.client.post(
        "/v1/videos",
        data={"prompt": "a blue square", "model": WAN, "priority": "-3"},
        headers={"Authorization": f"Bearer {api.key('a')}"},
    ).json()
    assert [v["priority"] for v in (low, normal, high, form)] == [-10, 0, 10, -3]
    worker = api.register("w")
    got = [api.lease(worker)[0]["job_id"] for _ in range(4)]
    assert got == [high["id"], normal["id"], form["id"], low["id"]]


BAD_PRIORITIES: list[Any] = ["urgent", "HIGH", 101, -101, 1.5, True, None, [1], ""]


def test_bad_priority_is_400(api: Api) -> None:
    for value in BAD_PRIORITIES:
        resp = api.submit(priority=value)
        assert resp.status_code == 400, (value, resp.text)
        err = resp.json()["error"]
        assert err["code"] == "invalid_priority" and err["param"] == "priority", err
        assert "priority" in err["message"]
    assert api.state.jobs.counts() == {}


# ---------------------------------------------------------------- fair share


def test_a_flood_does_not_starve_another_tenant(tmp_path: Path, db_url: str) -> None:
    """Tenant a queues 8 jobs; b queues 2 later. With 2 candidates by priority and by
    age, b's jobs are among neither: fair share reads each tenant's queue head."""
    config = {"aging_s": 1000.0, "candidates": 2}
    for api in make_api(tmp_path, db_url, scheduler=config):
        flooded(api)


def flooded(api: Api) -> None:
    flood, light = [], []
    for _ in range(8):
        flood.append(api.submit("a", **SMALL).json()["id"])
        api.clock.advance(0.5)
    for _ in range(2):
        light.append(api.submit("b", **SMALL).json()["id"])
        api.clock.advance(0.5)
    worker = api.register("w")
    got = [api.lease(worker)[0]["job_id"] for _ in range(6)]
    assert got == [flood[0], light[0], flood[1], light[1], flood[2], flood[3]]


def test_tenant_weights_from_the_config(tmp_path: Path, db_url: str) -> None:
    for api in make_api(
        tmp_path, db_url, scheduler={"aging_s": 1000.0, "tenant_weights": {"heavy": 3.0}}
    ):
        heavy: list[str] = []
        for tenant in ["heavy"] * 6 + ["light"] * 6:
            job = api.submit(tenant, **SMALL).json()["id"]
            heavy += [job] if tenant == "heavy" else []
            api.clock.advance(0.5)
        worker = api.register("w")
        got = ["h" if api.lease(worker)[0]["job_id"] in heavy else "l" for _ in range(8)]
        # weight 3 against 1: three of heavy's jobs for each of light's
        assert got[:2] == ["h", "l"] and got[:4].count("h") == 3 and got.count("h") == 6, got


# ---------------------------------------------------------------- model affinity


def test_a_cold_worker_leaves_a_job_to_an_idle_worker_that_holds_the_model(api: Api) -> None:
    job = api.submit(**SMALL).json()["id"]
    warm = api.register("warm", models=[WAN, SHAPES], loaded=[WAN])
    cold = api.register("cold", models=[WAN, SHAPES])
    api.heartbeat(warm, "idle")
    assert api.lease(cold, models=[WAN, SHAPES], loaded=[SHAPES]) == []
    # the cold worker's lease call recorded what it holds
    assert api.state.workers.get(cold).capabilities["loaded"] == [SHAPES]  # type: ignore[union-attr]
    api.heartbeat(warm, "busy")  # the warm worker is taken: load it here rather than wait
    (got,) = api.lease(cold, models=[WAN, SHAPES], loaded=[SHAPES])
    assert got["job_id"] == job


def test_a_warm_job_goes_before_a_cold_one(api: Api) -> None:
    cold_job = api.submit(model=SHAPES, steps=2).json()["id"]
    api.clock.advance(1)
    warm_job = api.submit(**SMALL).json()["id"]
    worker = api.register("w", models=[WAN, SHAPES])
    got = [api.lease(worker, models=[WAN, SHAPES], loaded=[WAN])[0]["job_id"] for _ in range(2)]
    assert got == [warm_job, cold_job]


# ---------------------------------------------------------------- batching


def test_max_jobs_leases_a_compatible_batch(api: Api) -> None:
    first = api.submit(**SMALL).json()["id"]
    api.clock.advance(1)
    other = api.submit(**OTHER).json()["id"]
    api.clock.advance(1)
    seconds = [api.submit("b", **SMALL).json()["id"], api.submit(**SMALL).json()["id"]]
    api.clock.advance(1)
    other_model = api.submit(model=SHAPES, steps=2).json()["id"]
    worker = api.register("w", models=[WAN, SHAPES])
    batch = api.lease(worker, models=[WAN, SHAPES], max_jobs=4)
    assert {j["job_id"] for j in batch} == {first, *seconds}
    assert batch[0]["job_id"] == first
    assert {j["params"]["num_frames"] for j in batch} == {5}
    # what is left does not batch: one job each time
    rest = [api.lease(worker, models=[WAN, SHAPES], max_jobs=4) for _ in range(2)]
    assert sorted(j["job_id"] for js in rest for j in js) == sorted([other, other_model])
    assert all(len(js) == 1 for js in rest)


def test_free_memory_bounds_a_batch(api: Api) -> None:
    ids = []
    for _ in range(5):
        ids.append(api.submit(model=REAL, size="832x480", num_frames=81).json()["id"])
        api.clock.advance(0.5)
    profile = api.state.registry.get(REAL).memory
    assert profile is not None
    per_job = profile.denoise_gib_per_mpf * 832 * 480 * 81 / 1e6 * GIB
    worker = api.register("w", models=[REAL])
    got = api.lease(worker, models=[REAL], max_jobs=4, free_memory=2.5 * per_job)
    assert [j["job_id"] for j in got] == ids[:2]
    got = api.lease(worker, models=[REAL], max_jobs=4)  # memory not stated: max_jobs
    assert [j["job_id"] for j in got] == ids[2:]


# ---------------------------------------------------------------- deadlines


def test_a_job_not_started_by_its_deadline_fails_unbilled(api: Api) -> None:
    late = api.submit(headers={"Cancel-After": "5"}, **SMALL).json()
    assert late["deadline_at"] == int(api.clock() + 5)
    api.clock.advance(1)
    when = format_datetime(datetime.fromtimestamp(api.clock() + 60, UTC), usegmt=True)
    started = api.submit(headers={"Cancel-After": when}, priority="high", **SMALL).json()
    assert started["deadline_at"] == int(api.clock() + 60)
    worker = api.register("w")
    (first,) = api.lease(worker)
    assert first["job_id"] == started["id"]
    api.clock.advance(10)  # past both deadlines: the running job goes on
    assert api.lease(worker) == []  # the late one may not start any more
    deadline = time.monotonic() + 10  # the sweep loop runs every second of real time
    while (v := api.video("a", late["id"]))["status"] == "queued":
        assert time.monotonic() < deadline, v
        time.sleep(0.1)
    assert v["status"] == "failed" and v["error"]["code"] == "deadline_exceeded", v
    assert v["usage"] == {"gpu_seconds": 0.0, "dollars": 0.0}
    assert api.video("a", started["id"])["status"] == "in_progress"
    with api.state.jobs.engine.connect():
        events = [e.type for e in api.state.jobs.events_after(late["id"], 0)]
    assert events == ["queued", "failed"]


BAD_DEADLINES = [
    ("0", "at least 1"),
    ("-1", "whole seconds"),
    ("2.5", "whole seconds"),
    ("tomorrow", "whole seconds"),
    ("Mon, 01 Jan 2001 00:00:00 GMT", "in the past"),
    ("999999999", "at most"),
]


def test_bad_cancel_after_is_400(api: Api) -> None:
    for value, why in BAD_DEADLINES:
        resp = api.submit(headers={"Cancel-After": value})
        assert resp.status_code == 400, (value, resp.text)
        err = resp.json()["error"]
        assert err["code"] == "invalid_cancel_after" and err["param"] == "Cancel-After"
        assert why in err["message"], (value, err)
    assert api.state.jobs.counts() == {}
