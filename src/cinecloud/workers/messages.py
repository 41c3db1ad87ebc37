"""Messages between the worker parent and its engine child.

Each message is a small frozen record named by intent. Across the process
boundary it travels as a plain dict (``to_dict``) with a ``"type"`` key, and
is rebuilt with ``from_dict``; nothing else is pickled.

Parent to child: ``RunJob``, ``RunBatch``, ``Cancel``, ``Preempt``, ``Shutdown``.
Child to parent: ``Ready``, ``Progress``, ``Checkpoint``, ``Done``, ``Failed``.
Child to its render process: ``Render``, ``Shutdown``; back: ``Rendered``, ``Failed``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "Cancel",
    "Checkpoint",
    "Done",
    "Failed",
    "FailureCode",
    "GpuInfo",
    "Message",
    "OutputFile",
    "Preempt",
    "Progress",
    "Ready",
    "Render",
    "Rendered",
    "RunBatch",
    "RunJob",
    "Shutdown",
    "UnknownMessage",
    "from_dict",
    "to_dict",
]


class FailureCode:
    """The ``code`` values a worker reports with ``fail`` (or keeps to itself)."""

    ENGINE_ERROR = "engine_error"
    INVALID_JOB = "invalid_job"
    INVALID_PARAMS = "invalid_params"
    MODEL_NOT_INSTALLED = "model_not_installed"
    MODEL_NOT_LOADED = "model_not_loaded"
    OUT_OF_MEMORY = "out_of_memory"
    UPLOAD_FAILED = "upload_failed"
    INPUT_UNAVAILABLE = "input_unavailable"
    WORKER_CRASHED = "worker_crashed"
    # The job's checkpoint cannot resume it: the control plane forgets the checkpoint.
    CHECKPOINT_INVALID = "checkpoint_invalid"
    QC_FAILED = "qc_failed"  # the frames failed the quality gate (render.qc); never delivered
    # Never sent to the control plane: the child's acknowledgement of a Cancel.
    CANCELED = "canceled"
    # Never sent either: the child stopped the job for a Preempt (the lease is released).
    PREEMPTED = "preempted"


class UnknownMessage(ValueError):
    """A dict that is not one of the messages below."""


@dataclass(frozen=True)
class RunJob:
    """One leased job, as the control plane hands it out (see worker-protocol.md)."""

    job_id: str
    lease_id: str
    model: str
    params: dict[str, Any]
    attempt: int = 1
    lease_ttl_s: float = 30.0
    queued_at: float | None = None
    # Input files by role (e.g. "image") with signed URLs to fetch them from.
    inputs: dict[str, str] = field(default_factory=dict)
    # W3C trace context of the job's trace (None: not traced); the worker's spans join it.
    traceparent: str | None = None


@dataclass(frozen=True)
class RunBatch:
    """Compatible leased jobs (one ``workers.batches.batch_key``) to run as one batched
    engine call; the child answers for each job as if it had come alone (Progress, then
    Done or Failed under its own ``job_id``)."""

    jobs: tuple[RunJob, ...]


@dataclass(frozen=True)
class Cancel:
    """Stop ``job_id`` at the next step boundary."""

    job_id: str


@dataclass(frozen=True)
class Preempt:
    """The worker is going away: stop the job in hand at the next step boundary, with a
    checkpoint if it is denoising, and start no other job."""


@dataclass(frozen=True)
class Shutdown:
    """Finish nothing more and exit."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_total: int
    memory_free: int


@dataclass(frozen=True)
class Ready:
    """The child loaded ``models`` in ``load_s`` seconds and waits for jobs."""

    models: tuple[str, ...]
    load_s: float
    device: str = "cpu"
    gpus: tuple[GpuInfo, ...] = ()


@dataclass(frozen=True)
class Progress:
    """One engine step of ``job_id`` (``stage`` is a worker-protocol stage name);
    ``at`` is when it happened, in the child's wall-clock seconds (0: not said);
    ``preview``, now and then, an image of the run so far."""

    job_id: str
    stage: str
    step: int
    total_steps: int
    elapsed_s: float = 0.0
    at: float = 0.0
    preview: str = ""  # a small JPEG data: URL of the run so far (workers.preview); "": none


@dataclass(frozen=True)
class Checkpoint:
    """``job_id``'s denoise state after ``step`` of ``total_steps`` is saved at ``path``
    (in the job's directory), ready to upload."""

    job_id: str
    step: int
    total_steps: int
    path: str


