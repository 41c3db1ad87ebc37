"""Evaluate the shapes world through the delivered format (H.264 MP4 at 256x256).

    python benchmarks/eval_shapes.py validate --n 300
    python benchmarks/eval_shapes.py model --model-dir models/shapes-t2v --n 200 --device cuda

``validate`` renders ground-truth clips for each split, encodes them as the service does
and reads them back: it measures the reader, which must be near perfect. ``model`` asks
the shipped pipeline for one clip per prompt and reads those. Both print a table and write
JSON (``--json``, default ``benchmarks/results/eval_shapes_<mode>.json``) with accuracy
per split and attribute, mean flow-warp error and flicker, counts and the settings.

Every split uses the same ``--seed``, so ``seen`` and ``paraphrase`` hold the same combos
in the same order and differ only in wording.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cinecloud.engine.shapes.evaluate import ClipReading, read_mp4, score
from cinecloud.render import encode_mp4

SPLITS = ("seen", "heldout", "paraphrase")
FPS = 8
DISPLAY = (256, 256)
MAX_ERRORS = 25  # misread clips listed per split in the JSON
RESULTS = Path(__file__).resolve().parent / "results"

Combo = tuple[str, str, str, str]
Clips = Iterator[np.ndarray]  # uint8 (T, H, W, 3), one per prompt, in order


# ---------------------------------------------------------------- reading


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def encode_and_read(frames: np.ndarray) -> ClipReading:
    """Encode ``frames`` as the service delivers them, decode, and read the clip."""
    with tempfile.TemporaryDirectory(prefix="eval-shapes-") as tmp:
        path = encode_mp4(frames, Path(tmp) / "clip.mp4", FPS, display_size=DISPLAY)
        return read_mp4(path)


def reader_pool(workers: int) -> ProcessPoolExecutor | None:
    """``workers`` reader processes, or None to read inline. Spawned, not forked: the
    caller has torch's threads running, and a forked child can inherit a held lock."""
    if workers <= 1:
        return None
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)


def read_all(clips: Clips, pool: ProcessPoolExecutor | None) -> list[ClipReading]:
    """Readings of ``clips`` in order; with a ``pool``, read in its processes as clips arrive."""
    if pool is None:
        return [encode_and_read(clip) for clip in clips]
    futures: list[Future[ClipReading]] = [pool.submit(encode_and_read, c) for c in clips]
    return [f.result() for f in futures]


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.asarray((np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8))


# ---------------------------------------------------------------- clip sources


def ground_truth(combos: Sequence[Combo], seed: int, frames: int, size: int) -> Clips:
    """Rendered clips of ``combos`` with scene details drawn from ``seed``."""
    import torch

    from cinecloud.engine.shapes.dataset import render, scenes_for_combos

    scenes = scenes_for_combos(combos, torch.Generator().manual_seed(seed))
    for start in range(0, len(scenes), 64):
        batch = render(scenes[start : start + 64], frames=frames, size=size)
        yield from to_uint8(batch.permute(0, 1, 3, 4, 2).numpy())


def load_pipeline(model_dir: Path, device: str) -> Any:
    try:
        from cinecloud.engine.shapes.pipeline import ShapesT2VPipeline
    except ImportError as exc:
        raise SystemExit(f"the shapes pipeline is not importable: {exc}") from exc
    if not model_dir.is_dir():
        raise SystemExit(f"no model directory at {model_dir}")
    pipe: Any = ShapesT2VPipeline.from_pretrained(str(model_dir))
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if hasattr(pipe, "to") else pipe


def generated(pipe: Any, prompts: Sequence[str], args: argparse.Namespace) -> Clips:
    """One generated clip per prompt; prompt ``i`` uses seed ``args.seed + i``."""
    import torch

    options: dict[str, Any] = {"num_frames": args.frames, "height": args.size, "width": args.size}
    if args.steps is not None:
        options["num_inference_steps"] = args.steps
    if args.guidance is not None:
        options["guidance_scale"] = args.guidance
    for start in range(0, len(prompts), args.batch_size):
        batch = list(prompts[start : start + args.batch_size])
        gens = [
            torch.Generator(args.device).manual_seed(args.seed + start + i)
            for i in range(len(batch))
        ]
        if len(batch) == 1:
            out = pipe(prompt=batch[0], generator=gens[0], output_type="np", **options)
        else:
            out = pipe(prompt=batch, generator=gens, output_type="np", **options)
        yield from to_uint8(np.asarray(out.frames))


