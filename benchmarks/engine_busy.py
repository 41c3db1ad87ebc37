"""How busy the engine stays under a saturating queue: with and without overlap, and with
one or more render processes.

A real server and one local worker (``cinecloud serve --workers 1``); after one warm-up
job (the model load), ``--jobs`` jobs are submitted at once and the client polls until
all have completed. The engine is busy while it encodes, denoises and decodes (the
``text_encode``, ``denoise`` and ``decode`` timings each job reports); busy share =
summed engine seconds / wall seconds from the submissions to the last completion. Run
once with ``worker.overlap`` off (one job at a time: the engine waits while a job
renders, uploads and completes and the next is leased) and once on (the next job waits
in the engine process while earlier ones render), for each ``--render-processes`` count
(``worker.render_processes``; overlap off runs once, with the first). Besides the full
wall it reports the steady state: from the first engine start to the last engine end,
where only the gaps between jobs keep the engine idle (busy share = engine seconds /
that window), and the gaps themselves.

    python benchmarks/engine_busy.py                      # default model, 10 jobs
    python benchmarks/engine_busy.py --jobs 10 --device cuda
    python benchmarks/engine_busy.py --jobs 10 --steps 2 --modes on   # short jobs on a CPU
    python benchmarks/engine_busy.py --jobs 10 --steps 2 --render-processes 1 2

The wall runs from just before the first submission to the last completion as the
server recorded it. Besides the summary it prints, per mode, each job's timeline (lease,
engine start and end, render seconds, upload start, completion; worker-side moments from
the ``at`` stamps on its progress events) and where the wall without engine work went:
before the first engine start, between jobs, and after the last engine end (the last
render, its pickup, upload and completion). With several runs, ratios to the first.

On a GPU it also samples NVML's utilisation of the GPU (the share of each sample period
in which a kernel ran) every 0.1 s and reports its mean over the wall: busy as the card
saw it, engine seconds aside.

A real family at full size runs through the same worker from a random-weight
checkpoint (``benchmarks/random_checkpoint.py``) in ``--models-dir``:

    python benchmarks/random_checkpoint.py --out models --device cuda
    python benchmarks/engine_busy.py --device cuda --modes on --models-dir models \
        --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --steps 20

On a GPU our own model's jobs take about 0.04 s of engine time, so these fixed costs
weigh heavily. ``--steps 1`` to ``3`` gives jobs of a similar length on a CPU. A small
CPU box shares its cores between the engine, the server, the worker and anything else
running: compare runs made back to back under the same load, several times.

Prints the tables and writes ``benchmarks/results/engine_busy.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cinecloud.telemetry.gpu import sample_gpus
from cinecloud.testing.databases import temp_database
from cinecloud.testing.service import Service, limits_env, wait_videos

ENGINE = ("text_encode", "denoise", "decode")
PROMPT = "a red star moving to the left on a sky background"
RESULTS = Path(__file__).resolve().parent / "results"


def _events(client: Any, video_id: str) -> list[dict[str, Any]]:
    """The job's recorded events (its SSE stream, which ends at the final one)."""
    events = []
    with client.stream("GET", f"/v1/videos/{video_id}/events") as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    return events


def _first(events: list[dict[str, Any]], kind: str, stage: str | None = None) -> dict[str, Any]:
    for ev in events:
        if ev["type"] == kind and (stage is None or ev.get("stage") == stage):
            return ev
    raise LookupError(f"no {kind} {stage or ''} event recorded")


def timeline(video: dict[str, Any], events: list[dict[str, Any]], t0: float) -> dict[str, float]:
    """One job's timeline in seconds after ``t0``: lease, engine start and end, render
    seconds, upload start and completion. Worker-side moments come from the ``at`` stamps
    of its progress events, control-plane ones from when the events were recorded."""
    t = video["timings"]
    denoise = _first(events, "progress", "denoise")  # the first: step 0, after the encode
    return {
        "lease": _first(events, "started")["created_at"] - t0,
        "engine_start": denoise["at"] - float(t["text_encode"]) - t0,
        "engine_end": _first(events, "progress", "render")["at"] - t0,
        "render_s": float(t["render"]),
        "upload_start": _first(events, "progress", "upload")["at"] - t0,
        "complete": _first(events, "completed")["created_at"] - t0,
    }


