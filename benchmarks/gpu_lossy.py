"""Opt-in lossy speed options, each against the exact path: speed-up and error.

Every option runs on a fresh copy of the same transformer with the same inputs (same
noise from a seeded generator, same text), after a short warm-up run of its own
(``--warmup-steps``; compile happens there and is reported apart). The options
(``--options``; a ``+compile`` suffix adds cinecloud's regional compile, as the engine
applies it on CUDA, and then compares with ``exact+compile``):

- ``exact``: no option; the reference for every error.
- ``fbc-<t>``: diffusers' First Block Cache, ``FirstBlockCacheConfig(threshold=t)``.
- ``magcache``: diffusers' MagCache. Its magnitude ratios are model-dependent, so one
  calibration run (``MagCacheConfig(calibrate=True)``, on other inputs: another seed and
  other text) comes first; the ratios diffusers logs (one list per guidance branch,
  averaged) then go to ``MagCacheConfig(mag_ratios=...)`` with its default threshold.
- ``taylorseer``: diffusers' TaylorSeer in its lite mode (whole blocks skipped on
  predicted steps, the output projection forecast); the default patterns hook nothing
  in Wan (its attentions are ``attn1``/``attn2``).
- ``seacache``: diffusers' SeaCache with its defaults (built-in adapter for Wan T2V).
- ``fp8``: torchao, dynamic float8 activations and weights with per-row scales
  (``quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))``,
  with ``set_inductor_config=False`` so the compile settings match the baseline's).
  CUDA (compute capability 8.9+) only; "unavailable" when torchao is not installed.

Caches go on with ``transformer.enable_cache(config)`` and off with ``disable_cache()``.
An option that cannot run says why in the table and the JSON: ``skipped`` (not on this
device), ``unavailable`` (a package missing), ``not applicable`` (the model does not
support it), ``failed`` (it raised; the message and traceback are kept).

Workloads (``--workloads``):

- ``wan``: the full-size Wan2.1-T2V-1.3B transformer (``gpu_engine.CASES``) with random
  weights in diffusers' ``WanPipeline`` (UniPC on flow sigmas, shift 3.0; no text encoder:
  random ``prompt_embeds``/``negative_prompt_embeds`` of shape (1, 512, 4096); no VAE:
  ``output_type="latent"``), 480x832, 81 frames, 50 steps, guidance 5.0, bf16. Reported:
  the pipeline's seconds (the denoise loop: text and VAE are not there), the speed-up,
  and the latent error ``||lat - lat_exact|| / ||lat_exact||``. Caveat: with random
  weights the residuals' change from step to step is not a trained model's, so how
  often a cache skips (and its error) says how the mechanism behaves, not what it would
  do to Wan2.1's real weights.
- ``shapes``: our ``cinecloud/shapes-t2v`` (``--model-dir``), loaded and called through
  ``benchmarks/eval_shapes.py`` (``load_pipeline``, ``generated``, ``read_all``,
  ``summarise``: H.264 at 256x256, then the classical reader) on ``--n`` held-out
  prompts, bf16 on CUDA as the runner loads it (float32 on CPU). Reported: seconds for
  all clips (the pipeline calls, text encoding included), the speed-up, the change of the
  all-attributes score and the frames' relative error. The caches do not apply:
  ``ShapesDiT`` is no diffusers ``CacheMixin`` (no ``enable_cache``/``cache_context``),
  the pipeline enters no ``cache_context``, and its ``DiTBlock`` is not in diffusers'
  block registry; those options are reported "not applicable".

``computed`` is the share of the exact run's calls of the last block's last linear layer
that the option made (eager runs only): how much of the stack a cache really ran.

    python benchmarks/gpu_lossy.py --tiny                # CPU smoke run, < 60 s on 2 cores
    python benchmarks/gpu_lossy.py                       # everything on the GPU (> 10 min)

On the GPU, in pieces (each re-runs ``exact``, the reference; exact+compile is added to a
compiled option's run; ``R=benchmarks/results``):

    python benchmarks/gpu_lossy.py --workloads wan --options fbc-0.05 fbc-0.1 magcache \\
        --json $R/gpu_lossy_wan_caches.json
    python benchmarks/gpu_lossy.py --workloads wan --options taylorseer seacache \\
        --json $R/gpu_lossy_wan_caches2.json
    python benchmarks/gpu_lossy.py --workloads wan --options fp8+compile \\
        --json $R/gpu_lossy_wan_fp8.json
    python benchmarks/gpu_lossy.py --workloads wan --options fbc-0.1+compile \\
        --json $R/gpu_lossy_wan_fbc_compile.json
    python benchmarks/gpu_lossy.py --workloads shapes --n 240 --json $R/gpu_lossy_shapes.json

FP8 needs ``pip install torchao==0.18.0`` (a torchao built for the installed torch).

Prints a table per workload and writes ``benchmarks/results/gpu_lossy.json``
(``gpu_lossy_tiny.json`` with ``--tiny``) unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import datetime
import gc
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
if str(BENCHMARKS) not in sys.path:  # the other benchmarks are scripts, not a package
    sys.path.insert(0, str(BENCHMARKS))

OK, SKIPPED, UNAVAILABLE, NOT_APPLICABLE, FAILED = (
    "ok",
    "skipped",
    "unavailable",
    "not applicable",
    "failed",
)
KINDS = ("exact", "fbc", "magcache", "taylorseer", "seacache", "fp8")
CACHES = ("fbc", "magcache", "taylorseer", "seacache")
WORKLOADS = ("wan", "shapes")
_EAGER_OPTIONS = ("exact", "fbc-0.05", "fbc-0.1", "magcache", "taylorseer", "seacache")
DEFAULT_OPTIONS: dict[str, tuple[str, ...]] = {
    "wan": (*_EAGER_OPTIONS, "exact+compile", "fbc-0.1+compile", "fp8+compile"),
    # the caches do not apply to shapes-t2v; they are listed so the table says why
    "shapes": (*_EAGER_OPTIONS, "exact+compile", "fp8+compile"),
}
FP8_WHEEL = "torchao==0.18.0"
# Tiny Wan: the same classes and code path at toy sizes (a CPU smoke run).
TINY_WAN: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "text_dim": 32,
    "freq_dim": 16,
    "ffn_dim": 32,
    "num_layers": 4,
}


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # one of KINDS
    threshold: float | None = None  # fbc's
    compiled: bool = False

    @property
    def baseline(self) -> str:
        """The option whose time this one's speed-up divides."""
        return "exact+compile" if self.compiled else "exact"


