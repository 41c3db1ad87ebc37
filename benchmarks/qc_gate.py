"""The quality gate's catch table: planted bad outputs caught, good outputs passed.

Good outputs are cinecloud/shapes-t2v clips (evaluation prompts, plus prompts for still
shots and black backgrounds, the two cases nearest the frozen and black checks). Each
is then spoiled the ways a broken model spoils its output, as the decoder's float
frames, and put through the gate exactly as a job is: the engine's float-to-uint8
conversion (which refuses NaN and infinity), then render.qc.

    python benchmarks/qc_gate.py --count 16 --clips benchmarks/results/shapes_clips.npz

Prints the table and writes ``benchmarks/results/qc_gate.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
EXTRA_PROMPTS = [
    "a red circle staying still on a black background",
    "a white square, still, on a gray background",
    "a pink star that does not move, on a sky background",
    "a green triangle staying still on a grass background",
    "a yellow ring bouncing on a black background",
    "a blue square moving right on a black background",
    "an orange star shrinking on a black background",
    "a purple circle staying still on a brick background",
]


def _nan(share: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """NaN in ``share`` of the values (at least one)."""

    def spoil(floats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = max(1, round(floats.size * share))
        # .flat, not reshape(-1): decoded frames are often not contiguous (reshape copies)
        floats.flat[rng.choice(floats.size, size=n, replace=False)] = np.nan
        return floats

    return spoil


def _inf(floats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    floats.flat[rng.integers(floats.size)] = np.inf
    return floats


def _black_noise(floats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 3 / 255, floats.shape).astype(np.float32)


def _black_half(floats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    floats[: len(floats) // 2] = 0
    return floats


def _frozen_from(start: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def spoil(floats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        floats[start:] = floats[start]
        return floats

    return spoil


# name -> (spoil, expected to be caught)
PLANTS: dict[str, tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], bool]] = {
    "nan: one value": (_nan(0.0), True),
    "nan: 1% of values": (_nan(0.01), True),
    "nan: every value": (_nan(1.0), True),
    "inf: one value": (_inf, True),
    "black: all zero": (lambda f, r: np.zeros_like(f), True),
    "black: noise under 3 levels": (_black_noise, True),
    "black: flat dark grey (12)": (lambda f, r: np.full_like(f, 12 / 255), True),
    "black: first half of the frames": (_black_half, True),
    "frozen: first frame repeated": (_frozen_from(0), True),
    "frozen: stuck from frame 5": (_frozen_from(4), True),
    "frozen: second half only (7/15 pairs)": (_frozen_from(8), False),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--count", type=int, default=16, help="evaluation prompts (plus 8 more)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=Path, default=None, help="shapes clips .npz (kept, reused)")
    p.add_argument("--json", type=Path, default=RESULTS / "qc_gate.json")
    return p.parse_args(argv)


def model_clips(n: int, device: str, seed: int) -> list[tuple[str, np.ndarray]]:
    from cinecloud.config import EngineConfig
    from cinecloud.engine.registry import default_registry
    from cinecloud.engine.runner import Runner
    from cinecloud.engine.shapes.dataset import eval_prompts

    spec = default_registry(EngineConfig()).get("cinecloud/shapes-t2v")
    runner = Runner(spec, device=device)
    runner.load()
    prompts = [p for p, _ in eval_prompts("seen", n, seed)] + EXTRA_PROMPTS
    clips = []
    for index, prompt in enumerate(prompts):
        params = spec.default_params(prompt, seed=seed + index)
        clips.append((prompt, runner.run(params, lambda _: None, lambda: False).frames))
    return clips


def cached(
    path: Path | None, make: Callable[[], list[tuple[str, np.ndarray]]]
) -> list[tuple[str, np.ndarray]]:
    """``make()``'s clips, kept in (or read back from) the ``.npz`` at ``path``."""
    if path is not None and path.is_file():
        with np.load(path) as data:
            count = len(data.files) // 2
            return [(str(data[f"prompt_{i}"]), data[f"clip_{i}"]) for i in range(count)]
    clips = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {f"clip_{i}": c for i, (_, c) in enumerate(clips)}
        arrays.update({f"prompt_{i}": np.array(p) for i, (p, _) in enumerate(clips)})
        np.savez(path, **arrays)
    return clips


