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

__all__ = ["api_keys", "artifacts", "job_events", "jobs", "metadata", "tenants", "workers"]

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
    Column("qc", JSON, nullable=True),  # the quality gate's readings (render.qc)
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
    Index("ix_jobs_queue", "status", "priority", "created_at"),
    Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
    Index("ix_jobs_lease_expiry", "status", "lease_expires_at"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_job_events_job", "job_id", "id"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
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
)