def gaps(jobs: list[dict[str, float]]) -> dict[str, float]:
    """Where the wall time without engine work went: before the first engine start, between
    one job's engine end and the next one's start, and after the last engine end (split
    into the last render, the wait for its pickup, and upload plus completion)."""
    jobs = sorted(jobs, key=lambda j: j["engine_start"])
    last = jobs[-1]
    end = max(j["complete"] for j in jobs)
    pickup = last["upload_start"] - last["engine_end"] - last["render_s"]
    return {
        "start": jobs[0]["engine_start"],
        "boundaries": sum(
            max(0.0, nxt["engine_start"] - prev["engine_end"])
            for prev, nxt in itertools.pairwise(jobs)
        ),
        "tail_render": last["render_s"],
        "tail_pickup": pickup,
        "tail_upload_complete": end - last["upload_start"],
    }


def steady(jobs: list[dict[str, float]], engine_s: float) -> dict[str, Any]:
    """The steady state: from the first engine start to the last engine end, the engine's
    busy share in it and the gaps between one job's engine end and the next one's start."""
    jobs = sorted(jobs, key=lambda j: j["engine_start"])
    window = max(j["engine_end"] for j in jobs) - jobs[0]["engine_start"]
    between = [
        max(0.0, nxt["engine_start"] - prev["engine_end"]) for prev, nxt in itertools.pairwise(jobs)
    ]
    return {
        "window_s": window,
        "busy": engine_s / window if window > 0 else 0.0,
        "gaps_s": between,
        "gap_mean_s": sum(between) / len(between) if between else 0.0,
        "gap_max_s": max(between, default=0.0),
    }


class UtilisationSampler:
    """NVML's utilisation of GPU 0, sampled every ``period_s`` on a thread, with the wall
    clock of each sample; nothing without NVML or a GPU."""

    def __init__(self, period_s: float = 0.1) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            gpus = sample_gpus()
            if not gpus:
                return
            self.samples.append((time.time(), gpus[0].utilization))

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self, start: float, end: float) -> float | None:
        """The mean utilisation of the samples taken from ``start`` to ``end``."""
        inside = [u for t, u in self.samples if start <= t <= end]
        return statistics.fmean(inside) if inside else None


