"""End-to-end video generation time of full-size video models: plain diffusers vs cinecloud.

Each model is built at full size from its published configuration with random
weights (speed does not depend on the weights' values): the transformer, the full
VAE and the scheduler, put together as diffusers' own pipeline (``WanPipeline``,
``LTXPipeline``, ``CogVideoXPipeline``) without a text encoder: the prompt and
negative prompt embeddings are random tensors of the text encoder's output shape,
handed to the pipeline as ``prompt_embeds`` / ``negative_prompt_embeds``.

- ``wan2.1-1.3b``: Wan2.1-T2V-1.3B, 480x832, 81 frames, 50 steps, guidance 5.0
  (512 text tokens; two transformer forwards per step, conditional and not);
- ``ltx-2b``: LTX-Video 2B (0.9), 704x480, 161 frames, 50 steps, guidance 3.0
  (128 text tokens; guidance batched, batch 2);
- ``cogvideox-2b``: CogVideoX-2B, 720x480, 49 frames, 50 steps, guidance 6.0
  (226 text tokens; guidance batched, batch 2).

The transformer runs in bf16 on CUDA; the VAE in bf16 too, except Wan's, which is
float32 as Wan (and cinecloud's runner) keep it. On the same pipeline object and the
same inputs (same latents from a seeded generator, same embeddings), one run measures:

- ``plain``: the pipeline called as a user would: eager, diffusers' default attention
  backend;
- ``cinecloud``: the same pipeline after cinecloud's tuning at load
  (``cinecloud.engine.speed``): the attention backend chosen by measurement on one
  transformer forward at the real shapes, then regional compile (each repeated block),
  then a short warm-up run.

Both sides are timed warm (after a ``--warmup-steps`` run each; the warm-up, attention
choice and compile times are reported apart, not counted per video). One pipeline call
(``output_type="np"``) gives the denoise loop (up to the end of the last step, found
with ``callback_on_step_end``), the VAE decode (with the pipeline's postprocessing)
and the total. Also measured in the same run:

- the bf16 matmul ceiling (median of 8192^3 matmuls), against which the counted
  TFLOP/s of the denoise loop (analytic transformer FLOPs of all steps, both guidance
  branches, over the denoise seconds) is given as a fraction;
- equivalence: one forward of the tuned transformer against an eager reference
  forward (taken before tuning) on the same inputs, as ``||a - b|| / ||b||``
  (acceptance: at most 2e-2);
- peak GPU memory of each side's timed run.

Models run one at a time and the JSON is rewritten after each, so a killed run still
leaves the models it finished.

    python benchmarks/gpu_engine.py                          # all three, on the GPU
    python benchmarks/gpu_engine.py --models wan2.1-1.3b     # one of them
    python benchmarks/gpu_engine.py --tiny --device cpu      # a CPU smoke run (tiny configs)

Writes ``benchmarks/results/gpu_engine.json`` (``gpu_engine_tiny.json`` with ``--tiny``)
unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ACCEPT_REL_ERR = 2e-2


@dataclass(frozen=True)
class Video:
    height: int
    width: int
    frames: int
    steps: int
    guidance: float


@dataclass(frozen=True)
class Case:
    family: str  # "wan", "ltx" or "cogvideox"
    config: dict[str, Any]  # the transformer's
    vae: dict[str, Any]  # the VAE's ({} is the class default, the full-size one)
    video: Video
    compression: tuple[int, int]  # the VAE's: temporal, spatial
    channels: int  # latent channels
    patch: tuple[int, int, int]  # the transformer's: frames, height, width
    text_tokens: int
    text_dim: int
    what: str
    vae_float32: bool = False  # Wan keeps its VAE in float32

    @property
    def latent(self) -> tuple[int, int, int, int]:
        """Channels, latent frames, latent height, latent width."""
        t, s = self.compression
        v = self.video
        return (self.channels, (v.frames - 1) // t + 1, v.height // s, v.width // s)

    @property
    def tokens(self) -> int:
        """Video tokens the transformer sees."""
        _, f, h, w = self.latent
        pt, ph, pw = self.patch
        return (f // pt) * (h // ph) * (w // pw)


WAN_CONFIG: dict[str, Any] = {
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
}
# diffusers' defaults are the published 2B configurations (LTX-Video 0.9, CogVideoX-2b);
# written out so that the FLOP counts read them.
LTX_CONFIG: dict[str, Any] = {
    "in_channels": 128,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 32,
    "attention_head_dim": 64,
    "cross_attention_dim": 2048,
    "num_layers": 28,
    "caption_channels": 4096,
}
COGVIDEOX_CONFIG: dict[str, Any] = {
    "num_attention_heads": 30,
    "attention_head_dim": 64,
    "in_channels": 16,
    "out_channels": 16,
    "time_embed_dim": 512,
    "text_embed_dim": 4096,
    "num_layers": 30,
    "sample_width": 90,
    "sample_height": 60,
    "sample_frames": 49,
    "patch_size": 2,
    "max_text_seq_length": 226,
    "use_rotary_positional_embeddings": False,
    "use_learned_positional_embeddings": False,
}

CASES: dict[str, Case] = {
    # latents 16 x 21 x 60 x 104: 32,760 tokens
    "wan2.1-1.3b": Case(
        "wan",
        WAN_CONFIG,
        {},
        Video(480, 832, 81, 50, 5.0),
        (4, 8),
        16,
        (1, 2, 2),
        512,
        4096,
        "Wan2.1-T2V-1.3B, 480x832, 81 frames",
        vae_float32=True,
    ),
    # latents 128 x 21 x 15 x 22: 6,930 tokens
    "ltx-2b": Case(
        "ltx",
        LTX_CONFIG,
        {},
        Video(480, 704, 161, 50, 3.0),
        (8, 32),
        128,
        (1, 1, 1),
        128,
        4096,
        "LTX-Video 2B, 704x480, 161 frames",
    ),
    # latents 16 x 13 x 60 x 90: 17,550 tokens (+ 226 text tokens, joint attention)
    "cogvideox-2b": Case(
        "cogvideox",
        COGVIDEOX_CONFIG,
        {},
        Video(480, 720, 49, 50, 6.0),
        (4, 8),
        16,
        (1, 2, 2),
        226,
        4096,
        "CogVideoX-2B, 720x480, 49 frames",
    ),
}

# The same code path at toy sizes (tiny transformers and VAEs), for a CPU smoke run.
TINY_VIDEO = Video(64, 64, 9, 3, 5.0)
TINY_CASES: dict[str, Case] = {
    "wan2.1-1.3b": replace(
        CASES["wan2.1-1.3b"],
        config={
            **WAN_CONFIG,
            "num_attention_heads": 2,
            "attention_head_dim": 8,
            "text_dim": 32,
            "freq_dim": 16,
            "ffn_dim": 32,
            "num_layers": 2,
        },
        vae={"base_dim": 8, "num_res_blocks": 1},
        video=TINY_VIDEO,
        text_tokens=8,
        text_dim=32,
        what="Wan2.1-T2V-1.3B (tiny)",
    ),
    "ltx-2b": replace(
        CASES["ltx-2b"],
        config={
            **LTX_CONFIG,
            "in_channels": 8,
            "out_channels": 8,
            "num_attention_heads": 2,
            "attention_head_dim": 8,
            "cross_attention_dim": 16,
            "num_layers": 2,
            "caption_channels": 32,
        },
        vae={
            "latent_channels": 8,
            "block_out_channels": (8, 8, 8, 8),
            "decoder_block_out_channels": (8, 8, 8, 8),
            "layers_per_block": (1, 1, 1, 1, 1),
            "decoder_layers_per_block": (1, 1, 1, 1, 1),
        },
        video=replace(TINY_VIDEO, guidance=3.0),
        channels=8,
        text_tokens=8,
        text_dim=32,
        what="LTX-Video 2B (tiny)",
    ),
    "cogvideox-2b": replace(
        CASES["cogvideox-2b"],
        config={
            **COGVIDEOX_CONFIG,
            "num_attention_heads": 2,
            "attention_head_dim": 8,
            "time_embed_dim": 16,
            "text_embed_dim": 32,
            "num_layers": 2,
            "sample_width": 8,
            "sample_height": 8,
            "sample_frames": 9,
            "max_text_seq_length": 8,
        },
        vae={"block_out_channels": (16, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4},
        video=replace(TINY_VIDEO, guidance=6.0),
        text_tokens=8,
        text_dim=32,
        what="CogVideoX-2B (tiny)",
    ),
}


# ------------------------------------------------------------------ FLOPs


def wan_flops(case: Case, batch: int) -> float:
    """Matmul FLOPs of one Wan forward (self-attention, cross-attention, FFN)."""
    c = case.config
    d = c["num_attention_heads"] * c["attention_head_dim"]
    n = case.tokens
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


def ltx_flops(case: Case, batch: int) -> float:
    """Matmul FLOPs of one LTX-Video forward (self-attention, cross-attention to the
    caption tokens projected to the model width, FFN of 4x width)."""
    c = case.config
    d = c["num_attention_heads"] * c["attention_head_dim"]
    n = case.tokens
    t = case.text_tokens
    per_layer = (
        2 * n * d * 4 * d  # self-attention projections
        + 4 * n * n * d  # QK^T and AV
        + 2 * n * d * 2 * d
        + 2 * t * c["cross_attention_dim"] * 2 * d  # cross-attention q, o and k, v
        + 4 * n * t * d  # cross-attention scores and values
        + 2 * n * d * 4 * d * 2  # FFN (GELU, 4x)
    )
    return float(batch * c["num_layers"] * per_layer)


def cogvideox_flops(case: Case, batch: int) -> float:
    """Matmul FLOPs of one CogVideoX forward: joint attention over text and video
    tokens together (no cross-attention), FFN of 4x width over all of them."""
    c = case.config
    d = c["num_attention_heads"] * c["attention_head_dim"]
    m = case.tokens + case.text_tokens
    per_layer = (
        2 * m * d * 4 * d  # q, k, v, o projections
        + 4 * m * m * d  # QK^T and AV
        + 2 * m * d * 4 * d * 2  # FFN (GELU, 4x)
    )
    return float(batch * c["num_layers"] * per_layer)


FLOPS: dict[str, Callable[[Case, int], float]] = {
    "wan": wan_flops,
    "ltx": ltx_flops,
    "cogvideox": cogvideox_flops,
}


def video_flops(case: Case) -> float:
    """Transformer FLOPs of one video: every step, both guidance branches."""
    branches = 2 if case.video.guidance > 1.0 else 1
    return case.video.steps * FLOPS[case.family](case, branches)


# ------------------------------------------------------------------ building


def cast_as_loaded(model: Any, dtype: Any) -> Any:
    """Cast ``model`` to ``dtype`` as ``from_pretrained(torch_dtype=dtype)`` leaves it: the
    checkpoint's floating tensors in ``dtype`` except those of the class's
    ``_keep_in_fp32_modules`` (Wan's norms, time embedder, modulation table, rope),
    which stay float32; buffers outside the checkpoint keep the dtype they were made in.
    (``.to(dtype)`` would cast those too, unlike a model loaded from the Hub.)"""
    keep = model._keep_in_fp32_modules or []
    saved = set(model.state_dict())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        parts = name.split(".")
        if name in saved and tensor.is_floating_point() and not any(k in parts for k in keep):
            tensor.data = tensor.data.to(dtype)
    return model


def build_pipeline(case: Case, device: str, dtype: Any) -> Any:
    """diffusers' pipeline for ``case`` with random weights and no text encoder."""
    import torch

    from cinecloud.engine.catalog import LTX_SCHEDULER, WAN_SCHEDULER

    vae_dtype = torch.float32 if case.vae_float32 else dtype
    with torch.device(device):
        if case.family == "wan":
            from diffusers import (
                AutoencoderKLWan,
                UniPCMultistepScheduler,
                WanPipeline,
                WanTransformer3DModel,
            )

            transformer = WanTransformer3DModel(**case.config)
            vae = AutoencoderKLWan(**case.vae)
            scheduler = UniPCMultistepScheduler(**WAN_SCHEDULER)
            pipe_class: Any = WanPipeline
        elif case.family == "ltx":
            from diffusers import (
                AutoencoderKLLTXVideo,
                FlowMatchEulerDiscreteScheduler,
                LTXPipeline,
                LTXVideoTransformer3DModel,
            )

            transformer = LTXVideoTransformer3DModel(**case.config)
            vae = AutoencoderKLLTXVideo(**case.vae)
            scheduler = FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER)
            pipe_class = LTXPipeline
        elif case.family == "cogvideox":
            from diffusers import (
                AutoencoderKLCogVideoX,
                CogVideoXDDIMScheduler,
                CogVideoXPipeline,
                CogVideoXTransformer3DModel,
            )

            transformer = CogVideoXTransformer3DModel(**case.config)
            vae = AutoencoderKLCogVideoX(**case.vae)
            # as THUDM/CogVideoX-2b: v-prediction DDIM, zero terminal SNR, trailing
            scheduler = CogVideoXDDIMScheduler(
                prediction_type="v_prediction",
                clip_sample=False,
                rescale_betas_zero_snr=True,
                timestep_spacing="trailing",
            )
            pipe_class = CogVideoXPipeline
        else:
            raise ValueError(f"unknown family {case.family!r}")
    pipe = pipe_class(
        tokenizer=None,
        text_encoder=None,
        vae=cast_as_loaded(vae, vae_dtype).eval(),
        transformer=cast_as_loaded(transformer, dtype).eval(),
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class Embeds:
    prompt: Any
    negative: Any
    mask: Any  # all ones: every token a real one (LTX takes the masks)


def make_embeds(case: Case, device: str, dtype: Any) -> Embeds:
    import torch

    gen = torch.Generator("cpu").manual_seed(1)
    shape = (1, case.text_tokens, case.text_dim)
    prompt, negative = (torch.randn(shape, generator=gen) for _ in range(2))
    mask = torch.ones(1, case.text_tokens, dtype=torch.bool, device=device)
    return Embeds(prompt.to(device, dtype), negative.to(device, dtype), mask)


def call_kwargs(case: Case, embeds: Embeds) -> dict[str, Any]:
    """The pipeline's arguments for ``case``'s video, without generator or steps."""
    v = case.video
    kwargs: dict[str, Any] = {
        "height": v.height,
        "width": v.width,
        "num_frames": v.frames,
        "guidance_scale": v.guidance,
        "prompt_embeds": embeds.prompt,
        "negative_prompt_embeds": embeds.negative,
    }
    if case.family == "ltx":
        kwargs["prompt_attention_mask"] = embeds.mask
        kwargs["negative_prompt_attention_mask"] = embeds.mask
    return kwargs


def transformer_inputs(case: Case, pipe: Any, embeds: Embeds) -> dict[str, Any]:
    """One transformer forward's inputs as the pipeline makes them at ``case``'s size:
    Wan one guidance branch per forward (batch 1), LTX and CogVideoX both (batch 2)."""
    import torch

    model = pipe.transformer
    device, dtype = model.device, model.dtype
    gen = torch.Generator("cpu").manual_seed(2)
    c, f, h, w = case.latent

    def randn(*shape: int) -> Any:
        return torch.randn(shape, generator=gen).to(device, dtype)

    if case.family == "wan":
        return {
            "hidden_states": randn(1, c, f, h, w),
            "timestep": torch.full((1,), 500, device=device),
            "encoder_hidden_states": embeds.prompt,
            "return_dict": False,
        }
    both = torch.cat([embeds.negative, embeds.prompt])
    if case.family == "ltx":
        temporal = pipe.vae_temporal_compression_ratio
        spatial = pipe.vae_spatial_compression_ratio
        return {
            "hidden_states": randn(2, f * h * w, c),
            "encoder_hidden_states": both,
            "timestep": torch.full((2,), 500.0, device=device),
            "encoder_attention_mask": torch.cat([embeds.mask, embeds.mask]),
            "num_frames": f,
            "height": h,
            "width": w,
            "rope_interpolation_scale": (temporal / 25, spatial, spatial),  # frame_rate 25
            "return_dict": False,
        }
    return {
        "hidden_states": randn(2, f, c, h, w),
        "encoder_hidden_states": both,
        "timestep": torch.full((2,), 500, device=device),
        "image_rotary_emb": None,
        "return_dict": False,
    }


# ------------------------------------------------------------------ measuring


@dataclass
class Run:
    denoise_s: float
    decode_s: float
    total_s: float
    video: Any


def run_pipeline(
    pipe: Any,
    kwargs: dict[str, Any],
    steps: int,
    device: str,
    sync: Callable[[], None],
    output_type: str = "np",
) -> Run:
    """One pipeline call; the denoise loop ends at the last step's callback."""
    import torch

    marks: list[float] = []

    def on_step(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if i == p.num_timesteps - 1:
            sync()
            marks.append(time.perf_counter())
        return tensors

    generator = torch.Generator(device).manual_seed(0)
    sync()
    started = time.perf_counter()
    (video,) = pipe(
        **kwargs,
        num_inference_steps=steps,
        generator=generator,
        output_type=output_type,
        return_dict=False,
        callback_on_step_end=on_step,
    )
    sync()
    ended = time.perf_counter()
    split = marks[-1] if marks else ended
    return Run(split - started, ended - split, ended - started, video)


def rel_err(a: Any, b: Any) -> float:
    """``||a - b|| / ||b||`` in float32 (torch tensors or numpy arrays)."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        a32, b32 = a.float(), b.float()
        return float(torch.linalg.vector_norm(a32 - b32) / torch.linalg.vector_norm(b32))
    a32, b32 = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return float(np.linalg.norm(a32 - b32) / np.linalg.norm(b32))


def matmul_ceiling(
    device: str, dtype: Any, size: int, sync: Callable[[], None], repeats: int = 7, inner: int = 10
) -> dict[str, Any]:
    """Median TFLOP/s of ``size``^3 matmuls (``inner`` per timed sample)."""
    import torch

    gen = torch.Generator("cpu").manual_seed(3)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    for _ in range(3):
        a @ b
    samples = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync()
        samples.append((time.perf_counter() - started) / inner)
    seconds = statistics.median(samples)
    return {
        "size": size,
        "dtype": str(dtype),
        "matmul_s": samples,
        "tflops": 2 * size**3 / seconds / 1e12,
    }


def measure(
    name: str,
    case: Case,
    device: str,
    dtype: Any,
    *,
    compile: bool,
    warmup_steps: int,
    ceiling_tflops: float,
    log: Callable[[str], None],
    record: dict[str, Any],
    save: Callable[[], None],
) -> None:
    """Plain and cinecloud runs of one model, into ``record`` as they finish (``save``
    writes it out after each side, so that a failure or a kill keeps what was done)."""
    import torch
    from diffusers.models.attention_dispatch import AttentionBackendName, attention_backend
    from diffusers.utils.constants import DIFFUSERS_ATTN_BACKEND

    from cinecloud.engine.attention import dispatch_cogvideox_attention, routes_attention
    from cinecloud.engine.speed import CUDA_ATTENTION_CANDIDATES, choose_attention, compile_regions

    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peak_gib() -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    def reset_peak() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    steps = case.video.steps
    flops = video_flops(case)
    record.update(
        {
            "case": case.what,
            "video": {
                "height": case.video.height,
                "width": case.video.width,
                "frames": case.video.frames,
                "steps": steps,
                "guidance_scale": case.video.guidance,
            },
            "latent": list(case.latent),
            "video_tokens": case.tokens,
            "text_tokens": case.text_tokens,
            "tflop_per_forward_batch1": FLOPS[case.family](case, 1) / 1e12,
            "tflop_per_video": flops / 1e12,
        }
    )
    # The diffusers default backend for the plain side; whatever the tuning sets
    # globally is undone when this model is done.
    with attention_backend(AttentionBackendName(DIFFUSERS_ATTN_BACKEND)):
        started = time.perf_counter()
        pipe = build_pipeline(case, device, dtype)
        sync()
        record["build_s"] = time.perf_counter() - started
        record["transformer_class"] = type(pipe.transformer).__name__
        record["vae_dtype"] = str(pipe.vae.dtype)
        embeds = make_embeds(case, device, dtype)
        kwargs = call_kwargs(case, embeds)
        x = transformer_inputs(case, pipe, embeds)
        model = pipe.transformer

        def forward() -> Any:
            with torch.no_grad():  # the pipeline's own grad mode: no recompile after
                return model(**x)[0]

        log(f"{name}: eager reference forward")
        reference = forward()
        sync()

        log(f"{name}: plain warm-up ({warmup_steps} steps) and run ({steps} steps)")
        warm = run_pipeline(pipe, kwargs, warmup_steps, device, sync)
        reset_peak()
        plain = run_pipeline(pipe, kwargs, steps, device, sync)
        record["plain"] = {
            "warmup_s": warm.total_s,
            "denoise_s": plain.denoise_s,
            "decode_s": plain.decode_s,
            "total_s": plain.total_s,
            "peak_gib": peak_gib(),
            "video_shape": list(plain.video.shape),
        }
        del warm
        save()

        def probe() -> None:  # timed by choose_attention: wait for the device
            forward()
            sync()

        log(f"{name}: cinecloud tuning")
        dispatch_cogvideox_attention(model)  # as the CogVideoX family loads it
        candidates = CUDA_ATTENTION_CANDIDATES if cuda else ("native",)
        started = time.perf_counter()
        attention, attention_times = choose_attention(model, candidates, probe, repeats=1)
        sync()
        attention_s = time.perf_counter() - started
        started = time.perf_counter()
        blocks = compile_regions(model) if compile else 0
        warm = run_pipeline(pipe, kwargs, warmup_steps, device, sync, output_type="latent")
        compile_warmup_s = time.perf_counter() - started
        del warm

        tuned = forward()
        sync()
        err = rel_err(tuned, reference)
        del tuned, reference

        log(f"{name}: cinecloud run ({steps} steps)")
        reset_peak()
        ours = run_pipeline(pipe, kwargs, steps, device, sync)
        record["cinecloud"] = {
            "attention": attention,
            "attention_dispatched": routes_attention(model),
            "attention_times_s": attention_times,
            "attention_choice_s": attention_s,
            "compiled_blocks": blocks,
            "compile_warmup_s": compile_warmup_s,
            "denoise_s": ours.denoise_s,
            "decode_s": ours.decode_s,
            "total_s": ours.total_s,
            "peak_gib": peak_gib(),
            "video_shape": list(ours.video.shape),
        }
        record["equivalence"] = {"rel_err": err, "ok": err <= ACCEPT_REL_ERR}
        record["video_rel_err"] = rel_err(ours.video, plain.video)
        record["speedup"] = {
            "denoise": plain.denoise_s / ours.denoise_s,
            "decode": plain.decode_s / ours.decode_s,
            "total": plain.total_s / ours.total_s,
        }
        for side, run in (("plain", plain), ("cinecloud", ours)):
            tflops = flops / run.denoise_s / 1e12
            record[side]["counted_tflops"] = tflops
            record[side]["ceiling_fraction"] = tflops / ceiling_tflops


def free_memory(cuda: bool) -> None:
    import torch

    gc.collect()
    torch.compiler.reset()
    if cuda:
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ reporting


def table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(
        title=(
            f"End-to-end video, plain vs cinecloud ({result['device']}, {result['dtype']}); "
            f"matmul ceiling {result['ceiling']['tflops']:.3g} TFLOP/s"
        )
    )
    for col in (
        "model",
        "engine",
        "denoise s",
        "decode s",
        "total s",
        "x plain",
        "TFLOP/s",
        "of ceiling",
        "peak GiB",
        "tuning",
        "rel err",
    ):
        t.add_column(col, justify="left" if col in ("model", "engine", "tuning") else "right")
    for name, r in result["models"].items():
        if "error" in r:
            t.add_row(name, "failed", *[""] * 7, r["error"][:120], "")
            continue
        for side in ("plain", "cinecloud"):
            s = r[side]
            peak = "" if s["peak_gib"] is None else f"{s['peak_gib']:.1f}"
            if side == "plain":
                tuning, ratio, err = f"warm-up {s['warmup_s']:.1f}s", "", ""
            else:
                backend = s["attention"] + ("" if s["attention_dispatched"] else " (n/a)")
                tuning = (
                    f"{backend}, {s['compiled_blocks']} blocks; choose "
                    f"{s['attention_choice_s']:.1f}s + compile/warm-up {s['compile_warmup_s']:.1f}s"
                )
                ratio = f"{r['speedup']['denoise']:.2f} / {r['speedup']['total']:.2f}"
                err = f"{r['equivalence']['rel_err']:.1e}"
            t.add_row(
                name if side == "plain" else "",
                side,
                f"{s['denoise_s']:.2f}",
                f"{s['decode_s']:.2f}",
                f"{s['total_s']:.2f}",
                ratio,
                f"{s['counted_tflops']:.3g}",
                f"{s['ceiling_fraction']:.0%}",
                peak,
                tuning,
                err,
            )
    t.caption = (
        "x plain: plain / cinecloud seconds, denoise / total. TFLOP/s: analytic transformer "
        "FLOPs of all steps and guidance branches over the denoise seconds. rel err: tuned vs "
        f"eager transformer forward (acceptance <= {ACCEPT_REL_ERR:g}). (n/a): the model's "
        "attention does not go through diffusers' dispatch."
    )
    return t


def main(argv: Sequence[str] | None = None) -> int:
    import diffusers
    import torch
    from rich.console import Console

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--models", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 50)")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps of each side's warm-up")
    p.add_argument("--tiny", action="store_true", help="tiny configs, the same code path")
    p.add_argument(
        "--compile", action="store_true", help="regional compile off CUDA too (on CUDA: always)"
    )
    p.add_argument("--ceiling-size", type=int, default=None, help="matmul size (8192; tiny 256)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if min(args.steps or 2, args.warmup_steps) < 2:
        p.error("steps must be at least 2 (LTX's schedule divides by steps - 1)")

    console = Console(width=200)

    def log(msg: str) -> None:
        console.log(msg)

    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    cases = TINY_CASES if args.tiny else CASES
    out = args.json or RESULTS / ("gpu_engine_tiny.json" if args.tiny else "gpu_engine.json")
    out.parent.mkdir(parents=True, exist_ok=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    size = args.ceiling_size or (256 if args.tiny else 8192)
    log(f"matmul ceiling, {size}^3 {dtype}")
    ceiling = matmul_ceiling(args.device, dtype, size, sync)
    free_memory(cuda)
    result: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "dtype": str(dtype),
        "tiny": args.tiny,
        "compile": cuda or args.compile,
        "ceiling": ceiling,
        "models": {},
    }

    def write() -> None:
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    write()
    failed = False
    for name in args.models:
        case = cases[name]
        if args.steps is not None:
            case = replace(case, video=replace(case.video, steps=args.steps))
        record: dict[str, Any] = {"case": case.what}
        result["models"][name] = record
        try:
            measure(
                name,
                case,
                args.device,
                dtype,
                compile=cuda or args.compile,
                warmup_steps=args.warmup_steps,
                ceiling_tflops=ceiling["tflops"],
                log=log,
                record=record,
                save=write,
            )
        except Exception as exc:  # record it, go on with the next model
            failed = True
            traceback.print_exc()
            record["error"] = f"{type(exc).__name__}: {exc}"
        free_memory(cuda)
        write()
        log(f"{name} done; wrote {out}")
    console.print(table(result))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
