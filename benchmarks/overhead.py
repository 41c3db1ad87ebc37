"""Service overhead and submit latency of the real service on this machine.

1. ``--jobs`` jobs one after another through a real server and one local worker
   with the default model at 2 steps: end-to-end time as the client sees it (POST
   to the ``completed`` event), minus engine time (text encode + denoise + decode).
2. ``--clips`` jobs with the default model's own settings (16 frames, default steps
   and guidance): the time a user waits for one clip through the whole service.
3. ``POST /v1/videos`` latency under ``--clients`` concurrent clients (a server
   with no workers, so only the API and the queue are measured).

Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from cinecloud.cli.generate import iter_sse
from cinecloud.testing.databases import temp_database
from cinecloud.testing.service import Service, limits_env

ENGINE = ("text_encode", "denoise", "decode")
JOB: dict[str, Any] = {"prompt": "a red ball moving left", "steps": 2}
CLIP: dict[str, Any] = {"prompt": "a red star moving to the left on a sky background"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def one_job(client: httpx.Client, job: dict[str, Any] = JOB) -> dict[str, float]:
    t0 = time.perf_counter()
    video = client.post("/v1/videos", json=job).json()
    with client.stream("GET", f"/v1/videos/{video['id']}/events") as resp:
        for ev in iter_sse(resp.iter_lines()):
            if ev.type in ("completed", "failed", "canceled"):
                break
    e2e = time.perf_counter() - t0
    done = client.get(f"/v1/videos/{video['id']}").json()
    assert done["status"] == "completed", done
    t = done["timings"]
    engine = sum(t[k] for k in ENGINE)
    return {
        "e2e": e2e,
        "engine": engine,
        "overhead": e2e - engine,
        "server_overhead": t["total"] - engine,
        **{k: t[k] for k in ("queue_wait", "render", "upload")},
    }


def overhead(svc: Service, jobs: int, clips: int) -> tuple[list[dict[str, float]], list[float]]:
    with svc.client() as c:
        for _ in range(3):  # warm-up: first job pays the model load
            one_job(c)
        runs = [one_job(c) for _ in range(jobs)]
        full = [one_job(c, {**CLIP, "seed": i})["e2e"] for i in range(clips)]
        return runs, full


async def _submit_load(
    url: str, key: str, clients: int, total: int, rate: float | None = None
) -> list[float]:
    """``clients`` concurrent clients send ``total`` submissions.

    Closed loop (``rate`` None): each client sends its next request as soon as the
    last one answers, which measures saturation. Open loop: together they send
    ``rate`` requests a second on a fixed schedule, each client its own share.
    """
    latencies: list[float] = []
    counter = iter(range(total))
    start = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=30
    ) as client:

        async def worker() -> None:
            for i in counter:
                if rate is not None:
                    await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                t0 = time.perf_counter()
                resp = await client.post("/v1/videos", json={"prompt": "load test"})
                latencies.append(time.perf_counter() - t0)
                resp.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies


def submit_latency(svc: Service, clients: int, total: int, rate: float | None) -> list[float]:
    asyncio.run(_submit_load(svc.url, svc.admin_key, clients, 100))  # warm-up
    return asyncio.run(_submit_load(svc.url, svc.admin_key, clients, total, rate))


def summarize(name: str, values: list[float]) -> dict[str, float]:
    return {
        "name": name,
        "n": len(values),
        "p50_ms": pct(values, 50) * 1000,
        "p90_ms": pct(values, 90) * 1000,
        "p99_ms": pct(values, 99) * 1000,
        "mean_ms": statistics.fmean(values) * 1000,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--clips", type=int, default=10, help="jobs at the model's own settings")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="open-loop submissions a second")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/overhead.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, temp_database(args.db, Path(tmp)) as url:
        svc = Service(Path(tmp) / "a", url, workers=1, env=limits_env()).start()
        try:
            runs, full = overhead(svc, args.jobs, args.clips)
        finally:
            svc.stop()
    with tempfile.TemporaryDirectory() as tmp, temp_database(args.db, Path(tmp)) as url:
        # a load test: far over any one client's rate and active-jobs limits
        svc = Service(Path(tmp) / "b", url, workers=0, env=limits_env()).start()
        try:
            closed = submit_latency(svc, args.clients, args.requests, None)
            t0 = time.perf_counter()
            opened = submit_latency(svc, args.clients, args.requests, args.rate)
            open_s = time.perf_counter() - t0
        finally:
            svc.stop()

    rows = [summarize(k, [r[k] for r in runs]) for k in runs[0]]
    if full:
        rows.append(summarize("one clip, model defaults (e2e)", full))
    rows.append(summarize(f"POST closed loop, {args.clients} clients", closed))
    rows.append(summarize(f"POST at {args.rate:g}/s, {args.clients} clients", opened))
    print(f"{'metric':<34}{'n':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for r in rows:
        print(
            f"{r['name']:<34}{r['n']:>6}{r['p50_ms']:>10.1f}{r['p90_ms']:>10.1f}"
            f"{r['p99_ms']:>10.1f}{r['mean_ms']:>10.1f}"
        )
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "db": args.db,
        "job": JOB,
        "clip": CLIP,
        "clip_e2e_median_s": statistics.median(full) if full else None,
        "rows": rows,
        "closed_loop_throughput_rps": len(closed) / max(1e-9, sum(closed) / args.clients),
        "open_loop_achieved_rps": len(opened) / open_s,
        "goals": {"overhead_p50_ms": 150, "submit_p99_ms": 50, "clip_e2e_median_s": 8.0},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