def run_mode(
    overlap: bool,
    jobs: int,
    request: dict[str, Any],
    env: dict[str, str],
    tmp: Path,
    db: str,
    render_processes: int | None = None,
    log_to: Path | None = None,
) -> dict[str, Any]:
    """One fresh service; warm-up, then ``jobs`` at once."""
    # one job per engine call: this measures the overlap of jobs (batches of several are
    # benchmarks/batch_service.py's)
    settings = {
        **limits_env(),
        **env,
        "CINECLOUD_WORKER__OVERLAP": str(overlap).lower(),
        "CINECLOUD_WORKER__MAX_BATCH": "1",
    }
    if render_processes is not None:
        settings["CINECLOUD_WORKER__RENDER_PROCESSES"] = str(render_processes)
    with temp_database(db, tmp) as url:
        svc = Service(tmp / "home", url, workers=1, env=settings).start()
        try:
            with svc.client() as client:
                response = client.post("/v1/videos", json={**request, "seed": 10_000})
                if response.status_code != 200:
                    raise SystemExit(f"the server refused the job: {response.text}")
                wait_videos(client, [response.json()["id"]], timeout=900)
                with UtilisationSampler() as gpu:
                    t0 = time.time()  # the server's clock too: both read the wall clock
                    ids = [
                        client.post("/v1/videos", json={**request, "seed": i}).json()["id"]
                        for i in range(jobs)
                    ]
                    videos = wait_videos(client, ids, timeout=120 * jobs)
                failed = [v for v in videos.values() if v["status"] != "completed"]
                if failed:
                    error = failed[0].get("error")
                    raise RuntimeError(f"{len(failed)} jobs did not complete: {error}")
                times = [timeline(videos[i], _events(client, i), t0) for i in ids]
        except BaseException:
            print(svc.tail(80), file=sys.stderr)  # the server's and worker's log, to see why
            raise
        finally:
            svc.stop()
            if log_to is not None:  # the server's and worker's log, beside the JSON
                log_to.write_bytes(svc.log.read_bytes())
    wall = max(j["complete"] for j in times)
    gpu_busy = gpu.mean(t0, t0 + wall)
    engine = [sum(float(v["timings"][k]) for k in ENGINE) for v in videos.values()]
    render = [float(v["timings"]["render"]) for v in videos.values()]
    upload = [float(v["timings"]["upload"]) for v in videos.values()]
    return {
        "overlap": overlap,
        "render_processes": render_processes,
        "jobs": jobs,
        "wall_s": wall,
        "engine_s": sum(engine),
        "busy": sum(engine) / wall,
        "gpu_utilisation": gpu_busy,
        "gpu_samples": len(gpu.samples),
        "engine_per_job_s": sum(engine) / jobs,
        "render_per_job_s": sum(render) / jobs,
        "upload_per_job_s": sum(upload) / jobs,
        "stages_per_job_s": {
            k: sum(float(v["timings"].get(k, 0.0)) for v in videos.values()) / jobs for k in ENGINE
        },
        "device": next(iter(videos.values()))["engine"].get("device"),
        "video": {k: next(iter(videos.values())).get(k) for k in ("size", "num_frames", "steps")},
        "gaps_s": gaps(times),
        "steady": steady(times, sum(engine)),
        "timeline": sorted(times, key=lambda j: j["engine_start"]),
    }


