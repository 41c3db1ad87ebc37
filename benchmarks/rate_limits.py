"""The abuse limits as a client meets them: requests sent at a steady rate against a
real ``cinecloud serve`` (no workers), counted as accepted or refused (429).

Rows:

- ``rate``: ``GET /v1/limits`` at ``R`` requests a second for ``--seconds`` against a
  per-key limit of ``--limit`` a second (``limits.rate``), on one control plane;
- ``replicas``: the same, alternating between two control planes on one database,
  with the counts in each one's memory and then in Redis (``limits.storage``);
- ``retry``: after each 429, the client waits the ``Retry-After`` it was given and
  sends again: how often that retry passes;
- ``cost``: ``POST /v1/videos`` latency one after another, ``--posts`` times, with
  every limit off and with every limit on (set too high to refuse), same database kind;
- ``quota``: ``POST /v1/videos`` ``--jobs`` times (4 a second, under the rate) against
  ``max_active_jobs`` (no worker runs them, so they stay queued).

    python benchmarks/rate_limits.py                  # SQLite, limit 5/second, 4 s each
    python benchmarks/rate_limits.py --redis redis://127.0.0.1:6379/0

Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from cinecloud.testing.databases import temp_database
from cinecloud.testing.service import Service, limits_env


def steady(clients: list[httpx.Client], rate: float, seconds: float) -> dict[str, Any]:
    """Send ``rate`` requests a second for ``seconds``, round robin over ``clients``."""
    n = round(rate * seconds)
    start = time.perf_counter()
    codes: list[int] = []
    waits: set[str] = set()
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        resp = clients[i % len(clients)].get("/v1/limits")
        codes.append(resp.status_code)
        if resp.status_code == 429:
            waits.add(resp.headers["Retry-After"])
    took = time.perf_counter() - start
    return {
        "sent": n,
        "accepted": codes.count(200),
        "refused": codes.count(429),
        "other": n - codes.count(200) - codes.count(429),
        "seconds": round(took, 2),
        "retry_after": sorted(waits, key=int),
    }


def retries(client: httpx.Client, refusals: int) -> dict[str, Any]:
    """Send as fast as possible; after each 429 wait its Retry-After and send once."""
    passed = waited = 0
    for _ in range(refusals):
        while (resp := client.get("/v1/limits")).status_code == 200:
            pass
        wait = int(resp.headers["Retry-After"])
        waited += wait
        time.sleep(wait)
        passed += client.get("/v1/limits").status_code == 200
    return {"refusals": refusals, "retry_passed": passed, "mean_wait_s": waited / refusals}


def quota(client: httpx.Client, jobs: int) -> dict[str, Any]:
    body = {"prompt": "a red ball", "size": "64x64", "num_frames": 16, "steps": 2}
    codes = []
    for _ in range(jobs):
        time.sleep(0.25)  # under the request rate: only the quota refuses
        codes.append(client.post("/v1/videos", json=body))
    refused = [r for r in codes if r.status_code == 429]
    return {
        "sent": jobs,
        "accepted": sum(r.status_code == 200 for r in codes),
        "refused": len(refused),
        "codes": sorted({r.json()["error"]["code"] for r in refused}),
        "retry_after": sorted({r.headers["Retry-After"] for r in refused}),
    }


def cost(svc: Service, key: str, posts: int) -> dict[str, Any]:
    body = {"prompt": "a red ball", "size": "64x64", "num_frames": 16, "steps": 2}
    took = []
    with svc.client(key) as client:
        for i in range(posts + 20):
            t0 = time.perf_counter()
            client.post("/v1/videos", json=body).raise_for_status()
            if i >= 20:  # after a warm-up
                took.append(time.perf_counter() - t0)
    took.sort()
    return {
        "posts": posts,
        "p50_ms": round(statistics.median(took) * 1000, 2),
        "p90_ms": round(took[int(0.9 * (len(took) - 1))] * 1000, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--limit", type=int, default=5, help="requests a second per key")
    ap.add_argument("--rates", type=float, nargs="+", default=[2, 5, 10, 20])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--max-active", type=int, default=5)
    ap.add_argument("--posts", type=int, default=200)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="'' to skip Redis")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/rate_limits.json"))
    args = ap.parse_args()

    rate = f"{args.limit}/second"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, temp_database(args.db, Path(tmp)) as url:
        env = {
            "CINECLOUD_LIMITS__RATE": rate,
            "CINECLOUD_LIMITS__CREATE_RATE": "",
            "CINECLOUD_LIMITS__MAX_ACTIVE_JOBS": str(args.max_active),
        }
        with ExitStack() as stack:
            one = Service(Path(tmp) / "one", url, workers=0, env=env).start()
            stack.callback(one.stop)
            client = stack.enter_context(one.client())
            for r in args.rates:
                time.sleep(1.1)  # a fresh window
                got = steady([client], r, args.seconds)
                rows.append({"case": "rate", "limit": rate, "rate": r, **got})
            time.sleep(1.1)
            rows.append({"case": "retry", "limit": rate, **retries(client, 5)})
            held = quota(client, args.jobs)
            rows.append({"case": "quota", "max_active_jobs": args.max_active, **held})
        high: dict[str, Any] = {"rate": "10000/second", "create_rate": "10000/second"}
        high |= {"max_active_jobs": 10**6, "gpu_seconds_per_day": 10**9}
        for name, limits in (("off", limits_env()), ("on", limits_env(high))):
            with ExitStack() as stack:
                svc = Service(Path(tmp) / f"cost-{name}", url, workers=0, env=limits).start()
                stack.callback(svc.stop)
                took = cost(svc, one.admin_key, args.posts)
                rows.append({"case": "cost", "limits": name, **took})
        storages = ["memory://"] + ([args.redis] if args.redis else [])
        for storage in storages:
            prefix = f"cinecloud-bench-{secrets.token_hex(4)}"
            env2 = {**env, "CINECLOUD_LIMITS__STORAGE": storage}
            env2["CINECLOUD_LIMITS__KEY_PREFIX"] = prefix
            with ExitStack() as stack:
                a = Service(Path(tmp) / f"a{prefix}", url, workers=0, env=env2).start()
                stack.callback(a.stop)
                b = Service(Path(tmp) / f"b{prefix}", url, workers=0, env=env2).start()
                stack.callback(b.stop)
                key = one.admin_key
                pair = [stack.enter_context(s.client(key)) for s in (a, b)]
                r = 2 * args.limit
                time.sleep(1.1)
                got = steady(pair, r, args.seconds)
                rows.append(
                    {"case": "replicas", "storage": storage, "limit": rate, "rate": r, **got}
                )

    for row in rows:
        print(json.dumps(row))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
