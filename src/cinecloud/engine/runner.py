"""The runner: load one model, then turn :class:`GenerationParams` into frames.

The runner is generic; a model's family (see :mod:`cinecloud.engine.families`) does the
work. A run reads top to bottom: validate, text encode, denoise (with a progress and
cancel check before the loop and after every step), decode. Each stage is timed with the
injected clock.

Importing this module does not import torch; :meth:`Runner.load` does.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cinecloud.engine.batch import BatchFamily, batch_shapes, can_batch, padded_size
from cinecloud.engine.families import Family, make_family
from cinecloud.engine.memory import HEADROOM, MemoryPlan, plan_memory
from cinecloud.engine.registry import GenerationParams, ModelSpec, check_installed, validate_params
from cinecloud.engine.speed import (
    ATTENTION_MODES,
    COMPILE_MODES,
    CUDA_ATTENTION_CANDIDATES,
    QUANTIZE_MODES,
    AttentionChoices,
    attention_key,
    auto_compile_mode,
    choose_attention,
    compile_graphed,
    compile_regions,
    quantize_fp8,
    set_attention,
    step_cache,
)

if TYPE_CHECKING:
    from cinecloud.engine.checkpoint import DenoiseCheckpoints
    from cinecloud.engine.parallel.ranks import RankGroup

__all__ = [
    "DTYPES",
    "Cancelled",
    "RunResult",
    "Runner",
    "RunnerProtocol",
    "StepInfo",
    "resolve_device",
    "resolve_dtype",
]

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class StepInfo:
    stage: str  # "denoise"
    step: int  # 0 (or the step a resumed run starts after) before the first step, then on
    total_steps: int
    elapsed_s: float  # since the denoise stage began
    # After a step the loop can be saved: this returns its checkpoint bytes
    # (engine.checkpoint); None where it cannot (before the first step run here).
    checkpoint: Callable[[], bytes] | None = None
    # A cheap image (H, W, 3) uint8 of the run so far, made only when called (and only
    # from within on_step); None where the family has no preview.
    preview: Callable[[], np.ndarray | None] | None = None


@dataclass
class RunResult:
    frames: np.ndarray  # uint8, (T, H, W, 3)
    fps: int
    timings: dict[str, float]  # seconds: text_encode, denoise, decode
    seed: int
    device: str  # e.g. "cpu", "cuda"
    dtype: str  # e.g. "float32", "bfloat16"
    # how it ran: the memory plan (offload, VAE tiling) and the speed settings
    engine: dict[str, str] = field(default_factory=dict)


class Cancelled(Exception):
    """The run was stopped because ``should_cancel`` returned true."""

    def __init__(self, step: int, total_steps: int) -> None:
        super().__init__(f"canceled at step {step}/{total_steps}")
        self.step = step
        self.total_steps = total_steps


class RunnerProtocol(Protocol):
    """What a worker needs from a runner; :class:`Runner` and the fake both follow it."""

    spec: ModelSpec

    def load(self) -> float: ...

    def run(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None],
        should_cancel: Callable[[], bool],
    ) -> RunResult: ...


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when CUDA is available, else ``"cpu"``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


def free_gpu_gib(device: str) -> float | None:
    """Free memory of ``device`` in GiB; ``None`` off CUDA."""
    import torch

    if not device.startswith("cuda"):
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return float(free) / 2**30


def resolve_dtype(dtype: str, device: str) -> str:
    """``"auto"`` becomes bfloat16 on CUDA and float32 elsewhere."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)} (got {dtype!r})")
    return dtype


# Off CUDA there is nothing worth measuring: plain SDPA is the one fast CPU kernel.
CPU_ATTENTION_CANDIDATES: tuple[str, ...] = ()


