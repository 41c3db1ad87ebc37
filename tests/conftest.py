from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cinecloud.config import Config
from cinecloud.testing.databases import pg_available, temp_database

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        for kind in ("unit", "integration", "e2e"):
            if f"/tests/{kind}/" in path:
                item.add_marker(getattr(pytest.mark, kind))


def _need_postgres() -> None:
    """Skip without PostgreSQL, except in CI, which must test it."""
    if not pg_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable, and CI must test it")
        pytest.skip("PostgreSQL is not reachable")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "postgres":
        _need_postgres()
    with temp_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    """An empty PostgreSQL database."""
    _need_postgres()
    with temp_database("postgres", tmp_path) as url:
        yield url


def make_config(home: Path, db_url: str | None = None, **sections: dict[str, object]) -> Config:
    """A config rooted in a temporary ``home``; sections override fields."""
    from cinecloud.config import load_config

    base: dict[str, dict[str, object]] = {"server": {"home": home}}
    if db_url:
        base["db"] = {"url": db_url}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return load_config(None, **base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol server (moto's server mode) on 127.0.0.1 and a free port."""
    from cinecloud.testing.s3 import moto_s3_server

    with moto_s3_server() as endpoint:
        yield endpoint
