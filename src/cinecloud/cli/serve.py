"""``cinecloud serve``: the control plane under uvicorn, with optional local workers."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import uvicorn
from rich.console import Console

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.config import Config
from cinecloud.telemetry.tracing import setup_tracing
from cinecloud.workers.launcher import LocalLauncher

__all__ = ["ensure_admin_key", "run_server", "start_server_thread"]

console = Console(stderr=True)
SUPERVISE_S = 1.0


def ensure_admin_key(state: AppState, home: Path) -> str | None:
    """On the first start, make the default tenant's admin key and save it under ``home``."""
    if state.accounts.count_keys() > 0:
        return None
    tenant = state.accounts.ensure_tenant("default")
    key, _ = state.accounts.create_key(tenant.id, admin=True, name="admin")
    path = home / "admin-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _uvicorn(cfg: Config, state: AppState) -> uvicorn.Server:
    app = create_app(cfg, state)
    config = uvicorn.Config(
        app,
        host=cfg.server.host,
        port=cfg.server.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    return uvicorn.Server(config)


def run_server(cfg: Config, workers: int) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    setup_tracing(cfg.tracing, "api")
    state = build_state(cfg)
    key = ensure_admin_key(state, cfg.server.home)
    if key:
        console.print(f"[bold]admin API key[/] (saved to {cfg.server.home / 'admin-key'}): {key}")
    server = _uvicorn(cfg, state)
    console.print(f"cinecloud serving on {cfg.server.public_url} with {workers} local worker(s)")
    stop = threading.Event()
    supervisor = None
    if workers > 0:
        launcher = LocalLauncher(cfg, workers)
        supervisor = threading.Thread(
            target=_supervise, args=(launcher, workers, stop), daemon=True
        )
        supervisor.start()
    try:
        server.run()
    finally:
        stop.set()
        if supervisor is not None:
            supervisor.join(timeout=30)


def _supervise(launcher: LocalLauncher, workers: int, stop: threading.Event) -> None:
    """Keep ``workers`` local workers running: a worker that dies is replaced."""
    try:
        while not stop.is_set():
            launcher.scale(workers)
            stop.wait(SUPERVISE_S)
    finally:
        launcher.stop(timeout=15)


def start_server_thread(cfg: Config) -> tuple[uvicorn.Server, threading.Thread, AppState]:
    """Run the control plane in a background thread (``generate --local``, benchmarks)."""
    state = build_state(cfg)
    ensure_admin_key(state, cfg.server.home)
    server = _uvicorn(cfg, state)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread, state
