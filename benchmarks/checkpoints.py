"""What denoise checkpoints cost: their size, and the time to take and to read one.

1. The default model (``cinecloud/shapes-t2v``, default settings): runs with no
   checkpoint and runs that save a checkpoint file every ``--every`` steps, in turn;
   the time to take and write one checkpoint, its size, and the time to read it back.
2. A Wan 2.1 14B-sized state (720p, 81 frames: latents 16x21x90x160 float32, a UniPC
   order-2 history): the time to serialise it to bytes and back, and its size.

Prints a table and writes ``benchmarks/results/checkpoints.json``.
Usage: ``python benchmarks/checkpoints.py [--runs 3] [--every 5] [--device cpu]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cinecloud.config import EngineConfig
from cinecloud.engine.checkpoint import DenoiseCheckpoint, load_checkpoint
from cinecloud.engine.registry import default_registry
from cinecloud.engine.runner import Runner, StepInfo

RESULTS = Path(__file__).resolve().parent / "results"


def _median(runs: int, once: Callable[[], float]) -> float:
    return statistics.median(once() for _ in range(runs))


def engine_figures(device: str, runs: int, every: int) -> dict[str, Any]:
    spec = default_registry(EngineConfig()).get("cinecloud/shapes-t2v")
    runner = Runner(spec, device=device, dtype="float32")
    runner.load()
    params = spec.default_params("a small red circle moves left on a blue background", seed=1)
    sizes: list[int] = []
    taking: list[float] = []  # seconds to take and write one checkpoint
    with tempfile.TemporaryDirectory() as tmp:

        def run(save: bool) -> float:
            def on_step(info: StepInfo) -> None:
                due = info.step % every == 0 and info.step < params.steps  # as the worker
                if save and info.checkpoint is not None and due:
                    started = time.perf_counter()
                    data = info.checkpoint()
                    (Path(tmp) / f"{info.step}.ckpt").write_bytes(data)
                    taking.append(time.perf_counter() - started)
                    sizes.append(len(data))

            started = time.perf_counter()
            runner.run(params, on_step, lambda: False)
            return time.perf_counter() - started

        # interleaved, so a change in the machine's load hits both alike
        timed = [(run(False), run(True)) for _ in range(runs)]
        plain = statistics.median(t[0] for t in timed)
        saving = statistics.median(t[1] for t in timed)
        taken = params.steps // every - (params.steps % every == 0)
        newest = Path(tmp) / f"{every * ((params.steps - 1) // every)}.ckpt"

        def read() -> float:
            started = time.perf_counter()
            load_checkpoint(newest)
            return time.perf_counter() - started

        read_s = _median(runs, read)
    return {
        "model": spec.id,
        "device": device,
        "steps": params.steps,
        "every": every,
        "run_s": plain,
        "run_with_checkpoints_s": saving,
        "checkpoints_per_run": taken,
        "per_checkpoint_ms": 1000 * statistics.median(taking),
        "step_ms": 1000 * plain / params.steps,
        "checkpoint_bytes": sizes[0] if sizes else 0,
        "read_checkpoint_ms": 1000 * read_s,
    }


def wan14b_figures(runs: int) -> dict[str, Any]:
    shape = (1, 16, 21, 90, 160)  # 720p, 81 frames, after the Wan VAE
    latents = torch.randn(shape)
    scheduler = {
        "timesteps": torch.linspace(999, 0, 50),
        "sigmas": torch.linspace(1, 0, 51),
        "model_outputs": [torch.randn(shape), torch.randn(shape)],
        "timestep_list": [torch.tensor(500), torch.tensor(480)],
        "last_sample": torch.randn(shape),
        "lower_order_nums": 2,
        "_step_index": 25,
        "this_order": 2,
    }
    state = DenoiseCheckpoint(
        step=25,
        total_steps=50,
        fingerprint="x" * 32,
        latents=latents,
        scheduler_class="UniPCMultistepScheduler",
        scheduler=scheduler,
        generator=torch.Generator().get_state(),
    )
    data = state.to_bytes()

    def save() -> float:
        started = time.perf_counter()
        state.to_bytes()
        return time.perf_counter() - started

    def load() -> float:
        started = time.perf_counter()
        DenoiseCheckpoint.from_bytes(data)
        return time.perf_counter() - started

    return {
        "bytes": len(data),
        "to_bytes_s": _median(runs, save),
        "from_bytes_s": _median(runs, load),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    engine = engine_figures(args.device, args.runs, args.every)
    wan = wan14b_figures(args.runs)
    print(f"{engine['model']} on {engine['device']}, {engine['steps']} steps:")
    print(f"  run, no checkpoint            {engine['run_s']:.3f} s")
    every, saving = engine["every"], engine["run_with_checkpoints_s"]
    print(f"  run, checkpoint every {every:<2}      {saving:.3f} s")
    print(f"  one step                      {engine['step_ms']:.1f} ms")
    print(f"  one checkpoint, taken+written {engine['per_checkpoint_ms']:.1f} ms")
    print(f"  checkpoint size               {engine['checkpoint_bytes'] / 1e6:.2f} MB")
    print(f"  one checkpoint, read          {engine['read_checkpoint_ms']:.1f} ms")
    print("Wan 2.1 14B-sized state (720p, 81 frames, UniPC order 2):")
    print(f"  size                          {wan['bytes'] / 1e6:.1f} MB")
    print(f"  to bytes                      {1000 * wan['to_bytes_s']:.0f} ms")
    print(f"  from bytes                    {1000 * wan['from_bytes_s']:.0f} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "checkpoints.json"
    out.write_text(json.dumps({"engine": engine, "wan14b_state": wan}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
