"""Wire schemas: the OpenAI Videos API shapes plus our extensions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DeletedVideo",
    "ErrorBody",
    "ModelList",
    "ModelObject",
    "VideoCreate",
    "VideoError",
    "VideoList",
    "VideoObject",
]

MAX_SEED = 2**63 - 1


class VideoCreate(BaseModel):
    """``POST /v1/videos``; the same fields arrive as JSON or as a multipart form."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str | None = None
    seconds: int | str | None = None
    size: str | None = None
    negative_prompt: str | None = None
    num_frames: int | None = Field(None, ge=1)
    fps: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    # opt-in and lossy: "first_block" reuses late blocks on steps that change little
    step_cache: str | None = None
    priority: int = Field(0, ge=-100, le=100)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    # ranks to run on (1, 2, 4, ...); None: the scheduler decides
    parallel: int | None = None

    @field_validator("parallel", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        """A whole number, as a JSON integer or a form field's digits; nothing else."""
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ValueError(f"parallel must be a whole number (got {value!r})")


class VideoError(BaseModel):
    code: str
    message: str


class VideoObject(BaseModel):
    id: str
    object: Literal["video"] = "video"
    status: Literal["queued", "in_progress", "completed", "failed", "canceled"]
    progress: int
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    model: str
    prompt: str
    seconds: str
    size: str
    error: VideoError | None = None
    remixed_from_video_id: str | None = None
    stage: str | None = None
    step: int | None = None
    total_steps: int | None = None
    eta_s: float | None = None
    queue_position: int | None = None
    timings: dict[str, float] | None = None
    engine: dict[str, str] | None = None  # device, dtype, offload, vae_tiling, memory_reason
    qc: dict[str, float | int | None] | None = None  # render.qc: flicker, flow_warp_error, ...
    outputs: dict[str, str] | None = None
    usage: dict[str, float] | None = None
    seed: int
    num_frames: int
    fps: int
    steps: int
    guidance_scale: float
    negative_prompt: str
    step_cache: str = "off"
    priority: int
    parallel: int | None = None
    attempts: int
    metadata: dict[str, str] | None = None


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedVideo(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    family: str
    description: str
    installed: bool
    default: bool
    defaults: dict[str, Any]
    limits: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None
    type: str


class ErrorBody(BaseModel):
    error: ErrorDetail
