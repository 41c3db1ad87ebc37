"""job checkpoints

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("checkpoint_key", sa.String(length=512)),
    ("checkpoint_step", sa.Integer()),
    ("checkpoint_total_steps", sa.Integer()),
    ("checkpoint_sha256", sa.String(length=64)),
    ("checkpoint_size", sa.BigInteger()),
    ("checkpoint_lease_id", sa.String(length=64)),
    ("checkpoint_at", sa.Float()),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for name, type_ in _COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for name, _type in reversed(_COLUMNS):
            batch_op.drop_column(name)
