"""The control plane's work per job, at two commits side by side: the CPU seconds the
``cinecloud serve`` process and the worker's parent process spend per video.

Each run is a fresh service with one local worker (``cinecloud serve --workers 1``) on
SQLite. By default the engine is the test engine (``--engine fake``: 20 ms a step, a
batch costing what one job does, as on a GPU, and frames of the model's size that are
rendered for real), so that what is measured is the lease, the progress events, the
upload of each job's files and its completion, as the worker and the server do them;
``--engine model`` runs our own ``cinecloud/shapes-t2v`` instead. Jobs take ``--steps``
steps (1 by default; each step is a progress event the worker may send).
After a warm-up round of ``max_batch`` jobs, ``-k`` jobs are submitted at once and
polled once a second until all have completed (the polls, the heartbeats and the
server's background loops are in the figures too, but cost by the second, not by the
job: a short run keeps their share small). The ``--before`` commit's ``src/`` is taken
with ``git archive``; this tree's is "after". Runs alternate between the sides, for
``worker.max_batch`` 1 and ``-b``, so both see the same load; CPU seconds (psutil, user
+ system) are what other work on a shared machine disturbs least. Where the server
counts its requests (``cinecloud_http_requests_total``), the worker's requests per job
are given too (heartbeats, a fixed rate, left out).

    python benchmarks/control_plane.py --before dfbf19b -k 32 -b 4

Prints a table with the after/before ratios and writes
``benchmarks/results/control_plane.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cinecloud.testing.service import Service, control_plane_cost, limits_env, wait_videos
from cinecloud.testing.trees import checkout_src

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "cinecloud/shapes-t2v"
SIDES = ("before", "after")


FAKE_ENGINE = "cinecloud.testing.fake_runner:fake_runner_factory"


def run(
    src: Path, max_batch: int, jobs: int, tmp: Path, fake: bool, steps: int = 1
) -> dict[str, float]:
    """One fresh service on ``src``'s code; the per-job figures of ``jobs`` jobs."""
    env = {
        **limits_env(),
        "PYTHONPATH": str(src),
        "CINECLOUD_WORKER__MAX_BATCH": str(max_batch),
    }
    if fake:
        env["CINECLOUD_WORKER__RUNNER_FACTORY"] = FAKE_ENGINE
    home = Path(tempfile.mkdtemp(dir=tmp))
    svc = Service(home / "home", f"sqlite:///{home / 'c.db'}", workers=1, env=env).start()
    try:
        with svc.client() as client:

            def submit(n: int, first_seed: int) -> list[str]:
                body = {"model": MODEL, "steps": steps, "prompt": "a red star moving to the left"}
                return [
                    str(
                        client.post("/v1/videos", json={**body, "seed": first_seed + i}).json()[
                            "id"
                        ]
                    )
                    for i in range(n)
                ]

            wait_videos(client, submit(max_batch, 0), timeout=600)
            before = control_plane_cost(client, svc)
            t0 = time.monotonic()
            videos = wait_videos(client, submit(jobs, 1000), 120 + 60 * jobs, poll_s=1.0)
            wall = time.monotonic() - t0
            after = control_plane_cost(client, svc)
    finally:
        svc.stop()
    if any(v["status"] != "completed" for v in videos.values()):
        raise RuntimeError("a job did not complete")
    out = {f"{k}_per_job": (after[k] - before[k]) / jobs for k in after if k in before}
    return {**out, "wall_s": wall}


def _table(results: dict[str, dict[str, dict[str, float]]], jobs: int, steps: int) -> Table:
    table = Table(title=f"control-plane work per job ({jobs} jobs of {steps} steps a run)")
    for col in ("max_batch", "measure", "before", "after", "after / before"):
        table.add_column(col, justify="right")
    for batch, sides in results.items():
        for key, label in (
            ("server_cpu_s_per_job", "server CPU ms/job"),
            ("worker_cpu_s_per_job", "worker parent CPU ms/job"),
            ("worker_requests_per_job", "worker requests/job"),
        ):
            old, new = sides["before"].get(key), sides["after"].get(key)
            scale = 1 if "requests" in key else 1000
            cells = [f"{v * scale:.2f}" if v is not None else "-" for v in (old, new)]
            ratio = f"{new / old:.2f}" if old and new is not None else "-"
            table.add_row(batch, label, *cells, ratio)
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--before", required=True, help="git ref of the 'before' side")
    p.add_argument("-k", "--jobs", type=int, default=32)
    p.add_argument("--engine", choices=["fake", "model"], default="fake")
    p.add_argument("-b", "--batch", type=int, default=4, help="the batched worker.max_batch")
    p.add_argument("--steps", type=int, default=1, help="denoise steps a job")
    p.add_argument("--json", type=Path, default=RESULTS / "control_plane.json")
    args = p.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        srcs = {
            "before": checkout_src(ROOT, args.before, Path(tmp) / "before", links=("models",)),
            "after": ROOT / "src",
        }
        for batch in (1, args.batch):
            results[str(batch)] = {
                side: run(
                    srcs[side], batch, args.jobs, Path(tmp), args.engine == "fake", args.steps
                )
                for side in SIDES
            }
    Console(width=120).print(_table(results, args.jobs, args.steps))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"date": time.strftime("%Y-%m-%d"), "before": args.before, "jobs": args.jobs}
    record["engine"] = args.engine
    record["steps"] = args.steps
    args.json.write_text(json.dumps({**record, "results": results}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
