from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cinecloud.config import repo_root
from cinecloud.jobs import AccountStore, make_engine
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


@pytest.fixture(scope="session")
def shapes_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One real ``cinecloud serve`` with one local worker on the default model
    (``cinecloud/shapes-t2v``, SQLite), shared by the studio and CLI tests; it is
    returned once the worker has loaded the model and registered."""
    root = tmp_path_factory.mktemp("shapes")
    # frequent previews; a long cancel grace, so a step slowed by a busy machine does not
    # get the engine killed (and reloaded) when a test cancels
    env = {"CINECLOUD_WORKER__PREVIEW_INTERVAL_S": "0.3", "CINECLOUD_WORKER__CANCEL_GRACE_S": "30"}
    svc = Service(root / "home", f"sqlite:///{root / 'cinecloud.db'}", workers=1, env=env)
    svc.start()
    try:
        deadline = time.monotonic() + 120
        with svc.client() as client:
            while time.monotonic() < deadline:
                overview = client.get("/v1/admin/overview", params={"window_s": 60}).json()
                if overview["totals"]["workers"] >= 1:
                    break
                time.sleep(0.2)
            else:
                raise TimeoutError(f"the worker never registered:\n{svc.tail()}")
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def user_key(shapes_service: Service) -> str:
    """A key of another tenant, not an admin, on ``shapes_service``."""
    engine = make_engine(shapes_service.db_url)
    try:
        accounts = AccountStore(engine, clock=time.time)
        key, _ = accounts.create_key(accounts.ensure_tenant("viewer").id, name="viewer")
        return key
    finally:
        engine.dispose()