def parse_option(name: str) -> Option:
    base, plus, suffix = name.partition("+")
    if plus and suffix != "compile":
        raise ValueError(f"option {name!r}: the only suffix is +compile")
    kind, dash, arg = base.partition("-")
    threshold = None
    if kind == "fbc":
        try:
            threshold = float(arg) if dash else 0.05
        except ValueError:
            raise ValueError(f"option {name!r}: fbc-<threshold>, e.g. fbc-0.05") from None
        if not threshold > 0:
            raise ValueError(f"option {name!r}: the threshold must be > 0")
    elif kind not in KINDS or dash:
        known = "exact, fbc-<threshold>, magcache, taylorseer, seacache, fp8"
        raise ValueError(f"unknown option {name!r}; known: {known} (each may end in +compile)")
    return Option(name, kind, threshold, bool(plus))


def plan_options(names: Sequence[str]) -> list[Option]:
    """The options to run, baselines added, in run order: exact first, eager before
    compiled, FP8 last of each (torchao may leave process-wide state behind)."""
    options = {o.name: o for o in map(parse_option, names)}
    needed = ["exact"] + (["exact+compile"] if any(o.compiled for o in options.values()) else [])
    for name in needed:
        options.setdefault(name, parse_option(name))
    return sorted(options.values(), key=lambda o: (o.compiled, o.kind == "fp8", o.kind != "exact"))


