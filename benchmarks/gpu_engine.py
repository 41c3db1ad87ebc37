"""Transformer forward time of a full-size video model: plain diffusers vs cinecloud's engine.

The model is built at full size from its published configuration with random
weights (speed does not depend on the weights' values) and run on one denoising
step's input with classifier-free guidance batched (batch 2), as both a plain
diffusers user and cinecloud's runner would:

- ``plain``: eager, diffusers' default attention backend;
- ``cinecloud``: the attention backend chosen by measurement, then regional
  compile (each repeated block), as ``cinecloud.engine.speed`` does at load.

Each side is timed as the median of ``--repeats`` forwards after ``--warmup``,
with a device synchronise; the table gives seconds per forward, the ratio, and
the achieved TFLOP/s from the model's analytic FLOP count.

    python benchmarks/gpu_engine.py --model wan2.1-1.3b          # on the GPU
    python benchmarks/gpu_engine.py --model wan2.1-1.3b --tiny   # a CPU smoke run

Writes ``benchmarks/results/gpu_engine_<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Case:
    config: dict[str, Any]
    latent: tuple[int, int, int, int]  # channels, latent frames, latent height, width
    text_tokens: int
    what: str


# Wan2.1-T2V-1.3B at 480x832, 81 frames: latents 16 x 21 x 60 x 104 (32,760 tokens).
CASES: dict[str, Case] = {
    "wan2.1-1.3b": Case(
        {
            "patch_size": (1, 2, 2),
            "num_attention_heads": 12,
            "attention_head_dim": 128,
            "in_channels": 16,
            "out_channels": 16,
            "text_dim": 4096,
            "freq_dim": 256,
            "ffn_dim": 8960,
            "num_layers": 30,
            "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads",
            "eps": 1e-6,
        },
        (16, 21, 60, 104),
        512,
        "Wan2.1-T2V-1.3B, 480x832, 81 frames",
    ),
}
TINY: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "text_dim": 32,
    "freq_dim": 16,
    "ffn_dim": 32,
    "num_layers": 2,
}


def wan_flops(case: Case, batch: int) -> float:
    """Matmul FLOPs of one Wan forward (self-attention, cross-attention, FFN)."""
    c = case.config
    d = c["num_attention_heads"] * c["attention_head_dim"]
    _, f, h, w = case.latent
    pt, ph, pw = c["patch_size"]
    n = (f // pt) * (h // ph) * (w // pw)
    t = case.text_tokens
    per_layer = (
        2 * n * d * 4 * d  # self-attention projections
        + 4 * n * n * d  # QK^T and AV
        + 2 * n * d * 2 * d
        + 2 * t * d * 2 * d  # cross-attention q, o and k, v
        + 4 * n * t * d  # cross-attention scores and values
        + 2 * n * d * c["ffn_dim"] * 2  # FFN
    )
    return float(batch * c["num_layers"] * per_layer)


def build(case: Case, device: str, dtype: Any) -> Any:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(**case.config).to(device=device, dtype=dtype).eval()


def inputs(case: Case, device: str, dtype: Any, batch: int) -> dict[str, Any]:
    import torch

    gen = torch.Generator(device).manual_seed(0)
    return {
        "hidden_states": torch.randn(
            batch, *case.latent, device=device, dtype=dtype, generator=gen
        ),
        "timestep": torch.full((batch,), 500.0, device=device),
        "encoder_hidden_states": torch.randn(
            batch,
            case.text_tokens,
            case.config["text_dim"],
            device=device,
            dtype=dtype,
            generator=gen,
        ),
        "return_dict": False,
    }


def timed(
    fn: Callable[[], None], sync: Callable[[], None], warmup: int, repeats: int
) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from cinecloud.engine.speed import CUDA_ATTENTION_CANDIDATES, choose_attention, compile_regions

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", choices=sorted(CASES), default="wan2.1-1.3b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny config with the same code path")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    case = CASES[args.model]
    if args.tiny:
        case = Case({**case.config, **TINY}, (case.latent[0], 3, 8, 8), 8, f"{case.what} (tiny)")
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    batch = 2  # guidance batched: conditional and unconditional in one forward

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    model = build(case, args.device, dtype)
    x = inputs(case, args.device, dtype, batch)

    def forward() -> None:
        with torch.inference_mode():
            model(**x)

    plain = timed(forward, sync, args.warmup, args.repeats)
    candidates = CUDA_ATTENTION_CANDIDATES if cuda else ("native",)
    attention, attention_times = choose_attention(model, candidates, forward, repeats=1)
    compile_started = time.perf_counter()
    blocks = compile_regions(model)
    forward()
    sync()
    compile_s = time.perf_counter() - compile_started
    ours = timed(forward, sync, args.warmup, args.repeats)

    flops = wan_flops(case, batch)
    rows = {"plain": statistics.median(plain), "cinecloud": statistics.median(ours)}
    name = torch.cuda.get_device_name() if cuda else "cpu"
    table = Table(title=f"{case.what}: one forward, guidance batched ({name}, {dtype})")
    for col in ("engine", "s / forward", "TFLOP/s", "x plain"):
        table.add_column(col, justify="right")
    for key, secs in rows.items():
        table.add_row(
            key, f"{secs:.4f}", f"{flops / secs / 1e12:.1f}", f"{rows['plain'] / secs:.2f}"
        )
    Console(width=120).print(table)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": name,
        "torch": torch.__version__,
        "case": case.what,
        "dtype": str(dtype),
        "tflop_per_forward": flops / 1e12,
        "plain_s": plain,
        "cinecloud_s": ours,
        "attention": attention,
        "attention_times_s": attention_times,
        "compiled_blocks": blocks,
        "compile_s": compile_s,
        "speedup": rows["plain"] / rows["cinecloud"],
    }
    out = args.json or RESULTS / f"gpu_engine_{args.model}{'_tiny' if args.tiny else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