@dataclass(frozen=True)
class OutputFile:
    """A rendered file on the worker's disk, ready to upload."""

    name: str
    path: str
    content_type: str


@dataclass(frozen=True)
class Done:
    """``job_id`` finished; ``engine_s`` is the wall time of the engine run alone."""

    job_id: str
    files: tuple[OutputFile, ...]
    timings: dict[str, float]
    seed: int
    device: str
    dtype: str
    engine_s: float
    engine: dict[str, str] = field(default_factory=dict)  # memory plan and speed settings
    # When each stage ran: stage -> [start, end], wall-clock seconds (for the job's trace).
    spans: dict[str, list[float]] = field(default_factory=dict)
    qc: dict[str, Any] = field(default_factory=dict)  # the quality gate's readings


@dataclass(frozen=True)
class Failed:
    """``job_id`` failed (empty ``job_id``: the child could not start)."""

    job_id: str
    code: str
    message: str
    retryable: bool = False
    # The engine process ends after this report (a parallel engine that lost a rank),
    # so the parent replaces it.
    engine_exits: bool = False


@dataclass(frozen=True)
class Render:
    """Encode the frames saved at ``frames_path`` (a ``.npy`` file, deleted once read)
    into ``out_dir``; the frames cross as a file, never through the pipe."""

    job_id: str
    frames_path: str
    out_dir: str
    fps: int
    display_size: tuple[int, int] | None = None
    model: str = ""  # named in the file's provenance
    threads: int = 0  # threads its encoders may use (0: the render process's share)


@dataclass(frozen=True)
class Rendered:
    """``job_id``'s files are written; ``render_s`` is how long that took (``timings``:
    its parts, e.g. ``qc`` and ``provenance``; ``qc``: the quality gate's readings)."""

    job_id: str
    files: tuple[OutputFile, ...]
    render_s: float
    timings: dict[str, float] = field(default_factory=dict)
    qc: dict[str, Any] = field(default_factory=dict)
    threads: int = 0  # threads its encoders used (0: no cap)


Message: TypeAlias = (
    RunJob
    | RunBatch
    | Cancel
    | Preempt
    | Shutdown
    | Ready
    | Progress
    | Checkpoint
    | Done
    | Failed
    | Render
    | Rendered
)

_TYPES: dict[str, type[Message]] = {
    "run_job": RunJob,
    "run_batch": RunBatch,
    "cancel": Cancel,
    "preempt": Preempt,
    "shutdown": Shutdown,
    "ready": Ready,
    "progress": Progress,
    "checkpoint": Checkpoint,
    "done": Done,
    "failed": Failed,
    "render": Render,
    "rendered": Rendered,
}
_NAMES: dict[type[Message], str] = {cls: name for name, cls in _TYPES.items()}


def to_dict(msg: Message) -> dict[str, Any]:
    """The plain, JSON-able form of ``msg``."""
    name = _NAMES.get(type(msg))
    if name is None:
        raise UnknownMessage(f"not a worker message: {type(msg).__name__}")
    data = dataclasses.asdict(msg)
    return {"type": name, **_plain(data)}


def from_dict(data: dict[str, Any]) -> Message:
    """Rebuild a message from ``to_dict``'s output; rejects unknown types and fields."""
    if not isinstance(data, dict):
        raise UnknownMessage(f"message must be a dict (got {type(data).__name__})")
    kind = data.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownMessage(f"unknown message type: {kind!r}")
    fields = {k: v for k, v in data.items() if k != "type"}
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(fields) - names)
    if extra:
        raise UnknownMessage(f"unknown field(s) for {kind}: {', '.join(extra)}")
    try:
        if cls is Ready:
            fields["models"] = tuple(fields.get("models", ()))
            fields["gpus"] = tuple(GpuInfo(**g) for g in fields.get("gpus", ()))
        elif cls is Done or cls is Rendered:
            fields["files"] = tuple(OutputFile(**f) for f in fields.get("files", ()))
        elif cls is RunBatch:
            jobs = fields.get("jobs", ())
            if not isinstance(jobs, list | tuple) or not all(isinstance(j, dict) for j in jobs):
                raise UnknownMessage("bad run_batch message: jobs must be a list of jobs")
            fields["jobs"] = tuple(RunJob(**j) for j in jobs)
        elif cls is Render and fields.get("display_size") is not None:
            width, height = fields["display_size"]
            fields["display_size"] = (int(width), int(height))
        return cls(**fields)
    except TypeError as exc:
        raise UnknownMessage(f"bad {kind} message: {exc}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
