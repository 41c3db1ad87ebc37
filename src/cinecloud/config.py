"""Settings: the one loader of environment variables and the config file.

Everything else receives frozen section objects built here; nothing else reads
``os.environ`` for configuration.

Sources, highest priority first:

1. keyword arguments to :func:`load_config` (the CLI passes its flags this way);
2. environment variables ``CINECLOUD_<FIELD>`` (nested: ``CINECLOUD_DB__URL``);
3. the TOML file named by ``CINECLOUD_CONFIG`` (or ``--config``);
4. the defaults below.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from limits import parse_many
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "ApiConfig",
    "AutoscaleConfig",
    "Config",
    "CostConfig",
    "DatabaseConfig",
    "DeliveryConfig",
    "EngineConfig",
    "GpuPrice",
    "LeaderConfig",
    "LimitsConfig",
    "ProvenanceConfig",
    "QcConfig",
    "QueueConfig",
    "SchedulerConfig",
    "ServerConfig",
    "StorageConfig",
    "TenantLimits",
    "TracingConfig",
    "WebhookConfig",
    "WorkerConfig",
    "load_config",
    "repo_root",
]


def repo_root() -> Path:
    """The source checkout (where ``models/`` lives) when running from one."""
    return Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- frozen sections


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    home: Path = Path(".cinecloud")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///.cinecloud/cinecloud.db"

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@dataclass(frozen=True)
class StorageConfig:
    backend: str = "local"  # local | s3
    root: Path = Path(".cinecloud/blobs")
    # S3 (backend = "s3"): any S3-compatible service; an empty endpoint means AWS.
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_multipart_threshold: int = 16 * 1024 * 1024
    s3_multipart_chunksize: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class DeliveryConfig:
    secret: str = ""
    url_ttl_s: int = 3600
    # Where signed /cdn URLs point: the origin itself or an edge in front of it.
    base_url: str = "http://127.0.0.1:8000"
    upload_ttl_s: int = 3600
    # "origin": clients get signed /cdn URLs (origin or edge); "bucket": presigned GETs
    # straight from the S3 bucket (needs storage.backend = "s3").
    serve_from: str = "origin"
    # Fetch each finished job's files through base_url once (an edge in front of the
    # origin), so first viewers hit its cache.
    prewarm: bool = False


@dataclass(frozen=True)
class QueueConfig:
    lease_ttl_s: float = 30.0
    heartbeat_interval_s: float = 2.0
    max_attempts: int = 3
    sweep_interval_s: float = 1.0
    lease_long_poll_s: float = 2.0
    job_ttl_s: int = 7 * 24 * 3600


@dataclass(frozen=True)
class SchedulerConfig:
    # A queued job waiting this long goes to the next worker that may run it, first.
    aging_s: float = 300.0
    # The widest parallel degree a request may ask for (a power of two).
    max_parallel: int = 8
    # Queued jobs a lease weighs: this many by priority, and as many of the oldest.
    candidates: int = 32
    # Fair share: weights by tenant id or name (others get default_weight), over the work
    # started in the last fair_window_s seconds.
    tenant_weights: Mapping[str, float] = field(default_factory=dict)
    default_weight: float = 1.0
    fair_window_s: float = 900.0
    # Model affinity: seconds a worker needs to load a model it does not hold, per model id.
    model_load_s: Mapping[str, float] = field(default_factory=dict)
    default_load_s: float = 30.0
    # The furthest a Cancel-After deadline may lie.
    max_deadline_s: float = 7 * 24 * 3600.0


@dataclass(frozen=True)
class LeaderConfig:
    """Control-plane replicas on PostgreSQL: the background loops run on the one holding
    advisory lock ``lock_key``; every replica tries for it each ``interval_s``."""

    lock_key: int = 0x63696E65  # "cine"
    interval_s: float = 1.0
    # how /healthz and the metrics name this replica; empty: hostname:port:pid
    replica: str = ""


@dataclass(frozen=True)
class GpuPrice:
    """Dollars per GPU-hour."""

    on_demand: float
    spot: float


@dataclass(frozen=True)
class CostConfig:
    # Prices by GPU type (as workers report it: e.g. "NVIDIA H100 80GB HBM3", or "cpu").
    # A key matches a type equal to it or contained in it, ignoring case; the longest wins.
    prices: Mapping[str, GpuPrice] = field(default_factory=dict)


@dataclass(frozen=True)
class AutoscaleConfig:
    """The autoscaler loop (docs/autoscaling.md); off unless enabled."""

    enabled: bool = False
    # local: worker processes beside the control plane; observe: start nothing, count the
    # registered workers (the fleet is scaled from the desired-workers gauge).
    launcher: str = "local"
    # Model ids, one pool each; empty: the default model's pool.
    pools: tuple[str, ...] = ()
    interval_s: float = 5.0
    min_workers: int = 0
    max_workers: int = 4
    target_wait_s: float = 60.0
    wait_quantile: float = 0.95
    cold_start_s: float = 45.0
    idle_to_zero_s: float = 300.0
    upscale_delay_s: float = 0.0
    downscale_delay_s: float = 60.0
    arrival_half_life_s: float = 60.0
    on_demand_base: int = 1
    on_demand_share: float = 1.0
    history: int = 200


@dataclass(frozen=True)
class ApiConfig:
    max_prompt_chars: int = 2000
    max_body_bytes: int = 20 * 1024 * 1024
    default_page_size: int = 20
    max_page_size: int = 100
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096


@dataclass(frozen=True)
class TenantLimits:
    """What one tenant may do (docs/reliability.md, "Abuse limits"); 0 or "" is no limit.

    Rates are per API key, in the ``limits`` library's notation, several joined by
    ``;`` (``"10/second;600/minute"``); the quotas and the budget are per tenant.
    """

    # every public API request of one key, and its POST /v1/videos
    rate: str = "100/second"
    create_rate: str = "10/second;600/minute"
    # queued and running jobs at once
    max_active_jobs: int = 100
    # billed GPU-seconds (GET /v1/usage) per UTC day; new jobs are refused once reached
    gpu_seconds_per_day: float = 86_400.0
    # one request's width x height x num_frames x steps
    max_pixel_steps: int = 10_000_000_000


@dataclass(frozen=True)
class LimitsConfig:
    """Rate limits, quotas and the request budget; per-tenant overrides by id or name."""

    default: TenantLimits = field(default_factory=TenantLimits)
    tenants: Mapping[str, TenantLimits] = field(default_factory=dict)
    # Where the rate counters live: "memory://" (this process) or a Redis URL
    # ("redis://host:6379/0"), shared by every control-plane replica.
    storage: str = "memory://"
    strategy: str = "moving-window"  # moving-window | sliding-window-counter | fixed-window
    key_prefix: str = "cinecloud"
    # Retry-After for too many active jobs when none of them runs with an ETA yet.
    active_retry_after_s: int = 10

    def for_tenant(self, tenant_id: str, name: str | None = None) -> TenantLimits:
        """The tenant's limits: its override by id, else by name, else the defaults."""
        found = self.tenants.get(tenant_id)
        if found is None and name is not None:
            found = self.tenants.get(name)
        return found or self.default


