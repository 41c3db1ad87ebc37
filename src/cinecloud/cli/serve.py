"""``cinecloud serve``: the control plane under uvicorn, with optional local workers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn
from rich.console import Console

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.config import Config

__all__ = ["ensure_admin_key", "run_server", "start_server_thread"]

console = Console(stderr=True)


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


def run_server(cfg: Config, workers: int, on_started: Callable[[], None] | None = None) -> None:
    from cinecloud.workers.launcher import LocalLauncher

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    state = build_state(cfg)
    key = ensure_admin_key(state, cfg.server.home)
    if key:
        console.print(f"[bold]admin API key[/] (saved to {cfg.server.home / 'admin-key'}): {key}")
    server = _uvicorn(cfg, state)
    launcher = LocalLauncher(cfg, workers) if workers > 0 else None
    console.print(f"cinecloud serving on {cfg.server.public_url} with {workers} local worker(s)")
    if launcher is not None:
        launcher.start()
    try:
        server.run()
    finally:
        if launcher is not None:
            launcher.stop(timeout=10)


def start_server_thread(cfg: Config) -> tuple[uvicorn.Server, threading.Thread, AppState]:
    """Run the control plane in a background thread (``generate --local``, benchmarks)."""
    state = build_state(cfg)
    ensure_admin_key(state, cfg.server.home)
    server = _uvicorn(cfg, state)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread, state
