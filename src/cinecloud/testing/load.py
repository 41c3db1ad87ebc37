"""A bounded load test of the submit path: ``N`` ``POST /v1/videos`` at ``R`` a second
against a real ``cinecloud serve`` on 127.0.0.1, then an audit of what was stored.

The model is the CPU model ``cinecloud/shapes-t2v`` at one denoise step and its smallest
shape, so what is measured is the API and the queue, not generation. With ``workers=0``
the jobs stay queued; with workers, every job must also complete.

The audit: every submission answered 2xx; no job lost (every id returned is listed by
``GET /v1/videos`` and retrievable, and with workers every one completed); none
duplicated (the ids are unique, the listing holds exactly ``N`` jobs, and resending a
sample of the requests with their ``Idempotency-Key`` returns the same ids without new
jobs). Used by benchmarks/load.py (the full run) and tests/integration/test_load.py.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cinecloud.testing.databases import temp_database
from cinecloud.testing.service import Service, limits_env

__all__ = ["LoadResult", "run_load"]

MODEL = "cinecloud/shapes-t2v"
# One denoise step of its only shape (64x64, 16 frames): a job is mostly API, queue and
# render bookkeeping.
BODY: dict[str, Any] = {"model": MODEL, "steps": 1}
MEASURED = "API and queue (CPU model cinecloud/shapes-t2v, 1 step, 64x64, 16 frames)"


@dataclass
class LoadResult:
    """What a run sent, what it got back and what the audit found."""

    jobs: int
    rate: float
    workers: int
    database: str
    measured: str = MEASURED
    started_at: str = ""
    submit_seconds: float = 0.0
    achieved_rate: float = 0.0
    ok: int = 0
    errors: int = 0
    retried: int = 0
    error_statuses: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    replayed: int = 0
    replay_mismatches: int = 0
    completed: int | None = None
    failed: int | None = None
    failure_codes: dict[str, int] = field(default_factory=dict)
    complete_seconds: float | None = None
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    load_average: list[float] = field(default_factory=list)
    cpus: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


#: A submission whose connection failed (e.g. a pooled keep-alive connection the server
#: closed as it was reused) is sent again with its Idempotency-Key, as a client should:
#: at most this many times. Each such retry is counted (``LoadResult.retried``).
RETRIES = 2


async def _submit(
    client: httpx.AsyncClient, i: int, run: str, res: LoadResult | None = None
) -> tuple[int, str | None, float, str]:
    key = f"{run}-{i}"
    body = {**BODY, "prompt": f"load test job {i}: a red ball bouncing"}
    t0 = time.perf_counter()
    for attempt in range(RETRIES + 1):
        try:
            resp = await client.post("/v1/videos", json=body, headers={"Idempotency-Key": key})
            break
        except httpx.TransportError as exc:
            if attempt == RETRIES:
                return 0, None, time.perf_counter() - t0, type(exc).__name__
            if res is not None:
                res.retried += 1
    took = time.perf_counter() - t0
    job_id = resp.json().get("id") if resp.is_success else None
    return resp.status_code, job_id, took, key


async def _paced(
    client: httpx.AsyncClient, n: int, rate: float, run: str, res: LoadResult
) -> list[Any]:
    """Start submission ``i`` at ``i / rate`` seconds, whatever the earlier ones take."""
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_submit(client, i, run, res)))
    return await asyncio.gather(*tasks)


async def _listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every video of the caller's tenant, through the list's pages."""
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, "order": "asc"}
        if after:
            params["after"] = after
        page = (await client.get("/v1/videos", params=params)).raise_for_status().json()
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["last_id"]


async def _drive(svc: Service, res: LoadResult, replay_every: int, complete_s: float) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    headers = {"Authorization": f"Bearer {svc.admin_key}"}
    async with httpx.AsyncClient(
        base_url=svc.url, headers=headers, timeout=60, limits=limits
    ) as client:
        run = f"load-{int(time.time())}"
        t0 = time.perf_counter()
        results = await _paced(client, res.jobs, res.rate, run, res)
        res.submit_seconds = round(time.perf_counter() - t0, 3)
        res.achieved_rate = round(res.jobs / res.submit_seconds, 2)
        ids: list[str] = []
        latencies: list[float] = []
        for status, job_id, took, detail in results:
            latencies.append(took * 1000)
            if 200 <= status < 300 and job_id:
                res.ok += 1
                ids.append(job_id)
            else:
                res.errors += 1
                # the status, or the client's exception when no answer came
                what = str(status) if status else detail
                res.error_statuses[what] = res.error_statuses.get(what, 0) + 1
        res.p50_ms = round(_quantile(latencies, 0.50), 2)
        res.p90_ms = round(_quantile(latencies, 0.90), 2)
        res.p99_ms = round(_quantile(latencies, 0.99), 2)
        res.max_ms = round(max(latencies), 2)
        # idempotency: the same request and key again returns the same job, creates none
        sample = [r for i, r in enumerate(results) if i % replay_every == 0 and r[1]]
        again = await asyncio.gather(
            *(_submit(client, int(r[3].rsplit("-", 1)[1]), run) for r in sample)
        )
        res.replayed = len(again)
        res.replay_mismatches = sum(
            1 for first, second in zip(sample, again, strict=True) if second[1] != first[1]
        )
        listed = await _listed(client)
        listed_ids = [v["id"] for v in listed]
        # the same id twice, or more jobs stored than were accepted (a replay made one)
        res.duplicated = (len(ids) - len(set(ids))) + max(0, len(listed_ids) - len(set(ids)))
        res.lost = len(set(ids) - set(listed_ids))
        if res.workers:
            await _await_completion(client, res, set(ids), complete_s)


async def _await_completion(
    client: httpx.AsyncClient, res: LoadResult, ids: set[str], limit_s: float
) -> None:
    t0 = time.perf_counter()
    while True:
        videos = {v["id"]: v for v in await _listed(client)}
        status = {i: v["status"] for i, v in videos.items()}
        done = [i for i in ids if status.get(i) in ("completed", "failed", "canceled")]
        if len(done) == len(ids) or time.perf_counter() - t0 > limit_s:
            break
        await asyncio.sleep(1.0)
    res.complete_seconds = round(time.perf_counter() - t0, 2)
    res.completed = sum(1 for i in ids if status.get(i) == "completed")
    res.failed = sum(1 for i in ids if status.get(i) == "failed")
    for i in ids:
        if status.get(i) == "failed":
            code = (videos[i].get("error") or {}).get("code") or "unknown"
            res.failure_codes[code] = res.failure_codes.get(code, 0) + 1
    # a job that never finished within the limit counts as lost
    res.lost += len(ids) - len(done)


def run_load(
    jobs: int = 2000,
    rate: float = 100.0,
    *,
    workers: int = 0,
    database: str = "sqlite",
    replay_every: int = 10,
    complete_s: float = 600.0,
    root: Path | None = None,
) -> LoadResult:
    """Start a server on loopback (abuse limits off), submit, audit, stop it."""
    res = LoadResult(jobs=jobs, rate=rate, workers=workers, database=database)
    res.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    res.cpus = os.cpu_count() or 0
    with tempfile.TemporaryDirectory(dir=root) as tmp, temp_database(database, Path(tmp)) as url:
        svc = Service(Path(tmp) / "home", url, workers=workers, env=limits_env()).start()
        try:
            asyncio.run(_drive(svc, res, replay_every, complete_s))
        finally:
            res.load_average = [round(x, 2) for x in os.getloadavg()]
            svc.stop()
    return res
