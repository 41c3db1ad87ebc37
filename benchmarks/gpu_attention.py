"""Attention kernels alone, at the shapes the full-size video models run.

Each backend of diffusers' attention dispatch that this machine can run (FlashAttention
3 when installed, cuDNN, flash and efficient SDPA, native SDPA) is timed on one
attention call of each model's self-attention, bf16, (batch, sequence, heads, head_dim):

- ``wan2.1-1.3b``: 1 x 32,760 x 12 x 128 (one guidance branch per forward);
- ``ltx-2b``: 2 x 6,930 x 32 x 64 (guidance batched);
- ``cogvideox-2b``: 2 x 17,776 x 30 x 64 (text and video tokens together, batched).

Reported: median milliseconds (CUDA events, ``--repeats`` calls after warm-up), the
counted TFLOP/s (4 * B * H * S^2 * D per call), its fraction of a bf16 8192^3 matmul
measured in the same run, and the error against a float32 reference
(``||out - ref|| / ||ref||``; fresh random inputs per shape).

    python benchmarks/gpu_attention.py

Writes ``benchmarks/results/gpu_attention.json`` unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "wan2.1-1.3b": (1, 32760, 12, 128),
    "ltx-2b": (2, 6930, 32, 64),
    "cogvideox-2b": (2, 17776, 30, 64),
}
BACKENDS = ("_flash_3", "_native_cudnn", "_native_flash", "_native_efficient", "native")


def time_ms(fn: Any, repeats: int) -> list[float]:
    import torch

    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return samples


def matmul_tflops(repeats: int) -> float:
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = statistics.median(time_ms(lambda: a @ b, repeats))
    return 2 * 8192**3 / (ms / 1e3) / 1e12


def measure_shape(shape: tuple[int, int, int, int], repeats: int) -> dict[str, Any]:
    import torch
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    from cinecloud.engine.attention import enable_flash_attention_3

    enable_flash_attention_3()
    b, s, h, d = shape
    gen = torch.Generator("cuda").manual_seed(sum(shape))
    q, k, v = (
        torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3)
    )
    # float32 reference: SDPA's memory-efficient kernel, (B, H, S, D)
    ref = torch.nn.functional.scaled_dot_product_attention(
        *(t.float().transpose(1, 2) for t in (q, k, v))
    ).transpose(1, 2)
    flop = 4 * b * h * s * s * d
    out: dict[str, Any] = {}
    for name in BACKENDS:
        backend = AttentionBackendName(name)

        def call(backend: Any = backend) -> Any:
            return dispatch_attention_fn(q, k, v, backend=backend)

        try:
            got = call()
            torch.cuda.synchronize()
        except Exception as exc:  # not installed here, or no kernel for this shape
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        err = float(torch.linalg.vector_norm(got.float() - ref) / torch.linalg.vector_norm(ref))
        ms = statistics.median(time_ms(call, repeats))
        out[name] = {"ms": ms, "tflops": flop / (ms / 1e3) / 1e12, "rel_err": err}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", type=Path, default=RESULTS / "gpu_attention.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    ceiling = matmul_tflops(args.repeats)
    result: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "matmul_tflops": ceiling,
        "shapes": {name: measure_shape(shape, args.repeats) for name, shape in SHAPES.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    t = Table(title=f"Attention alone, bf16, {result['device']}; matmul {ceiling:.0f} TFLOP/s")
    for col in ("model (B x S x H x D)", "backend", "ms", "TFLOP/s", "of matmul", "rel err"):
        t.add_column(col)
    for name, rows in result["shapes"].items():
        label = f"{name} ({' x '.join(map(str, SHAPES[name]))})"
        for backend, r in rows.items():
            if "error" in r:
                t.add_row(label, backend, "-", "-", "-", r["error"][:60])
            else:
                t.add_row(
                    label,
                    backend,
                    f"{r['ms']:.2f}",
                    f"{r['tflops']:.0f}",
                    f"{r['tflops'] / ceiling:.0%}",
                    f"{r['rel_err']:.1e}",
                )
            label = ""
    Console(width=160).print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