# ---------------------------------------------------------------- helpers


def rel_error(a: Any, b: Any) -> float:
    """``||a - b|| / ||b||`` in float64 (torch tensors or numpy arrays)."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        a64, b64 = a.detach().double(), b.detach().to(a.device).double()
        return float(torch.linalg.vector_norm(a64 - b64) / torch.linalg.vector_norm(b64))
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a64 - b64) / np.linalg.norm(b64))


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("torch", "diffusers", "torchao", "transformers"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def device_name(device: str) -> str:
    from shapes_speed import device_name as name

    return name(device)


def free_memory(cuda: bool, *, compiler: bool = False) -> None:
    import torch

    gc.collect()
    if compiler:
        torch.compiler.reset()
    if cuda:
        torch.cuda.empty_cache()


@contextlib.contextmanager
def counting_calls(module: Any) -> Iterator[list[int]]:
    """``[n]``: how many times ``module`` ran while the context was open."""
    count = [0]

    def hook(*_: Any) -> None:
        count[0] += 1

    handle = module.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def last_linear(transformer: Any) -> Any:
    """The last linear layer of the last repeated block: it runs only when the block does."""
    import torch

    linears = [m for m in transformer.blocks[-1].modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1]


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def short(exc: BaseException, limit: int = 400) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- availability


def fp8_blocker(device: str) -> tuple[str, str] | None:
    """Why FP8 cannot run here (status, reason), or None."""
    if importlib.util.find_spec("torchao") is None:
        return UNAVAILABLE, f"torchao is not installed (pip install {FP8_WHEEL})"
    if not device.startswith("cuda"):
        return SKIPPED, f"FP8 matmuls need CUDA (compute capability 8.9+); this run is on {device}"
    import torch

    capability = torch.cuda.get_device_capability(torch.device(device))
    if capability < (8, 9):
        return SKIPPED, f"FP8 matmuls need compute capability 8.9+ (this GPU: {capability})"
    try:
        from torchao.quantization import (  # noqa: F401
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )
    except Exception as exc:  # not built for this torch, a missing kernel library, ...
        return UNAVAILABLE, f"torchao does not import: {short(exc)}"
    return None


def cache_blocker(transformer: Any, pipeline_class: str) -> tuple[str, str] | None:
    """Why diffusers' cache hooks cannot go on ``transformer`` (status, reason), or None."""
    if callable(getattr(transformer, "enable_cache", None)):
        return None
    model = type(transformer).__name__
    block = type(transformer.blocks[0]).__name__ if hasattr(transformer, "blocks") else "?"
    return NOT_APPLICABLE, (
        f"{model} is not a diffusers CacheMixin (no enable_cache/cache_context) and "
        f"{pipeline_class} enters no cache_context; FBC, MagCache and SeaCache would also "
        f"need {block} in diffusers' TransformerBlockRegistry"
    )


def blocker(option: Option, workload: Workload, device: str) -> tuple[str, str] | None:
    if option.kind == "fp8":
        found = fp8_blocker(device)
        if found is not None:
            return found
    if option.compiled and not device.startswith("cuda"):
        return SKIPPED, "the engine compiles on CUDA only; compiled variants are measured there"
    if option.kind in CACHES:
        return cache_blocker(workload.pristine, workload.pipeline_class)
    return None


def cache_config(option: Option, steps: int, mag_ratios: list[float] | None) -> Any:
    from diffusers.hooks import (
        FirstBlockCacheConfig,
        MagCacheConfig,
        SeaCacheConfig,
        TaylorSeerCacheConfig,
    )

    if option.kind == "fbc":
        return FirstBlockCacheConfig(threshold=option.threshold or 0.05)
    if option.kind == "magcache":
        return MagCacheConfig(mag_ratios=mag_ratios, num_inference_steps=steps)
    if option.kind == "taylorseer":
        return TaylorSeerCacheConfig(use_lite_mode=True)
    if option.kind == "seacache":
        return SeaCacheConfig()
    raise ValueError(f"{option.name} is not a cache")


