"""What the scheduling policies cost a lease, on SQLite and PostgreSQL.

A queue of ``--jobs`` jobs from ``--tenants`` tenants (one tenant holds half of them),
then ``--leases`` leases of one job by one worker, timed three ways:

- ``plain``: the store's claim by priority and age alone (no policy);
- ``placement``: the placement policy before this work (width, aging, priority, size)
  over the same candidates, without fair share or affinity;
- ``policies``: what ``POST /internal/v1/leases`` runs now: the lease context (tenant
  usage, fair-share tenants' queue heads, affinity), then the claim;

and ``--batch`` leases of ``max_jobs=4`` through the policies. Prints a table and
writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cinecloud.api import build_state
from cinecloud.api.scheduling import LeaseAsk, placement
from cinecloud.api.state import AppState
from cinecloud.config import load_config
from cinecloud.jobs import NewJob
from cinecloud.scheduler import JobShape, PlacementPolicy, lease_order
from cinecloud.testing.databases import temp_database

MODEL = "cinecloud/tiny-wan"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def fill(state: AppState, jobs: int, tenants: int) -> None:
    ids = [state.accounts.ensure_tenant(f"t{i}").id for i in range(tenants)]
    work = state.service.work("wan-t2v", JobShape(64, 64, 5, 2, 5.0))
    params = {"width": 64, "height": 64, "num_frames": 5, "steps": 2, "guidance_scale": 5.0}
    for n in range(jobs):
        tenant = ids[0] if n % 2 else ids[n // 2 % tenants]
        state.jobs.create_job(
            NewJob(
                tenant_id=tenant,
                model=MODEL,
                prompt="a red ball",
                params={**params, "steps": 2 + n % 3},
                seconds="1",
                size="64x64",
                seed=n,
                work_s=work,
            )
        )


def timed(leases: int, one: Callable[[], int]) -> dict[str, float]:
    took: list[float] = []
    claimed = 0
    for _ in range(leases):
        start = time.perf_counter()
        claimed += one()
        took.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": pct(took, 50), "p95_ms": pct(took, 95), "jobs": claimed}


def run(kind: str, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    with temp_database(kind, home) as url:
        cfg = load_config(server={"home": home / kind}, db={"url": url})
        state = build_state(cfg)
        fill(state, args.jobs, args.tenants)
        s = cfg.scheduler
        q = cfg.queue
        worker = state.workers.register(None, "bench", {"models": [MODEL], "width": 1})

        def plain() -> int:
            return len(state.jobs.lease(worker, [MODEL], ttl_s=q.lease_ttl_s))

        def width_only() -> int:
            order = lease_order(
                1, PlacementPolicy(s.aging_s, s.max_parallel), state.service, lambda _: "wan-t2v"
            )
            got = state.jobs.lease(
                worker, [MODEL], ttl_s=q.lease_ttl_s, order=order, candidates=s.candidates
            )
            return len(got)

        def policies(max_jobs: int = 1) -> int:
            plan = placement(state, LeaseAsk(worker, [MODEL], 1, max_jobs, loaded=[MODEL]))
            got = state.jobs.lease(
                worker,
                [MODEL],
                ttl_s=q.lease_ttl_s,
                max_jobs=max_jobs,
                order=plan.order,
                candidates=s.candidates,
                tenants=plan.tenants,
                per_tenant=plan.per_tenant,
            )
            return len(got)

        out = {
            "plain": timed(args.leases, plain),
            "placement": timed(args.leases, width_only),
            "policies": timed(args.leases, policies),
            "policies_batch4": timed(args.batch, lambda: policies(4)),
        }
        state.jobs.engine.dispose()
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--tenants", type=int, default=20)
    p.add_argument("--leases", type=int, default=200)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--db", nargs="+", default=["sqlite", "postgres"])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db:
            results[kind] = run(kind, args, Path(tmp))
    print(f"{'db':<9} {'lease':<16} {'p50 ms':>8} {'p95 ms':>8} {'jobs':>6}")
    for kind, rows in results.items():
        for name, r in rows.items():
            print(f"{kind:<9} {name:<16} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['jobs']:>6}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None}, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
