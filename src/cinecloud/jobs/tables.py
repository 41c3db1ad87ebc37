"""SQL tables of the job store (SQLAlchemy Core).

Alembic migrations under ``migrations/`` create exactly these; a test compares
the migrated schema with this metadata.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "api_keys",
    "artifacts",
    "job_events",
    "jobs",
    "metadata",
    "tenant_days",
    "tenants",
    "webhook_attempts",
    "webhook_cursor",
    "webhook_deliveries",
    "webhook_endpoints",
    "webhook_secrets",
    "workers",
]

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    Column("is_admin", Boolean, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("model", String(200), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("params", JSON, nullable=False),
    Column("seconds", String(16), nullable=False),
    Column("size", String(32), nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    # the parallel degree (ranks) the request asked for; NULL: the scheduler decides
    Column("parallel", Integer, nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("completed_at", Float, nullable=True),
    Column("expires_at", Float, nullable=True),
    Column("deleted_at", Float, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False),
    Column("lease_id", String(64), nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("stage", String(32), nullable=True),
    Column("step", Integer, nullable=True),
    Column("total_steps", Integer, nullable=True),
    Column("progress", Integer, nullable=False, server_default="0"),
    Column("eta_s", Float, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("timings", JSON, nullable=True),
    Column("gpu_seconds", Float, nullable=True),
    Column("engine", JSON, nullable=True),
    # scheduling: the Cancel-After deadline, and the work estimate fair share counts
    Column("deadline_at", Float, nullable=True),
    Column("work_s", Float, nullable=True),
    # cost, recorded at completion: where it ran and what it cost
    Column("gpu_type", String(100), nullable=True),
    Column("gpu_count", Integer, nullable=True),
    Column("spot", Boolean, nullable=True),
    Column("cost_usd", Float, nullable=True),
    Column("billed_day", String(10), nullable=True),
    # the newest denoise checkpoint (jobs.checkpoints): a blob under the job's key prefix
    Column("checkpoint_key", String(512), nullable=True),
    Column("checkpoint_step", Integer, nullable=True),
    Column("checkpoint_total_steps", Integer, nullable=True),
    Column("checkpoint_sha256", String(64), nullable=True),
    Column("checkpoint_size", BigInteger, nullable=True),
    Column("checkpoint_lease_id", String(64), nullable=True),
    Column("checkpoint_at", Float, nullable=True),
    # W3C trace context of the submit span: the worker's spans join the job's trace
    Column("traceparent", String(64), nullable=True),
    Column("qc", JSON, nullable=True),  # the quality gate's readings (render.qc)
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
    Index("ix_jobs_queue", "status", "priority", "created_at"),
    Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
    Index("ix_jobs_lease_expiry", "status", "lease_expires_at"),
    Index("ix_jobs_deadline", "status", "deadline_at"),
    Index("ix_jobs_tenant_queue", "tenant_id", "status", "priority", "created_at"),
    Index("ix_jobs_started", "started_at"),
    Index("ix_jobs_billed", "billed_day", "tenant_id"),
)

# GPU-seconds billed per tenant and UTC day, added to as jobs complete: the daily quota
# reads one row (GET /v1/usage reads the jobs themselves, for the detail).
tenant_days = Table(
    "tenant_days",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("gpu_seconds", Float, nullable=False, server_default="0"),
    Column("jobs", Integer, nullable=False, server_default="0"),
)

# Row ids that may pass 2**31 over a deployment's life (a job writes dozens of events):
# BIGINT on PostgreSQL; SQLite's INTEGER PRIMARY KEY is its 64-bit rowid already (and
# autoincrement needs that exact type there).
RowId = BigInteger().with_variant(Integer(), "sqlite")

job_events = Table(
    "job_events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_job_events_job", "job_id", "id"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("key", String(512), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("capabilities", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("registered_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    # the worker's last GPU sample (NVML, sent with its heartbeat); NULL: none reported
    Column("gpu_stats", JSON, nullable=True),
)

# ---------------------------------------------------------------- webhooks

# A tenant's registered endpoint, or (job_id set) the one a request named.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=True, index=True),
    Column("url", Text, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("events", JSON, nullable=False),
    Column("description", String(200), nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("disabled_at", Float, nullable=True),
)

# One message: one job event for one endpoint. Its id is the ``webhook-id`` header.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("endpoint_id", String(64), ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("event_id", Integer, ForeignKey("job_events.id"), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("give_up_after", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("locked_until", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_order", "endpoint_id", "job_id", "event_id"),
)

# Every HTTP attempt at a delivery.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(64), ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("address", String(64), nullable=True),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
)

# The secret that signs a tenant's per-request ``webhook_url`` deliveries.
webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)

# How far the fan-out has read ``job_events`` (one row).
webhook_cursor = Table(
    "webhook_cursor",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("event_id", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)