def quantize_fp8(transformer: Any) -> None:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    quantize_(
        transformer,
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False),
    )


# ---------------------------------------------------------------- workloads


class Workload(Protocol):
    name: str
    what: str
    steps: int
    pipeline_class: str
    pristine: Any  # the transformer every option copies

    def sync(self) -> None: ...

    def run(self, transformer: Any, *, steps: int | None = None, other: bool = False) -> Any:
        """The option's output: the exact path's inputs, or (``other``) different ones."""
        ...

    def compare(self, output: Any, exact: Any) -> dict[str, Any]: ...

    def settings(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class WanSpec:
    config: dict[str, Any]
    height: int
    width: int
    frames: int
    steps: int
    guidance: float
    text_tokens: int
    what: str


def wan_spec(tiny: bool) -> WanSpec:
    """Wan2.1-T2V-1.3B at 480x832, 81 frames, 50 steps, guidance 5.0 (or its tiny twin)."""
    from gpu_engine import CASES

    case = CASES["wan2.1-1.3b"]
    spec = WanSpec(
        dict(case.config),
        480,
        832,
        81,
        50,
        5.0,
        int(case.text_tokens),
        "Wan2.1-T2V-1.3B (random weights), 480x832, 81 frames",
    )
    if tiny:
        spec = replace(
            spec,
            config={**spec.config, **TINY_WAN},
            height=64,
            width=64,
            frames=9,
            steps=8,
            text_tokens=8,
            what="Wan2.1-T2V-1.3B (tiny, random weights), 64x64, 9 frames",
        )
    return spec


def wan_latent_shape(spec: WanSpec) -> tuple[int, int, int, int]:
    """Channels, latent frames, height, width (the VAE compresses 4x in time, 8x in space)."""
    return (
        int(spec.config["in_channels"]),
        (spec.frames - 1) // 4 + 1,
        spec.height // 8,
        spec.width // 8,
    )


def build_wan_transformer(spec: WanSpec, device: str, dtype: Any, seed: int = 0) -> Any:
    """The transformer with seeded random weights, built on ``device``."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = WanTransformer3DModel(**spec.config)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def wan_text(spec: WanSpec, device: str, dtype: Any, seed: int) -> tuple[Any, Any]:
    """Random prompt and negative prompt embeddings of the text encoder's output shape."""
    import torch

    gen = torch.Generator("cpu").manual_seed(1000 + seed)
    shape = (1, spec.text_tokens, int(spec.config["text_dim"]))
    prompt, negative = (torch.randn(shape, generator=gen) for _ in range(2))
    return prompt.to(device, dtype), negative.to(device, dtype)


class WanWorkload:
    name = "wan"
    pipeline_class = "WanPipeline"

    def __init__(self, spec: WanSpec, device: str, steps: int | None, seed: int) -> None:
        import torch

        from cinecloud.engine.speed import CUDA_ATTENTION_CANDIDATES, choose_attention

        self.spec, self.device, self.seed = spec, device, seed
        self.steps = steps or spec.steps
        self.what = spec.what
        self.cuda = device.startswith("cuda")
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.pristine = build_wan_transformer(spec, device, self.dtype)
        self._text = {s: wan_text(spec, device, self.dtype, s) for s in (seed, seed + 1)}
        # the engine's attention choice, on one transformer forward at the real shape
        c, f, h, w = wan_latent_shape(spec)
        gen = torch.Generator("cpu").manual_seed(2)
        x = torch.randn(1, c, f, h, w, generator=gen).to(device, self.dtype)
        t = torch.full((1,), 500.0, device=device)
        text = self._text[seed][0]

        def probe() -> None:
            with torch.inference_mode():
                self.pristine(
                    hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False
                )
            self.sync()

        candidates = CUDA_ATTENTION_CANDIDATES if self.cuda else ()
        self.attention, self.attention_s = choose_attention(self.pristine, candidates, probe)

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def run(self, transformer: Any, *, steps: int | None = None, other: bool = False) -> Any:
        import torch
        from diffusers import UniPCMultistepScheduler, WanPipeline

        from cinecloud.engine.catalog import WAN_SCHEDULER

        scheduler = UniPCMultistepScheduler(**WAN_SCHEDULER)
        pipe = WanPipeline(
            tokenizer=None,
            text_encoder=None,
            vae=None,
            scheduler=scheduler,
            transformer=transformer,
        )
        pipe.set_progress_bar_config(disable=True)
        seed = self.seed + 1 if other else self.seed
        prompt, negative = self._text[seed]
        (latents,) = pipe(
            prompt_embeds=prompt,
            negative_prompt_embeds=negative,
            height=self.spec.height,
            width=self.spec.width,
            num_frames=self.spec.frames,
            num_inference_steps=steps or self.steps,
            guidance_scale=self.spec.guidance,
            generator=torch.Generator(self.device).manual_seed(seed),
            output_type="latent",
            return_dict=False,
        )
        return latents.float()

    def compare(self, output: Any, exact: Any) -> dict[str, Any]:
        return {"rel_error": rel_error(output, exact)}

    def settings(self) -> dict[str, Any]:
        s = self.spec
        return {
            "height": s.height,
            "width": s.width,
            "frames": s.frames,
            "steps": self.steps,
            "guidance_scale": s.guidance,
            "latent": list(wan_latent_shape(s)),
            "text_tokens": s.text_tokens,
            "transformer": s.config,
            "dtype": str(self.dtype),
            "seed": self.seed,
            "attention": self.attention,
            "attention_s": self.attention_s,
        }


class ShapesWorkload:
    """shapes-t2v through ``eval_shapes``' loading, generating and reading."""

    name = "shapes"
    pipeline_class = "ShapesT2VPipeline"

    def __init__(
        self,
        model_dir: Path,
        device: str,
        dtype_name: str,
        n: int,
        steps: int | None,
        seed: int,
        batch_size: int,
        workers: int,
    ) -> None:
        import eval_shapes
        import torch

        from cinecloud.engine.shapes.dataset import eval_prompts

        self.device, self.cuda = device, device.startswith("cuda")
        self.pool = eval_shapes.reader_pool(workers)
        base = eval_shapes.load_pipeline(model_dir, device)
        self.dtype = getattr(torch, dtype_name)
        self.pristine = base.transformer.to(dtype=self.dtype).eval().requires_grad_(False)
        self.encoder, self.tokenizer = base.load_text_encoder()
        self.scheduler = base.scheduler
        from cinecloud.engine.shapes.pipeline import DEFAULT_STEPS

        self.steps = steps or DEFAULT_STEPS
        self.what = f"cinecloud/shapes-t2v ({model_dir}), {n} held-out prompts"
        self.model_dir, self.n, self.seed, self.workers = model_dir, n, seed, workers
        cfg = self.pristine.config
        self.args = argparse.Namespace(
            frames=cfg.num_frames,
            size=cfg.sample_size,
            steps=self.steps,
            guidance=None,
            batch_size=batch_size,
            seed=seed,
            device=device,
        )
        pairs = eval_prompts("heldout", n, seed)
        self.prompts, self.combos = [p for p, _ in pairs], [c for _, c in pairs]
        # calibration text: seen combos, another seed, none of the prompts above
        self.other_prompts = [p for p, _ in eval_prompts("seen", min(n, 8), seed + 1)]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def run(self, transformer: Any, *, steps: int | None = None, other: bool = False) -> Any:
        import eval_shapes

        from cinecloud.engine.shapes.pipeline import ShapesT2VPipeline

        pipe = ShapesT2VPipeline(
            transformer=transformer,
            scheduler=copy.deepcopy(self.scheduler),
            text_encoder=self.encoder,
            tokenizer=self.tokenizer,
        )
        pipe.set_progress_bar_config(disable=True)
        args = argparse.Namespace(**{**vars(self.args), "steps": steps or self.steps})
        prompts = self.other_prompts if other else self.prompts
        if steps is not None:  # a warm-up: one batch is enough
            prompts = prompts[: args.batch_size]
        return list(eval_shapes.generated(pipe, prompts, args))

    def compare(self, output: Any, exact: Any) -> dict[str, Any]:
        import eval_shapes
        import numpy as np

        readings = eval_shapes.read_all(iter(output), self.pool)
        summary = eval_shapes.summarise(readings, self.combos, self.prompts)
        return {
            "rel_error": rel_error(np.stack(output), np.stack(exact)),
            "accuracy": summary["accuracy"],
            "all": summary["accuracy"]["all"],
            "flow_warp_error": summary["flow_warp_error"],
            "flicker": summary["flicker"],
            "misread": summary["misread"],
        }

    def settings(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "split": "heldout",
            "n": self.n,
            "seed": self.seed,
            "steps": self.steps,
            "frames": self.args.frames,
            "size": self.args.size,
            "batch_size": self.args.batch_size,
            "dtype": str(self.dtype),
            "reader_workers": self.workers,
            "through": "H.264 at 256x256 (eval_shapes)",
        }


# ---------------------------------------------------------------- measuring


@dataclass
class Record:
    option: str
    status: str
    baseline: str
    reason: str | None = None
    compiled: bool = False
    seconds: float | None = None
    warmup_s: float | None = None
    speedup: float | None = None  # against the baseline
    speedup_vs_exact: float | None = None
    rel_error: float | None = None
    computed: float | None = None  # share of the exact run's last-block calls
    block_calls: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None


def calibrate_magcache(workload: Workload, transformer: Any) -> tuple[list[float], float]:
    """MagCache's magnitude ratios for this model at the workload's steps, from one
    calibration run on other inputs; diffusers logs one list per guidance branch."""
    from diffusers.hooks import MagCacheConfig

    prefix = "MagCache Calibration Results:"
    found: list[list[float]] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if text.startswith(prefix):
                found.append([float(v) for v in ast.literal_eval(text[len(prefix) :].strip())])

    log = logging.getLogger("diffusers.hooks.mag_cache")
    handler, saved = Grab(), (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    started = time.perf_counter()
    try:
        transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=workload.steps))
        with contextlib.redirect_stdout(io.StringIO()):  # it prints them too
            workload.run(transformer, other=True)
        transformer.disable_cache()
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    if not found:
        raise RuntimeError("the MagCache calibration run logged no ratios")
    ratios = [sum(column) / len(column) for column in zip(*found, strict=True)]
    return ratios, time.perf_counter() - started


