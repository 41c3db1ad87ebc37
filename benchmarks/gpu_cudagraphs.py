"""CUDA graphs for small models: our own model's engine time, eager vs compiled vs graphed.

A small model's denoising step is a few milliseconds of many short kernels, so on a GPU
the launches, not the arithmetic, set its pace. CUDA graphs (``torch.compile`` with
``mode="reduce-overhead"``: inductor's CUDA graph trees) record a step's kernels once and
replay them with one launch. This compares, on the same jobs in one run, the shipped
``cinecloud/shapes-t2v`` through the real :class:`~cinecloud.engine.runner.Runner`:

- ``eager``: no compile;
- ``regional``: the engine's default on CUDA (each repeated block compiled);
- ``graphed``: the engine's ``compile="graphs"`` (what ``auto`` picks for a model this
  small): the whole denoiser compiled with CUDA graphs.

For each it reports engine seconds per video (text encode, denoise, decode) at batch 1
and at ``--batch``, and the largest pixel difference from the eager frames.

    python benchmarks/gpu_cudagraphs.py                      # on the GPU
    python benchmarks/gpu_cudagraphs.py --device cpu --steps 2 --rounds 1   # smoke run

Prints a table and writes ``benchmarks/results/gpu_cudagraphs.json``.
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
MODES = ("eager", "regional", "graphed")


def main(argv: Sequence[str] | None = None) -> int:
    import numpy as np
    import torch
    from batching import prompts  # type: ignore[import-not-found]
    from rich.console import Console
    from rich.table import Table

    from cinecloud.config import EngineConfig, repo_root
    from cinecloud.engine.registry import default_registry
    from cinecloud.engine.runner import Runner

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--json", type=Path, default=RESULTS / "gpu_cudagraphs.json")
    args = p.parse_args(argv)

    registry = default_registry(EngineConfig(models_dir=repo_root() / "models"))
    spec = registry.get("cinecloud/shapes-t2v")
    steps = args.steps or spec.defaults.steps
    jobs = [
        replace(spec.default_params(text, steps=steps), seed=100 + i)
        for i, text in enumerate(prompts(args.batch))
    ]

    def none(_: Any) -> None:
        return None

    def never() -> bool:
        return False

    reference: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for mode in args.modes:
        compile_mode = {"eager": "off", "regional": "regional", "graphed": "graphs"}[mode]
        runner = Runner(spec, device=args.device, compile=compile_mode)
        started = time.perf_counter()
        runner.load()  # compiles (and records batch 1's graphs) in its warm-up
        runner.run_batch(jobs, none, never)  # the batch shape's first run, likewise
        ready_s = time.perf_counter() - started
        solo: list[float] = []
        batched: list[float] = []
        frames: list[np.ndarray] = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            frames = [runner.run(job, none, never).frames for job in jobs]
            solo.append((time.perf_counter() - started) / len(jobs))
            started = time.perf_counter()
            runner.run_batch(jobs, none, never)
            batched.append((time.perf_counter() - started) / len(jobs))
        if not reference:
            reference = frames
        diff = max(
            int(np.abs(a.astype(int) - b.astype(int)).max())
            for a, b in zip(reference, frames, strict=True)
        )
        row = {
            "mode": mode,
            "ready_s": ready_s,
            "compile": runner.tuning.get("compile"),
            "solo_s_per_video": statistics.median(solo),
            "batched_s_per_video": statistics.median(batched),
            "max_pixel_diff_vs_first": diff,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        del runner
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    base = rows[0]["solo_s_per_video"]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device_name,
        "torch": torch.__version__,
        "model": spec.id,
        "steps": steps,
        "batch": args.batch,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    t = Table(title=f"{spec.id}, {steps} steps, {device_name}: engine s per video")
    for col in ("mode", "ready s", "batch 1", f"x {rows[0]['mode']}", f"batch {args.batch}"):
        t.add_column(col)
    t.add_column("max pixel diff")
    for r in rows:
        t.add_row(
            r["mode"],
            f"{r['ready_s']:.1f}",
            f"{r['solo_s_per_video']:.4f}",
            f"{base / r['solo_s_per_video']:.2f}",
            f"{r['batched_s_per_video']:.4f}",
            str(r["max_pixel_diff_vs_first"]),
        )
    Console(width=140).print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
