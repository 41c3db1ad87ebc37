"""Throw-away databases for tests: a SQLite file or a fresh PostgreSQL database."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PG_ADMIN_URL", "pg_available", "temp_database"]

# The PostgreSQL server the tests use; a database is created and dropped per use.
PG_ADMIN_URL = os.environ.get("CINECLOUD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def temp_database(kind: str, tmp_dir: Path) -> Iterator[str]:
    """Yield a SQLAlchemy URL of an empty database of ``kind`` (sqlite|postgres)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir / 'cinecloud.db'}"
        return
    import psycopg

    name = f"cinecloud_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
