"""Webhook delivery and ``/metrics`` scrape cost, against the real app and database.

Delivery: the in-process app (its webhook loop running as in ``cinecloud serve``) and a
receiver on 127.0.0.1 that verifies every signature. ``--jobs`` jobs each go queued,
started and failed through the worker protocol (two messages each: started, failed); the figures
are the time from each job event to its arrival at the receiver (p50, p95, max) and
messages per second from the first event to the last arrival (bounded by how fast
the jobs are made). Drain: ``--backlog`` jobs' events made before the delivery loop
starts, and messages per second until the last arrives, with the CPU time this process
(app and receiver together) spent per message.

Scrape: ``--workers`` workers, each with ``--gpus`` GPU samples, and ``--queued`` queued
jobs; the time to render ``/metrics`` (the gauges read the database each time).

    python benchmarks/webhooks.py                        # SQLite, 100 jobs
    python benchmarks/webhooks.py --db postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from cinecloud.api import build_state, create_app
from cinecloud.config import load_config
from cinecloud.jobs import NewJob
from cinecloud.testing.databases import temp_database
from cinecloud.testing.service import NO_LIMITS, free_port

MODEL = "cinecloud/shapes-t2v"


class Receiver:
    def __init__(self, port: int, secret: str) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        verifier = Webhook(secret)
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                payload = verifier.verify(body.decode(), dict(self.headers))
                arrivals.append((time.time(), payload))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@contextmanager
def database(url: str | None, tmp: Path) -> Iterator[str]:
    if url is None:
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    with temp_database("postgres", tmp) as made:
        yield made


def deliver(client: TestClient, state: Any, key: str, jobs: int) -> dict[str, float]:
    port = free_port()
    auth = {"Authorization": f"Bearer {key}"}
    made = client.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{port}/"}, headers=auth)
    receiver = Receiver(port, made.json()["secret"])
    wh = {"Authorization": f"Bearer {state.cfg.worker.token}"}
    wid = client.post("/internal/v1/workers/register", json={}, headers=wh).json()["worker_id"]
    body = {"prompt": "a ball", "size": "64x64", "num_frames": 16, "steps": 2}
    for _ in range(jobs):
        client.post("/v1/videos", json=body, headers=auth)
        run = client.post(
            "/internal/v1/leases", json={"worker_id": wid, "models": [MODEL]}, headers=wh
        ).json()["jobs"][0]
        # ended at once (failed): the bench times the webhooks, not the job
        client.post(
            f"/internal/v1/jobs/{run['job_id']}/fail",
            json={"lease_id": run["lease_id"], "code": "bench", "message": "x"},
            headers=wh,
        )
    deadline = time.monotonic() + 600
    while len(receiver.arrivals) < 2 * jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    receiver.server.shutdown()
    lat = [at - datetime.fromisoformat(p["timestamp"]).timestamp() for at, p in receiver.arrivals]
    first = min(datetime.fromisoformat(p["timestamp"]).timestamp() for _, p in receiver.arrivals)
    last = max(at for at, _ in receiver.arrivals)
    lat.sort()
    return {
        "messages": len(lat),
        "latency_p50_s": round(statistics.median(lat), 4),
        "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 4),
        "latency_max_s": round(lat[-1], 4),
        "live_messages_per_s": round(len(lat) / (last - first), 1),
    }


def drain(cfg: Any, backlog: int) -> dict[str, float]:
    # a database of its own (``cfg``): the queue holds only these jobs
    """Messages per second through a backlog: ``backlog`` jobs' events are made before the
    app (and so its delivery loop) starts; the clock runs from the start to the last
    arrival, through fan-out, claim, signing, sending and recording."""
    state = build_state(cfg)
    port = free_port()
    tenant = state.accounts.ensure_tenant("drain").id
    ep = state.webhooks.create_endpoint(
        tenant, f"http://127.0.0.1:{port}/", ("started", "failed"), "whsec_" + "A" * 32
    )
    receiver = Receiver(port, ep.secret)
    wid = state.workers.register(None, "w", {})
    for _ in range(backlog):
        state.jobs.create_job(
            NewJob(
                tenant_id=tenant,
                model=MODEL,
                prompt="a ball",
                params={},
                seconds="1",
                size="64x64",
                seed=1,
            )
        )
        [held] = state.jobs.lease(wid, [MODEL], ttl_s=60)
        state.jobs.fail(held.id, held.lease_id or "", code="bench", message="x", retryable=False)
    started, cpu = time.time(), time.process_time()
    with TestClient(create_app(cfg, state)):
        deadline = time.monotonic() + 600
        while len(receiver.arrivals) < 2 * backlog and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = time.process_time() - cpu
    receiver.server.shutdown()
    state.jobs.engine.dispose()
    last = max(at for at, _ in receiver.arrivals)
    return {
        "backlog_messages": len(receiver.arrivals),
        "drain_messages_per_s": round(len(receiver.arrivals) / (last - started), 1),
        # this process's CPU (the app and the receiver) per message
        "drain_cpu_ms_per_message": round(1000 * cpu / len(receiver.arrivals), 2),
    }


def scrape(client: TestClient, state: Any, workers: int, gpus: int, queued: int) -> float:
    gpu = {"name": "NVIDIA H200", "uuid": "GPU-x", "memory_total": 150e9, "memory_used": 1e9}
    for w in range(workers):
        wid = state.workers.register(None, f"w{w}", {})
        sample = [{"index": i, **gpu, "utilization": 0.5} for i in range(gpus)]
        state.workers.touch(wid, "busy", {"gpus": sample})
    key, _ = state.accounts.create_key(state.accounts.ensure_tenant("scrape").id)
    for _ in range(queued):
        client.post(
            "/v1/videos", json={"prompt": "a ball"}, headers={"Authorization": f"Bearer {key}"}
        )
    times = []
    for _ in range(20):
        started = time.perf_counter()
        assert client.get("/metrics").status_code == 200
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", help="a PostgreSQL server URL (default: SQLite)")
    p.add_argument("--jobs", type=int, default=50, help="jobs made while delivering")
    p.add_argument("--backlog", type=int, default=500, help="jobs made before delivering")
    p.add_argument("--workers", type=int, default=50)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--queued", type=int, default=200)
    args = p.parse_args()

    def config(home: Path, url: str) -> Any:
        hooks = {"allow_hosts": ["127.0.0.1"], "fanout_grace_s": 1.0}
        return load_config(
            None, server={"home": home}, db={"url": url}, webhooks=hooks, limits=NO_LIMITS
        )

    with tempfile.TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as url:
        cfg = config(Path(tmp), url)
        state = build_state(cfg)
        with TestClient(create_app(cfg, state)) as client:
            key, _ = state.accounts.create_key(state.accounts.ensure_tenant("a").id)
            result = {"db": url.split(":")[0], **deliver(client, state, key, args.jobs)}
            result["scrape_ms"] = scrape(client, state, args.workers, args.gpus, args.queued)
        state.jobs.engine.dispose()
    with tempfile.TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as url:
        result.update(drain(config(Path(tmp), url), args.backlog))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