class Runner:
    """Runs one model. Build it, :meth:`load` once, then :meth:`run` many times."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = "auto",
        dtype: str = "auto",
        offload: str = "auto",
        vae_tiling: str = "auto",
        attention: str = "auto",
        compile: str = "auto",
        quantize: str = "off",
        step_cache_threshold: float = 0.05,
        cache_dir: Path | None = None,
        clock: Callable[[], float] = time.perf_counter,
        ranks: RankGroup | None = None,
    ) -> None:
        """``cache_dir`` keeps measured attention choices (``attention.json``) across
        restarts; ``None`` measures on every load. ``ranks``: this process is one rank of
        a parallel worker (engine.parallel); every rank builds, loads and runs its runner
        with the same arguments, at the same time."""
        self.spec = spec
        self._choices = AttentionChoices(cache_dir / "attention.json") if cache_dir else None
        self._want_device = device
        self._want_dtype = dtype
        self._want_offload = offload
        self._want_tiling = vae_tiling
        self.plan: MemoryPlan | None = None
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)} (got {compile!r})")
        if attention not in ATTENTION_MODES:
            raise ValueError(
                f"attention must be one of {', '.join(ATTENTION_MODES)} (got {attention!r})"
            )
        if quantize not in QUANTIZE_MODES:
            raise ValueError(
                f"quantize must be one of {', '.join(QUANTIZE_MODES)} (got {quantize!r})"
            )
        self._want_attention = attention
        self._want_compile = compile
        self._quantize = quantize
        self._cache_threshold = step_cache_threshold
        self.tuning: dict[str, str] = {}
        self._batch_most = 0  # batches are padded up to this size (warm_batches sets it)
        self._clock = clock
        self._ranks = ranks
        self._family: Family | None = None
        self.device: str | None = None
        self.dtype: str | None = None

    @property
    def loaded(self) -> bool:
        return self._family is not None

    def load(self) -> float:
        """Load the model's pipeline from ``spec.source``; returns the seconds it took.

        Raises :class:`~cinecloud.engine.registry.ModelNotInstalled` if the files are missing.
        """
        check_installed(self.spec)
        start = self._clock()
        device = resolve_device(self._want_device)
        dtype = resolve_dtype(self._want_dtype, device)
        plan = self._plan(
            device,
            self.spec.defaults.width,
            self.spec.defaults.height,
            self.spec.defaults.num_frames,
            self._want_offload,
        )
        family = make_family(self.spec.family)
        if self._ranks is not None:
            from cinecloud.engine.parallel.family import ParallelFamily

            family = ParallelFamily(family, self.spec.family, self._ranks)
        family.load(self.spec.source, device=device, dtype=dtype, offload=plan.offload)
        if self._quantize == "fp8":
            quantize_fp8(family.denoiser(), device)
        self._family, self.device, self.dtype, self.plan = family, device, dtype, plan
        self.tuning = {**self._tune(family, device), "quantize": self._quantize}
        if self._ranks is not None:
            self.tuning["parallel"] = self._ranks.plan.describe()
        return self._clock() - start

    def _tune(self, family: Family, device: str) -> dict[str, str]:
        """Attention backend (remembered, else by measurement), then compile (regional, or
        CUDA graphs for a small model), then one warm-up run."""
        cuda = device.startswith("cuda")
        with tempfile.TemporaryDirectory(prefix="cinecloud-warmup-") as tmp:
            probe_params = self._probe_params(Path(tmp))

            def probe() -> None:
                family.denoise(family.encode(probe_params), probe_params, on_step=lambda k: None)

            model = family.denoiser()
            candidates: tuple[str, ...]
            if self._want_attention == "auto":
                candidates = CUDA_ATTENTION_CANDIDATES if cuda else CPU_ATTENTION_CANDIDATES
            else:
                candidates = (self._want_attention,)
            shape = (probe_params.width, probe_params.height, probe_params.num_frames)
            key = attention_key(self.spec.id, device, shape)
            attention, source = self._attention(model, candidates, probe, key)
            mode = self._want_compile
            if mode == "auto":
                mode = auto_compile_mode(
                    model,
                    cuda=cuda,
                    parallel=self._ranks is not None,
                    quantized=self._quantize != "off",
                )
            if mode == "regional" and model is not None:
                compile_regions(model)
            elif mode == "graphs" and model is not None:
                compile_graphed(model)
            started = self._clock()
            try:
                probe()
            except Exception:
                if source != "remembered":
                    raise
                # A remembered backend that no longer runs here: measure afresh.
                self._forget(key)
                attention, source = self._attention(model, candidates, probe, key)
                started = self._clock()
                probe()
            warmup = self._clock() - started
        return {
            "attention": attention,
            "attention_source": source,
            "compile": mode,
            "warmup_s": f"{warmup:.2f}",
        }

    def _attention(
        self, model: object, candidates: tuple[str, ...], probe: Callable[[], None], key: str
    ) -> tuple[str, str]:
        """The backend to use and where the choice came from: ``remembered`` (set from
        the store, no measurement), ``measured`` (then stored) or ``fixed`` (one candidate
        or none)."""
        setter = getattr(model, "set_attention_backend", None)
        if len(candidates) > 1 and setter is not None and self._choices is not None:
            remembered = self._choices.get(key)
            if remembered in candidates:
                set_attention(model, remembered)
                return str(remembered), "remembered"
        if len(candidates) == 1 and setter is not None:
            # nothing to compare: the warm-up run checks it works
            set_attention(model, candidates[0])
            return candidates[0], "fixed"
        attention, timings = choose_attention(model, candidates, probe, clock=self._clock)
        attention = self._shared(model, attention)
        if timings and self._choices is not None:
            self._choices.put(key, attention, timings)
        return attention, "measured" if timings else "fixed"

    def _shared(self, model: object, attention: str) -> str:
        """On several ranks, rank 0's measured backend on all of them: the ranks time the
        candidates together but each on its own clock, and must run one kernel."""
        if self._ranks is None or self._ranks.world_size == 1:
            return attention
        from cinecloud.engine.parallel.ranks import broadcast_text

        chosen = broadcast_text(attention if self._ranks.rank == 0 else None)
        if chosen != attention:
            set_attention(model, chosen)
        return chosen

    def _forget(self, key: str) -> None:
        if self._choices is not None:
            self._choices.forget(key)

    def _probe_params(self, tmp: Path) -> GenerationParams:
        """The model's default video at its fewest steps (with a grey image if it needs one)."""
        d, lim = self.spec.defaults, self.spec.limits
        image_path = None
        if self.spec.input_image == "required":
            from PIL import Image

            image_path = str(tmp / "warmup.png")
            Image.new("RGB", (d.width, d.height), (128, 128, 128)).save(image_path)
        return self.spec.default_params(
            "warm-up", steps=max(1, lim.min_steps), image_path=image_path
        )

    def _plan(self, device: str, width: int, height: int, frames: int, offload: str) -> MemoryPlan:
        return plan_memory(
            self.spec.memory,
            device=device,
            free_gib=free_gpu_gib(device),
            width=width,
            height=height,
            num_frames=frames,
            offload=offload,
            vae_tiling=self._want_tiling,
        )

    def run_batch(
        self,
        batch: Sequence[GenerationParams],
        on_step: Callable[[StepInfo], None],
        should_cancel: Callable[[], bool],
    ) -> list[RunResult]:
        """Generate several videos: as one batch where the family and the videos allow
        (:mod:`cinecloud.engine.batch`), else one by one. Each result's timings are the
        batch's stages (what each video waited); ``engine["batch"]`` says how many shared
        them, so GPU time can be split among them. A denoiser compiled with CUDA graphs
        runs the batch padded to :func:`~cinecloud.engine.batch.padded_size` (copies of
        the last video, whose results are dropped; ``engine["batch_padded_to"]``)."""
        family = self._family
        if family is None or self.device is None or self.dtype is None or self.plan is None:
            raise RuntimeError(f"runner for {self.spec.id} is not loaded; call load() first")
        if not can_batch(family, batch):
            return [self.run(p, on_step, should_cancel) for p in batch]
        assert isinstance(family, BatchFamily)
        for p in batch:
            validate_params(self.spec, p)
        jobs = len(batch)
        batch = self._padded(batch)
        clock, total = self._clock, batch[0].steps
        if should_cancel():
            raise Cancelled(0, total)
        timings: dict[str, float] = {}
        start = clock()
        encoded = family.encode_batch(batch)
        timings["text_encode"] = clock() - start
        start = clock()

        def step(k: int) -> None:
            on_step(StepInfo("denoise", k, total, clock() - start))
            if should_cancel():
                raise Cancelled(k, total)

        step(0)
        latents = family.denoise_batch(encoded, batch, on_step=step)
        timings["denoise"] = clock() - start
        start = clock()
        videos = family.decode_batch(latents[:jobs] if len(batch) > jobs else latents)
        timings["decode"] = clock() - start
        engine = {
            **self.plan.record(),
            **self.tuning,
            "step_cache": "off",
            "batch": str(jobs),
        }
        if len(batch) != jobs:
            engine["batch_padded_to"] = str(len(batch))
        return [
            RunResult(
                frames=frames,
                fps=p.fps,
                timings=dict(timings),
                seed=p.seed,
                device=self.device,
                dtype=self.dtype,
                engine=dict(engine),
            )
            for p, frames in zip(batch[:jobs], videos[:jobs], strict=True)
        ]

    def _padded(self, batch: Sequence[GenerationParams]) -> list[GenerationParams]:
        """``batch`` padded to its :func:`~cinecloud.engine.batch.padded_size` with
        copies of its last video, under CUDA graphs once :meth:`warm_batches` has set the
        worker's batch size, and only where the GPU has the memory for the copies (the
        scheduler sized the batch by that memory); else as it is."""
        jobs, most = len(batch), self._batch_most
        if self.tuning.get("compile") != "graphs" or most < 2 or jobs >= most:
            return list(batch)
        extra = padded_size(jobs, most) - jobs
        last = batch[-1]
        if extra and self.spec.memory is not None and self.device is not None:
            need = extra * self.spec.memory.job_activation_gib(
                last.width, last.height, last.num_frames
            )
            free = free_gpu_gib(self.device)
            if free is not None and need > free * HEADROOM:
                return list(batch)
        return [*batch, *[last] * extra]

    def warm_batches(self, most: int) -> float:
        """Run each batch shape of up to ``most`` videos once (:func:`batch_shapes`), so
        that a denoiser compiled with CUDA graphs records them at start, not when a
        queue first leaves that many jobs; from then on batches are padded to those
        shapes. Returns the seconds it took (0 where nothing is recorded per shape, or
        the family does not batch). A shape that fails (out of memory, say) ends the
        warm-up: batches are padded only up to the last shape that ran."""
        family = self._family
        if self.tuning.get("compile") != "graphs" or not isinstance(family, BatchFamily):
            return 0.0
        started = self._clock()
        with tempfile.TemporaryDirectory(prefix="cinecloud-warmup-") as tmp:
            probe = self._probe_params(Path(tmp))
            if not can_batch(family, [probe, probe]):
                return 0.0
            for size in batch_shapes(most):
                try:
                    self.run_batch([probe] * size, lambda info: None, lambda: False)
                except Exception as exc:
                    log.warning("batch warm-up of %d failed, padding stops there: %s", size, exc)
                    break
                self._batch_most = size
        return self._clock() - started

    def run(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None],
        should_cancel: Callable[[], bool],
    ) -> RunResult:
        """Generate one video. Raises :class:`Cancelled` between steps when asked to stop.

        With ``params.checkpoint_path`` the denoise resumes after the checkpoint's step
        (a :class:`~cinecloud.engine.checkpoint.CheckpointError` if it does not fit)."""
        from cinecloud.engine.checkpoint import attach_checkpoints

        family = self._family
        if family is None or self.device is None or self.dtype is None:
            raise RuntimeError(f"runner for {self.spec.id} is not loaded; call load() first")
        validate_params(self.spec, params)
        checkpoints = self._checkpoints(params)
        assert self.plan is not None
        # Offload is fixed at load; tiling follows this video's size.
        tiling = self._plan(
            self.device, params.width, params.height, params.num_frames, self.plan.offload
        ).vae_tiling
        plan = replace(self.plan, vae_tiling=tiling)
        family.set_vae_tiling(plan.vae_tiling)
        clock, total = self._clock, params.steps
        timings: dict[str, float] = {}
        if should_cancel():
            raise Cancelled(0, total)

        start = clock()
        encoded = family.encode(params)
        timings["text_encode"] = clock() - start

        start = clock()
        preview = getattr(family, "preview", None)

        def step(k: int) -> None:
            snapshot = checkpoints.snapshot if checkpoints.available(k) else None
            on_step(
                StepInfo("denoise", k, total, clock() - start, snapshot, preview if k else None)
            )
            if should_cancel():
                raise Cancelled(k, total)

        step(checkpoints.start)
        with (
            step_cache(family.denoiser(), params.step_cache, self._cache_threshold) as cached,
            attach_checkpoints(family, checkpoints),
        ):
            latents = family.denoise(encoded, params, on_step=step)
        timings["denoise"] = clock() - start

        start = clock()
        frames = family.decode(latents)
        timings["decode"] = clock() - start

        expected = (params.num_frames, params.height, params.width, 3)
        if frames.shape != expected or frames.dtype != np.uint8:
            raise RuntimeError(
                f"{self.spec.family} returned frames {frames.dtype}{frames.shape}, "
                f"expected uint8{expected}"
            )
        return RunResult(
            frames=frames,
            fps=params.fps,
            timings=timings,
            seed=params.seed,
            device=self.device,
            dtype=self.dtype,
            engine={**plan.record(), **self.tuning, "step_cache": cached, **checkpoints.record()},
        )

    def _checkpoints(self, params: GenerationParams) -> DenoiseCheckpoints:
        """This run's checkpoint hooks, resuming from ``params.checkpoint_path`` if set."""
        from cinecloud.engine.checkpoint import DenoiseCheckpoints, fingerprint, load_checkpoint

        resume = load_checkpoint(params.checkpoint_path) if params.checkpoint_path else None
        return DenoiseCheckpoints(fingerprint(self.spec.family, params), params.steps, resume)