# ---------------------------------------------------------------- report


def summarise(
    readings: Sequence[ClipReading], combos: Sequence[Combo], prompts: Sequence[str]
) -> dict[str, Any]:
    errors = [
        {"prompt": p, "want": list(c), "got": list(r.combo)}
        for p, c, r in zip(prompts, combos, readings, strict=True)
        if r.combo != c
    ]
    return {
        "count": len(readings),
        "accuracy": score(readings, combos),
        "flow_warp_error": float(np.mean([r.flow_warp_error for r in readings])),
        "flicker": float(np.mean([r.flicker for r in readings])),
        "unread": {
            name: sum(getattr(r, name) is None for r in readings)
            for name in ("colour", "shape", "motion", "background")
        },
        "misread": len(errors),
        "errors": errors[:MAX_ERRORS],
    }


def print_table(title: str, splits: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = ("count", "colour", "shape", "motion", "background", "all", "flow warp", "flicker")
    for column in ("split", *columns):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, result in splits.items():
        acc = result["accuracy"]
        table.add_row(
            split,
            str(result["count"]),
            *(f"{100 * acc[k]:.1f}%" for k in ("colour", "shape", "motion", "background", "all")),
            f"{result['flow_warp_error']:.4f}",
            f"{result['flicker']:.4f}",
        )
    Console(width=120).print(table)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


# ---------------------------------------------------------------- commands


def run_splits(
    args: argparse.Namespace, clips_for: Callable[[list[str], list[Combo]], Clips]
) -> dict[str, dict[str, Any]]:
    from cinecloud.engine.shapes.dataset import eval_prompts

    results = {}
    pool = reader_pool(args.workers)
    for split in args.splits:
        pairs = eval_prompts(split, args.n, args.seed)
        prompts, combos = [p for p, _ in pairs], [c for _, c in pairs]
        started = time.perf_counter()
        readings = read_all(clips_for(prompts, combos), pool)
        results[split] = summarise(readings, combos, prompts)
        results[split]["seconds"] = round(time.perf_counter() - started, 2)
        print(f"{split}: {len(readings)} clips in {results[split]['seconds']} s", file=sys.stderr)
    if pool is not None:
        pool.shutdown()
    return results


def settings(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"func", "json"}
    found = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip
    }
    return {**found, "fps": FPS, "display_size": list(DISPLAY)}


def cmd_validate(args: argparse.Namespace) -> int:
    def clips_for(prompts: list[str], combos: list[Combo]) -> Clips:
        return ground_truth(combos, args.seed, args.frames, args.size)

    splits = run_splits(args, clips_for)
    print_table("shapes reader on ground truth (through H.264 at 256x256)", splits)
    write_json(args.json, {"mode": "validate", "settings": settings(args), "splits": splits})
    worst = min(v for s in splits.values() for k, v in s["accuracy"].items() if k != "all")
    return 0 if worst >= args.require else 1


def cmd_model(args: argparse.Namespace) -> int:
    pipe = load_pipeline(args.model_dir, args.device)

    def clips_for(prompts: list[str], combos: list[Combo]) -> Clips:
        return generated(pipe, prompts, args)

    splits = run_splits(args, clips_for)
    print_table(f"{args.model_dir} (through H.264 at 256x256)", splits)
    write_json(args.json, {"mode": "model", "settings": settings(args), "splits": splits})
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="mode", required=True)
    validate = sub.add_parser("validate", help="read ground-truth clips back")
    validate.add_argument("--require", type=float, default=0.99, help="exit 1 below this accuracy")
    validate.set_defaults(func=cmd_validate, n=300)
    model = sub.add_parser("model", help="read clips generated by the shipped pipeline")
    model.add_argument("--model-dir", type=Path, default=Path("models/shapes-t2v"))
    model.add_argument("--device", default="cpu")
    model.add_argument("--steps", type=int, default=None)
    model.add_argument("--guidance", type=float, default=None)
    model.add_argument("--batch-size", type=int, default=1, help=">1 passes prompt lists")
    model.set_defaults(func=cmd_model, n=200)
    for command in (validate, model):
        command.add_argument("--n", type=int, help="clips per split")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
        command.add_argument("--frames", type=int, default=16)
        command.add_argument("--size", type=int, default=64)
        command.add_argument("--workers", type=int, default=2, help="reader processes")
        command.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.n is None or args.n < 1:
        parser.error("--n must be >= 1")
    if args.json is None:
        args.json = RESULTS / f"eval_shapes_{args.mode}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
