"""job deadlines, work estimates and cost

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("work_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("gpu_type", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("gpu_count", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("spot", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("billed_day", sa.String(length=10), nullable=True))
        batch_op.create_index("ix_jobs_deadline", ["status", "deadline_at"], unique=False)
        batch_op.create_index(
            "ix_jobs_tenant_queue", ["tenant_id", "status", "priority", "created_at"], unique=False
        )
        batch_op.create_index("ix_jobs_started", ["started_at"], unique=False)
        batch_op.create_index("ix_jobs_billed", ["billed_day", "tenant_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_billed")
        batch_op.drop_index("ix_jobs_started")
        batch_op.drop_index("ix_jobs_tenant_queue")
        batch_op.drop_index("ix_jobs_deadline")
        batch_op.drop_column("billed_day")
        batch_op.drop_column("cost_usd")
        batch_op.drop_column("spot")
        batch_op.drop_column("gpu_count")
        batch_op.drop_column("gpu_type")
        batch_op.drop_column("work_s")
        batch_op.drop_column("deadline_at")
