"""Webhooks end to end: the real app and database, a real receiver on 127.0.0.1.

Signatures are checked with the Standard Webhooks library itself; the SSRF guard is
driven through the API with a hosts-style resolver (no real DNS).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.testing.service import free_port
from cinecloud.webhooks import HostsResolver
from tests.conftest import make_config
from tests.integration.jobplay import Player, auth

FAST = {
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.3,
    "max_attempts": 100,
    "poll_interval_s": 0.05,
    "fanout_grace_s": 1.0,
    "total_timeout_s": 3.0,
}
HOSTS = {
    "hooks.test": ["127.0.0.1"],
    "private.test": ["10.1.2.3"],
    "mixed.test": ["93.184.216.34", "192.168.1.9"],
    "public.test": ["93.184.216.34"],
}


class Receiver:
    """An HTTP server that records each webhook; ``answers`` scripts its first replies."""

    def __init__(self, port: int, answers: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.port = port
        self.answers = list(answers or [])
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status, extra = receiver.answers.pop(0) if receiver.answers else (200, {})
                    receiver.got.append(
                        {"headers": dict(self.headers), "body": body.decode(), "status": status}
                    )
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def acked(self) -> list[dict[str, Any]]:
        with self.lock:
            return [g for g in self.got if 200 <= g["status"] < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


Api = tuple[TestClient, AppState, str, HostsResolver]


def _app(tmp_path: Path, db_url: str, **webhooks: Any) -> Iterator[Api]:
    cfg = make_config(tmp_path, db_url, webhooks={**FAST, **webhooks})
    resolver = HostsResolver(HOSTS)
    state = build_state(cfg, resolver=resolver)
    with TestClient(create_app(cfg, state)) as client:
        key, _ = state.accounts.create_key(state.accounts.ensure_tenant("a").id)
        yield client, state, key, resolver
    state.jobs.engine.dispose()


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[Api]:
    """Loopback allowed (the receiver runs there), as a deployment allow-lists it."""
    yield from _app(tmp_path, db_url, allow_hosts=["127.0.0.1"])


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Api]:
    """No allow-list: the default rule alone (SQLite)."""
    yield from _app(tmp_path, f"sqlite:///{tmp_path / 's.db'}")


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def log_of(client: TestClient, key: str, job_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/v1/videos/{job_id}/webhooks", headers=auth(key))
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


def status_of(client: TestClient, key: str, job_id: str, index: int) -> tuple[str, int]:
    """(status, attempts) of the job's ``index``-th delivery; ("", 0) before it exists."""
    log = log_of(client, key, job_id)
    return (log[index]["status"], log[index]["attempts"]) if len(log) > index else ("", 0)


def register(client: TestClient, key: str, url: str, **body: Any) -> Any:
    return client.post("/v1/webhooks", json={"url": url, **body}, headers=auth(key))


# ---------------------------------------------------------------- the guard


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:9/hook", "webhook_target_forbidden"),  # loopback
        ("http://10.0.0.7/hook", "webhook_target_forbidden"),  # private
        ("http://169.254.169.254/latest/meta-data/", "webhook_target_forbidden"),  # link-local
        ("http://[::1]:8080/hook", "webhook_target_forbidden"),  # IPv6 loopback
        ("http://[::ffff:127.0.0.1]/hook", "webhook_target_forbidden"),  # v4-mapped loopback
        ("http://224.0.0.1/hook", "webhook_target_forbidden"),  # multicast
        ("http://240.0.0.1/hook", "webhook_target_forbidden"),  # reserved
        ("http://0.0.0.0:80/hook", "webhook_target_forbidden"),  # unspecified
        ("http://private.test/hook", "webhook_target_forbidden"),  # a name, private address
        ("http://mixed.test/hook", "webhook_target_forbidden"),  # one of its addresses
        ("http://nowhere.test/hook", "webhook_target_unresolvable"),
        ("ftp://public.test/hook", "invalid_webhook_url"),
        ("http:///hook", "invalid_webhook_url"),
    ],
)
def test_registration_refuses_forbidden_targets(strict: Api, url: str, code: str) -> None:
    client, _, key, _ = strict
    resp = register(client, key, url)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["param"] == "url"
    assert client.get("/v1/webhooks", headers=auth(key)).json()["data"] == []


