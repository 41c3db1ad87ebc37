"""Control-plane replicas on one PostgreSQL database: the background loops run on the
replica that holds the advisory lock; when it dies another takes over and no job is lost.

The last test runs two real ``cinecloud serve`` processes and two real workers (fake
runner) on loopback, and kills the leader with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from cinecloud.api import build_state, create_app
from cinecloud.api.autoscaling import make_autoscaler
from cinecloud.config import load_config
from cinecloud.jobs import JobStore, WorkerStore, make_engine
from cinecloud.jobs import tables as t
from cinecloud.testing.fleet import wait_until
from cinecloud.testing.launcher import FakeLauncher
from cinecloud.testing.service import Service
from cinecloud.workers import LocalLauncher
from tests.conftest import make_config

SLOW = "cinecloud.testing.fake_runner:slow_fake_runner_factory"  # 0.5 s a step
WAN = "cinecloud/tiny-wan"
TOKEN = "ha-worker-token"


def test_sqlite_has_one_replica_and_it_leads(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", leader={"replica": "one"})
    state = build_state(cfg)
    with TestClient(create_app(cfg, state)) as client:
        health = wait_until(
            "the lead", lambda: (h := client.get("/healthz").json())["leader"] and h, 5
        )
        assert health == {"status": "ok", "replica": "one", "leader": True}
        assert 'cinecloud_leader{replica="one"} 1.0' in client.get("/metrics").text
    state.jobs.engine.dispose()


def test_one_of_two_apps_leads_and_the_other_takes_over(tmp_path: Path, pg_url: str) -> None:
    """Two apps on one database, each with an autoscaler that launches workers (a fake
    launcher): only the leader's autoscaler acts, until the leader goes."""
    apps, launchers = [], []
    for name in ("a", "b"):
        cfg = make_config(
            tmp_path / name,
            pg_url,
            leader={"replica": name, "interval_s": 0.2},
            autoscale={"enabled": True, "interval_s": 0.1},
        )
        state = build_state(cfg)
        launchers.append(FakeLauncher())
        state.autoscaler = make_autoscaler(state, launchers[-1])
        apps.append((cfg, state))
    (cfg_a, a), (cfg_b, b) = apps
    with TestClient(create_app(cfg_a, a)) as client_a:
        wait_until("a to lead", lambda: client_a.get("/healthz").json()["leader"], 5)
        with TestClient(create_app(cfg_b, b)) as client_b:
            time.sleep(1.0)  # five tries of b's, ten autoscaler periods
            assert client_b.get("/healthz").json() == {
                "status": "ok",
                "replica": "b",
                "leader": False,
            }
            assert b.leadership.changes == 0 and a.leadership.leading
            assert launchers[0].calls and not launchers[1].calls
            client_a.__exit__(None, None, None)  # a shuts down and lets go of the lock
            wait_until("b to lead", lambda: client_b.get("/healthz").json()["leader"], 5)
            assert 'cinecloud_leader{replica="b"} 1.0' in client_b.get("/metrics").text
            wait_until("b's autoscaler", lambda: launchers[1].calls, 5)
    for _, state in apps:
        state.jobs.engine.dispose()


def _replica(tmp_path: Path, pg_url: str, name: str, port: int | None = None) -> Service:
    env = {
        "CINECLOUD_LEADER__REPLICA": name,
        "CINECLOUD_LEADER__INTERVAL_S": "0.5",
        "CINECLOUD_WORKER__TOKEN": TOKEN,
        "CINECLOUD_DELIVERY__SECRET": "ha-delivery-secret",
        "CINECLOUD_STORAGE__ROOT": str(tmp_path / "blobs"),  # one store behind both
        "CINECLOUD_QUEUE__LEASE_TTL_S": "3",
        "CINECLOUD_QUEUE__SWEEP_INTERVAL_S": "0.5",
        "CINECLOUD_QUEUE__HEARTBEAT_INTERVAL_S": "1",
    }
    return Service(tmp_path / name, pg_url, workers=0, env=env, port=port)


def _worker(tmp_path: Path, name: str, server_url: str) -> LocalLauncher:
    cfg = load_config(
        server={"home": tmp_path / f"home-{name}"},
        queue={"lease_long_poll_s": 1.0},
        engine={"default_model": WAN},
        worker={
            "name": name,
            "token": TOKEN,
            "runner_factory": SLOW,
            "models": [WAN],
            "work_dir": tmp_path / f"work-{name}",
        },
    )
    launcher = LocalLauncher(cfg, 1, server_url=server_url)
    launcher.start()
    return launcher


def _leader(svc: Service) -> bool | None:
    try:
        return bool(httpx.get(f"{svc.url}/healthz", timeout=2).json()["leader"])
    except httpx.TransportError:
        return None


def test_kill_9_the_leader_the_other_replica_takes_over_and_no_job_is_lost(
    tmp_path: Path, pg_url: str
) -> None:
    a = _replica(tmp_path, pg_url, "a").start()
    b = _replica(tmp_path, pg_url, "b").start()
    engine = make_engine(pg_url)
    jobs, workers = JobStore(engine, clock=time.time), WorkerStore(engine, clock=time.time)
    launchers: list[LocalLauncher] = []
    try:
        assert wait_until("a to lead", lambda: _leader(a), 10)
        assert _leader(b) is False
        # one worker speaks to each replica
        launchers = [_worker(tmp_path, "wa", a.url), _worker(tmp_path, "wb", b.url)]

        def registered() -> dict[str, str] | None:
            found = {w.name: w.id for w in workers.active(60)}
            return found if len(found) == 2 else None

        ids = wait_until("both workers", registered, 60)
        with b.client(a.admin_key) as client:  # the first replica made the admin key
            videos = [
                client.post(
                    "/v1/videos",
                    json={
                        "prompt": f"a red ball {i}",
                        "model": WAN,
                        "size": "64x64",
                        "num_frames": 5,
                        "steps": 4,
                    },
                ).json()["id"]
                for i in range(3)
            ]

            def held_by_wa() -> list[str]:
                with engine.connect() as conn:
                    q = select(t.jobs.c.id).where(t.jobs.c.lease_owner == ids["wa-1"])
                    return [r[0] for r in conn.execute(q)]

            stranded = wait_until("a job leased through a", held_by_wa, 60)
            assert a.proc is not None
            killed_at = time.time()
            os.kill(a.proc.pid, signal.SIGKILL)
            a.proc.wait(10)
            wait_until("b to lead", lambda: _leader(b), 10)
            takeover_s = time.time() - killed_at
            assert takeover_s < 10.0, takeover_s

            def all_done() -> bool:
                states = [client.get(f"/v1/videos/{v}").json()["status"] for v in videos]
                assert "failed" not in states and "canceled" not in states, states
                return all(s == "completed" for s in states)

            wait_until("every job to complete", all_done, 90, every=0.5)
            # the job a's worker held went back to the queue under b (its lease expired
            # once a was gone) and b's worker finished it
            for job_id in stranded:
                events = jobs.events_after(job_id, 0)
                requeued = [e for e in events if e.type == "requeued"]
                assert requeued and requeued[0].data["code"] == "lease_expired", events
                assert requeued[0].created_at > killed_at
                done = jobs.get_job(job_id)
                assert done.lease_owner == ids["wb-1"] and done.attempts >= 2
        print(f"takeover after kill -9: {takeover_s:.2f} s")
    finally:
        for launcher in launchers:
            launcher.stop(timeout=5)
        for svc in (a, b):
            svc.stop()
        engine.dispose()
