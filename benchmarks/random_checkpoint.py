# mypy: allow-untyped-calls
"""Write a random-weight checkpoint of Wan2.1-T2V-1.3B at full size, as the published
diffusers directory lays it out, for timing the whole service on a GPU.

The transformer (30 layers, 12 heads x 128, FFN 8960, text_dim 4096: the configuration
``benchmarks/gpu_engine.py`` times) and the VAE are full size, with the published
scheduler settings (``cinecloud.engine.catalog.WAN_SCHEDULER``). The text encoder is a
UMT5 of the published width (d_model 4096, 64 heads, gated-GELU FFN 10240) with
``--text-layers`` of its 24 layers (2 by default: it runs once a job, and 24 random
layers would only add 10 GB to write and load), and the tokenizer is the tiny
checkpoints' word-level one, padding to Wan's 512 tokens. Speed does not depend on the
weights' values; the videos are noise.

Written under ``--out`` as ``wan2.1-t2v-1.3b/``, the directory the registry reads for
``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (``engine.models_dir``), so the real worker loads it
through ``from_pretrained`` as it would the published weights:

    python benchmarks/random_checkpoint.py --out models --device cuda   # on the GPU host
    python benchmarks/random_checkpoint.py --out DIR --tiny             # a CPU smoke build
    python benchmarks/engine_busy.py --models-dir models --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_engine import CASES, TINY_CASES, cast_as_loaded  # noqa: E402
from make_tiny_wan import _build_tokenizer, save_staged  # noqa: E402

from cinecloud.engine.catalog import REAL_MODELS, WAN_SCHEDULER  # noqa: E402

NAME = next(m.name for m in REAL_MODELS if m.repo == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
TEXT_TOKENS = 512  # WanPipeline's max_sequence_length
SEED = 0


def umt5_config(tokenizer: Any, layers: int, *, tiny: bool) -> dict[str, Any]:
    """umt5-xxl's encoder settings (Wan's text encoder) with ``layers`` layers; ``tiny``
    narrows it to the tiny checkpoints' width."""
    width = (
        {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_heads": 4}
        if tiny
        else {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_heads": 64}
    )
    return {
        **width,
        "vocab_size": len(tokenizer),
        "num_layers": layers,
        "feed_forward_proj": "gated-gelu",
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "dropout_rate": 0.0,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def components(*, tiny: bool, text_layers: int, device: str) -> dict[str, Any]:
    """The pipeline's parts, made on ``device`` (a GPU makes 1.7 B random weights in
    seconds) and moved to the CPU; the transformer and text encoder in bf16, the VAE in
    float32 as Wan keeps it."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _build_tokenizer(TEXT_TOKENS)
    torch.manual_seed(SEED)
    with torch.device(device):
        encoder = UMT5EncoderModel(UMT5Config(**umt5_config(tokenizer, text_layers, tiny=tiny)))
        # the tiny case's rope spans the published video's length, as the full one's does
        case = (TINY_CASES if tiny else CASES)["wan2.1-1.3b"]
        transformer = WanTransformer3DModel(**case.config)
        vae = AutoencoderKLWan(**case.vae)
    return {
        "tokenizer": tokenizer,
        "text_encoder": encoder.to("cpu", torch.bfloat16),
        # as from_pretrained(torch_dtype=bf16) leaves it: Wan's norms and tables float32
        "transformer": cast_as_loaded(transformer.to("cpu"), torch.bfloat16),
        "vae": vae.to("cpu", torch.float32),
        "scheduler": UniPCMultistepScheduler(**WAN_SCHEDULER),
    }


def build(out: Path, *, tiny: bool, text_layers: int, device: str, force: bool) -> Path:
    """Save the pipeline to ``out/<NAME>`` (staged beside it, then swapped in, so a
    half-written directory never looks installed); kept if present unless ``force``."""
    from diffusers import WanPipeline

    target = out.resolve() / NAME
    if (target / "model_index.json").is_file() and not force:
        return target
    pipe = WanPipeline(**components(tiny=tiny, text_layers=text_layers, device=device))
    return save_staged(pipe, target)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, required=True, help="models directory to write into")
    p.add_argument("--tiny", action="store_true", help="tiny widths, for a CPU smoke run")
    p.add_argument("--text-layers", type=int, default=2, help="UMT5 layers (published: 24)")
    p.add_argument("--device", default="cpu", help="where to make the random weights")
    p.add_argument("--force", action="store_true", help="rebuild even if present")
    args = p.parse_args(argv)
    if args.text_layers < 1:
        p.error("--text-layers must be at least 1")
    start = time.perf_counter()
    target = build(
        args.out, tiny=args.tiny, text_layers=args.text_layers, device=args.device, force=args.force
    )
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"{target}: {size / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
