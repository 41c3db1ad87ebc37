"""The parallel code path with one rank against the plain path, on the Wan2.1-1.3B video.

A worker with ``worker.parallel`` runs its model through
:class:`cinecloud.engine.parallel.family.ParallelFamily` on ranks joined in a process
group (NCCL on a GPU). This measures what that path costs when there is one rank: the
full-size Wan2.1-T2V-1.3B architecture (random weights), 480x832, 81 frames, guidance 5,
bf16, tuned as the engine tunes it (FlashAttention 3 where it runs, else native SDPA, then
regional compile). The same pipeline object is denoised through the plain family and
through the parallel family on a one-rank NCCL group, in alternating rounds, and the
median seconds per video of each are compared; the latents of the two must be identical.

    python benchmarks/gpu_parallel_overhead.py --steps 50 --rounds 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpu_engine import CASES, build_pipeline, make_embeds

RESULTS = Path(__file__).resolve().parent / "results"


def _tune(model: Any) -> str:
    """FlashAttention 3 if it runs here, else native SDPA; then regional compile."""
    from cinecloud.engine.speed import compile_regions, set_attention

    try:
        set_attention(model, "_flash_3")
        backend = "_flash_3"
    except Exception:  # no FA3 on this machine: the engine's next choice
        set_attention(model, "native")
        backend = "native"
    compile_regions(model)
    return backend


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from cinecloud.engine.families.wan import WanEmbeds, WanT2V
    from cinecloud.engine.parallel.family import ParallelFamily
    from cinecloud.engine.parallel.plan import parse_plan
    from cinecloud.engine.parallel.ranks import close_ranks, init_ranks, open_store
    from cinecloud.engine.registry import GenerationParams

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path, default=RESULTS / "gpu_parallel_overhead.json")
    args = p.parse_args(argv)

    case = CASES["wan2.1-1.3b"]
    torch.manual_seed(0)
    pipe = build_pipeline(case, "cuda", torch.bfloat16)
    plain = WanT2V()
    plain._pipe, plain._device = pipe, torch.device("cuda")  # built here, not loaded
    store = open_store(0, 1, 120.0, master=True)
    ranks = init_ranks(parse_plan("", 1), 0, store, device="cuda:0", timeout_s=120.0)
    parallel = ParallelFamily(plain, "wan-t2v", ranks)
    parallel.apply_plan()
    backend = _tune(pipe.transformer)
    embeds = make_embeds(case, "cuda", torch.bfloat16)
    encoded = WanEmbeds(prompt=embeds.prompt, negative=embeds.negative)
    v = case.video
    params = GenerationParams(
        prompt="",
        negative_prompt="",
        width=v.width,
        height=v.height,
        num_frames=v.frames,
        fps=16,
        steps=args.steps,
        guidance_scale=v.guidance,
        seed=0,
    )
    warm = GenerationParams(**{**params.__dict__, "steps": 2})
    plain.denoise(encoded, warm, on_step=lambda k: None)  # compile and warm up

    paths: dict[str, Any] = {"plain": plain, "parallel, 1 rank": parallel}
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    latents: dict[str, Any] = {}
    for r in range(args.rounds):
        order = list(paths) if r % 2 == 0 else list(reversed(paths))
        for name in order:
            torch.cuda.synchronize()
            started = time.perf_counter()
            out = paths[name].denoise(encoded, params, on_step=lambda k: None)
            torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - started)
            latents[name] = out.float().cpu()
            print(f"round {r + 1} {name}: {seconds[name][-1]:.2f} s", flush=True)
    close_ranks()
    diff = float((latents["plain"] - latents["parallel, 1 rank"]).abs().max())
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    overhead = medians["parallel, 1 rank"] / medians["plain"] - 1.0
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "attention": backend,
        "steps": args.steps,
        "seconds": seconds,
        "median_s": medians,
        "overhead": overhead,
        "max_abs_latent_diff": diff,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    t = Table(title=f"Wan2.1-1.3B, {args.steps} steps, {result['device']}, {backend}")
    for col in ("path", "runs s", "median s", "vs plain"):
        t.add_column(col)
    for name, s in seconds.items():
        ratio = medians[name] / medians["plain"]
        t.add_row(name, ", ".join(f"{x:.2f}" for x in s), f"{medians[name]:.2f}", f"{ratio:.4f}")
    Console(width=120).print(t)
    print(f"one-rank overhead {overhead:+.2%}; latents max abs diff {diff:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
