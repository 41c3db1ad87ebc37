"""Videos per hour through the whole service, with and without worker batching.

A real server and one local worker (``cinecloud serve --workers 1``) with our own model,
``cinecloud/shapes-t2v`` (its defaults: 16 frames at 64x64, 24 steps). After two warm-up
rounds of ``max_batch`` jobs (the model load, and on a GPU the batch shapes' first runs,
which compile), ``-k`` small jobs (different prompts and seeds, one shape) are submitted
at once from 16 threads and the client polls until all have ended. Run twice, each on a
fresh service: with ``worker.max_batch = 1`` (one job per engine call) and ``= -b`` (up to B
compatible jobs leased together and denoised as one batch, workers.batches).

Videos per hour = K / wall, the wall running from just before the first submission to
the last completion as the server recorded it. Per job it also reports the engine
seconds billed (a batch's engine time split evenly among its jobs), the render and the
upload seconds, and how the jobs were batched.

    python benchmarks/batch_service.py --device cuda              # K=64, B=8
    python benchmarks/batch_service.py --device cuda --render-processes 12
    python benchmarks/batch_service.py -k 16 -b 4 --steps 4       # a short CPU run

On a CPU one job keeps the cores busy already, so batching gains nothing there; the
measure that counts is on a GPU. Prints a table and writes
``benchmarks/results/batch_service.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cinecloud.testing.databases import temp_database
from cinecloud.testing.service import Service, control_plane_cost, limits_env, wait_videos

MODEL = "cinecloud/shapes-t2v"
ENGINE = ("text_encode", "denoise", "decode")
RESULTS = Path(__file__).resolve().parent / "results"
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "pink")
SHAPES = ("star", "circle", "square", "triangle")


def prompt(i: int) -> str:
    colour, shape = COLOURS[i % len(COLOURS)], SHAPES[(i // len(COLOURS)) % len(SHAPES)]
    return f"a {colour} {shape} moving to the left on a sky background"


def _completed_at(client: Any, video_id: str) -> float:
    """When the server recorded the job's completion (its event stream ends with it)."""
    with client.stream("GET", f"/v1/videos/{video_id}/events") as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                if event["type"] == "completed":
                    return float(event["created_at"])
    raise LookupError(f"{video_id}: no completed event")


def _engine_s(video: dict[str, Any]) -> float:
    """The engine seconds billed to the job: its share of its batch's engine time."""
    usage = video.get("usage") or {}
    if "gpu_seconds" in usage:
        return float(usage["gpu_seconds"])
    engine = video.get("engine") or {}
    if "batch_engine_s" in engine:
        return float(engine["batch_engine_s"]) / int(engine.get("batch", 1))
    return sum(float(video["timings"][k]) for k in ENGINE)


def _submit(client: Any, bodies: list[dict[str, Any]]) -> list[str]:
    """Create the videos from 16 threads, so the queue fills faster than one worker
    leases (one client at a time would let it take the first jobs one by one)."""

    def one(body: dict[str, Any]) -> str:
        response = client.post("/v1/videos", json=body)
        if response.status_code != 200:
            raise SystemExit(f"the server refused the job: {response.text}")
        return str(response.json()["id"])

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, bodies))


