"""A bounded load test on loopback: ``--jobs`` ``POST /v1/videos`` at ``--rate`` a second
against a real ``cinecloud serve`` on 127.0.0.1 (abuse limits off), then an audit.

The model is the CPU model ``cinecloud/shapes-t2v`` at one denoise step: what is
measured is the API and the queue, not generation. ``--workers 0`` (the default) leaves
the jobs queued; ``--workers 1`` runs them too, and every job must complete (use a
smaller ``--jobs``: one CPU worker finishes a job in about a second).

Checks: every submission answered 2xx (one whose connection failed is sent again with
its Idempotency-Key, at most twice, and counted as retried), none lost (each id is
stored and, with workers, completes), none duplicated (unique ids, exactly ``--jobs``
stored, and every ``--replay-every``-th request sent again with its ``Idempotency-Key``
returns its id).
Exits 1 when a check fails.

    python benchmarks/load.py                           # 2,000 at 100/s, SQLite, no workers
    python benchmarks/load.py --db postgres
    python benchmarks/load.py --jobs 60 --rate 10 --workers 1

Prints a table and writes JSON (``--json``, default benchmarks/results/load.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cinecloud.testing.load import LoadResult, run_load

RESULTS = Path(__file__).resolve().parent / "results" / "load.json"


def table(res: LoadResult) -> Table:
    t = Table(title=f"Load test: {res.jobs} submissions at {res.rate:g}/s ({res.database})")
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows: list[tuple[str, object]] = [
        ("measured", res.measured),
        ("workers", res.workers),
        ("submit time (s)", res.submit_seconds),
        ("achieved rate (/s)", res.achieved_rate),
        ("2xx", res.ok),
        ("errors", f"{res.errors} {res.error_statuses or ''}".strip()),
        ("retried after a connection error", res.retried),
        ("lost", res.lost),
        ("duplicated", res.duplicated),
        ("idempotent replays (mismatched)", f"{res.replayed} ({res.replay_mismatches})"),
        ("submit latency p50 (ms)", res.p50_ms),
        ("submit latency p90 (ms)", res.p90_ms),
        ("submit latency p99 (ms)", res.p99_ms),
        ("submit latency max (ms)", res.max_ms),
    ]
    if res.completed is not None:
        rows += [
            ("completed", res.completed),
            ("failed", f"{res.failed} {res.failure_codes or ''}".strip()),
            ("time to complete all (s)", res.complete_seconds),
        ]
    rows.append(("load average 1/5/15 min", " / ".join(f"{x:g}" for x in res.load_average)))
    rows.append(("CPUs", res.cpus))
    for name, value in rows:
        t.add_row(name, str(value))
    return t


def passed(res: LoadResult) -> bool:
    done = res.completed is None or res.completed == res.jobs
    return (
        res.errors == 0
        and res.lost == 0
        and res.duplicated == 0
        and res.replay_mismatches == 0
        and done
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=100.0, help="submissions a second")
    ap.add_argument("--workers", type=int, default=0, help="0: only the API and queue")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--replay-every", type=int, default=10)
    ap.add_argument("--complete-s", type=float, default=600.0, help="with workers: time limit")
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = run_load(
        args.jobs,
        args.rate,
        workers=args.workers,
        database=args.db,
        replay_every=args.replay_every,
        complete_s=args.complete_s,
    )
    Console().print(table(res))
    out = res.as_dict()
    out["command"] = " ".join(["python", "benchmarks/load.py", *(argv or sys.argv[1:])])
    out["passed"] = passed(res)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'PASS' if out['passed'] else 'FAIL'}; JSON: {args.json}")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
