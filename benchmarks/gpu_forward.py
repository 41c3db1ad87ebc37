"""One denoising step of the full-size Wan2.1-1.3B transformer under speed options.

Random weights at full size (480x832, 81 frames: 32,760 tokens; 512 text tokens), bf16.
A step is both guidance branches: two batch-1 forwards, as diffusers' ``WanPipeline``
runs them, or one batch-2 forward (``cfg-batch``). Variants, each on a freshly built
transformer with the same weights and inputs:

- ``eager``: diffusers' default attention, no compile (the plain pipeline's step);
- ``fa3``: FlashAttention 3 + regional compile (the engine's tuned step);
- ``fa3+fused``: the same with the q/k/v projections fused into one matmul;
- ``fa3+cfg-batch``: the same as ``fa3`` with both branches in one batch-2 forward;
- ``fa3+fused+cfg-batch``: both;
- ``fa3+cdt``: the same as ``fa3`` with inductor's coordinate-descent tuning of its
  own (pointwise and reduction) kernels;
- ``fa3+autotune``: regional compile with inductor's ``max-autotune-no-cudagraphs``
  (asked for by name only: its GEMM autotuning takes minutes).

``--profile TOP`` also profiles one step of each variant with ``torch.profiler`` and
prints the TOP kernels by GPU time and the time of attention, GEMMs and the rest.

Reported: median step seconds, projected 50-step seconds, counted TFLOP/s against a
bf16 matmul measured in the same run, and each output's error against ``eager``.

    python benchmarks/gpu_forward.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gpu_engine import CASES, FLOPS, build_pipeline, make_embeds, matmul_ceiling, rel_err

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = (
    "eager",
    "fa3",
    "fa3+fused",
    "fa3+cfg-batch",
    "fa3+fused+cfg-batch",
    "fa3+cdt",
    "fa3+autotune",
)


def step_fn(model: Any, x: dict[str, Any], neg: Any, batched: bool) -> Callable[[], Any]:
    import torch

    if batched:
        both = {
            **x,
            "hidden_states": torch.cat([x["hidden_states"]] * 2),
            "timestep": torch.cat([x["timestep"]] * 2),
            "encoder_hidden_states": torch.cat([x["encoder_hidden_states"], neg]),
        }

        def step() -> Any:
            with torch.no_grad():
                return model(**both)[0][:1]

        return step

    def step2() -> Any:
        with torch.no_grad():
            out = model(**x)[0]
            model(**{**x, "encoder_hidden_states": neg})
            return out

    return step2


def kernel_group(name: str) -> str:
    """Which part of a step a CUDA kernel belongs to, by its name."""
    low = name.lower()
    if "flash" in low or "fmha" in low or "attention" in low:
        return "attention"
    if "gemm" in low or "cutlass" in low or "sm90_xmma" in low or "nvjet" in low:
        return "gemm"
    return "other"


def profile_step(step: Callable[[], Any], sync: Callable[[], None], top: int) -> dict[str, Any]:
    """One step under ``torch.profiler``: GPU time per kernel and per group."""
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type.name == "CUDA":
            entry = kernels.setdefault(event.name, [0.0, 0])
            entry[0] += event.device_time_total / 1e6
            entry[1] += 1
    groups: dict[str, float] = {}
    for name, (seconds, _) in kernels.items():
        groups[kernel_group(name)] = groups.get(kernel_group(name), 0.0) + seconds
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
    for name, (seconds, calls) in ranked:
        print(f"  {seconds * 1e3:8.2f} ms {int(calls):5d}x  {name[:110]}", flush=True)
    print("  by group: " + ", ".join(f"{g} {s:.3f} s" for g, s in groups.items()), flush=True)
    return {
        "groups_s": groups,
        "top": [{"kernel": n, "s": s, "calls": int(c)} for n, (s, c) in ranked],
    }


def run_variant(
    name: str, repeats: int, sync: Callable[[], None], profile_top: int = 0
) -> dict[str, Any]:
    import torch

    from cinecloud.engine.speed import compile_regions, set_attention

    case = CASES["wan2.1-1.3b"]
    torch.manual_seed(0)
    pipe = build_pipeline(case, "cuda", torch.bfloat16)
    model = pipe.transformer
    embeds = make_embeds(case, "cuda", torch.bfloat16)
    c, f, h, w = case.latent
    gen = torch.Generator("cpu").manual_seed(2)
    x = {
        "hidden_states": torch.randn(1, c, f, h, w, generator=gen).to("cuda", torch.bfloat16),
        "timestep": torch.full((1,), 500, device="cuda"),
        "encoder_hidden_states": embeds.prompt,
        "return_dict": False,
    }
    if name != "eager":
        set_attention(model, "_flash_3")
        if "fused" in name:
            model.fuse_qkv_projections()
        if "cdt" in name:
            import torch._inductor.config as inductor_config

            inductor_config.coordinate_descent_tuning = True
        if "autotune" in name:
            for block in model.blocks:
                block.compile(mode="max-autotune-no-cudagraphs", dynamic=False)
        else:
            compile_regions(model)
    step = step_fn(model, x, embeds.negative, batched="cfg-batch" in name)
    started = time.perf_counter()
    out = step()
    sync()
    first = time.perf_counter() - started
    samples = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        step()
        sync()
        samples.append(time.perf_counter() - started)
    profiled = profile_step(step, sync, profile_top) if profile_top else None
    del pipe, model
    result = {"first_s": first, "step_s": statistics.median(samples), "out": out.float().cpu()}
    if profiled is not None:
        result["profile"] = profiled
    return result


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS[:-1]))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", type=int, default=0, metavar="TOP", help="profile each step")
    p.add_argument("--json", type=Path, default=RESULTS / "gpu_forward.json")
    args = p.parse_args(argv)

    def sync() -> None:
        torch.cuda.synchronize()

    case = CASES["wan2.1-1.3b"]
    ceiling = matmul_ceiling("cuda", torch.bfloat16, 8192, sync)["tflops"]
    step_flop = FLOPS["wan"](case, 2)
    rows: dict[str, Any] = {}
    outs: dict[str, Any] = {}
    for name in args.variants:
        r = run_variant(name, args.repeats, sync, args.profile)
        outs[name] = r.pop("out")
        r["tflops"] = step_flop / r["step_s"] / 1e12
        r["steps50_s"] = 50 * r["step_s"]
        rows[name] = r
        print(f"{name}: step {r['step_s']:.3f} s, 50 steps {r['steps50_s']:.1f} s", flush=True)
        torch.compiler.reset()
        if "cdt" in name:
            import torch._inductor.config as inductor_config

            inductor_config.coordinate_descent_tuning = False
        torch.cuda.empty_cache()
    base = outs.get("eager")
    for name, r in rows.items():
        r["rel_err_vs_eager"] = rel_err(outs[name], base) if base is not None else None
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "matmul_tflops": ceiling,
        "variants": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    t = Table(title=f"Wan2.1-1.3B step (2 branches), {result['device']}, matmul {ceiling:.0f}")
    for col in ("variant", "step s", "50 steps s", "TFLOP/s", "of matmul", "first s", "rel err"):
        t.add_column(col)
    for name, r in rows.items():
        err = r["rel_err_vs_eager"]
        t.add_row(
            name,
            f"{r['step_s']:.3f}",
            f"{r['steps50_s']:.1f}",
            f"{r['tflops']:.0f}",
            f"{r['tflops'] / ceiling:.0%}",
            f"{r['first_s']:.1f}",
            "" if err is None else f"{err:.1e}",
        )
    Console(width=140).print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
