"""Abuse limits through the real app and database: rate limits (429 + Retry-After),
quotas, the request budget and the size limits; SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.config import TenantLimits
from cinecloud.testing.clock import FakeClock
from tests.conftest import make_config
from tests.integration.test_api import expect_error, h

MODEL = "cinecloud/shapes-t2v"
SMALL = {"prompt": "a red ball moving left", "size": "64x64", "num_frames": 16, "steps": 2}
# Every limit off but those a test sets.
OFF = {"rate": "", "create_rate": "", "max_active_jobs": 0, "gpu_seconds_per_day": 0}


class Api:
    def __init__(self, client: TestClient, state: AppState) -> None:
        self.client, self.state = client, state
        self.wh = h(state.cfg.worker.token)
        self.keys: dict[str, str] = {}

    def key(self, tenant: str) -> str:
        if tenant not in self.keys:
            tid = self.state.accounts.ensure_tenant(tenant).id
            self.keys[tenant] = self.state.accounts.create_key(tid)[0]
        return self.keys[tenant]

    def create(self, tenant: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
        hdrs = {**h(self.key(tenant)), **(headers or {})}
        return self.client.post("/v1/videos", json={**SMALL, **body}, headers=hdrs)

    def ids(self, tenant: str) -> list[str]:
        listed = self.client.get("/v1/videos?limit=100", headers=h(self.key(tenant))).json()
        return [v["id"] for v in listed["data"]]

    def run(self, job_id: str, gpu_seconds: float) -> None:
        """Lease the job to a worker and complete it, billed ``gpu_seconds``."""
        wid = self.client.post(
            "/internal/v1/workers/register", json={"name": "w"}, headers=self.wh
        ).json()["worker_id"]
        body = {"worker_id": wid, "models": [MODEL]}
        (leased,) = self.client.post("/internal/v1/leases", json=body, headers=self.wh).json()[
            "jobs"
        ]
        assert leased["job_id"] == job_id
        done = {"lease_id": leased["lease_id"], "artifacts": [], "gpu_seconds": gpu_seconds}
        resp = self.client.post(f"/internal/v1/jobs/{job_id}/complete", json=done, headers=self.wh)
        assert resp.status_code == 200, resp.text


MakeApi = Callable[..., Api]
# Rate limits and request sizes do not touch the database: their tests run on SQLite
# only (parametrize "db_url" indirectly); the quotas' run on both.


@pytest.fixture
def make_api(tmp_path: Path, db_url: str) -> Iterator[MakeApi]:
    """Builds the app with ``limits`` (over OFF) and other config sections."""
    with ExitStack() as stack:

        def make(
            limits: dict[str, Any], clock: Callable[[], float] = time.time, **sections: Any
        ) -> Api:
            cfg = make_config(tmp_path, db_url, limits={**OFF, **limits}, **sections)
            state = build_state(cfg, clock=clock)
            stack.callback(state.jobs.engine.dispose)
            client = stack.enter_context(TestClient(create_app(cfg, state)))
            return Api(client, state)

        yield make


def refused(resp: Any, code: str) -> int:
    """A 429 with ``code`` and a whole-seconds Retry-After; returns the seconds."""
    expect_error(resp, 429, code)
    assert resp.json()["error"]["type"] == "rate_limit_error"
    wait = int(resp.headers["Retry-After"])
    assert wait >= 1
    return wait


# ---------------------------------------------------------------- rate limits


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_rate_limit_429_then_retry_after_passes(make_api: MakeApi) -> None:
    """5/second per key: in any second at most 5 pass; a refused request carries a
    Retry-After, and after that wait the next one passes."""
    api = make_api({"rate": "5/second"})
    key = api.key("a")
    sent: list[tuple[float, float, int]] = []
    refusal = None
    while refusal is None:
        assert len(sent) < 100, "100 requests as fast as they go never met the limit"
        t0 = time.monotonic()
        resp = api.client.get("/v1/limits", headers=h(key))
        sent.append((t0, time.monotonic(), resp.status_code))
        if resp.status_code == 429:
            refusal = resp
    passed = [(t0, t1) for t0, t1, code in sent if code == 200]
    assert len(passed) >= 5
    # the 6th of any run of passes answered at least a second after the 1st was sent
    for first, sixth in zip(passed, passed[5:], strict=False):
        assert sixth[1] - first[0] >= 1.0
    wait = refused(refusal, "rate_limited")
    assert wait == 1
    assert refusal.headers["X-RateLimit-Limit"] == "5"
    assert "5 per 1 second" in refusal.json()["error"]["message"]
    # another key of the same tenant has its own count
    other = api.state.accounts.create_key(api.state.accounts.ensure_tenant("a").id)[0]
    assert api.client.get("/v1/limits", headers=h(other)).status_code == 200
    time.sleep(wait)
    assert api.client.get("/v1/limits", headers=h(key)).status_code == 200
    metrics = api.client.get("/metrics").text
    assert 'cinecloud_requests_limited_total{code="rate_limited"} 1.0' in metrics


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_create_rate_refuses_without_making_a_job(make_api: MakeApi) -> None:
    api = make_api({"create_rate": "3/minute"})
    made = [api.create("a").json()["id"] for _ in range(3)]
    wait = refused(api.create("a"), "rate_limited")
    assert 1 <= wait <= 60
    assert "video creations" in api.create("a").json()["error"]["message"]
    # reads are not creations, and the refused requests made no job
    assert sorted(api.ids("a")) == sorted(made)
    assert api.create("b").status_code == 200  # another tenant's key


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_per_tenant_rate_override_by_name(make_api: MakeApi) -> None:
    api = make_api({"create_rate": "1/minute", "tenants": {"big": {"create_rate": "3/minute"}}})
    assert api.create("small").status_code == 200
    refused(api.create("small"), "rate_limited")
    assert [api.create("big").status_code for _ in range(4)] == [200, 200, 200, 429]


# ---------------------------------------------------------------- quotas


def test_active_jobs_quota(make_api: MakeApi) -> None:
    api = make_api({"max_active_jobs": 2, "active_retry_after_s": 7})
    first = api.create("a", {"Idempotency-Key": "one"}).json()
    second = api.create("a").json()
    resp = api.create("a")
    assert refused(resp, "too_many_active_jobs") == 7
    assert "2 queued or running jobs; the limit is 2" in resp.json()["error"]["message"]
    assert sorted(api.ids("a")) == sorted([first["id"], second["id"]])  # nothing made
    # a repeat of an accepted request still returns its job
    again = api.create("a", {"Idempotency-Key": "one"})
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    # ... but a new request under a fresh key is refused
    refused(api.create("a", {"Idempotency-Key": "two"}), "too_many_active_jobs")
    assert api.create("b").status_code == 200  # the quota is per tenant
    limits = api.client.get("/v1/limits", headers=h(api.key("a"))).json()
    assert (limits["active_jobs"], limits["max_active_jobs"]) == (2, 2)
    # a finished (here: canceled) job frees its place
    api.client.post(f"/v1/videos/{second['id']}/cancel", headers=h(api.key("a")))
    assert api.create("a").status_code == 200
    refused(api.create("a"), "too_many_active_jobs")


def test_active_jobs_retry_after_follows_the_running_jobs_eta(make_api: MakeApi) -> None:
    api = make_api({"max_active_jobs": 1})
    job = api.create("a").json()["id"]
    wid = api.client.post(
        "/internal/v1/workers/register", json={"name": "w"}, headers=api.wh
    ).json()["worker_id"]
    body = {"worker_id": wid, "models": [MODEL]}
    (leased,) = api.client.post("/internal/v1/leases", json=body, headers=api.wh).json()["jobs"]
    progress = {"lease_id": leased["lease_id"], "events": [{"type": "progress", "eta_s": 41.5}]}
    resp = api.client.post(f"/internal/v1/jobs/{job}/events", json=progress, headers=api.wh)
    assert resp.status_code == 200, resp.text
    assert refused(api.create("a"), "too_many_active_jobs") == 42


def test_gpu_seconds_quota_per_utc_day(make_api: MakeApi) -> None:
    clock = FakeClock(1_800_000_000.0)  # 2027-01-15 08:00:00 UTC
    api = make_api(
        {"gpu_seconds_per_day": 100, "tenants": {"big": {"gpu_seconds_per_day": 1000}}},
        clock=clock,
    )
    api.run(api.create("a").json()["id"], 60.0)
    api.run(api.create("a").json()["id"], 45.0)  # admitted at 60: now 105 of 100
    resp = api.create("a")
    wait = refused(resp, "quota_exceeded")
    assert wait == 16 * 3600  # to 00:00 UTC
    msg = resp.json()["error"]["message"]
    assert "105 GPU-seconds on 2027-01-15" in msg and "quota is 100" in msg
    limits = api.client.get("/v1/limits", headers=h(api.key("a"))).json()
    assert (limits["gpu_seconds_today"], limits["gpu_seconds_per_day"]) == (105.0, 100.0)
    # GET /v1/usage agrees: the quota counts what it bills
    usage = api.client.get("/v1/usage", headers=h(api.key("a"))).json()
    assert usage["total"]["gpu_seconds"] == 105.0
    api.run(api.create("big").json()["id"], 500.0)
    assert api.create("big").status_code == 200  # its own, larger quota
    clock.advance(wait)
    assert api.create("a").status_code == 200  # a new day


# ---------------------------------------------------------------- the request budget


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_request_budget(make_api: MakeApi) -> None:
    api = make_api({"max_pixel_steps": 64 * 64 * 16 * 2})
    assert api.create("a").status_code == 200  # exactly the budget
    resp = api.create("a", steps=3)
    expect_error(resp, 400, "request_too_large")
    msg = resp.json()["error"]["message"]
    assert "64x64 x 16 frames x 3 steps is 196,608 pixel-steps" in msg
    assert "limit per request is 131,072" in msg
    assert len(api.ids("a")) == 1


def test_repeats_are_not_refused_by_a_lowered_budget(make_api: MakeApi) -> None:
    """A job accepted under one budget is still returned to a repeat after a restart
    with a lower one (same database); new requests meet the new budget."""
    before = make_api({"max_pixel_steps": 64 * 64 * 16 * 4})
    first = before.create("a", {"Idempotency-Key": "k"}, steps=4).json()
    after = make_api({"max_pixel_steps": 64 * 64 * 16 * 2, "max_active_jobs": 1})
    again = after.create("a", {"Idempotency-Key": "k"}, steps=4)
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    expect_error(after.create("b", steps=4), 400, "request_too_large")


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_body_and_prompt_limits(make_api: MakeApi) -> None:
    api = make_api({}, api={"max_body_bytes": 4000, "max_prompt_chars": 100})
    hdr = h(api.key("a"))
    big = {**SMALL, "metadata": {"x": "y" * 5000}}
    expect_error(api.client.post("/v1/videos", json=big, headers=hdr), 413, "body_too_large")

    # multipart sent chunked (no Content-Length): cut off while it is read
    boundary = "b0undary"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhello\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="input_reference"; '
        f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield part
        for _ in range(10):
            yield b"\0" * 1000
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = api.client.post(
        "/v1/videos",
        content=chunks(),
        headers={**hdr, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    expect_error(resp, 413, "body_too_large")

    expect_error(api.create("a", prompt="p" * 101), 400, "prompt_too_long", "prompt")
    resp = api.create("a", negative_prompt="n" * 101)
    expect_error(resp, 400, "prompt_too_long", "negative_prompt")
    assert "101 characters; the limit is 100" in resp.json()["error"]["message"]
    assert api.create("a", prompt="p" * 100, negative_prompt="n" * 100).status_code == 200
    assert len(api.ids("a")) == 1
    limits = api.client.get("/v1/limits", headers=hdr).json()
    assert (limits["max_body_bytes"], limits["max_prompt_chars"]) == (4000, 100)


def test_order_key_then_rate_then_quota_then_request(make_api: MakeApi) -> None:
    """The architecture's order: a bad key is 401 whatever else is wrong; a refused
    rate comes before a full quota, and a full quota before a bad request."""
    api = make_api({"create_rate": "2/minute", "max_active_jobs": 1})
    bad = api.client.post("/v1/videos", json={"prompt": ""}, headers=h("cc-nope"))
    expect_error(bad, 401, "invalid_api_key")
    assert api.create("a").status_code == 200
    refused(api.create("a", model="nope/nope"), "too_many_active_jobs")
    refused(api.create("a", model="nope/nope"), "rate_limited")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_defaults_let_normal_use_through(make_api: MakeApi) -> None:
    """The shipped defaults: a burst of 10 creations and 30 polls passes."""
    d = TenantLimits()
    api = make_api({k: getattr(d, k) for k in OFF})
    ids = [api.create("a").json()["id"] for _ in range(10)]
    for _ in range(3):
        for i in ids:
            assert api.client.get(f"/v1/videos/{i}", headers=h(api.key("a"))).status_code == 200


# ---------------------------------------------------------------- several replicas


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


REDIS = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("storage", "passed"), [("redis", 5), ("memory://", 6)])
def test_replicas_share_the_count_through_redis(
    make_api: MakeApi, storage: str, passed: int
) -> None:
    """Two control planes on one database, 5/minute per key, 3 requests to each: with
    Redis they refuse the 6th together; each counting in its own memory lets all 6 in."""
    import secrets

    import redis

    if storage == "redis" and not _redis_up():
        pytest.skip(f"Redis is not reachable at {REDIS}")
    prefix = f"cinecloud-test-{secrets.token_hex(4)}"
    url = REDIS if storage == "redis" else storage
    settings = {"rate": "5/minute", "storage": url, "key_prefix": prefix}
    one, two = make_api(settings), make_api(settings)
    key = one.key("a")
    try:
        codes = [
            replica.client.get("/v1/limits", headers=h(key)).status_code
            for replica in (one, two, one, two, one, two)
        ]
    finally:
        if storage == "redis":
            r = redis.Redis.from_url(REDIS)
            stored = list(r.scan_iter(f"{prefix}*"))
            if stored:
                r.delete(*stored)
    assert codes == [200] * passed + [429] * (6 - passed)
    if storage == "redis":
        assert stored, "the counts were kept in Redis"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_counter_store_away_lets_requests_through(make_api: MakeApi, caplog: Any) -> None:
    """Redis not answering: requests pass (the quotas still hold), with one warning."""
    from cinecloud.testing.service import free_port

    api = make_api({"rate": "1/minute", "storage": f"redis://127.0.0.1:{free_port()}/0"})
    with caplog.at_level("WARNING", logger="cinecloud.api.limits"):
        codes = [api.client.get("/v1/limits", headers=h(api.key("a"))).status_code for _ in "abc"]
    assert codes == [200, 200, 200]
    warned = [r for r in caplog.records if "rate limits not applied" in r.getMessage()]
    assert len(warned) == 1