@dataclass(frozen=True)
class EngineConfig:
    models_dir: Path = field(default_factory=lambda: repo_root() / "models")
    default_model: str = "cinecloud/shapes-t2v"
    device: str = "auto"
    dtype: str = "auto"
    offload: str = "auto"  # auto | none | model | group (engine.memory)
    vae_tiling: str = "auto"  # auto | on | off
    attention: str = "auto"  # auto (measured on CUDA) or a diffusers attention backend
    compile: str = "auto"  # auto (CUDA: graphs if small, else regional) | off | regional | graphs
    quantize: str = "off"  # off | fp8 (torchao, CUDA only; lossy, opt-in per worker)
    step_cache_threshold: float = 0.05  # First Block Cache threshold for step_cache requests


@dataclass(frozen=True)
class WorkerConfig:
    server_url: str = "http://127.0.0.1:8000"
    token: str = ""
    name: str = ""
    models: tuple[str, ...] = ()
    cancel_grace_s: float = 3.0
    # Lease jobs ahead, so the GPU denoises the next while the previous ones render and
    # upload (docs/worker-protocol.md, "Overlap"); False runs one job at a time.
    overlap: bool = True
    # With overlap, lease the next job once the running one's engine work ends within
    # this many seconds (by its steps so far): earlier would keep it from idle workers.
    lease_ahead_s: float = 2.0
    # Render processes in the engine child (MP4, HLS, images, provenance, QC), each one
    # job at a time; None: a quarter of the CPUs, 1 to 4; 0 or 1: one.
    render_processes: int | None = None
    work_dir: Path = Path(".cinecloud/work")
    # "module:callable" building the runner in the worker's child; empty = the real engine.
    runner_factory: str = ""
    # One video across N ranks (engine.parallel), e.g. "ulysses=2,cfg=2"; empty = one rank.
    parallel: str = ""
    # How long a collective between the ranks may wait before the job fails (retryable).
    parallel_timeout_s: float = 30.0
    # Billing: a spot (preemptible) machine, and its GPU type when not the device's name.
    spot: bool = False
    gpu_type: str = ""
    # Save the denoise state every this many steps (docs/checkpoints.md); 0 = never.
    checkpoint_every: int = 5
    # On SIGTERM (a spot notice): how long the job in hand may take to reach a step
    # boundary, checkpoint and upload it before the engine is killed.
    preempt_grace_s: float = 60.0
    # A preview image of the run goes with a progress event this often while it
    # denoises (workers.preview); 0 turns previews off.
    preview_interval_s: float = 1.0
    # Run up to this many compatible leased jobs (same model, size, frames, steps,
    # guidance) as one batched denoise (workers.batches); 1 turns batching off, 0 = auto
    # (``workers.batches.max_batch``: 8 on a GPU, 1 on a CPU).
    max_batch: int = 0