def gate(floats: np.ndarray) -> tuple[bool, str]:
    """(caught, why) for decoded float frames, as a job meets the gate."""
    from cinecloud.config import QcConfig
    from cinecloud.engine.finite import NonFiniteFrames, to_uint8
    from cinecloud.render.qc import QcFailed, run_qc

    try:
        run_qc(to_uint8(floats), QcConfig())
    except (NonFiniteFrames, QcFailed) as exc:
        return True, str(exc).split(":")[0] if isinstance(exc, NonFiniteFrames) else str(exc)
    return False, ""


def read_good(clips: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
    """The gate's readings (and any false alarm) on the outputs as generated."""
    from cinecloud.config import QcConfig
    from cinecloud.render.qc import measure

    good = []
    for prompt, frames in clips:
        started = time.perf_counter()
        stats = measure(frames, QcConfig())
        seconds = time.perf_counter() - started
        caught, why = gate(frames.astype(np.float32) / 255)
        pixels = frames.astype(np.float32)
        min_mad = float(min(np.abs(b - a).mean() for a, b in itertools.pairwise(pixels)))
        good.append(
            {
                "prompt": prompt,
                "false_alarm": caught,
                "why": why,
                "qc_s": seconds,
                "min_pair_mad": min_mad,
                "stats": stats.__dict__,
            }
        )
    return good


def catch_planted(clips: list[tuple[str, np.ndarray]], seed: int) -> dict[str, dict[str, Any]]:
    """For each plant, how many of the spoiled clips the gate caught."""
    rng = np.random.default_rng(seed)
    planted: dict[str, dict[str, Any]] = {}
    for name, (spoil, expected) in PLANTS.items():
        results = [gate(spoil(frames.astype(np.float32) / 255, rng)) for _, frames in clips]
        caught = sum(c for c, _ in results)
        planted[name] = {"clips": len(results), "caught": caught, "expected": expected}
    return planted


def print_table(planted: dict[str, dict[str, Any]], good: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"quality gate on {len(good)} shapes-t2v outputs")
    for col in ("planted output", "caught", "rate", "meant to be caught"):
        table.add_column(col)
    for name, row in planted.items():
        rate = row["caught"] / row["clips"]
        table.add_row(
            name,
            f"{row['caught']}/{row['clips']}",
            f"{rate:.0%}",
            "yes" if row["expected"] else "no (under the 50% limit)",
        )
    alarms = sum(g["false_alarm"] for g in good)
    table.add_row(
        "none (the outputs as generated)",
        f"{alarms}/{len(good)} false alarms",
        f"{alarms / len(good):.0%}",
        "no",
    )
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    clips = cached(args.clips, lambda: model_clips(args.count, args.device, args.seed))
    good = read_good(clips)
    planted = catch_planted(clips, args.seed)
    print_table(planted, good)
    flicker = [g["stats"]["flicker"] for g in good]
    warp = [g["stats"]["flow_warp_error"] for g in good]
    still = [g for g in good if "still" in g["prompt"] or "not move" in g["prompt"]]
    summary = {
        "clips": len(clips),
        "planted": planted,
        "false_alarms": sum(g["false_alarm"] for g in good),
        "flicker_median": statistics.median(flicker),
        "flicker_max": max(flicker),
        "flow_warp_error_median": statistics.median(warp),
        "flow_warp_error_max": max(warp),
        "still_clips": len(still),
        "still_min_pair_mad": min(g["min_pair_mad"] for g in still),
        "min_pair_mad": min(g["min_pair_mad"] for g in good),
        "qc_s_median": statistics.median(g["qc_s"] for g in good),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "planted"}, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "good": good}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
