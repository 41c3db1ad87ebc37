"""Denoise checkpoints: stop a denoise loop between two steps, resume it anywhere.

A checkpoint holds what the loop carries from one step to the next, and nothing else:

- the latents after step ``k``;
- the scheduler's state: every attribute of the diffusers scheduler (its timesteps and
  sigmas, ``_step_index``, a multistep solver's ``model_outputs``, ``timestep_list``,
  ``lower_order_nums``, ``last_sample``, ...);
- the random generator's state (a stochastic sampler draws from it in the loop).

It is written as one safetensors file, tensors plus a JSON header, never a pickle.

Resuming runs the same diffusers pipeline call. The saved latents go in as ``latents=``.
When the pipeline sets its schedule, the saved scheduler and generator state are put
back and the pipeline's loop is handed only the timesteps after ``k``; the scheduler
gets its whole schedule back before its first step. The pipeline's callback then
reports steps ``k+1 .. n``. So no finished step runs twice, and with the same seed the
result equals an uninterrupted run.

The hooks sit on the family's pipeline call (:meth:`DenoiseCheckpoints.hooks`) and on
its step callback (:meth:`DenoiseCheckpoints.step_end`); the runner offers
:meth:`DenoiseCheckpoints.snapshot` with every step, and the caller decides when to
take one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from cinecloud.engine.registry import GenerationParams

__all__ = [
    "FORMAT",
    "UNRESUMABLE_SCHEDULERS",
    "CheckpointError",
    "DenoiseCheckpoint",
    "DenoiseCheckpoints",
    "attach_checkpoints",
    "fingerprint",
    "load_checkpoint",
]

FORMAT = "cinecloud.denoise/1"
# Schedulers whose pipelines keep part of the loop's state outside the scheduler (the
# CogVideoX DPM pipeline carries ``old_pred_original_sample`` in a local variable).
UNRESUMABLE_SCHEDULERS = frozenset({"CogVideoXDPMScheduler"})
# Parameters that shape the denoise loop: a checkpoint resumes only the same request.
_FINGERPRINT_FIELDS = (
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "num_frames",
    "fps",  # SVD conditions on it
    "steps",
    "guidance_scale",
    "seed",
    "step_cache",
)
_SKIPPED = frozenset({"_internal_dict"})  # the scheduler's config: rebuilt at load
_SCALARS = (bool, int, float, str, type(None))


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not belong to this run."""