@dataclass(frozen=True)
class TracingConfig:
    # "none": spans go to whatever OpenTelemetry tracer provider the process already has
    # (none: they cost nothing); "console": printed; "otlp": OTLP over HTTP (needs the
    # opentelemetry-exporter-otlp-proto-http package; its OTEL_EXPORTER_OTLP_* settings).
    exporter: str = "none"
    service_name: str = "cinecloud"
    sample_ratio: float = 1.0


@dataclass(frozen=True)
class WebhookConfig:
    # Hosts or CIDRs a webhook may target although they are private, loopback, ...
    allow_hosts: tuple[str, ...] = ()
    max_attempts: int = 12
    backoff_base_s: float = 2.0
    backoff_max_s: float = 3600.0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    total_timeout_s: float = 10.0
    poll_interval_s: float = 0.5
    concurrency: int = 8
    # Events this recent are read again on each pass, so one whose transaction commits
    # after a later one's is never skipped.
    fanout_grace_s: float = 5.0


@dataclass(frozen=True)
class ProvenanceConfig:
    """What every rendered video carries (render.trusted): a signed C2PA manifest, the
    AIGC label in the MP4's metadata and an invisible watermark holding the job id."""

    enabled: bool = True
    # ContentProducer is "cinecloud/<deployment>"; empty: the control plane's host:port.
    deployment: str = ""
    # The signing certificate chain (PEM, signer first) and its private key (PEM); both
    # empty: a local test CA and signer generated once under server.home/c2pa.
    cert_path: Path | None = None
    key_path: Path | None = None
    alg: str = "es256"  # es256 | es384 | es512 | ps256 | ps384 | ps512 | ed25519
    # More trust anchors (PEM) for `cinecloud verify`, besides the local test CA.
    trust_anchors: Path | None = None
    sign_hls: bool = True  # also sign each HLS rendition's init segment
    caption: bool = False  # a visible "AI-generated" caption over the first 2 seconds


