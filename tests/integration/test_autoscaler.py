"""The autoscaler over a real job store (SQLite and PostgreSQL), the admin view, the local
launcher's real worker processes, and a real ``cinecloud serve --autoscale local``."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cinecloud.api import build_state, create_app
from cinecloud.api.autoscaling import WORKER_SEEN_S, make_autoscaler, observed_launcher
from cinecloud.api.state import AppState
from cinecloud.cli.main import app as cli
from cinecloud.jobs import NewJob
from cinecloud.scheduler.autoscaler import (
    Autoscaler,
    Desired,
    autoscale_once,
    busy_worker_names,
)
from cinecloud.testing.clock import FakeClock
from cinecloud.testing.launcher import FakeLauncher, check_launcher_contract
from cinecloud.testing.service import Service
from cinecloud.workers.launcher import LocalLauncher
from tests.conftest import make_config

MODEL = "cinecloud/shapes-t2v"  # the default model: the default pool
# shapes-t2v's defaults: one job is 64 x 64 x 16 frames x 24 steps x 2 branches of work.
PARAMS = {"width": 64, "height": 64, "num_frames": 16, "steps": 24, "guidance_scale": 3.0}
SETTINGS = {
    "enabled": True,
    "max_workers": 3,
    "target_wait_s": 60.0,
    "cold_start_s": 60.0,  # a new worker starts one queued job within the target
    "downscale_delay_s": 30.0,
    "idle_to_zero_s": 120.0,
}


@pytest.fixture
def scaled(
    tmp_path: Path, db_url: str
) -> Iterator[tuple[AppState, Autoscaler, FakeClock, FakeLauncher]]:
    cfg = make_config(tmp_path, db_url, autoscale=SETTINGS)
    clock = FakeClock(1_000_000.0)
    state = build_state(cfg, clock=clock)
    launcher = FakeLauncher()
    state.autoscaler = make_autoscaler(state, launcher)
    yield state, state.autoscaler, clock, launcher
    state.jobs.engine.dispose()


def submit(state: AppState, n: int) -> list[str]:
    tenant = state.accounts.ensure_tenant("t")
    return [
        state.jobs.create_job(
            NewJob(
                tenant_id=tenant.id,
                model=MODEL,
                prompt="a red ball moving left",
                params=dict(PARAMS),
                seconds="2",
                size="64x64",
                seed=i,
            )
        )[0].id
        for i in range(n)
    ]


def test_a_pass_reads_the_store_and_applies_through_the_launcher(
    scaled: tuple[AppState, Autoscaler, FakeClock, FakeLauncher],
) -> None:
    state, scaler, clock, launcher = scaled
    assert autoscale_once(scaler, clock())[MODEL].desired == 0
    assert launcher.calls == [(MODEL, 0, 0)]

    clock.advance(5)
    ids = submit(state, 2)
    clock.advance(5)
    d = autoscale_once(scaler, clock())[MODEL]
    expected_s = 64 * 64 * 16 * 24 * 2 * state.service.get("shapes-t2v").seconds_per_unit
    assert (d.observation.queued, d.observation.in_flight) == (2, 0)
    assert d.observation.service_s == pytest.approx(expected_s)
    # two arrivals in the 10 s window, weighted by 1 - 2^(-10/60)
    assert d.observation.arrival_rate == pytest.approx((1 - 0.5 ** (10 / 60)) * 2 / 10)
    assert (d.desired, launcher.current(MODEL)) == (2, 2)
    assert d.reason.startswith("up 0->2: 2 queued, 0 running need 2")

    wid = state.workers.register(None, "local-7", {"models": [MODEL]})
    [job] = state.jobs.lease(wid, [MODEL], ttl_s=30)
    assert busy_worker_names(state.jobs.engine) == {"local-7"}
    clock.advance(5)
    d = autoscale_once(scaler, clock())[MODEL]
    assert (d.observation.queued, d.observation.in_flight, d.observation.workers) == (1, 1, 2)
    assert d.desired == 2 and d.reason.endswith("no downscale while 1 queued")

    # The fleet turns out 10x slower than the model's reference GPU: the estimate follows.
    state.jobs.complete(
        job.id, job.lease_id, artifacts=[], timings={}, gpu_seconds=10 * expected_s, engine={}
    )
    [other] = [i for i in ids if i != job.id]
    state.jobs.cancel(other, job.tenant_id)
    clock.advance(5)
    d = autoscale_once(scaler, clock())[MODEL]
    assert d.observation.service_s == pytest.approx(10 * expected_s)
    assert d.desired == 2 and d.reason.endswith("downscale to 1 in 30 s")
    clock.advance(30)
    assert autoscale_once(scaler, clock())[MODEL].reason.startswith("down 2->1")
    clock.advance(120)  # the pool last had work 155 s ago
    held = autoscale_once(scaler, clock())[MODEL]
    assert held.desired == 1 and "idle 155 s >= 120 s" in held.reason
    clock.advance(30)
    d = autoscale_once(scaler, clock())[MODEL]
    assert (d.desired, launcher.current(MODEL)) == (0, 0)
    assert d.reason.startswith("down 1->0: idle 185 s")

    changes = [r.reason.split(":")[0] for r in scaler.recent()]
    assert changes[0] == "down 1->0" and "up 0->2" in changes and "down 2->1" in changes
    metrics = state.metrics.render().decode()
    assert f'cinecloud_autoscaler_desired_workers{{capacity="on_demand",pool="{MODEL}"}} 0.0' in (
        metrics
    )
    assert f'cinecloud_autoscaler_current_workers{{pool="{MODEL}"}} 1.0' in metrics


def test_a_failing_launcher_is_logged_and_the_loop_goes_on(
    scaled: tuple[AppState, Autoscaler, FakeClock, FakeLauncher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, scaler, clock, _ = scaled
    broken = FakeLauncher(fail_pools=frozenset({MODEL}))
    scaler.launcher = broken
    submit(state, 1)
    clock.advance(5)
    d = autoscale_once(scaler, clock())[MODEL]
    assert d.desired == 1 and broken.current(MODEL) == 0
    assert "could not scale pool" in caplog.text


def test_a_decision_is_published_before_the_launcher_acts(
    scaled: tuple[AppState, Autoscaler, FakeClock, FakeLauncher],
) -> None:
    # Stopping a local worker waits for it to exit: whoever sees it gone must already see
    # the decision that stopped it (the admin view read during the scale).
    state, scaler, clock, launcher = scaled
    seen: list[tuple[int, int]] = []
    scale = launcher.scale

    def watched(pool: str, desired: Desired) -> None:
        [latest] = scaler.current()
        seen.append((desired.total, latest.desired))
        scale(pool, desired)

    launcher.scale = watched  # type: ignore[method-assign]
    submit(state, 2)
    clock.advance(5)
    autoscale_once(scaler, clock())
    assert seen == [(2, 2)]


def test_admin_view_lists_decisions_for_admins_only(
    scaled: tuple[AppState, Autoscaler, FakeClock, FakeLauncher],
) -> None:
    state, scaler, clock, _ = scaled
    submit(state, 3)
    clock.advance(5)
    autoscale_once(scaler, clock())
    admin_key, _ = state.accounts.create_key(state.accounts.ensure_tenant("ops").id, admin=True)
    user_key, _ = state.accounts.create_key(state.accounts.ensure_tenant("t").id)
    with TestClient(create_app(state.cfg, state)) as client:
        view = client.get("/v1/admin/autoscaler", headers={"Authorization": f"Bearer {admin_key}"})
        denied = client.get("/v1/admin/autoscaler", headers={"Authorization": f"Bearer {user_key}"})
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["enabled"] is True and body["launcher"] == "local"
    assert body["policy"]["max_workers"] == 3
    [pool] = body["pools"]
    assert (pool["pool"], pool["desired"], pool["observed"]["queued"]) == (MODEL, 3, 3)
    # the oldest is this test's pass; the app's own loop may have added a hold since
    reasons = [d["reason"][:7] for d in body["decisions"]]
    assert reasons[-1] == "up 0->3" and set(reasons[:-1]) <= {"hold 3:"}, reasons
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_required"


def test_admin_view_says_when_the_autoscaler_is_off(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    state = build_state(cfg)
    key, _ = state.accounts.create_key(state.accounts.ensure_tenant("ops").id, admin=True)
    with TestClient(create_app(cfg, state)) as client:
        body = client.get("/v1/admin/autoscaler", headers={"Authorization": f"Bearer {key}"})
    assert body.json() == {"object": "autoscaler", "enabled": False, "pools": [], "decisions": []}


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, autoscale={"enabled": True, "pools": ["no/such-model"]})
    with pytest.raises(ValueError, match="unknown models: no/such-model"):
        make_autoscaler(build_state(cfg), FakeLauncher())
    with pytest.raises(ValueError, match="min_workers must not exceed"):
        make_config(tmp_path, autoscale={"min_workers": 3, "max_workers": 2})
    result = CliRunner().invoke(cli, ["serve", "--autoscale", "ray"])
    assert result.exit_code == 2 and "--autoscale must be local or observe" in result.output


def test_observed_launcher_counts_the_registered_workers_of_a_pool(
    scaled: tuple[AppState, Autoscaler, FakeClock, FakeLauncher],
) -> None:
    state, scaler, clock, _ = scaled
    observed = observed_launcher(state)
    for name, models in (("a", [MODEL]), ("b", [MODEL, "other"]), ("c", ["other"])):
        state.workers.register(None, name, {"models": models})
    scaler.launcher = observed
    submit(state, 5)
    clock.advance(5)
    d = autoscale_once(scaler, clock())[MODEL]
    assert (observed.current(MODEL), observed.current("other")) == (2, 2)
    assert (d.observation.workers, d.desired) == (2, 3)  # it decides and publishes ...
    assert observed.current(MODEL) == 2  # ... and starts nothing
    clock.advance(WORKER_SEEN_S + 1)  # workers not seen for a minute are gone
    assert observed.current(MODEL) == 0


# ---------------------------------------------------------------- real processes


def wait_for(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def worker_processes(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return []
    found = []
    for p in kids:
        try:
            if "cinecloud.workers" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_local_launcher_runs_pools_of_real_worker_processes(tmp_path: Path, db_url: str) -> None:
    # Workers that cannot reach a control plane (a closed port) keep retrying: enough to
    # count, stop and kill them. The fake runner keeps their engine process light.
    cfg = make_config(
        tmp_path, db_url, worker={"runner_factory": "cinecloud.testing.fake_runner:"
                                  "fake_runner_factory"}
    )  # fmt: skip
    busy: set[str] = set()
    launcher = LocalLauncher(cfg, 0, server_url="http://127.0.0.1:9", busy=lambda: busy)
    try:
        check_launcher_contract(launcher, Desired, wait_for, pools=(MODEL, "cinecloud/tiny-wan"))
        launcher.scale(MODEL, Desired(1, 2))  # no spot here: the total runs
        assert launcher.current(MODEL) == 3
        mine = worker_processes(os.getpid())
        names = [p.cmdline()[p.cmdline().index("--name") + 1] for p in mine]
        assert all(re.fullmatch(r"local-cinecloud-shapes-t2v-\d+", n) for n in names), names
        assert all(p.environ()["CINECLOUD_WORKER__MODELS"] == f'["{MODEL}"]' for p in mine)
        oldest = min(mine, key=lambda p: p.create_time())
        busy.add(names[mine.index(oldest)])
        launcher.scale(MODEL, Desired(1))  # the busy one stays, the newest idle ones go
        assert [p.pid for p in worker_processes(os.getpid())] == [oldest.pid]
        oldest.send_signal(signal.SIGKILL)
        assert wait_for(lambda: launcher.current(MODEL) == 0)  # a dead worker is forgotten
    finally:
        launcher.stop(timeout=10)
    launcher.scale(MODEL, Desired(2))  # a stopped launcher starts nothing
    assert launcher.current(MODEL) == 0 and worker_processes(os.getpid()) == []


def admin_view(svc: Service) -> dict[str, Any]:
    with svc.client() as c:
        body: dict[str, Any] = c.get("/v1/admin/autoscaler").json()
    return body


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_burst_scales_workers_up_from_zero_and_back(tmp_path: Path, db_url: str) -> None:
    env = {
        # Real worker processes, a real queue and server; the engine is the fake runner
        # (0.5 s a step) so that workers start in a second or two on this small machine.
        "CINECLOUD_WORKER__RUNNER_FACTORY": "cinecloud.testing.fake_runner:"
        "slow_fake_runner_factory",
        "CINECLOUD_AUTOSCALE__INTERVAL_S": "0.5",
        "CINECLOUD_AUTOSCALE__MAX_WORKERS": "2",
        "CINECLOUD_AUTOSCALE__TARGET_WAIT_S": "10",
        "CINECLOUD_AUTOSCALE__COLD_START_S": "10",
        "CINECLOUD_AUTOSCALE__DOWNSCALE_DELAY_S": "1",
        "CINECLOUD_AUTOSCALE__IDLE_TO_ZERO_S": "4",
    }
    svc = Service(tmp_path / "home", db_url, workers=0, env=env, args=["--autoscale", "local"])
    svc.start()
    try:
        assert svc.proc is not None
        assert wait_for(lambda: len(admin_view(svc)["pools"]) == 1, 10)
        assert admin_view(svc)["pools"][0]["desired"] == 0
        assert worker_processes(svc.proc.pid) == []
        with svc.client() as c:
            body = {"prompt": "a red ball moving left", "steps": 2}
            ids = [c.post("/v1/videos", json={**body, "seed": i}).json()["id"] for i in range(4)]
            assert wait_for(lambda: len(worker_processes(svc.proc.pid)) == 2, 10)

            def all_done() -> bool:
                return all(c.get(f"/v1/videos/{i}").json()["status"] == "completed" for i in ids)

            assert wait_for(all_done, 60), svc.tail()
            metrics = c.get("/metrics").text
            assert 'cinecloud_autoscaler_current_workers{pool="cinecloud/shapes-t2v"}' in metrics
        assert wait_for(lambda: worker_processes(svc.proc.pid) == [], 30), svc.tail()
        view = admin_view(svc)
        assert view["pools"][0]["desired"] == 0
        chronological = list(reversed(view["decisions"]))
        steps = [d["reason"].split(":")[0] for d in chronological]
        # (a pass may fall between two of the four submissions: 0->1, then 1->2)
        assert steps[0] == "hold 0" and steps[1].startswith("up 0->"), steps
        assert max(d["desired"] for d in chronological) == 2, steps
        assert steps[-1] in ("down 1->0", "down 2->0"), steps
        assert "idle" in view["decisions"][0]["reason"]

        with svc.client() as c:  # work again: back from zero at once
            c.post("/v1/videos", json={"prompt": "a blue star", "steps": 2})
        assert wait_for(lambda: len(worker_processes(svc.proc.pid)) == 1, 10)
        [worker] = worker_processes(svc.proc.pid)
        svc.proc.send_signal(signal.SIGTERM)  # the server alone: it stops its workers
        assert svc.proc.wait(30) == 0
        assert psutil.wait_procs([worker], timeout=20)[1] == [], "a worker outlived the server"
    finally:
        svc.stop()
