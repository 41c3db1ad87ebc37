"""The public API in-process (real app, real database); this test plays the worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from tests.conftest import make_config

MODEL = "cinecloud/shapes-t2v"  # the default model


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[tuple[TestClient, AppState, dict[str, str]]]:
    cfg = make_config(tmp_path, db_url)
    state = build_state(cfg)
    with TestClient(create_app(cfg, state)) as client:
        keys = {}
        for tenant in ("a", "b"):
            t = state.accounts.ensure_tenant(tenant)
            keys[tenant], _ = state.accounts.create_key(t.id)
        yield client, state, keys
    state.jobs.engine.dispose()


def h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(client: TestClient, key: str, **body: Any) -> Any:
    body.setdefault("prompt", "a red ball moving left")
    return client.post("/v1/videos", json=body, headers=h(key))


def expect_error(resp: Any, status: int, code: str, param: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    assert err["message"] and err["type"]
    if param is not None:
        assert err["param"] == param


def play_worker(client: TestClient, state: AppState) -> dict[str, Any]:
    wh = h(state.cfg.worker.token)
    wid = client.post("/internal/v1/workers/register", json={"name": "t"}, headers=wh).json()
    jobs = client.post(
        "/internal/v1/leases", json={"worker_id": wid["worker_id"], "models": [MODEL]}, headers=wh
    ).json()["jobs"]
    assert len(jobs) == 1
    return jobs[0]


def finish(client: TestClient, state: AppState, run: dict[str, Any]) -> None:
    wh = h(state.cfg.worker.token)
    ups = client.post(
        f"/internal/v1/jobs/{run['job_id']}/uploads",
        json={"lease_id": run["lease_id"], "names": ["video.mp4"]},
        headers=wh,
    ).json()["uploads"]
    url = ups["video.mp4"]["url"].split("127.0.0.1:8000", 1)[1]
    put = client.put(url, content=b"0123456789" * 100, headers={"Content-Type": "video/mp4"})
    assert put.status_code == 200, put.text
    art = {"name": "video.mp4", **put.json()}
    done = client.post(
        f"/internal/v1/jobs/{run['job_id']}/complete",
        json={"lease_id": run["lease_id"], "artifacts": [art], "timings": {"denoise": 0.5}},
        headers=wh,
    )
    assert done.status_code == 200, done.text


def test_create_retrieve_list(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, _, keys = api
    resp = create(client, keys["a"], size="64x64", num_frames=16, steps=2, seed=7)
    assert resp.status_code == 200, resp.text
    v = resp.json()
    assert v["object"] == "video" and v["status"] == "queued" and v["id"].startswith("video_")
    assert (v["size"], v["num_frames"], v["steps"], v["seed"], v["model"]) == (
        "64x64",
        16,
        2,
        7,
        MODEL,
    )
    assert v["queue_position"] == 0 and v["progress"] == 0
    got = client.get(f"/v1/videos/{v['id']}", headers=h(keys["a"])).json()
    assert got["id"] == v["id"]
    listed = client.get("/v1/videos?limit=5&order=asc", headers=h(keys["a"])).json()
    assert listed["object"] == "list" and [x["id"] for x in listed["data"]] == [v["id"]]


def test_default_model_and_random_seed(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, state, keys = api
    v = create(client, keys["a"]).json()
    assert v["model"] == state.registry.default_id
    assert isinstance(v["seed"], int) and v["seed"] >= 0


def test_multipart_form_like_the_sdk(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, _, keys = api
    resp = client.post(
        "/v1/videos",
        data={
            "prompt": "a blue square",
            "size": "64x64",
            "num_frames": "16",
            "seconds": "2",
            "fps": "8",
            "metadata": json.dumps({"campaign": "x"}),
        },
        files={"unused": ("", b"")} if False else None,
        headers=h(keys["a"]),
    )
    assert resp.status_code == 200, resp.text
    v = resp.json()
    assert (v["size"], v["num_frames"], v["metadata"]) == ("64x64", 16, {"campaign": "x"})


def test_idempotency_key(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, _, keys = api
    hdr = {**h(keys["a"]), "Idempotency-Key": "abc"}
    one = client.post("/v1/videos", json={"prompt": "x"}, headers=hdr).json()
    two = client.post("/v1/videos", json={"prompt": "x"}, headers=hdr).json()
    assert one["id"] == two["id"]
    other = client.post("/v1/videos", json={"prompt": "y"}, headers=hdr)
    expect_error(other, 409, "idempotency_key_reused")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "nope/nope"}, "model_not_found", "model"),
        ({"size": "1024x1024"}, "invalid_size", "size"),
        ({"size": "65x64"}, "invalid_size", "size"),
        ({"size": "big"}, "invalid_size", "size"),
        ({"num_frames": 8}, "invalid_num_frames", "num_frames"),
        ({"num_frames": 401}, "invalid_num_frames", "num_frames"),
        ({"prompt": ""}, "invalid_prompt", "prompt"),
        ({"prompt": "   "}, "invalid_prompt", "prompt"),
        ({"prompt": "x" * 2001}, "prompt_too_long", "prompt"),
        ({"seed": -1}, "invalid_value", "seed"),
        ({"num_frames": "many"}, "invalid_value", "num_frames"),
        ({"prompt": 42}, "invalid_value", "prompt"),
        ({"steps": 0}, "invalid_value", "steps"),
        ({"steps": 1000}, "invalid_steps", "steps"),
        ({"metadata": "x"}, "invalid_value", "metadata"),
        ({"colour": "red"}, "unknown_parameter", "colour"),
        ({"step_cache": "first_block"}, "invalid_step_cache", "step_cache"),
        ({"model": "cinecloud/tiny-wan", "step_cache": "all"}, "invalid_step_cache", "step_cache"),
        (
            {"model": "cinecloud/tiny-hunyuan", "negative_prompt": "blur"},
            "invalid_negative_prompt",
            "negative_prompt",
        ),
    ],
)
def test_bad_input(
    api: tuple[TestClient, AppState, dict[str, str]], body: dict[str, Any], code: str, param: str
) -> None:
    client, state, keys = api
    before = state.jobs.counts()
    expect_error(create(client, keys["a"], **body), 400, code, param)
    assert state.jobs.counts() == before


def test_malformed_bodies(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, _, keys = api
    hdr = {**h(keys["a"]), "Content-Type": "application/json"}
    expect_error(client.post("/v1/videos", content=b"{not json", headers=hdr), 400, "invalid_json")
    expect_error(client.post("/v1/videos", content=b"[1,2]", headers=hdr), 400, "invalid_json")
    bad_form = {**h(keys["a"]), "Content-Type": "multipart/form-data; boundary=zzz"}
    resp = client.post("/v1/videos", content=b"--zzz\r\nnonsense", headers=bad_form)
    assert resp.status_code == 400 and resp.json()["error"]["code"] in (
        "invalid_form",
        "invalid_value",
    )
    expect_error(
        client.post(
            "/v1/videos", content=b"x", headers={**h(keys["a"]), "Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    )


def test_auth(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, _, _ = api
    expect_error(client.get("/v1/videos"), 401, "missing_api_key")
    expect_error(client.get("/v1/videos", headers=h("cc-wrong")), 401, "invalid_api_key")
    expect_error(
        client.post("/internal/v1/leases", json={}, headers=h("cc-wrong")),
        401,
        "invalid_worker_token",
    )


def test_unknown_ids(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, _, keys = api
    for method, path in [
        ("GET", "/v1/videos/video_nope"),
        ("DELETE", "/v1/videos/video_nope"),
        ("POST", "/v1/videos/video_nope/cancel"),
        ("GET", "/v1/videos/video_nope/content"),
        ("GET", "/v1/videos/video_nope/events"),
    ]:
        expect_error(client.request(method, path, headers=h(keys["a"])), 404, "video_not_found")


def test_tenant_isolation(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, state, keys = api
    v = create(client, keys["b"], num_frames=16, size="64x64").json()
    finish(client, state, play_worker(client, state))
    assert client.get(f"/v1/videos/{v['id']}", headers=h(keys["b"])).json()["status"] == "completed"
    for path in ("", "/events", "/content"):
        expect_error(
            client.get(f"/v1/videos/{v['id']}{path}", headers=h(keys["a"])), 404, "video_not_found"
        )
    expect_error(
        client.post(f"/v1/videos/{v['id']}/cancel", headers=h(keys["a"])), 404, "video_not_found"
    )
    assert client.get("/v1/videos", headers=h(keys["a"])).json()["data"] == []


def test_complete_then_cancel_is_409_and_content_redirects(
    api: tuple[TestClient, AppState, dict[str, str]],
) -> None:
    client, state, keys = api
    v = create(client, keys["a"]).json()
    expect_error(
        client.get(f"/v1/videos/{v['id']}/content", headers=h(keys["a"])), 409, "video_not_ready"
    )
    finish(client, state, play_worker(client, state))
    done = client.get(f"/v1/videos/{v['id']}", headers=h(keys["a"])).json()
    assert done["status"] == "completed" and done["progress"] == 100
    assert set(done["timings"]) >= {"queue_wait", "denoise", "total"}
    assert done["outputs"]["video"].startswith(state.cfg.delivery.base_url + "/cdn/")
    expect_error(
        client.post(f"/v1/videos/{v['id']}/cancel", headers=h(keys["a"])), 409, "invalid_state"
    )
    resp = client.get(f"/v1/videos/{v['id']}/content", headers=h(keys["a"]), follow_redirects=False)
    assert resp.status_code == 307 and "/cdn/t/" in resp.headers["location"]
    expect_error(
        client.get(f"/v1/videos/{v['id']}/content?variant=poster", headers=h(keys["a"])),
        404,
        "variant_not_available",
    )
    deleted = client.delete(f"/v1/videos/{v['id']}", headers=h(keys["a"])).json()
    assert deleted == {"id": v["id"], "object": "video.deleted", "deleted": True}
    assert list(state.store.list(f"t/{done['id']}")) == []
    assert not any(k for k in state.store.list("t/"))


def test_events_stream_resumes(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, state, keys = api
    v = create(client, keys["a"]).json()
    finish(client, state, play_worker(client, state))
    with client.stream("GET", f"/v1/videos/{v['id']}/events", headers=h(keys["a"])) as resp:
        text = resp.read().decode()
    types = [ln.split(": ", 1)[1] for ln in text.splitlines() if ln.startswith("event: ")]
    ids = [int(ln.split(": ", 1)[1]) for ln in text.splitlines() if ln.startswith("id: ")]
    assert types == ["queued", "started", "completed"]
    hdr = {**h(keys["a"]), "Last-Event-ID": str(ids[0])}
    with client.stream("GET", f"/v1/videos/{v['id']}/events", headers=hdr) as resp:
        again = resp.read().decode()
    assert [ln for ln in again.splitlines() if ln.startswith("event: ")] == [
        "event: started",
        "event: completed",
    ]


def test_models_health_metrics_openapi(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, state, keys = api
    models = client.get("/v1/models", headers=h(keys["a"])).json()
    assert any(m["id"] == state.registry.default_id and m["default"] for m in models["data"])
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    create(client, keys["a"])
    metrics = client.get("/metrics").text
    assert f'cinecloud_jobs_submitted_total{{model="{MODEL}"}} 1.0' in metrics
    assert f'cinecloud_queue_depth{{model="{MODEL}"}} 1.0' in metrics
    spec = client.get("/openapi.json").json()
    assert "/v1/videos" in spec["paths"]


def test_step_cache_is_kept_with_the_job(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, state, keys = api
    resp = create(client, keys["a"], model="cinecloud/tiny-wan", step_cache="first_block")
    assert resp.status_code == 200, resp.text
    video = resp.json()
    assert video["step_cache"] == "first_block"
    assert state.jobs.get_job(video["id"]).params["step_cache"] == "first_block"
    assert create(client, keys["a"]).json()["step_cache"] == "off"  # exact unless asked
