"""Seconds per render of one default-model job, at two commits side by side.

A job of ``cinecloud/shapes-t2v``'s size (16 frames of 64x64 with a moving shape, shown
at 256x256, 8 fps) goes through ``render_trusted`` with the default settings (QC,
watermark, AIGC label, C2PA signing of ``video.mp4`` and the HLS ``init.mp4``). The
``--before`` commit's ``src/`` is taken with ``git archive``; this tree's ``src/`` is
"after". Each side runs in its own long-lived process (one warm-up render first), and
the two take turns render by render (who goes first alternates), so both see the same
load on the machine. Each render is timed in wall seconds and in the CPU seconds of
its process (all its threads: the encoders' too), which other work on a shared
machine disturbs less.

    python benchmarks/render_once.py --before main --renders 30

Prints the medians and their ratios, and writes ``benchmarks/results/render_once.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cinecloud.testing.trees import checkout_src

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
JOB = "video_00112233445566778899aabb"


def moving_shape(frames: int = 16, side: int = 64) -> np.ndarray:
    """A bright square crossing a dim gradient, one step per frame."""
    y, x = np.mgrid[0:side, 0:side]
    base = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    out = np.repeat(base[None], frames, axis=0)
    for t in range(frames):
        left, top = 4 + 2 * t, 12 + t
        out[t, top : top + 16, left : left + 16] = (240, 200, 40)
    return out


def serve_renders() -> None:
    """Render one job per line read from stdin; print each one's wall and CPU seconds.

    One warm-up render (imports, the local test CA) comes first and prints ``ready``.
    """
    import dataclasses

    from cinecloud.config import load_config
    from cinecloud.render.trusted import TrustSettings, render_trusted

    frames = moving_shape()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        settings = dataclasses.replace(TrustSettings.from_config(load_config(None)), home=home)
        for run, _ in enumerate(itertools.chain([""], sys.stdin)):
            out = Path(tmp) / f"job{run}"
            wall, cpu = time.perf_counter(), time.process_time()
            render_trusted(frames, out, 8, job_id=JOB, settings=settings, display_size=(256, 256))
            took = [time.perf_counter() - wall, time.process_time() - cpu]
            print(json.dumps(took) if run else "ready", flush=True)
            shutil.rmtree(out)


def _start(src: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, __file__, "--serve"]
    pipe = subprocess.PIPE
    proc = subprocess.Popen(command, env=env, text=True, stdin=pipe, stdout=pipe)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _render(proc: subprocess.Popen[str]) -> tuple[float, float]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("render\n")
    proc.stdin.flush()
    wall, cpu = json.loads(proc.stdout.readline())
    return float(wall), float(cpu)


def compare(before: str, renders: int) -> dict[str, Any]:
    times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        procs = {
            "before": _start(checkout_src(ROOT, before, Path(tmp))),
            "after": _start(ROOT / "src"),
        }
        try:
            for run in range(renders):
                for side in ("before", "after") if run % 2 == 0 else ("after", "before"):
                    times[side].append(_render(procs[side]))
        finally:
            for proc in procs.values():
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait()
    median = {
        kind: {side: statistics.median(t[i] for t in times[side]) for side in times}
        for i, kind in enumerate(("wall_s", "cpu_s"))
    }
    ratio = {kind: m["after"] / m["before"] for kind, m in median.items()}
    return {"before_ref": before, "renders_each": renders, "median": median, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git ref of the 'before' side")
    parser.add_argument("--renders", type=int, default=30, help="timed renders per side")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_renders()
        return
    result = compare(args.before, args.renders)
    for kind, median in result["median"].items():
        print(
            f"{kind}: before {median['before']:.4f}, after {median['after']:.4f}, "
            f"ratio {result['ratio'][kind]:.3f} (median of {args.renders} renders each)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "render_once.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
