"""How busy the engine stays under a saturating queue, with and without overlap.

A real server and one local worker (``cinecloud serve --workers 1``); after one warm-up
job (the model load), ``--jobs`` jobs are submitted at once and the client polls until
all have completed. The engine is busy while it encodes, denoises and decodes (the
``text_encode``, ``denoise`` and ``decode`` timings each job reports); busy share =
summed engine seconds / wall seconds from the submissions to the last completion. Run
once with ``worker.overlap`` off (one job at a time: the engine waits while a job
renders, uploads and completes and the next is leased) and once on (the next job is
leased and denoised while the last one renders).

    python benchmarks/engine_busy.py                      # default model, 10 jobs
    python benchmarks/engine_busy.py --jobs 10 --device cuda

Prints a table and writes ``benchmarks/results/engine_busy.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cinecloud.testing.databases import temp_database
from cinecloud.testing.service import Service

ENGINE = ("text_encode", "denoise", "decode")
PROMPT = "a red star moving to the left on a sky background"
RESULTS = Path(__file__).resolve().parent / "results"


def _wait(client: Any, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll until every job has ended; their final objects."""
    deadline = time.perf_counter() + timeout
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(ids):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{len(ids) - len(done)} jobs still running after {timeout} s")
        for video_id in ids:
            if video_id in done:
                continue
            video = client.get(f"/v1/videos/{video_id}").json()
            if video["status"] in ("completed", "failed", "canceled"):
                done[video_id] = video
        time.sleep(0.02)
    return done


def run_mode(
    overlap: bool, jobs: int, request: dict[str, Any], env: dict[str, str], tmp: Path, db: str
) -> dict[str, Any]:
    """One fresh service; warm-up, then ``jobs`` at once."""
    settings = {**env, "CINECLOUD_WORKER__OVERLAP": "true" if overlap else "false"}
    with temp_database(db, tmp) as url:
        svc = Service(tmp / ("on" if overlap else "off"), url, workers=1, env=settings).start()
        try:
            with svc.client() as client:
                warm = client.post("/v1/videos", json={**request, "seed": 10_000}).json()
                _wait(client, [warm["id"]], timeout=600)
                started = time.perf_counter()
                ids = [
                    client.post("/v1/videos", json={**request, "seed": i}).json()["id"]
                    for i in range(jobs)
                ]
                videos = _wait(client, ids, timeout=60 * jobs)
                wall = time.perf_counter() - started
        finally:
            svc.stop()
    failed = [v for v in videos.values() if v["status"] != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not complete: {failed[0].get('error')}")
    engine = [sum(float(v["timings"][k]) for k in ENGINE) for v in videos.values()]
    render = [float(v["timings"]["render"]) for v in videos.values()]
    upload = [float(v["timings"]["upload"]) for v in videos.values()]
    return {
        "overlap": overlap,
        "jobs": jobs,
        "wall_s": wall,
        "engine_s": sum(engine),
        "busy": sum(engine) / wall,
        "engine_per_job_s": sum(engine) / jobs,
        "render_per_job_s": sum(render) / jobs,
        "upload_per_job_s": sum(upload) / jobs,
        "device": next(iter(videos.values()))["engine"].get("device"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=10)
    p.add_argument("--model", default=None, help="default: the service's default model")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--device", default=None, help="engine device (default: the config's)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--modes", nargs="+", choices=("off", "on"), default=["off", "on"])
    p.add_argument("--json", type=Path, default=RESULTS / "engine_busy.json")
    args = p.parse_args(argv)

    request: dict[str, Any] = {"prompt": PROMPT}
    if args.model:
        request["model"] = args.model
    if args.steps:
        request["steps"] = args.steps
    env = {"CINECLOUD_ENGINE__DEVICE": args.device} if args.device else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            rows.append(run_mode(mode == "on", args.jobs, request, env, Path(tmp) / mode, args.db))

    table = Table(title=f"Engine busy share, {args.jobs} jobs queued at once ({rows[0]['device']})")
    for col in (
        "overlap",
        "wall s",
        "engine s",
        "busy",
        "engine/job s",
        "render/job s",
        "upload/job s",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            "on" if r["overlap"] else "off",
            f"{r['wall_s']:.2f}",
            f"{r['engine_s']:.2f}",
            f"{100 * r['busy']:.1f}%",
            f"{r['engine_per_job_s']:.3f}",
            f"{r['render_per_job_s']:.3f}",
            f"{r['upload_per_job_s']:.3f}",
        )
    Console(width=120).print(table)
    result = {"date": time.strftime("%Y-%m-%d"), "request": request, "db": args.db, "rows": rows}
    if len(rows) == 2:
        result["wall_ratio_off_on"] = rows[0]["wall_s"] / rows[1]["wall_s"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