def test_request_webhook_url_is_checked_too(strict: Api) -> None:
    client, _, key, _ = strict
    body = {"prompt": "a red ball", "webhook_url": "http://169.254.169.254/"}
    resp = client.post("/v1/videos", json=body, headers=auth(key))
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "code": "webhook_target_forbidden",
        "message": "webhook_url: webhook target is a link-local address",
        "param": "webhook_url",
        "type": "invalid_request_error",
    }
    assert client.get("/v1/videos", headers=auth(key)).json()["data"] == []
    ok = register(client, key, "https://public.test/hook", events=["completed"])
    assert ok.status_code == 200, ok.text
    assert ok.json()["secret"].startswith("whsec_") and ok.json()["events"] == ["completed"]
    bad = register(client, key, "https://public.test/hook", events=["completed", "exploded"])
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_webhook_event"


def test_delivery_checks_the_address_again(strict: Api) -> None:
    """Registered while public.test was public; it then resolves to loopback, where a
    receiver listens: no attempt may reach it."""
    client, state, key, resolver = strict
    port = free_port()
    receiver = Receiver(port)
    try:
        resp = register(client, key, f"http://public.test:{port}/hook")
        assert resp.status_code == 200, resp.text
        resolver.hosts["public.test"] = ["127.0.0.1"]  # rebinding
        play = Player(client, state)
        job = play.submit(key)
        run = play.lease()

        def refused_twice() -> bool:
            log = log_of(client, key, job)
            return bool(log) and len(log[0]["attempt_log"]) >= 2

        wait_for("refused attempts", refused_twice)
        play.finish(run)
        attempt = log_of(client, key, job)[0]["attempt_log"][0]
        assert attempt["error"].startswith("webhook_target_forbidden: ")
        assert "public.test resolves to 127.0.0.1" in attempt["error"]
        assert attempt["address"] is None and attempt["status_code"] is None
        assert receiver.got == []
    finally:
        receiver.close()


def test_connection_is_pinned_and_redirects_are_not_followed(api: Api) -> None:
    client, state, key, resolver = api
    port, other = free_port(), free_port()
    target = Receiver(other)
    receiver = Receiver(port, [(302, {"Location": f"http://127.0.0.1:{other}/x"})])
    try:
        assert register(client, key, f"http://hooks.test:{port}/hook").status_code == 200
        before = len(resolver.calls)
        play = Player(client, state)
        job = play.submit(key)
        play.lease()
        wait_for("the started event", lambda: status_of(client, key, job, 0)[1] == 2)
        first, second = receiver.got
        # the request went to the address checked, with the name as its Host
        assert first["headers"]["Host"] == f"hooks.test:{port}"
        assert target.got == []  # the redirect was not followed
        log = log_of(client, key, job)[0]
        assert [a["status_code"] for a in log["attempt_log"]] == [302, 200]
        assert log["attempt_log"][0]["error"] == "HTTP 302: redirect not followed"
        assert {a["address"] for a in log["attempt_log"]} == {"127.0.0.1"}
        # one resolution for the registration and one per attempt, no more
        assert resolver.calls[before:] == ["hooks.test", "hooks.test"]
        assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == log["id"]
    finally:
        receiver.close()
        target.close()


# ---------------------------------------------------------------- delivery


