"""Wire schemas: the OpenAI Videos API shapes plus our extensions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from cinecloud.api.errors import no_nul
from cinecloud.scheduler import parse_priority

__all__ = [
    "DeletedVideo",
    "ErrorBody",
    "ModelList",
    "ModelObject",
    "Text",
    "VideoCreate",
    "VideoError",
    "VideoList",
    "VideoObject",
]

MAX_SEED = 2**63 - 1
#: A string the database stores: no NUL characters (400 ``invalid_value``).
Text = Annotated[str, AfterValidator(no_nul)]


class VideoCreate(BaseModel):
    """``POST /v1/videos``; the same fields arrive as JSON or as a multipart form."""

    model_config = ConfigDict(extra="forbid")

    prompt: Text
    model: Text | None = None
    seconds: int | Text | None = None
    size: Text | None = None
    negative_prompt: Text | None = None
    num_frames: int | None = Field(None, ge=1)
    fps: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    # opt-in and lossy: "first_block" reuses late blocks on steps that change little
    step_cache: Text | None = None
    # a class (high, normal, low) or a whole number from -100 to 100; higher runs first
    priority: int = 0
    metadata: dict[Text, Text] | None = Field(None, max_length=16)
    # ranks to run on (1, 2, 4, ...); None: the scheduler decides
    parallel: int | None = None
    # where this job's started/completed/failed/canceled events are POSTed (docs/webhooks.md)
    webhook_url: Text | None = Field(None, max_length=2048)

    @field_validator("parallel", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        """A whole number, as a JSON integer or a form field's digits; nothing else."""
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ValueError(f"parallel must be a whole number (got {value!r})")

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> int:
        return parse_priority(value)


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
    usage: dict[str, float] | None = None  # gpu_seconds (times the GPUs held), dollars
    gpu_type: str | None = None  # where a completed job ran, as its worker reported
    deadline_at: int | None = None  # Cancel-After: fails unless started by then
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
    # whether a request sends an image (input_reference): "none", "optional" or "required"
    input_image: str = "none"


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