def run_mode(
    max_batch: int,
    jobs: int,
    request: dict[str, Any],
    env: dict[str, str],
    tmp: Path,
    db: str,
) -> dict[str, Any]:
    """One fresh service with ``worker.max_batch``; a warm-up of ``max_batch`` jobs (the
    model load, and the batch shapes' first runs, which compile on a GPU), then ``jobs``
    at once."""
    settings = {**limits_env(), **env, "CINECLOUD_WORKER__MAX_BATCH": str(max_batch)}
    here = tmp / f"batch{max_batch}"
    here.mkdir(parents=True)
    started = time.monotonic()

    def phase(what: str) -> None:  # where a run cut short by a time limit got to
        print(f"max_batch {max_batch}: {what} at {time.monotonic() - started:.1f} s", flush=True)

    with temp_database(db, here) as url:
        svc = Service(here / "home", url, workers=1, env=settings).start()
        phase("server up")
        try:
            with svc.client() as client:
                for round_ in range(2):  # the first lease may take part of a batch
                    warm = [
                        {**request, "prompt": prompt(i), "seed": round_ * max_batch + i}
                        for i in range(max_batch)
                    ]
                    wait_videos(client, _submit(client, warm), timeout=900)
                    phase(f"warm-up round {round_ + 1} done")
                before = control_plane_cost(client, svc)
                t0 = time.time()  # the server's clock too: both read the wall clock
                bodies = [{**request, "prompt": prompt(i), "seed": 1000 + i} for i in range(jobs)]
                ids = _submit(client, bodies)
                videos = wait_videos(client, ids, timeout=120 + 60 * jobs)
                cost = control_plane_cost(client, svc)
                phase(f"{jobs} jobs done")
                failed = [v for v in videos.values() if v["status"] != "completed"]
                if failed:
                    error = failed[0].get("error")
                    raise RuntimeError(f"{len(failed)} jobs did not complete: {error}")
                end = max(_completed_at(client, i) for i in ids)
        except BaseException:
            print(svc.tail(60), file=sys.stderr)
            raise
        finally:
            svc.stop()
    wall = end - t0
    done = list(videos.values())
    sizes = collections.Counter(int((v.get("engine") or {}).get("batch", 1)) for v in done)
    return {
        "max_batch": max_batch,
        "jobs": jobs,
        "wall_s": wall,
        "videos_per_hour": jobs / wall * 3600,
        "engine_per_job_s": statistics.fmean(_engine_s(v) for v in done),
        "render_per_job_s": statistics.fmean(float(v["timings"]["render"]) for v in done),
        "upload_per_job_s": statistics.fmean(float(v["timings"]["upload"]) for v in done),
        # how many jobs ran in batches of each size
        "batch_sizes": {str(k): n for k, n in sorted(sizes.items())},
        # the worker's requests to the control plane, and CPU seconds, per job
        **{f"{k}_per_job": (cost[k] - before[k]) / jobs for k in cost},
        "device": (done[0].get("engine") or {}).get("device"),
    }


def _table(rows: list[dict[str, Any]], jobs: int, base: float | None = None) -> Table:
    """The rows, each one's videos per hour as a ratio to ``base`` (the first row's)."""
    base = base or rows[0]["videos_per_hour"]
    table = Table(title=f"{MODEL}: {jobs} small jobs queued at once ({rows[0]['device']})")
    for col in (
        "max_batch",
        "wall s",
        "videos/hour",
        "ratio",
        "engine/job s",
        "render/job s",
        "upload/job s",
        "batch size: jobs",
        "worker requests/job",
        "server CPU ms/job",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["max_batch"]),
            f"{r['wall_s']:.2f}",
            f"{r['videos_per_hour']:.0f}",
            f"{r['videos_per_hour'] / base:.2f}x",
            f"{r['engine_per_job_s']:.3f}",
            f"{r['render_per_job_s']:.3f}",
            f"{r['upload_per_job_s']:.3f}",
            ", ".join(f"{size}: {n}" for size, n in r["batch_sizes"].items()),
            f"{r['worker_requests_per_job']:.2f}",
            f"{r['server_cpu_s_per_job'] * 1000:.1f}" if "server_cpu_s_per_job" in r else "-",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("-k", "--jobs", type=int, default=64, help="jobs queued at once")
    p.add_argument("-b", "--batch", type=int, default=8, help="worker.max_batch to compare")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--device", default=None, help="engine device (default: the config's)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument(
        "--render-processes",
        type=int,
        default=None,
        help="worker.render_processes (default: the worker's, CPUs / 4 up to 4): at a few "
        "hundredths of a second of GPU time per video, rendering sets the pace",
    )
    p.add_argument("--json", type=Path, default=RESULTS / "batch_service.json")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.batch < 2:
        p.error("-k must be at least 1 and -b at least 2")

    request: dict[str, Any] = {"model": MODEL}
    if args.steps:
        request["steps"] = args.steps
    env = {"CINECLOUD_ENGINE__DEVICE": args.device} if args.device else {}
    if args.render_processes is not None:
        env["CINECLOUD_WORKER__RENDER_PROCESSES"] = str(args.render_processes)
    rows = []
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        for max_batch in (1, args.batch):
            rows.append(run_mode(max_batch, args.jobs, request, env, Path(tmp), args.db))
            # each mode's row as soon as it is measured: a run cut short keeps it
            console.print(_table(rows[-1:], args.jobs, rows[0]["videos_per_hour"]))
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"partial": True, "rows": rows}, indent=2) + "\n")

    console.print(_table(rows, args.jobs))
    ratio = rows[1]["videos_per_hour"] / rows[0]["videos_per_hour"]
    print(f"videos/hour, max_batch={args.batch} over max_batch=1: {ratio:.2f}x")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "model": MODEL,
        "request": request,
        "db": args.db,
        "render_processes": args.render_processes,
        "rows": rows,
        "ratio": ratio,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