def measure_option(
    workload: Workload,
    option: Option,
    warmup_steps: int,
    exact: Any | None,
    exact_calls: int | None,
) -> tuple[Record, Any]:
    """Run one option on a fresh copy of the transformer; its record and its output."""
    record = Record(option.name, OK, option.baseline, compiled=option.compiled)
    model = copy.deepcopy(workload.pristine)
    try:
        if option.kind == "magcache":
            ratios, calibration_s = calibrate_magcache(workload, model)
            record.details.update(mag_ratios=ratios, calibration_s=calibration_s)
        if option.kind in CACHES:
            config = cache_config(option, workload.steps, record.details.get("mag_ratios"))
            model.enable_cache(config)
            record.details["config"] = repr(config)
        elif option.kind == "fp8":
            quantize_fp8(model)
            record.details["config"] = "Float8DynamicActivationFloat8WeightConfig(PerRow)"
        if option.compiled:
            from cinecloud.engine.speed import compile_regions

            record.details["compiled_blocks"] = compile_regions(model)
        # A compiled cache compiles one variant per cache state (skip or not, branch,
        # step): its warm-up is a whole run, so that the timed run is the steady state.
        warmup = workload.steps if option.compiled and option.kind in CACHES else warmup_steps
        record.details["warmup_steps"] = warmup
        workload.sync()
        started = time.perf_counter()
        workload.run(model, steps=warmup)
        workload.sync()
        record.warmup_s = time.perf_counter() - started
        graphs = graphs_compiled()
        with contextlib.ExitStack() as stack:
            calls = (
                None if option.compiled else stack.enter_context(counting_calls(last_linear(model)))
            )
            workload.sync()
            started = time.perf_counter()
            output = workload.run(model)
            workload.sync()
            record.seconds = time.perf_counter() - started
        if option.compiled:
            record.details["graphs_compiled_in_timed_run"] = graphs_compiled() - graphs
        if calls is not None:
            record.block_calls = calls[0]
            reference = exact_calls if exact_calls is not None else calls[0]
            record.computed = calls[0] / reference if reference else None
        metrics = workload.compare(output, output if exact is None else exact)
        record.rel_error = metrics.pop("rel_error")
        record.metrics = metrics
        if option.kind in CACHES:
            model.disable_cache()
        return record, output
    except Exception as exc:
        record.status, record.reason = FAILED, short(exc)
        record.traceback = traceback.format_exc()
        return record, None
    finally:
        del model


