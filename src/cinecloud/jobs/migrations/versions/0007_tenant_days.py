"""GPU-seconds billed per tenant and day (the daily quota)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_days",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), server_default="0", nullable=False),
        sa.Column("jobs", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "day"),
    )
    # what the jobs completed so far were billed
    op.execute(
        "INSERT INTO tenant_days (tenant_id, day, gpu_seconds, jobs) "
        "SELECT tenant_id, billed_day, "
        "SUM(COALESCE(gpu_seconds, 0) * COALESCE(gpu_count, 1)), COUNT(*) "
        "FROM jobs WHERE status = 'completed' AND billed_day IS NOT NULL "
        "GROUP BY tenant_id, billed_day"
    )


def downgrade() -> None:
    op.drop_table("tenant_days")
