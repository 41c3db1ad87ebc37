"""Parallel degrees through the API and placement by worker width, on SQLite and PostgreSQL.

The test plays two workers, of 1 and 2 ranks, against the real app and database, on a
fake clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.scheduler import JobShape
from cinecloud.testing.clock import FakeClock
from tests.conftest import make_config

WAN = "cinecloud/tiny-wan"
AGING_S = 100.0
SMALL: dict[str, Any] = {"size": "64x64", "num_frames": 5, "steps": 2}
BIG: dict[str, Any] = {"size": "256x256", "num_frames": 33, "steps": 50}

Api = tuple[TestClient, AppState, FakeClock, str]


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[Api]:
    cfg = make_config(tmp_path, db_url, scheduler={"aging_s": AGING_S, "max_parallel": 8})
    clock = FakeClock()
    state = build_state(cfg, clock=clock)
    with TestClient(create_app(cfg, state)) as client:
        key, _ = state.accounts.create_key(state.accounts.ensure_tenant("a").id)
        yield client, state, clock, key
    state.jobs.engine.dispose()


def submit(client: TestClient, key: str, **body: Any) -> Any:
    body.setdefault("prompt", "a red ball moving left")
    body.setdefault("model", WAN)
    return client.post("/v1/videos", json=body, headers={"Authorization": f"Bearer {key}"})


def register(client: TestClient, state: AppState, width: int) -> str:
    wh = {"Authorization": f"Bearer {state.cfg.worker.token}"}
    caps = {"models": [WAN], "width": width}
    body = {"name": f"w{width}", "capabilities": caps}
    resp = client.post("/internal/v1/workers/register", json=body, headers=wh)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["worker_id"])


def lease(client: TestClient, state: AppState, worker_id: str, width: int | None) -> str | None:
    wh = {"Authorization": f"Bearer {state.cfg.worker.token}"}
    body: dict[str, Any] = {"worker_id": worker_id, "models": [WAN]}
    if width is not None:
        body["width"] = width
    resp = client.post("/internal/v1/leases", json=body, headers=wh)
    assert resp.status_code == 200, resp.text
    jobs = resp.json()["jobs"]
    assert len(jobs) <= 1
    return str(jobs[0]["job_id"]) if jobs else None


def test_parallel_round_trips(api: Api) -> None:
    client, _, clock, key = api
    auth = {"Authorization": f"Bearer {key}"}
    two = submit(client, key, parallel=2)
    clock.advance(1)
    assert two.status_code == 200, two.text
    assert two.json()["parallel"] == 2
    assert client.get(f"/v1/videos/{two.json()['id']}", headers=auth).json()["parallel"] == 2
    form = client.post(
        "/v1/videos", data={"prompt": "a blue square", "model": WAN, "parallel": "4"}, headers=auth
    )
    assert form.status_code == 200, form.text
    assert form.json()["parallel"] == 4
    clock.advance(1)
    free = submit(client, key).json()
    assert free["parallel"] is None
    listed = client.get("/v1/videos?order=asc", headers=auth).json()["data"]
    assert [v["parallel"] for v in listed] == [2, 4, None]


@pytest.mark.parametrize("value", [0, 3, 6, -2, 16, 1024, "two", 2.5, True, "", [2], {"n": 2}])
def test_bad_parallel_is_400(api: Api, value: Any) -> None:
    client, state, _, key = api
    resp = submit(client, key, parallel=value)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["code"] == "invalid_parallel" and err["param"] == "parallel" and err["message"]
    assert state.jobs.counts() == {}


@pytest.mark.parametrize("value", ["3", "16", "x", "2.0"])
def test_bad_parallel_in_a_form_is_400(api: Api, value: str) -> None:
    client, state, _, key = api
    resp = client.post(
        "/v1/videos",
        data={"prompt": "a blue square", "model": WAN, "parallel": value},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_parallel"
    assert state.jobs.counts() == {}


def test_a_queued_job_estimates_its_run_time_with_the_service_model(api: Api) -> None:
    client, state, _, key = api
    one = submit(client, key, **BIG).json()
    two = submit(client, key, **BIG, parallel=2).json()
    shape = JobShape(256, 256, 33, 50, 5.0)
    assert one["eta_s"] == pytest.approx(state.service.service_s("wan-t2v", shape, 1), abs=1e-3)
    assert two["eta_s"] == pytest.approx(state.service.service_s("wan-t2v", shape, 2), abs=1e-3)
    assert 0 < two["eta_s"] < one["eta_s"]


def test_two_widths_share_one_queue_as_the_policy_says(api: Api) -> None:
    client, state, clock, key = api
    ids = {}
    for name, body in (
        ("small", SMALL),
        ("big", BIG),
        ("small-on-2", {**SMALL, "parallel": 2}),
        ("big-on-1", {**BIG, "parallel": 1}),
    ):
        ids[submit(client, key, **body).json()["id"]] = name
        clock.advance(1)
    narrow, wide = register(client, state, 1), register(client, state, 2)
    turns = [(wide, 2), (narrow, 1), (narrow, 1), (wide, 2), (narrow, 1), (wide, 2)]
    got = [ids.get(lease(client, state, w, width) or "") for w, width in turns]
    # the wide worker takes the job it saves most on; the narrow one the smallest;
    # a requested degree waits for its width
    assert got == ["big", "small", "big-on-1", "small-on-2", None, None]


def test_a_worker_that_states_no_width_is_narrow(api: Api) -> None:
    client, state, _, key = api
    pinned = submit(client, key, **SMALL, parallel=2).json()["id"]
    worker = register(client, state, 1)
    assert lease(client, state, worker, None) is None
    assert lease(client, state, worker, 2) == pinned


def test_a_waiting_small_job_is_not_starved_by_big_ones(api: Api) -> None:
    client, state, clock, key = api
    wide = register(client, state, 2)
    small = submit(client, key, **SMALL).json()["id"]
    clock.advance(1)
    for _ in range(3):
        submit(client, key, **BIG)
    assert lease(client, state, wide, 2) != small  # big jobs save more on 2 ranks
    clock.advance(AGING_S)
    submit(client, key, **BIG)
    assert lease(client, state, wide, 2) == small  # but not past the aging bound
