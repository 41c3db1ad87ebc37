"""``cinecloud serve``: the control plane under uvicorn, with optional local workers."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import uvicorn
from rich.console import Console

from cinecloud.api import build_state, create_app
from cinecloud.api.autoscaling import make_autoscaler, observed_launcher
from cinecloud.api.state import AppState
from cinecloud.config import Config
from cinecloud.scheduler.autoscaler import busy_worker_names
from cinecloud.telemetry.tracing import setup_tracing
from cinecloud.workers.launcher import DEFAULT_POOL, LocalLauncher

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
    launcher = LocalLauncher(cfg, workers, busy=lambda: busy_worker_names(state.jobs.engine))
    _attach_autoscaler(cfg, state, launcher)
    server = _uvicorn(cfg, state)
    console.print(f"cinecloud serving on {cfg.server.public_url} with {workers} local worker(s)")
    stop = threading.Event()
    supervisor = None
    if workers > 0:
        supervisor = threading.Thread(
            target=_supervise, args=(launcher, workers, stop), daemon=True
        )
        supervisor.start()
    # uvicorn raises SIGTERM again after its graceful shutdown; the default handler would
    # then end the process before the finally below stops the local workers.
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run()
    finally:
        stop.set()
        if supervisor is not None:
            supervisor.join(timeout=30)
        launcher.stop(timeout=15)


def _attach_autoscaler(cfg: Config, state: AppState, launcher: LocalLauncher) -> None:
    """With ``autoscale.enabled``, the app runs the autoscaler loop over ``launcher``
    (``local``) or over the registered workers (``observe``)."""
    a = cfg.autoscale
    if not a.enabled:
        return
    scale_with = launcher if a.launcher == "local" else observed_launcher(state)
    try:
        state.autoscaler = make_autoscaler(state, scale_with, a.launcher)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise SystemExit(2) from None
    pools = ", ".join(state.autoscaler.pools)
    console.print(
        f"autoscaler on ({a.launcher}): pools {pools}, {a.min_workers}-{a.max_workers} "
        f"workers each, p{a.wait_quantile * 100:g} wait goal {a.target_wait_s:g} s"
    )


def _supervise(launcher: LocalLauncher, workers: int, stop: threading.Event) -> None:
    """Keep ``workers`` local workers running: a worker that dies is replaced."""
    try:
        while not stop.is_set():
            launcher.scale(DEFAULT_POOL, workers)
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