def test_receiver_down_then_up_loses_nothing(api: Api) -> None:
    """The receiver refuses connections (nothing listens), then comes up and answers 503
    once: every event of both jobs is retried until acknowledged exactly once, in order."""
    client, state, key, _ = api
    port = free_port()
    made = register(client, key, f"http://127.0.0.1:{port}/hook", events=list(EVENTS))
    assert made.status_code == 200, made.text
    secret = made.json()["secret"]
    play = Player(client, state)
    done, failed = play.submit(key), play.submit(key)
    run = play.lease()
    assert run["job_id"] == done
    play.progress(run, 1)
    play.progress(run, 2)
    play.finish(run)
    run = play.lease()
    play.progress(run, 1)
    play.fail(run)

    def retried() -> bool:
        logs = log_of(client, key, done) + log_of(client, key, failed)
        return len(logs) == 7 and len(logs[0]["attempt_log"]) >= 2

    wait_for("failed attempts while the receiver is down", retried)
    first = log_of(client, key, done)[0]
    assert first["status"] in ("pending", "sending")
    assert "ConnectError" in first["attempt_log"][0]["error"]
    receiver = Receiver(port, [(503, {})])
    try:

        def all_delivered() -> bool:
            logs = log_of(client, key, done) + log_of(client, key, failed)
            return all(d["status"] == "delivered" for d in logs)

        wait_for("every delivery", all_delivered)
        acked = receiver.acked()
        ids = [g["headers"]["webhook-id"] for g in acked]
        assert len(ids) == len(set(ids)) == 7  # each message acknowledged exactly once
        by_job: dict[str, list[tuple[int, str]]] = {}
        for g in receiver.got:  # every request, 503 included, verifies
            payload = Webhook(secret).verify(g["body"], g["headers"])
            assert g["headers"]["webhook-signature"].startswith("v1,")
            if 200 <= g["status"] < 300:
                data = payload["data"]
                by_job.setdefault(data["id"], []).append((data["event_id"], payload["type"]))
        for events in by_job.values():
            assert [e for e, _ in events] == sorted(e for e, _ in events)  # in order
        assert [t for _, t in by_job[done]] == [
            "video.started",
            "video.progress",
            "video.progress",
            "video.completed",
        ]
        assert [t for _, t in by_job[failed]] == [
            "video.started",
            "video.progress",
            "video.failed",
        ]
        first = log_of(client, key, done)[0]
        assert first["attempts"] == len(first["attempt_log"]) >= 2
        assert first["attempt_log"][-1]["status_code"] == 200
        assert all(a["status_code"] is None for a in first["attempt_log"][:-2])
    finally:
        receiver.close()


EVENTS = ("started", "progress", "completed", "failed", "canceled")


def test_request_webhook_url_log_and_replay(api: Api) -> None:
    client, state, key, _ = api
    port = free_port()
    receiver = Receiver(port)
    try:
        secret = client.get("/v1/webhooks/default/secret", headers=auth(key)).json()["key"]
        play = Player(client, state)
        job = play.submit(key, webhook_url=f"http://hooks.test:{port}/done")
        run = play.lease()
        play.progress(run, 1)  # progress is not among a request webhook's events
        play.finish(run)
        wait_for("started and completed", lambda: len(receiver.acked()) == 2)
        wait_for("the log", lambda: status_of(client, key, job, 1)[0] == "delivered")
        types = [Webhook(secret).verify(g["body"], g["headers"])["type"] for g in receiver.got]
        assert types == ["video.started", "video.completed"]
        completed = log_of(client, key, job)[1]
        assert completed["type"] == "video.completed" and completed["status"] == "delivered"
        replay = client.post(
            f"/v1/videos/{job}/webhooks/replay",
            json={"delivery_id": completed["id"]},
            headers=auth(key),
        )
        assert replay.status_code == 200 and replay.json()["replayed"] == 1
        wait_for("the replay", lambda: status_of(client, key, job, 1)[1] == 2)
        assert log_of(client, key, job)[1]["status"] == "delivered"
        again = receiver.got[-1]
        assert len(receiver.acked()) == 3
        assert again["headers"]["webhook-id"] == completed["id"]  # the same message
        assert again["body"] == receiver.got[1]["body"]
        other = client.post(
            f"/v1/videos/{job}/webhooks/replay", json={"delivery_id": "msg_x"}, headers=auth(key)
        )
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "webhook_delivery_not_found"
    finally:
        receiver.close()


def test_endpoint_list_get_delete(strict: Api) -> None:
    client, state, key, _ = strict
    made = register(client, key, "https://public.test/a", description="prod").json()
    listed = client.get("/v1/webhooks", headers=auth(key)).json()["data"]
    assert [e["id"] for e in listed] == [made["id"]] and "secret" not in listed[0]
    one = client.get(f"/v1/webhooks/{made['id']}", headers=auth(key)).json()
    assert (one["url"], one["events"], one["description"]) == (
        "https://public.test/a",
        ["started", "completed", "failed", "canceled"],
        "prod",
    )
    other_key, _ = state.accounts.create_key(state.accounts.ensure_tenant("b").id)
    hidden = client.get(f"/v1/webhooks/{made['id']}", headers=auth(other_key))
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "webhook_not_found"
    gone = client.delete(f"/v1/webhooks/{made['id']}", headers=auth(key))
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert client.get("/v1/webhooks", headers=auth(key)).json()["data"] == []
    assert client.delete(f"/v1/webhooks/{made['id']}", headers=auth(key)).status_code == 404
    play = Player(client, state)
    job = play.submit(key)
    play.lease()
    time.sleep(0.5)  # a few passes of the loop: nothing is made for a removed endpoint
    assert log_of(client, key, job) == []
