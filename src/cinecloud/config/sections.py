"""The configuration's frozen sections: what every other module receives.

:mod:`cinecloud.config` builds them (its loader reads the environment and the config
file) and re-exports them; import them from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    "repo_root",
]


def repo_root() -> Path:
    """The source checkout (where ``models/`` lives) when running from one."""
    return Path(__file__).resolve().parents[3]


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
