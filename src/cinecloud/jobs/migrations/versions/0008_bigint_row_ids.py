"""64-bit ids for job events and artifacts on PostgreSQL

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 06:00:00.000000

``job_events.id`` and ``artifacts.id`` were 32-bit SERIALs on PostgreSQL: a busy
deployment writes dozens of events per job and would run out after some tens of millions
of jobs. SQLite's integer primary keys are 64-bit already, so there is nothing to do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TABLES = ("job_events", "artifacts")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.alter_column(table, "id", type_=sa.BigInteger(), existing_type=sa.Integer())
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq AS bigint")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq AS integer")
        op.alter_column(table, "id", type_=sa.Integer(), existing_type=sa.BigInteger())
