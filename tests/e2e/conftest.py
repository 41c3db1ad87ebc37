from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cinecloud.config import repo_root
from cinecloud.testing.service import Service

TINY = repo_root() / "models" / "tiny-wan"


@pytest.fixture(scope="session", autouse=True)
def tiny_model() -> Path:
    """The tiny Wan checkpoint the local default serves (built once if missing)."""
    if not (TINY / "model_index.json").is_file():
        subprocess.run(
            [sys.executable, str(repo_root() / "scripts" / "make_tiny_wan.py")], check=True
        )
    return TINY


@pytest.fixture
def start_service(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Service]]:
    """Start real ``cinecloud serve`` processes; all are stopped at the end."""
    started: list[Service] = []

    def start(
        workers: int = 1, env: dict[str, str] | None = None, port: int | None = None
    ) -> Service:
        svc = Service(tmp_path / "home", db_url, workers=workers, env=env, port=port)
        started.append(svc)
        return svc.start()

    yield start
    for svc in started:
        svc.stop()