def label(row: dict[str, Any]) -> str:
    """``off``, or ``on`` with its render processes (``on/2``; ``on`` for the default)."""
    if not row["overlap"]:
        return "off"
    n = row.get("render_processes")
    return "on" if n is None else f"on/{n}"


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run against the first: wall and steady window (first / this: above 1 is
    faster), and busy shares (this / first)."""
    base = rows[0]
    return [
        {
            "run": label(r),
            "vs": label(base),
            "wall_speedup": base["wall_s"] / r["wall_s"],
            "steady_speedup": base["steady"]["window_s"] / r["steady"]["window_s"],
            "busy_ratio": r["busy"] / base["busy"],
            "steady_busy_ratio": r["steady"]["busy"] / base["steady"]["busy"],
        }
        for r in rows[1:]
    ]


def _summary(rows: list[dict[str, Any]], jobs: int) -> Table:
    video = rows[0].get("video") or {}
    shape = f"{video.get('size')}, {video.get('num_frames')} frames, {video.get('steps')} steps"
    where = f"{rows[0]['device']}; {shape}"
    table = Table(title=f"Engine busy share, {jobs} jobs queued at once ({where})")
    for col in (
        "overlap/render",
        "wall s",
        "engine s",
        "busy",
        "GPU util",
        "steady s",
        "steady busy",
        "gap mean s",
        "gap max s",
        "engine/job s",
        "render/job s",
        "upload/job s",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        st = r["steady"]
        table.add_row(
            label(r),
            f"{r['wall_s']:.2f}",
            f"{r['engine_s']:.2f}",
            f"{100 * r['busy']:.1f}%",
            "-" if r["gpu_utilisation"] is None else f"{100 * r['gpu_utilisation']:.1f}%",
            f"{st['window_s']:.2f}",
            f"{100 * st['busy']:.1f}%",
            f"{st['gap_mean_s']:.3f}",
            f"{st['gap_max_s']:.3f}",
            f"{r['engine_per_job_s']:.3f}",
            f"{r['render_per_job_s']:.3f}",
            f"{r['upload_per_job_s']:.3f}",
        )
    return table


def _ratios_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Against {label(rows[0])} (speed-up above 1 is faster)")
    for col in ("run", "wall speed-up", "steady speed-up", "busy x", "steady busy x"):
        table.add_column(col, justify="right")
    for r in ratios(rows):
        table.add_row(
            r["run"],
            f"{r['wall_speedup']:.2f}",
            f"{r['steady_speedup']:.2f}",
            f"{r['busy_ratio']:.2f}",
            f"{r['steady_busy_ratio']:.2f}",
        )
    return table


def _gaps_table(row: dict[str, Any]) -> Table:
    table = Table(title=f"Wall without engine work, {label(row)} (s)")
    for name in (*row["gaps_s"], "sum", "wall - engine"):
        table.add_column(name.replace("_", " "), justify="right")
    values = [*row["gaps_s"].values(), sum(row["gaps_s"].values())]
    table.add_row(*(f"{v:.3f}" for v in (*values, row["wall_s"] - row["engine_s"])))
    return table


def _timeline_table(row: dict[str, Any]) -> Table:
    table = Table(title=f"Per-job timeline, {label(row)} (s after the first submission)")
    names = ("lease", "engine_start", "engine_end", "render_s", "upload_start", "complete")
    table.add_column("job", justify="right")
    for name in names:
        table.add_column(name.replace("_", " "), justify="right")
    for n, job in enumerate(row["timeline"]):
        table.add_row(str(n), *(f"{job[k]:.3f}" for k in names))
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=10)
    p.add_argument("--model", default=None, help="default: the service's default model")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--size", default=None, help="WxH (default: the model's)")
    p.add_argument("--frames", type=int, default=None, help="default: the model's")
    p.add_argument("--models-dir", type=Path, default=None, help="engine.models_dir")
    p.add_argument("--device", default=None, help="engine device (default: the config's)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--modes", nargs="+", choices=("off", "on"), default=["off", "on"])
    p.add_argument(
        "--render-processes",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="worker.render_processes for each overlap-on run (default: the worker's)",
    )
    p.add_argument("--json", type=Path, default=RESULTS / "engine_busy.json")
    args = p.parse_args(argv)

    request: dict[str, Any] = {"prompt": PROMPT}
    if args.model:
        request["model"] = args.model
    if args.steps:
        request["steps"] = args.steps
    if args.size:
        request["size"] = args.size
    if args.frames:
        request["num_frames"] = args.frames
    env = {"CINECLOUD_ENGINE__DEVICE": args.device} if args.device else {}
    if args.models_dir:
        env["CINECLOUD_ENGINE__MODELS_DIR"] = str(args.models_dir.resolve())
    if args.model:  # the worker loads this one (by default it serves the default model)
        env["CINECLOUD_WORKER__MODELS"] = json.dumps([args.model])
    counts: list[int | None] = list(args.render_processes or [None])
    runs = [
        (mode == "on", n) for mode in args.modes for n in (counts if mode == "on" else counts[:1])
    ]
    console = Console(width=160)
    rows: list[dict[str, Any]] = []

    def write() -> None:
        result: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"),
            "request": request,
            "db": args.db,
            "rows": rows,
            "ratios": ratios(rows) if len(rows) > 1 else [],
        }
        if [r["overlap"] for r in rows] == [False, True]:
            result["wall_ratio_off_on"] = rows[0]["wall_s"] / rows[1]["wall_s"]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        for i, (overlap, n) in enumerate(runs):
            where = Path(tmp) / f"run{i}"
            log_to = args.json.with_name(f"{args.json.stem}-{i}.log")
            rows.append(run_mode(overlap, args.jobs, request, env, where, args.db, n, log_to))
            write()  # a run cut short keeps the modes it finished
            console.print(_summary(rows[-1:], args.jobs))

    console.print(_summary(rows, args.jobs))
    if len(rows) > 1:
        console.print(_ratios_table(rows))
    for r in rows:
        console.print(_gaps_table(r))
        console.print(_timeline_table(r))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