@dataclass(frozen=True)
class QcConfig:
    """The quality gate a job passes before delivery (render.qc)."""

    enabled: bool = True
    # A frame is black when its brightest 0.1% of pixels stay under this luma (0..1).
    black_level: float = 0.08
    # Consecutive frames are frozen when they differ by less than this mean and no pixel
    # by frozen_peak or more (8-bit levels).
    frozen_mad: float = 0.25
    frozen_peak: float = 16.0
    # The job fails when at least this share of its frames is black (or of its frame
    # pairs frozen).
    black_fraction: float = 0.5
    frozen_fraction: float = 0.5


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    db: DatabaseConfig
    storage: StorageConfig
    delivery: DeliveryConfig
    queue: QueueConfig
    api: ApiConfig
    engine: EngineConfig
    worker: WorkerConfig
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    leader: LeaderConfig = field(default_factory=LeaderConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)
    qc: QcConfig = field(default_factory=QcConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def redacted(self) -> dict[str, Any]:
        """A plain dict for display, with secrets masked."""
        data = asdict(self)
        masked = (("delivery", "secret"), ("worker", "token"), ("storage", "s3_secret_access_key"))
        for section, key in masked:
            if data[section][key]:
                data[section][key] = "***"
        data["limits"]["storage"] = _redact_url(data["limits"]["storage"])
        result: dict[str, Any] = _jsonable(data)
        return result


def _redact_url(url: str) -> str:
    """``url`` with any password in it masked."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------- the loader


class _Server(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    public_url: str | None = None
    home: Path = Path(".cinecloud")


class _Database(BaseModel):
    url: str | None = None


class _Storage(BaseModel):
    backend: str = "local"
    root: Path | None = None
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    # S3 parts are 5 MiB at least (but the last).
    s3_multipart_threshold: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024)
    s3_multipart_chunksize: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)


class _Delivery(BaseModel):
    secret: str | None = None
    url_ttl_s: int = Field(3600, gt=0)
    base_url: str | None = None
    upload_ttl_s: int = Field(3600, gt=0)
    serve_from: Literal["origin", "bucket"] = "origin"
    prewarm: bool = False


class _Queue(BaseModel):
    lease_ttl_s: float = Field(30.0, gt=0)
    heartbeat_interval_s: float = Field(2.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    sweep_interval_s: float = Field(1.0, gt=0)
    lease_long_poll_s: float = Field(2.0, ge=0)
    job_ttl_s: int = Field(7 * 24 * 3600, gt=0)


class _Scheduler(BaseModel):
    aging_s: float = Field(300.0, gt=0)
    max_parallel: int = Field(8, ge=1, le=1024)
    candidates: int = Field(32, ge=1, le=10_000)
    tenant_weights: dict[str, Annotated[float, Field(gt=0)]] = {}
    default_weight: float = Field(1.0, gt=0)
    fair_window_s: float = Field(900.0, gt=0)
    model_load_s: dict[str, Annotated[float, Field(ge=0)]] = {}
    default_load_s: float = Field(30.0, ge=0)
    max_deadline_s: float = Field(7 * 24 * 3600.0, gt=0)


class _Leader(BaseModel):
    lock_key: int = Field(0x63696E65, ge=-(2**63), lt=2**63)
    interval_s: float = Field(1.0, gt=0)
    replica: str = Field("", max_length=200)


class _GpuPrice(BaseModel):
    on_demand: float = Field(ge=0)
    spot: float | None = Field(None, ge=0)  # unset: spot machines pay the on-demand price


class _Cost(BaseModel):
    prices: dict[str, _GpuPrice] = {}


class _Autoscale(BaseModel):
    enabled: bool = False
    launcher: Literal["local", "observe"] = "local"
    pools: list[str] = []
    interval_s: float = Field(5.0, gt=0)
    min_workers: int = Field(0, ge=0)
    max_workers: int = Field(4, ge=0)
    target_wait_s: float = Field(60.0, gt=0)
    wait_quantile: float = Field(0.95, gt=0, lt=1)
    cold_start_s: float = Field(45.0, ge=0)
    idle_to_zero_s: float = Field(300.0, ge=0)
    upscale_delay_s: float = Field(0.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)
    arrival_half_life_s: float = Field(60.0, gt=0)
    on_demand_base: int = Field(1, ge=0)
    on_demand_share: float = Field(1.0, ge=0, le=1)
    history: int = Field(200, ge=1, le=100_000)


class _Api(BaseModel):
    max_prompt_chars: int = Field(2000, gt=0)
    max_body_bytes: int = Field(20 * 1024 * 1024, gt=0)
    default_page_size: int = Field(20, gt=0)
    max_page_size: int = Field(100, gt=0)
    max_image_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(4096 * 4096, gt=0)


def _check_rate(value: str) -> str:
    """A rate in the ``limits`` notation ("" is none); ValueError names the bad one."""
    if value.strip():
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                f"not a rate: {value!r} (e.g. '10/second' or '10/second;600/minute')"
            ) from None
    return value.strip()


Rate = Annotated[str, AfterValidator(_check_rate)]
_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix")


class _TenantLimits(BaseModel):
    """An override: the fields it leaves out keep the defaults."""

    model_config = ConfigDict(extra="forbid")

    rate: Rate | None = None
    create_rate: Rate | None = None
    max_active_jobs: int | None = Field(None, ge=0)
    gpu_seconds_per_day: float | None = Field(None, ge=0)
    max_pixel_steps: int | None = Field(None, ge=0)


class _Limits(BaseModel):
    rate: Rate = "100/second"
    create_rate: Rate = "10/second;600/minute"
    max_active_jobs: int = Field(100, ge=0)
    gpu_seconds_per_day: float = Field(86_400.0, ge=0)
    max_pixel_steps: int = Field(10_000_000_000, ge=0)
    tenants: dict[str, _TenantLimits] = {}
    storage: str = "memory://"
    strategy: Literal["moving-window", "sliding-window-counter", "fixed-window"] = "moving-window"
    key_prefix: str = Field("cinecloud", min_length=1, max_length=100)
    active_retry_after_s: int = Field(10, ge=1, le=3600)

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if "://" not in value or scheme not in _STORAGE_SCHEMES:
            raise ValueError(f"limits.storage must be memory:// or a redis:// URL (got {value!r})")
        return value


class _Engine(BaseModel):
    models_dir: Path | None = None
    default_model: str = "cinecloud/shapes-t2v"
    device: str = "auto"
    dtype: str = "auto"
    offload: Literal["auto", "none", "model", "group"] = "auto"
    vae_tiling: Literal["auto", "on", "off"] = "auto"
    attention: Literal[
        "auto", "native", "_native_cudnn", "_native_flash", "_native_efficient", "flash"
    ] = "auto"
    compile: Literal["auto", "off", "regional", "graphs"] = "auto"
    quantize: Literal["off", "fp8"] = "off"
    step_cache_threshold: float = Field(0.05, gt=0)


class _Worker(BaseModel):
    server_url: str = "http://127.0.0.1:8000"
    token: str = ""
    name: str = ""
    models: list[str] = []
    cancel_grace_s: float = Field(3.0, gt=0)
    overlap: bool = True
    lease_ahead_s: float = Field(2.0, ge=0)
    render_processes: int | None = Field(None, ge=0, le=64)
    work_dir: Path | None = None
    runner_factory: str = ""
    parallel: str = ""
    parallel_timeout_s: float = Field(30.0, gt=0)
    spot: bool = False
    gpu_type: str = Field("", max_length=100)
    checkpoint_every: int = Field(5, ge=0)
    preempt_grace_s: float = Field(60.0, gt=0)
    preview_interval_s: float = Field(1.0, ge=0)
    max_batch: int = Field(0, ge=0, le=64)


class _Tracing(BaseModel):
    exporter: Literal["none", "console", "otlp"] = "none"
    service_name: str = "cinecloud"
    sample_ratio: float = Field(1.0, ge=0, le=1)


class _Webhooks(BaseModel):
    allow_hosts: list[str] = []
    max_attempts: int = Field(12, ge=1, le=100)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(3600.0, gt=0)
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0)
    total_timeout_s: float = Field(10.0, gt=0)
    poll_interval_s: float = Field(0.5, gt=0)
    concurrency: int = Field(8, ge=1, le=256)
    fanout_grace_s: float = Field(5.0, ge=0)


class _Provenance(BaseModel):
    enabled: bool = True
    deployment: str = Field("", max_length=100)
    cert_path: Path | None = None
    key_path: Path | None = None
    alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
    trust_anchors: Path | None = None
    sign_hls: bool = True
    caption: bool = False


class _Qc(BaseModel):
    enabled: bool = True
    black_level: float = Field(0.08, ge=0, le=1)
    frozen_mad: float = Field(0.25, ge=0)
    frozen_peak: float = Field(16.0, ge=0)
    black_fraction: float = Field(0.5, gt=0, le=1)
    frozen_fraction: float = Field(0.5, gt=0, le=1)


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the optional TOML config file."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            with path.open("rb") as fh:
                self._data = tomllib.load(fh)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CINECLOUD_", env_nested_delimiter="__", extra="ignore"
    )

    server: _Server = _Server()
    db: _Database = _Database()
    storage: _Storage = _Storage()
    delivery: _Delivery = _Delivery()
    queue: _Queue = _Queue()
    scheduler: _Scheduler = _Scheduler()
    leader: _Leader = _Leader()
    cost: _Cost = _Cost()
    autoscale: _Autoscale = _Autoscale()
    api: _Api = _Api()
    engine: _Engine = _Engine()
    worker: _Worker = _Worker()
    tracing: _Tracing = _Tracing()
    webhooks: _Webhooks = _Webhooks()
    provenance: _Provenance = _Provenance()
    qc: _Qc = _Qc()
    limits: _Limits = _Limits()

    _config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        raw = os.environ.get("CINECLOUD_CONFIG")
        return (init_settings, env_settings, _TomlSource(settings_cls, Path(raw) if raw else None))


def _secret_for(home: Path, name: str) -> str:
    """A secret that survives restarts: generated once under ``home``."""
    path = home / name
    if path.is_file():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


def load_config(config_file: Path | None = None, **overrides: dict[str, Any]) -> Config:
    """Build the frozen config. ``overrides`` are sections, e.g. ``server={"port": 0}``."""
    if config_file is not None:
        os.environ["CINECLOUD_CONFIG"] = str(config_file)
    s = Settings(**overrides)  # type: ignore[arg-type]
    home = s.server.home
    public_url = s.server.public_url or f"http://{s.server.host}:{s.server.port}"
    if s.autoscale.min_workers > s.autoscale.max_workers:
        raise ValueError("autoscale.min_workers must not exceed autoscale.max_workers")
    if s.delivery.serve_from == "bucket" and s.storage.backend != "s3":
        raise ValueError('delivery.serve_from = "bucket" needs storage.backend = "s3"')
    secret = s.delivery.secret or _secret_for(home, "secret")
    worker_token = s.worker.token or _secret_for(home, "worker-token")
    return Config(
        server=ServerConfig(
            host=s.server.host, port=s.server.port, public_url=public_url, home=home
        ),
        db=DatabaseConfig(url=s.db.url or f"sqlite:///{home / 'cinecloud.db'}"),
        storage=StorageConfig(
            **{**s.storage.model_dump(), "root": s.storage.root or home / "blobs"}
        ),
        delivery=DeliveryConfig(
            secret=secret,
            url_ttl_s=s.delivery.url_ttl_s,
            base_url=s.delivery.base_url or public_url,
            upload_ttl_s=s.delivery.upload_ttl_s,
            serve_from=s.delivery.serve_from,
            prewarm=s.delivery.prewarm,
        ),
        queue=QueueConfig(**s.queue.model_dump()),
        scheduler=_scheduler(s.scheduler),
        leader=LeaderConfig(**s.leader.model_dump()),
        cost=_cost(s.cost),
        autoscale=AutoscaleConfig(
            **{**s.autoscale.model_dump(), "pools": tuple(s.autoscale.pools)}
        ),
        api=ApiConfig(**s.api.model_dump()),
        engine=EngineConfig(
            models_dir=s.engine.models_dir or repo_root() / "models",
            default_model=s.engine.default_model,
            device=s.engine.device,
            dtype=s.engine.dtype,
            offload=s.engine.offload,
            vae_tiling=s.engine.vae_tiling,
            attention=s.engine.attention,
            compile=s.engine.compile,
            quantize=s.engine.quantize,
            step_cache_threshold=s.engine.step_cache_threshold,
        ),
        worker=WorkerConfig(
            server_url=s.worker.server_url,
            token=worker_token,
            name=s.worker.name,
            models=tuple(s.worker.models),
            cancel_grace_s=s.worker.cancel_grace_s,
            overlap=s.worker.overlap,
            lease_ahead_s=s.worker.lease_ahead_s,
            render_processes=s.worker.render_processes,
            work_dir=s.worker.work_dir or home / "work",
            runner_factory=s.worker.runner_factory,
            parallel=s.worker.parallel,
            parallel_timeout_s=s.worker.parallel_timeout_s,
            spot=s.worker.spot,
            gpu_type=s.worker.gpu_type,
            checkpoint_every=s.worker.checkpoint_every,
            preempt_grace_s=s.worker.preempt_grace_s,
            preview_interval_s=s.worker.preview_interval_s,
            max_batch=s.worker.max_batch,
        ),
        tracing=TracingConfig(**s.tracing.model_dump()),
        webhooks=WebhookConfig(
            **{**s.webhooks.model_dump(), "allow_hosts": tuple(s.webhooks.allow_hosts)}
        ),
        provenance=_provenance(s.provenance),
        qc=QcConfig(**s.qc.model_dump()),
        limits=_limits(s.limits),
    )


def _scheduler(s: _Scheduler) -> SchedulerConfig:
    values = s.model_dump()
    for name in ("tenant_weights", "model_load_s"):
        values[name] = dict(values[name])
    return SchedulerConfig(**values)


def _cost(c: _Cost) -> CostConfig:
    prices = {
        name: GpuPrice(p.on_demand, p.on_demand if p.spot is None else p.spot)
        for name, p in c.prices.items()
    }
    return CostConfig(prices=prices)


def _provenance(p: _Provenance) -> ProvenanceConfig:
    if (p.cert_path is None) != (p.key_path is None):
        raise ValueError("provenance.cert_path and provenance.key_path go together")
    return ProvenanceConfig(**p.model_dump())


def _limits(lim: _Limits) -> LimitsConfig:
    own = set(TenantLimits.__dataclass_fields__)
    values = lim.model_dump()
    default = TenantLimits(**{k: v for k, v in values.items() if k in own})
    tenants = {
        name: replace(default, **{k: v for k, v in o.model_dump().items() if v is not None})
        for name, o in lim.tenants.items()
    }
    rest = {k: v for k, v in values.items() if k not in own and k != "tenants"}
    return LimitsConfig(default=default, tenants=tenants, **rest)
