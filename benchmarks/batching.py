"""Videos per hour with and without batching, for small jobs of our own model.

One loaded runner of ``cinecloud/shapes-t2v`` (its defaults: 16 frames at 64x64, 24
steps, guidance 3). For each batch size B, the same B jobs (different prompts and seeds)
run one by one (``Runner.run``) and as one batch (``Runner.run_batch``, one text encode,
one denoise loop over B latents, one decode), alternating, ``--rounds`` times. Reported:
engine seconds per video and videos per hour for each, and their ratio; the batched
videos' largest pixel difference from their solo runs. Engine time is text encode,
denoise and decode: render and upload run beside the next job's engine work.

    python benchmarks/batching.py --device cuda
    python benchmarks/batching.py --sizes 1 2 4 --rounds 1       # a quick CPU run

Prints a table and writes ``benchmarks/results/batching.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "pink")
SHAPES = ("star", "circle", "square", "triangle")


def prompts(n: int) -> list[str]:
    return [
        f"a {COLOURS[i % len(COLOURS)]} {SHAPES[i % len(SHAPES)]} moving to the left"
        for i in range(n)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from cinecloud.config import EngineConfig, repo_root
    from cinecloud.engine.registry import default_registry
    from cinecloud.engine.runner import Runner

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--json", type=Path, default=RESULTS / "batching.json")
    args = p.parse_args(argv)

    registry = default_registry(EngineConfig(models_dir=repo_root() / "models"))
    runner = Runner(registry.get("cinecloud/shapes-t2v"), device=args.device)
    load_s = runner.load()
    spec = runner.spec
    steps = args.steps or spec.defaults.steps

    def none(_: Any) -> None:
        return None

    def never() -> bool:
        return False

    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        batch = [
            replace(spec.default_params(text, steps=steps), seed=100 + i)
            for i, text in enumerate(prompts(size))
        ]
        runner.run_batch(batch, none, never)  # warm this batch shape up
        solo_s: list[float] = []
        batched_s: list[float] = []
        diff = 0
        for _ in range(args.rounds):
            started = time.perf_counter()
            solos = [runner.run(params, none, never) for params in batch]
            solo_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            batched = runner.run_batch(batch, none, never)
            batched_s.append(time.perf_counter() - started)
            for a, b in zip(solos, batched, strict=True):
                diff = max(diff, int(np.abs(a.frames.astype(int) - b.frames.astype(int)).max()))
        solo, together = statistics.median(solo_s), statistics.median(batched_s)
        row = {
            "batch": size,
            "solo_s_per_video": solo / size,
            "batched_s_per_video": together / size,
            "solo_videos_per_hour": 3600 * size / solo,
            "batched_videos_per_hour": 3600 * size / together,
            "ratio": solo / together,
            "max_pixel_diff": diff,
        }
        rows.append(row)
        print(
            f"batch {size}: solo {row['solo_s_per_video']:.3f} s/video, batched "
            f"{row['batched_s_per_video']:.3f} s/video, x{row['ratio']:.2f}, diff {diff}",
            flush=True,
        )
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device_name,
        "torch": torch.__version__,
        "model": spec.id,
        "steps": steps,
        "size": f"{spec.defaults.width}x{spec.defaults.height}x{spec.defaults.num_frames}",
        "load_s": load_s,
        "tuning": runner.tuning,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    t = Table(title=f"{spec.id}, {result['size']}, {steps} steps, {device_name}")
    for col in ("batch", "solo s/video", "batched s/video", "solo videos/h", "batched videos/h"):
        t.add_column(col)
    t.add_column("x")
    t.add_column("max pixel diff")
    for r in rows:
        t.add_row(
            str(r["batch"]),
            f"{r['solo_s_per_video']:.3f}",
            f"{r['batched_s_per_video']:.3f}",
            f"{r['solo_videos_per_hour']:.0f}",
            f"{r['batched_videos_per_hour']:.0f}",
            f"{r['ratio']:.2f}",
            str(r["max_pixel_diff"]),
        )
    Console(width=140).print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
