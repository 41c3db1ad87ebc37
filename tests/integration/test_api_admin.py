"""The operators' endpoint and the studio's files, in-process (real app, real database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.jobs import NewJob
from cinecloud.testing.clock import FakeClock
from tests.conftest import make_config

pytestmark = pytest.mark.integration

MODEL = "cinecloud/shapes-t2v"
T0 = 1_700_000_000.0


@pytest.fixture
def api(
    tmp_path: Path, db_url: str
) -> Iterator[tuple[TestClient, AppState, FakeClock, dict[str, str]]]:
    clock = FakeClock(T0)
    cfg = make_config(tmp_path, db_url)
    state = build_state(cfg, clock=clock)
    with TestClient(create_app(cfg, state)) as client:
        tenant = state.accounts.ensure_tenant("acme")
        admin, _ = state.accounts.create_key(tenant.id, admin=True)
        user, _ = state.accounts.create_key(tenant.id)
        yield client, state, clock, {"admin": admin, "user": user, "tenant": tenant.id}
    state.jobs.engine.dispose()


def h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_job(tenant: str, priority: int = 0, model: str = MODEL) -> NewJob:
    params = {"num_frames": 16, "fps": 8, "steps": 10, "guidance_scale": 3.0}
    return NewJob(
        tenant_id=tenant,
        model=model,
        prompt="a red ball",
        params=params,
        seconds="2",
        size="64x64",
        seed=1,
        priority=priority,
    )


def test_overview_is_for_admin_keys_only(
    api: tuple[TestClient, AppState, FakeClock, dict[str, str]],
) -> None:
    client, _, _, keys = api
    refused = client.get("/v1/admin/overview", headers=h(keys["user"]))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_required"
    assert client.get("/v1/admin/overview").status_code == 401
    bad = client.get("/v1/admin/overview?buckets=0", headers=h(keys["admin"]))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "buckets"


def test_overview_reports_queue_workers_latency_and_gpu_time(
    api: tuple[TestClient, AppState, FakeClock, dict[str, str]],
) -> None:
    client, state, clock, keys = api
    jobs, tenant = state.jobs, keys["tenant"]
    wid = state.workers.register(
        None,
        "gpu-box-1",
        {
            "device": "cuda",
            "models": [MODEL],
            "gpus": [{"name": "H200", "memory_total": 1, "memory_free": 1}],
            "width": 1,
        },
    )
    done, _ = jobs.create_job(new_job(tenant))
    clock.advance(10)  # t0+10: leased, then 30 s of work
    (leased,) = jobs.lease(wid, [MODEL], ttl_s=1000)
    clock.advance(30)
    jobs.complete(
        done.id,
        leased.lease_id or "",
        artifacts=[],
        timings={"denoise": 20.0, "render": 1.0},
        gpu_seconds=21.0,
        engine={},
    )
    clock.advance(10)  # t0+50
    running, _ = jobs.create_job(new_job(tenant))
    clock.advance(10)  # t0+60
    (lease_b,) = jobs.lease(wid, [MODEL], ttl_s=1000)
    jobs.progress(
        running.id,
        lease_b.lease_id or "",
        [{"stage": "denoise", "step": 3, "total_steps": 10, "eta_s": 7.0}],
        1000,
    )
    clock.advance(10)  # t0+70: one urgent and one ordinary job wait
    jobs.create_job(new_job(tenant, priority=5))
    clock.advance(5)
    jobs.create_job(new_job(tenant))
    clock.advance(25)  # now = t0+100
    state.workers.touch(wid, "busy")  # its heartbeat

    body: dict[str, Any] = client.get(
        "/v1/admin/overview?window_s=100&buckets=2", headers=h(keys["admin"])
    ).json()
    assert body["totals"] == {"queued": 2, "in_progress": 1, "workers": 1, "completed": 1}
    assert body["queue"] == [
        {"model": MODEL, "priority": 5, "queued": 1, "oldest_wait_s": 30.0},
        {"model": MODEL, "priority": 0, "queued": 1, "oldest_wait_s": 25.0},
    ]
    assert body["in_progress"] == [{"model": MODEL, "jobs": 1}]
    (worker,) = body["workers"]
    assert (worker["name"], worker["device"], worker["gpus"][0]["name"]) == (
        "gpu-box-1",
        "cuda",
        "H200",
    )
    assert worker["busy"] == pytest.approx(0.7)  # 30 s of job one, 40 s of job two, of 100
    (current,) = worker["jobs"]
    assert (current["id"], current["stage"], current["step"]) == (running.id, "denoise", 3)
    first, second = body["latency"]["buckets"]
    assert (first["start"], first["end"]) == (T0, T0 + 50)
    assert first["completed"] == 1 and second["completed"] == 0
    stages = first["stages"]
    assert stages["denoise"]["p95"] == 20.0
    assert stages["queue_wait"]["p50"] == 10.0 and stages["total"]["p50"] == 40.0
    assert body["per_video"] == [
        {
            "model": MODEL,
            "videos": 1,
            "gpu_seconds_mean": 21.0,
            "gpu_seconds_p95": 21.0,
            "gpu_seconds_total": 21.0,
        }
    ]


def test_studio_is_served_with_its_vendored_libraries(
    api: tuple[TestClient, AppState, FakeClock, dict[str, str]],
) -> None:
    client, _, _, keys = api
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/studio/"
    page = client.get("/studio/")
    assert page.status_code == 200 and "cinecloud studio" in page.text
    for path, kind in [
        ("/studio/js/app.js", "javascript"),
        ("/studio/vendor/hls.js/hls.light.min.mjs", "javascript"),
        ("/studio/vendor/uplot/uPlot.esm.js", "javascript"),
        ("/studio/vendor/uplot/uPlot.min.css", "css"),
    ]:
        resp = client.get(path)
        assert resp.status_code == 200 and kind in resp.headers["content-type"], path
    assert client.get("/studio/../api/app.py").status_code == 404
    models = client.get("/v1/models", headers=h(keys["user"])).json()["data"]
    assert {m["input_image"] for m in models} >= {"none", "required"}