def measure(
    workload: Workload,
    options: Sequence[Option],
    device: str,
    warmup_steps: int,
    log: Callable[[str], None],
) -> list[Record]:
    cuda = device.startswith("cuda")
    records: dict[str, Record] = {}
    exact: Any = None
    exact_calls: int | None = None
    for option in options:
        blocked = blocker(option, workload, device)
        if blocked is not None:
            records[option.name] = Record(
                option.name, blocked[0], option.baseline, blocked[1], option.compiled
            )
            log(f"{workload.name} {option.name}: {blocked[0]} ({blocked[1]})")
            continue
        free_memory(cuda, compiler=option.compiled)
        record, output = measure_option(workload, option, warmup_steps, exact, exact_calls)
        if option.name == "exact":
            if record.status != OK:
                raise RuntimeError(f"the exact path failed: {record.reason}\n{record.traceback}")
            exact, exact_calls = output, record.block_calls
        records[option.name] = record
        log(f"{workload.name} {option.name}: {record.status} {record.seconds or 0:.2f} s")
        del output
    base = records["exact"].seconds
    for record in records.values():
        if record.seconds is None:
            continue
        baseline = records.get(record.baseline)
        if baseline is not None and baseline.seconds:
            record.speedup = baseline.seconds / record.seconds
        if base:
            record.speedup_vs_exact = base / record.seconds
        if "all" in record.metrics and "all" in records["exact"].metrics:
            record.metrics["all_change"] = record.metrics["all"] - records["exact"].metrics["all"]
    free_memory(cuda, compiler=True)
    return list(records.values())


