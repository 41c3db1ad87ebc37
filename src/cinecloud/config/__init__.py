"""Settings: the one loader of environment variables and the config file.

Everything else receives frozen section objects built here (their classes live in
:mod:`cinecloud.config.sections` and are re-exported from here); nothing else reads
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
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from limits import parse_many
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cinecloud.config.sections import (
    ApiConfig,
    AutoscaleConfig,
    Config,
    CostConfig,
    DatabaseConfig,
    DeliveryConfig,
    EngineConfig,
    GpuPrice,
    LeaderConfig,
    LimitsConfig,
    ProvenanceConfig,
    QcConfig,
    QueueConfig,
    SchedulerConfig,
    ServerConfig,
    StorageConfig,
    TenantLimits,
    TracingConfig,
    WebhookConfig,
    WorkerConfig,
    repo_root,
)

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
