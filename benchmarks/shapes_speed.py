"""Engine time of one shapes-t2v clip: the pipeline call alone, no service around it.

Loads the shipped pipeline once, warms it up, then times ``--runs`` single-clip
calls with the model's default steps and guidance (or the ones given), each
with its own seed. On CUDA every timing ends with a device synchronise, so the
figure is the real GPU time rather than the launch time.

    python benchmarks/shapes_speed.py --device cuda --runs 20
    python benchmarks/shapes_speed.py --device cpu --runs 5

Prints a table and writes ``benchmarks/results/shapes_speed_<device>.json``.
The through-the-service figure (HTTP, queue, worker, render) is
``benchmarks/overhead.py``'s job; this one isolates the engine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model-dir", type=Path, default=Path("models/shapes-t2v"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None)
    p.add_argument("--steps", type=int, default=None, help="default: the pipeline's")
    p.add_argument("--guidance", type=float, default=None, help="default: the pipeline's")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--prompt", default="a red star moving to the left on a sky background")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    return args


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(torch.device(device)))
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from cinecloud.engine.shapes.pipeline import ShapesT2VPipeline

    args = parse_args(argv)
    if not args.model_dir.is_dir():
        raise SystemExit(f"no model directory at {args.model_dir}")
    pipe: Any = ShapesT2VPipeline.from_pretrained(str(args.model_dir))
    pipe.set_progress_bar_config(disable=True)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    pipe = pipe.to(args.device, dtype) if dtype is not None else pipe.to(args.device)
    options: dict[str, Any] = {"num_frames": args.frames, "height": args.size, "width": args.size}
    if args.steps is not None:
        options["num_inference_steps"] = args.steps
    if args.guidance is not None:
        options["guidance_scale"] = args.guidance
    cuda = args.device.startswith("cuda")

    def one(seed: int) -> float:
        gen = torch.Generator(args.device).manual_seed(seed)
        started = time.perf_counter()
        pipe(prompt=args.prompt, generator=gen, output_type="np", **options)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    for i in range(args.warmup):
        one(10_000 + i)
    times = [one(i) for i in range(args.runs)]
    result = {
        "device": args.device,
        "device_name": device_name(args.device),
        "torch": torch.__version__,
        "model_dir": str(args.model_dir),
        "options": options,
        "runs": args.runs,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
    }
    table = Table(title=f"shapes-t2v engine time, one clip ({result['device_name']})")
    for column in ("device", "frames", "steps", "guidance", "runs", "median s", "min s", "max s"):
        table.add_column(column, justify="right")
    table.add_row(
        args.device,
        str(args.frames),
        str(options.get("num_inference_steps", "default")),
        str(options.get("guidance_scale", "default")),
        str(args.runs),
        f"{result['median_s']:.3f}",
        f"{result['min_s']:.3f}",
        f"{result['max_s']:.3f}",
    )
    Console(width=120).print(table)
    out = args.json or RESULTS / f"shapes_speed_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