# ---------------------------------------------------------------- reporting


def fmt(value: float | None, spec: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def note(record: Record) -> str:
    """The table's note: why it did not run, or what else it did."""
    parts = [record.reason] if record.reason else []
    if "calibration_s" in record.details:
        parts.append(f"calibrated in {record.details['calibration_s']:.1f} s")
    if record.details.get("graphs_compiled_in_timed_run"):
        parts.append(f"{record.details['graphs_compiled_in_timed_run']} graphs compiled timed")
    return "; ".join(parts)


def percent(value: float | None, spec: str, unit: str) -> str:
    return "-" if value is None else format(100 * value, spec) + unit


def print_table(title: str, records: Sequence[Record], scored: bool) -> None:
    """One row per option; long notes are cut (the JSON has them whole)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = ["option", "status", "s", "warm-up s", "x base", "x exact", "rel. error", "computed"]
    if scored:
        columns += ["all", "Δ all"]
    for column in columns:
        left = column in ("option", "status")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    table.add_column("note", no_wrap=True, overflow="ellipsis", max_width=44)
    previous = None
    for r in records:
        row = [
            r.option,
            r.status,
            fmt(r.seconds, ".3f"),
            fmt(r.warmup_s, ".2f"),
            fmt(r.speedup, ".2f"),
            fmt(r.speedup_vs_exact, ".2f"),
            fmt(r.rel_error, ".2e"),
            fmt(r.computed, ".0%"),
        ]
        if scored:
            row += [
                percent(r.metrics.get("all"), ".1f", "%"),
                percent(r.metrics.get("all_change"), "+.1f", " pp"),
            ]
        text = note(r)
        row.append("as above" if text and text == previous else text)
        previous = text
        table.add_row(*row)
    Console(width=180).print(table)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument(
        "--options",
        nargs="+",
        default=None,
        help="default: every option for each workload (exact and exact+compile are added)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny Wan and few shapes prompts (CPU)")
    p.add_argument("--n", type=int, default=None, help="shapes prompts (default 240; tiny 8)")
    p.add_argument("--steps", type=int, default=None, help="default: Wan 50, shapes 24; tiny 8, 4")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", type=Path, default=Path("models/shapes-t2v"))
    p.add_argument(
        "--shapes-dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto: bfloat16 on CUDA (as the runner loads it), float32 elsewhere",
    )
    p.add_argument("--batch-size", type=int, default=1, help="shapes prompts per pipeline call")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="readers")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's; --tiny: 1, as toy ops run faster "
        "on one thread and do not stall on a busy machine's cores)",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        for name in args.options or ():
            parse_option(name)
    except ValueError as exc:
        p.error(str(exc))
    if args.n is None:
        args.n = 8 if args.tiny else 240
    if args.threads is None and args.tiny:
        args.threads = 1
    if args.n < 1 or (args.steps is not None and args.steps < 1) or args.warmup_steps < 1:
        p.error("--n, --steps and --warmup-steps must be >= 1")
    if args.json is None:
        args.json = RESULTS / f"gpu_lossy{'_tiny' if args.tiny else ''}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> int:

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    cuda = args.device.startswith("cuda")
    shapes_dtype = args.shapes_dtype
    if shapes_dtype == "auto":
        shapes_dtype = "bfloat16" if cuda else "float32"
    payload: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": args.device,
        "device_name": device_name(args.device),
        "versions": versions(),
        "tiny": args.tiny,
        "threads": args.threads,
        "warmup_steps": args.warmup_steps,
        "workloads": {},
    }
    for name in args.workloads:
        options = plan_options(args.options or DEFAULT_OPTIONS[name])
        started = time.perf_counter()
        workload: Any
        if name == "wan":
            steps = args.steps or (8 if args.tiny else None)
            workload = WanWorkload(wan_spec(args.tiny), args.device, steps, args.seed)
        else:
            steps = args.steps or (4 if args.tiny else None)
            workload = ShapesWorkload(
                args.model_dir,
                args.device,
                shapes_dtype,
                args.n,
                steps,
                args.seed,
                args.batch_size,
                1 if args.tiny else args.workers,
            )
        try:
            records = measure(workload, options, args.device, args.warmup_steps, log)
        finally:
            if name == "shapes":
                workload.close()
        payload["workloads"][name] = {
            "what": workload.what,
            "settings": workload.settings(),
            "seconds": time.perf_counter() - started,
            "options": [asdict(r) for r in records],
        }
        title = f"{workload.what}: lossy options ({payload['device_name']})"
        print_table(title, records, scored=name == "shapes")
        write_json(args.json, payload)  # after each workload: a killed run keeps what it did
        del workload
        free_memory(cuda, compiler=True)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
