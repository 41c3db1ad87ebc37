"""Speed settings applied once a model is loaded: attention backend, regional compile, warm-up.

- **Attention backend**, by measurement: each candidate that this machine can run is
  timed on one denoising step of the model's default video, and the fastest is kept
  (diffusers' attention dispatcher: cuDNN, flash and efficient SDPA kernels, plain
  SDPA). Off CUDA only the native backend is used. The choice is remembered on disk
  (:class:`AttentionChoices`, ``<home>/cache/attention.json``) per model, video shape,
  card and library versions, so a restarted worker sets it without measuring again.
- **Regional compile**: ``torch.compile`` on each repeated transformer block rather
  than the whole model, so compile time is that of one block.
- **CUDA graphs** (``graphs``): for a small denoiser (at most :data:`GRAPH_MAX_PARAMS`
  parameters) a step is a few milliseconds of many short kernels, and launching them,
  not computing, sets the pace. The whole denoiser is compiled with inductor's CUDA
  graph trees (``mode="reduce-overhead"``): each input shape's step is recorded once and
  replayed with one launch. Our own model runs 4.7x faster than with regional compile on
  an H200 (``benchmarks/gpu_cudagraphs.py``). Big models gain nothing from it (their
  kernels are long) and would pay its memory, so ``auto`` keeps them regional. On CUDA the
  feed-forward's GELU first joins its matmul (:mod:`cinecloud.engine.fusion`). The compiled code is
  cached on disk (``TORCHINDUCTOR_CACHE_DIR``, set by the worker under its home), so a
  restarted worker reuses it.
- **Warm-up**: one short run before the first job, so the first user does not pay
  for compilation or kernel selection.

The choices are returned as strings for the job's ``engine`` record.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cinecloud.engine.attention import enable_flash_attention_3

__all__ = [
    "ATTENTION_MODES",
    "COMPILE_MODES",
    "CUDA_ATTENTION_CANDIDATES",
    "GRAPH_MAX_PARAMS",
    "QUANTIZE_MODES",
    "AttentionChoices",
    "attention_key",
    "auto_compile_mode",
    "choose_attention",
    "compile_graphed",
    "compile_regions",
    "quantize_fp8",
    "set_attention",
    "set_compile_cache",
    "step_cache",
]

COMPILE_MODES = ("auto", "off", "regional", "graphs")
#: Denoisers up to this size run under CUDA graphs when ``compile`` is ``auto``.
GRAPH_MAX_PARAMS = 300_000_000
QUANTIZE_MODES = ("off", "fp8")
ATTENTION_MODES = (
    "auto",
    "native",
    "_native_cudnn",
    "_native_flash",
    "_native_efficient",
    "flash",
    "_flash_3",
)
# Tried in this order; one that fails its first run (not installed, no kernel for the
# shape or dtype) is skipped. ``_flash_3`` is FlashAttention 3 (Hopper, bf16; see
# :mod:`cinecloud.engine.attention`).
CUDA_ATTENTION_CANDIDATES = ("_flash_3", "_native_cudnn", "_native_flash", "flash", "native")


def set_compile_cache(home: Path) -> Path:
    """Point torch's compile caches at ``home`` (before torch compiles anything).

    Assigned, not defaulted: torch itself exports its per-user temporary directory in
    this variable once it has compiled, and a process started from such a one would
    otherwise inherit a cache that does not survive a reboot.
    """
    cache = home / "cache" / "inductor"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def _repeated_blocks(model: Any) -> list[Any]:
    """The model's repeated blocks: those its class names, else the longest ModuleList's."""
    import torch

    names = set(getattr(model, "_repeated_blocks", None) or ())
    if names:
        return [m for m in model.modules() if type(m).__name__ in names]
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 1]
    if not lists:
        return []
    longest = max(lists, key=len)
    kinds = {type(m) for m in longest}
    return list(longest) if len(kinds) == 1 else []


def compile_regions(model: Any) -> int:
    """``torch.compile`` each repeated block of ``model`` in place; the number compiled.

    Blocks of one class share their compiled code, so compiling costs about one block.
    On CUDA the feed-forward GELUs first move into their matmuls' epilogues
    (:mod:`cinecloud.engine.fusion`), and inductor tunes its own kernels' launch
    parameters by coordinate descent (a few seconds more compile, cached with the rest;
    1% off Wan 1.3B's step on an H200: ``benchmarks/gpu_forward.py``).
    """
    blocks = _repeated_blocks(model)
    cuda = any(p.is_cuda for p in model.parameters())
    options: dict[str, Any] = {}
    if cuda:
        from cinecloud.engine.fusion import fuse_gelu_epilogues

        fuse_gelu_epilogues(model)
        options["coordinate_descent_tuning"] = True
    for block in blocks:
        block.compile(fullgraph=False, dynamic=False, options=options or None)
    return len(blocks)


def compile_graphed(model: Any) -> None:
    """Compile ``model``'s whole forward with CUDA graphs (inductor's CUDA graph trees),
    in place. Shapes are static: each new input shape (a batch size, a video size) is
    compiled and recorded on its first run."""
    model.compile(mode="reduce-overhead", fullgraph=False, dynamic=False)


def auto_compile_mode(model: Any, *, cuda: bool, parallel: bool, quantized: bool) -> str:
    """``compile="auto"``'s choice: nothing off CUDA; CUDA graphs for a small denoiser on
    one GPU, unquantized; else regional compile."""
    if not cuda:
        return "off"
    if model is None or parallel or quantized:
        return "regional"
    params = sum(p.numel() for p in model.parameters())
    return "graphs" if params <= GRAPH_MAX_PARAMS else "regional"


def set_attention(model: Any, name: str) -> None:
    """Set ``model``'s attention backend (diffusers' dispatch) to ``name``; raises where
    this machine cannot run it. FlashAttention 3 is made available first."""
    if name == "_flash_3":
        enable_flash_attention_3()
    model.set_attention_backend(name)


def choose_attention(
    model: Any,
    candidates: tuple[str, ...],
    probe: Callable[[], None],
    *,
    clock: Callable[[], float] = time.perf_counter,
    repeats: int = 2,
) -> tuple[str, dict[str, float]]:
    """Time ``probe`` under each candidate backend; keep the fastest that runs.

    Returns the choice and each candidate's best time in seconds (failed ones absent).
    A model without diffusers' attention dispatch runs ``native`` only.
    """
    setter = getattr(model, "set_attention_backend", None)
    if setter is None or not candidates:
        return "native", {}
    timings: dict[str, float] = {}
    for name in candidates:
        try:
            set_attention(model, name)
            probe()  # first run: kernel selection, compile
            best = float("inf")
            for _ in range(repeats):
                started = clock()
                probe()
                best = min(best, clock() - started)
            timings[name] = best
        except Exception:  # a backend this machine cannot run is skipped
            continue
    if not timings:
        setter("native")
        return "native", {}
    chosen = min(timings, key=lambda k: timings[k])
    set_attention(model, chosen)
    return chosen, timings


def attention_key(model: str, device: str, shape: tuple[int, ...]) -> str:
    """What an attention measurement depends on: the model, the video shape, the card and
    the versions of torch and diffusers (a new kernel library may change the winner)."""
    import diffusers
    import torch

    card = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device
    dims = "x".join(str(n) for n in shape)
    return f"{model}|{dims}|{card}|torch {torch.__version__}|diffusers {diffusers.__version__}"


class AttentionChoices:
    """Measured attention choices kept in one JSON file, so a restart need not measure.

    A missing or unreadable file is an empty store; writes replace the file atomically.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> str | None:
        entry = self._read().get(key)
        choice = entry.get("choice") if isinstance(entry, dict) else None
        return choice if isinstance(choice, str) else None

    def put(self, key: str, choice: str, timings: dict[str, float]) -> None:
        data = self._read()
        data[key] = {"choice": choice, "timings_s": timings, "measured": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path)

    def forget(self, key: str) -> None:
        data = self._read()
        if data.pop(key, None) is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def quantize_fp8(model: Any, device: str) -> None:
    """Lossy, opt-in: the denoiser's linear layers in FP8 with per-row dynamic scales
    (torchao). Needs a CUDA GPU of compute capability 8.9 or more, and torchao."""
    import torch

    if not device.startswith("cuda"):
        raise ValueError(f"quantize=fp8 needs a CUDA GPU (the engine runs on {device})")
    if torch.cuda.get_device_capability(torch.device(device)) < (8, 9):
        raise ValueError("quantize=fp8 needs a GPU of compute capability 8.9 or more")
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )
    except ImportError:
        raise ValueError("quantize=fp8 needs torchao (pip install torchao)") from None
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    quantize_(model, config, set_inductor_config=False)


@contextlib.contextmanager
def step_cache(model: Any, mode: str, threshold: float) -> Iterator[str]:
    """Within the block, ``model`` runs with the requested step cache; yields what ran
    (``off``, or ``first_block@<threshold>``), for the job's engine record."""
    if mode == "off":
        yield "off"
        return
    if mode != "first_block" or not hasattr(model, "enable_cache"):
        raise ValueError(f"step cache {mode!r} is not available for this model")
    from diffusers import FirstBlockCacheConfig

    model.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        yield f"first_block@{threshold:g}"
    finally:
        model.disable_cache()
