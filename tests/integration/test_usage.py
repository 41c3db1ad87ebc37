"""Cost per job and ``GET /v1/usage`` through the real API, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.testing.clock import FakeClock
from tests.conftest import make_config

WAN = "cinecloud/tiny-wan"
DAY = 86_400.0
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
PRICES = {
    "cpu": {"on_demand": 0.36, "spot": 0.36},
    "H100": {"on_demand": 4.0, "spot": 1.8},
}


class Usage:
    def __init__(self, client: TestClient, state: AppState, clock: FakeClock) -> None:
        self.client, self.state, self.clock = client, state, clock
        self.wh = {"Authorization": f"Bearer {state.cfg.worker.token}"}
        self.keys: dict[str, str] = {}

    def key(self, tenant: str, admin: bool = False) -> str:
        name = f"{tenant}{'-admin' if admin else ''}"
        if name not in self.keys:
            tid = self.state.accounts.ensure_tenant(tenant).id
            self.keys[name] = self.state.accounts.create_key(tid, admin=admin)[0]
        return self.keys[name]

    def register(self, **caps: Any) -> str:
        body = {"name": "w", "capabilities": {"models": [WAN], **caps}}
        resp = self.client.post("/internal/v1/workers/register", json=body, headers=self.wh)
        return str(resp.json()["worker_id"])

    def submit(self, tenant: str, headers: dict[str, str] | None = None) -> str:
        body = {"prompt": "a red ball", "model": WAN, "size": "64x64", "num_frames": 5}
        auth = {"Authorization": f"Bearer {self.key(tenant)}", **(headers or {})}
        resp = self.client.post("/v1/videos", json=body, headers=auth)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["id"])

    def run(self, tenant: str, worker: str, gpu_seconds: float, **bill: Any) -> dict[str, Any]:
        """Submit a job, lease it to ``worker`` and complete it; returns the video."""
        job_id = self.submit(tenant)
        body = {"worker_id": worker, "models": [WAN]}
        (leased,) = self.client.post("/internal/v1/leases", json=body, headers=self.wh).json()[
            "jobs"
        ]
        assert leased["job_id"] == job_id
        done = {"lease_id": leased["lease_id"], "artifacts": [], "gpu_seconds": gpu_seconds}
        resp = self.client.post(
            f"/internal/v1/jobs/{job_id}/complete", json={**done, **bill}, headers=self.wh
        )
        assert resp.status_code == 200, resp.text
        auth = {"Authorization": f"Bearer {self.key(tenant)}"}
        video: dict[str, Any] = self.client.get(f"/v1/videos/{job_id}", headers=auth).json()
        return video

    def usage(self, key: str, **params: str) -> Any:
        auth = {"Authorization": f"Bearer {key}"}
        return self.client.get("/v1/usage", params=params, headers=auth)


@pytest.fixture
def usage(tmp_path: Path, db_url: str) -> Iterator[Usage]:
    cfg = make_config(tmp_path, db_url, cost={"prices": PRICES})
    clock = FakeClock(T0)
    state = build_state(cfg, clock=clock)
    with TestClient(create_app(cfg, state)) as client:
        yield Usage(client, state, clock)
    state.jobs.engine.dispose()


def test_each_job_records_gpu_seconds_by_type_and_dollars(usage: Usage) -> None:
    cpu = usage.register(device="cpu", gpus=[], width=1)
    h100 = usage.register(device="cuda", gpus=[{"name": "NVIDIA H100 80GB HBM3"}], width=2)
    on_cpu = usage.run("a", cpu, 100.0)
    assert on_cpu["gpu_type"] == "cpu"
    assert on_cpu["usage"] == pytest.approx({"gpu_seconds": 100.0, "dollars": 0.01})
    # from the registration: 2 ranks on H100s, on demand
    on_gpu = usage.run("a", h100, 900.0)
    assert on_gpu["gpu_type"] == "NVIDIA H100 80GB HBM3"
    assert on_gpu["usage"] == pytest.approx({"gpu_seconds": 1800.0, "dollars": 2.0})
    # what the worker says at completion wins: spot, one GPU
    spot = usage.run("a", h100, 3600.0, gpu_type="H100", gpu_count=1, spot=True)
    assert spot["usage"] == pytest.approx({"gpu_seconds": 3600.0, "dollars": 1.8})
    record = usage.state.jobs.get_job(spot["id"])
    assert (record.gpu_type, record.gpu_count, record.spot) == ("H100", 1, True)
    unpriced = usage.run("a", h100, 50.0, gpu_type="NVIDIA A100")
    assert unpriced["usage"] == pytest.approx({"gpu_seconds": 100.0, "dollars": 0.0})
    metrics = dict(
        line.rsplit(" ", 1)
        for line in usage.client.get("/metrics").text.splitlines()
        if line.startswith("cinecloud_") and "_created" not in line
    )
    billed = metrics['cinecloud_billed_gpu_seconds_total{gpu_type="H100",spot="true"}']
    assert float(billed) == 3600.0
    dollars = metrics['cinecloud_cost_dollars_total{gpu_type="cpu",spot="false"}']
    assert float(dollars) == pytest.approx(0.01)


def test_usage_per_tenant_and_day(usage: Usage) -> None:
    cpu = usage.register(device="cpu", width=1)
    h100 = usage.register(device="cuda", gpus=[{"name": "NVIDIA H100 80GB HBM3"}], width=1)
    usage.run("a", cpu, 36.0)  # 2027-01-15: $0.0036
    usage.run("a", h100, 360.0)  # $0.4
    usage.run("b", cpu, 3600.0)  # $0.36
    # not billed: a job failed by its deadline, and one canceled before it started
    late = usage.submit("a", headers={"Cancel-After": "5"})
    canceled = usage.submit("a")
    auth = {"Authorization": f"Bearer {usage.key('a')}"}
    assert usage.client.post(f"/v1/videos/{canceled}/cancel", headers=auth).status_code == 200
    usage.clock.advance(DAY)
    from cinecloud.jobs.deadlines import expire_deadlines

    assert [j.id for j in expire_deadlines(usage.state.jobs)] == [late]
    usage.run("a", cpu, 72.0)  # 2027-01-16

    mine = usage.usage(usage.key("a"), start="2027-01-01", end="2027-01-31").json()
    assert mine["start"] == "2027-01-01" and mine["end"] == "2027-01-31"
    rows = [(d["tenant"], d["day"], d["jobs"]) for d in mine["data"]]
    assert rows == [("a", "2027-01-15", 2), ("a", "2027-01-16", 1)]
    first = mine["data"][0]
    assert first["gpu_seconds"] == pytest.approx(396.0)
    assert first["dollars"] == pytest.approx(0.4036)
    assert first["by_gpu_type"]["cpu"] == pytest.approx(
        {"jobs": 1, "gpu_seconds": 36.0, "dollars": 0.0036}
    )
    assert mine["total"] == pytest.approx({"jobs": 3, "gpu_seconds": 468.0, "dollars": 0.4108})
    # by default: the 30 days up to today
    assert usage.usage(usage.key("a")).json()["total"]["jobs"] == 3
    one_day = usage.usage(usage.key("a"), start="2027-01-16", end="2027-01-16").json()
    assert [d["day"] for d in one_day["data"]] == ["2027-01-16"]

    # an admin key reads every tenant, or the one it names (by name or id)
    admin = usage.key("ops", admin=True)
    everyone = usage.usage(admin, start="2027-01-15", end="2027-01-16").json()
    assert [(d["tenant"], d["day"]) for d in everyone["data"]] == [
        ("a", "2027-01-15"),
        ("b", "2027-01-15"),
        ("a", "2027-01-16"),
    ]
    b_id = usage.state.accounts.ensure_tenant("b").id
    for name in ("b", b_id):
        only_b = usage.usage(admin, tenant=name, start="2027-01-15", end="2027-01-16").json()
        assert only_b["tenant_id"] == b_id
        assert only_b["total"] == pytest.approx({"jobs": 1, "gpu_seconds": 3600.0, "dollars": 0.36})


def test_usage_refuses_other_tenants_and_bad_dates(usage: Usage) -> None:
    a, b = usage.key("a"), usage.key("b")
    bad: list[tuple[str, dict[str, str], int, str, str]] = [
        (a, {"tenant": "b"}, 403, "permission_denied", "tenant"),
        (a, {"tenant": "nobody"}, 403, "permission_denied", "tenant"),
        (usage.key("ops", admin=True), {"tenant": "nobody"}, 404, "tenant_not_found", "tenant"),
        (a, {"start": "2027-13-01"}, 400, "invalid_date", "start"),
        (a, {"start": "15/01/2027"}, 400, "invalid_date", "start"),
        (a, {"end": "20270115"}, 400, "invalid_date", "end"),
        (a, {"end": "yesterday"}, 400, "invalid_date", "end"),
        (a, {"start": "2027-01-20", "end": "2027-01-10"}, 400, "invalid_date_range", "start"),
        (a, {"start": "2025-01-01", "end": "2027-01-10"}, 400, "invalid_date_range", "start"),
    ]
    for key, params, status, code, param in bad:
        resp = usage.usage(key, **params)
        assert resp.status_code == status, (params, resp.text)
        err = resp.json()["error"]
        assert (err["code"], err["param"]) == (code, param), (params, err)
        assert err["message"]
    assert usage.usage(a, tenant="a").status_code == 200  # its own, by name
    assert usage.client.get("/v1/usage").status_code == 401
    assert usage.usage(b).json()["data"] == []