def fingerprint(family: str, params: GenerationParams) -> str:
    """What a checkpoint must match to resume ``params`` on ``family``: the parameters
    that shape the loop, and the conditioning image's bytes (its path differs by worker)."""
    fields: dict[str, Any] = {name: getattr(params, name) for name in _FINGERPRINT_FIELDS}
    if params.image_path is not None:
        try:
            fields["image"] = hashlib.sha256(Path(params.image_path).read_bytes()).hexdigest()
        except OSError:
            fields["image"] = None  # the family reports the missing image itself
    text = json.dumps({"family": family, **fields}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# ---------------------------------------------------------------- the record


@dataclass(frozen=True)
class DenoiseCheckpoint:
    """A denoise loop stopped after ``step`` of ``total_steps``."""

    step: int
    total_steps: int
    fingerprint: str
    latents: torch.Tensor
    scheduler_class: str
    # attribute name -> tensor, numpy array, scalar, or list/tuple of tensors and scalars
    scheduler: dict[str, Any] = field(default_factory=dict)
    generator: torch.Tensor | None = None  # torch.Generator.get_state()
    generator_device: str = "cpu"  # the device type the generator ran on

    def to_bytes(self) -> bytes:
        tensors: dict[str, torch.Tensor] = {"latents": _cpu(self.latents)}
        if self.generator is not None:
            tensors["generator"] = _cpu(self.generator)
        layout = {name: _pack(name, value, tensors) for name, value in self.scheduler.items()}
        header = {
            "step": self.step,
            "total_steps": self.total_steps,
            "fingerprint": self.fingerprint,
            "scheduler_class": self.scheduler_class,
            "scheduler": layout,
            "generator_device": self.generator_device,
        }
        meta = {"format": FORMAT, "header": json.dumps(header)}
        return safetensors.torch.save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> DenoiseCheckpoint:
        meta = _metadata(data)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"not a denoise checkpoint (format {meta.get('format')!r})")
        try:
            header = json.loads(meta["header"])
            tensors = safetensors.torch.load(data)
            scheduler = {
                name: _unpack(name, spec, tensors) for name, spec in header["scheduler"].items()
            }
            return cls(
                step=int(header["step"]),
                total_steps=int(header["total_steps"]),
                fingerprint=str(header["fingerprint"]),
                latents=tensors["latents"],
                scheduler_class=str(header["scheduler_class"]),
                scheduler=scheduler,
                generator=tensors.get("generator"),
                generator_device=str(header.get("generator_device", "cpu")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"damaged denoise checkpoint: {exc!r}") from None


def load_checkpoint(path: str | Path) -> DenoiseCheckpoint:
    """The checkpoint in the file at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    return DenoiseCheckpoint.from_bytes(data)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob. The format is an 8-byte little-endian
    header length then the JSON header (safetensors reads metadata only from files)."""
    if len(data) < 8:
        raise CheckpointError("damaged denoise checkpoint: too short")
    size = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        raise CheckpointError("damaged denoise checkpoint: unreadable header") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()


def _pack(name: str, value: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The JSON layout of one scheduler attribute; its tensors go into ``tensors``."""
    key = f"scheduler.{name}"
    if isinstance(value, torch.Tensor):
        tensors[key] = _cpu(value)
        return {"tensor": True}
    if isinstance(value, np.ndarray):
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value)).clone()
        return {"numpy": True}
    if isinstance(value, list | tuple):
        items = [_pack(f"{name}.{i}", item, tensors) for i, item in enumerate(value)]
        if any("list" in item for item in items):
            raise CheckpointError(f"scheduler attribute {name!r} nests lists")
        return {"list": items, "tuple": isinstance(value, tuple)}
    if isinstance(value, _SCALARS):
        return {"value": value}
    raise CheckpointError(
        f"cannot checkpoint scheduler attribute {name!r} of type {type(value).__name__}"
    )


def _unpack(name: str, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
    key = f"scheduler.{name}"
    if spec.get("tensor"):
        return tensors[key]
    if spec.get("numpy"):
        return tensors[key].numpy()
    if "list" in spec:
        items = [_unpack(f"{name}.{i}", item, tensors) for i, item in enumerate(spec["list"])]
        return tuple(items) if spec.get("tuple") else items
    return spec["value"]


# ---------------------------------------------------------------- scheduler state


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """Every attribute of ``scheduler`` as it is now, but its config and any method set
    on the instance (a resumed run's hooks)."""
    return {
        name: value
        for name, value in vars(scheduler).items()
        if name not in _SKIPPED and not callable(value)
    }


def _placed(value: Any, current: Any, device: torch.device) -> Any:
    """``value`` on the device of what it replaces (else ``device``)."""
    if isinstance(value, torch.Tensor):
        target = current.device if isinstance(current, torch.Tensor) else device
        return value.to(target)
    if isinstance(value, list | tuple):
        olds = list(current) if isinstance(current, list | tuple) else []
        olds += [None] * (len(value) - len(olds))
        items = [_placed(v, old, device) for v, old in zip(value, olds, strict=False)]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def restore_scheduler(scheduler: Any, state: dict[str, Any], device: torch.device) -> None:
    """Put ``state`` (from :func:`scheduler_state`) back on ``scheduler``."""
    for name, value in state.items():
        setattr(scheduler, name, _placed(value, getattr(scheduler, name, None), device))


# ---------------------------------------------------------------- one run's hooks


class DenoiseCheckpoints:
    """The checkpoint hooks of one denoise run: it resumes from ``resume`` (if given)
    and can snapshot the loop after every step it runs.

    ``start`` is the step the loop starts after (0 for a fresh run).
    """

    def __init__(
        self, fingerprint: str, total_steps: int, resume: DenoiseCheckpoint | None = None
    ) -> None:
        if resume is not None:
            _check_resume(resume, fingerprint, total_steps)
        self.fingerprint = fingerprint
        self.total_steps = total_steps
        self.resume = resume
        self.start = resume.step if resume is not None else 0
        self._pipe: Any = None
        self._generator: torch.Generator | None = None
        self._latents: torch.Tensor | None = None
        self._step = self.start

    # ---------------------------------------------------------- the family's side

    @contextlib.contextmanager
    def hooks(
        self, pipe: Any, generator: torch.Generator, device: torch.device, *, scaled: bool
    ) -> Iterator[dict[str, Any]]:
        """Around the family's pipeline call: yields the call's extra keyword arguments
        (the resumed latents). ``scaled``: the pipeline multiplies given latents by the
        scheduler's ``init_noise_sigma``, so they go in divided by it."""
        self._pipe, self._generator, self._latents = pipe, generator, None
        scheduler = pipe.scheduler
        if type(scheduler).__name__ in UNRESUMABLE_SCHEDULERS:
            self._pipe = None  # no snapshots
            if self.resume is not None:
                raise CheckpointError(f"{type(scheduler).__name__} runs cannot be resumed")
        if self.resume is None:
            yield {}
            return
        resume = self.resume
        if type(scheduler).__name__ != resume.scheduler_class:
            raise CheckpointError(
                f"checkpoint was taken with {resume.scheduler_class}, "
                f"this pipeline runs {type(scheduler).__name__}"
            )
        latents = resume.latents.to(device)
        if scaled:
            latents = latents / _init_noise_sigma(scheduler, resume, device)
        with _resumed_schedule(scheduler, resume, generator, device):
            yield {"latents": latents}

    def step_end(self, step: int, latents: torch.Tensor) -> None:
        """The pipeline finished ``step``, leaving ``latents``."""
        self._step, self._latents = step, latents

    # ---------------------------------------------------------- the runner's side

    def record(self) -> dict[str, str]:
        """For the job's engine record: the step a resumed run started after."""
        return {"resumed_from_step": str(self.start)} if self.resume is not None else {}

    def available(self, step: int) -> bool:
        """Whether :meth:`snapshot` can save the loop as it stands after ``step``."""
        return (
            self._pipe is not None
            and self._latents is not None
            and self._step == step
            and step > self.start
        )

    def snapshot(self) -> bytes:
        """The loop as it stands after the last finished step, as checkpoint bytes."""
        if self._pipe is None or self._latents is None:
            raise CheckpointError("no finished step to checkpoint")
        generator = self._generator
        checkpoint = DenoiseCheckpoint(
            step=self._step,
            total_steps=self.total_steps,
            fingerprint=self.fingerprint,
            latents=self._latents,
            scheduler_class=type(self._pipe.scheduler).__name__,
            scheduler=scheduler_state(self._pipe.scheduler),
            generator=None if generator is None else generator.get_state(),
            generator_device="cpu" if generator is None else generator.device.type,
        )
        return checkpoint.to_bytes()


def _check_resume(resume: DenoiseCheckpoint, fingerprint: str, total_steps: int) -> None:
    if resume.fingerprint != fingerprint:
        raise CheckpointError("checkpoint belongs to another request (its parameters differ)")
    if resume.total_steps != total_steps or not 1 <= resume.step <= total_steps:
        raise CheckpointError(
            f"checkpoint after step {resume.step}/{resume.total_steps} "
            f"cannot resume a run of {total_steps} steps"
        )


def _init_noise_sigma(scheduler: Any, resume: DenoiseCheckpoint, device: torch.device) -> Any:
    """The ``init_noise_sigma`` the scheduler has once its saved state is back."""
    scratch = type(scheduler).from_config(scheduler.config)
    restore_scheduler(scratch, resume.scheduler, device)
    return scratch.init_noise_sigma


@contextlib.contextmanager
def _resumed_schedule(
    scheduler: Any, resume: DenoiseCheckpoint, generator: torch.Generator, device: torch.device
) -> Iterator[None]:
    """While the pipeline runs: its first ``set_timesteps`` puts the saved state back and
    leaves the loop only the steps after ``resume.step``; the first ``step`` gives the
    scheduler its whole schedule back (a multistep solver reads its length)."""
    set_timesteps, step = scheduler.set_timesteps, scheduler.step
    whole: list[Any] = []

    @functools.wraps(set_timesteps)  # keeps the signature pipelines inspect
    def resumed_set_timesteps(*args: Any, **kwargs: Any) -> Any:
        out = set_timesteps(*args, **kwargs)
        if whole:
            return out
        _check_schedule(scheduler.timesteps, resume)
        restore_scheduler(scheduler, resume.scheduler, device)
        saved = resume.generator
        if saved is not None and resume.generator_device == generator.device.type:
            generator.set_state(saved)
        whole.append(scheduler.timesteps)
        scheduler.timesteps = scheduler.timesteps[resume.step :]
        return out

    @functools.wraps(step)
    def resumed_step(*args: Any, **kwargs: Any) -> Any:
        if whole and scheduler.timesteps is not whole[0]:
            scheduler.timesteps = whole[0]
        return step(*args, **kwargs)

    scheduler.set_timesteps, scheduler.step = resumed_set_timesteps, resumed_step
    try:
        yield
    finally:
        del scheduler.set_timesteps, scheduler.step  # the class's own methods again
        if whole:
            scheduler.timesteps = whole[0]


def _check_schedule(timesteps: Any, resume: DenoiseCheckpoint) -> None:
    saved = resume.scheduler.get("timesteps")
    if not isinstance(saved, torch.Tensor) or not isinstance(timesteps, torch.Tensor):
        return  # a scheduler without a timesteps tensor: nothing to compare
    fresh = timesteps.detach().to("cpu")
    if fresh.shape != saved.shape or not torch.allclose(fresh.double(), saved.double()):
        raise CheckpointError("checkpoint was taken with another schedule of timesteps")


@contextlib.contextmanager
def attach_checkpoints(family: Any, checkpoints: DenoiseCheckpoints) -> Iterator[bool]:
    """Give ``family`` (or the family it wraps) ``checkpoints`` for one run; yields
    whether it takes them. A family without the hooks cannot resume."""
    target = getattr(family, "inner", family)
    if not hasattr(target, "checkpoints"):
        if checkpoints.resume is not None:
            raise CheckpointError(f"{type(target).__name__} cannot resume from a checkpoint")
        yield False
        return
    target.checkpoints = checkpoints
    try:
        yield True
    finally:
        target.checkpoints = None
