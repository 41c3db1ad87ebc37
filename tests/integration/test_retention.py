"""Retention: a completed job's files go once its ``expires_at`` passes (the sweeper
in the running app, real database, real store)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from tests.conftest import make_config
from tests.integration.test_api import create, finish, h, play_worker

TTL = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[tuple[TestClient, AppState, str, Clock]]:
    cfg = make_config(tmp_path, db_url, queue={"job_ttl_s": int(TTL), "sweep_interval_s": 0.05})
    clock = Clock()
    state = build_state(cfg, clock=clock)
    with TestClient(create_app(cfg, state)) as client:
        tenant = state.accounts.ensure_tenant("a")
        key, _ = state.accounts.create_key(tenant.id)
        yield client, state, key, clock
    state.jobs.engine.dispose()


def _wait(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "retention did not run"
        time.sleep(0.05)


@pytest.mark.integration
def test_files_go_when_the_job_expires(app: tuple[TestClient, AppState, str, Clock]) -> None:
    client, state, key, clock = app
    v = create(client, key).json()
    finish(client, state, play_worker(client, state))
    done = client.get(f"/v1/videos/{v['id']}", headers=h(key)).json()
    assert done["expires_at"] == int(clock.now + TTL)
    prefix = f"t/{state.jobs.get_job(v['id']).tenant_id}/v/{v['id']}/"
    time.sleep(0.3)  # several sweeps: nothing is due yet
    assert list(state.store.list(prefix)) != []
    url = f"/v1/videos/{v['id']}/content"
    assert client.get(url, headers=h(key), follow_redirects=False).status_code == 307
    clock.now += TTL
    _wait(lambda: not list(state.store.list(prefix)))
    _wait(lambda: state.jobs.get_job(v["id"]).artifacts == ())
    after = client.get(f"/v1/videos/{v['id']}", headers=h(key)).json()
    assert after["status"] == "completed" and after["outputs"] == {}
    gone = client.get(url, headers=h(key))
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "video_expired"
    assert state.jobs.past_retention() == []
