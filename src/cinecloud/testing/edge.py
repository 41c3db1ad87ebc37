"""A real origin (uvicorn) and a real nginx edge in front of it, on loopback.

:class:`OriginProcess` runs the origin router over a LocalStore in a uvicorn
subprocess; :class:`NginxEdge` renders ``deploy/nginx/cinecloud.conf`` into a
temp prefix and runs ``nginx -g 'daemon off;'`` there. Both bind 127.0.0.1 only.
Tests and the delivery benchmark use them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
from fastapi import FastAPI

from cinecloud.delivery.edge import EDGE_TEMPLATE, EdgeSettings, render_edge_config
from cinecloud.testing.service import free_port

__all__ = ["NginxEdge", "OriginProcess", "nginx_binary", "origin_app_from_env"]


def nginx_binary() -> str | None:
    """The nginx executable, or None when it is not installed."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def origin_app_from_env() -> FastAPI:
    """The origin alone (uvicorn ``--factory``): the store and secret from the config."""
    from cinecloud.config import load_config
    from cinecloud.delivery import create_origin_router
    from cinecloud.storage import open_store

    cfg = load_config()
    app = FastAPI()
    store = open_store(cfg.storage)
    app.include_router(create_origin_router(store, secret=cfg.delivery.secret, clock=time.time))
    return app


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{text}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered at {url} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class OriginProcess:
    """``uvicorn`` serving the origin for the blobs under ``root`` (a LocalStore)."""

    def __init__(self, home: Path, root: Path, secret: str, *, workers: int = 1) -> None:
        self.home, self.root, self.secret, self.workers = home, root, secret, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "origin.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OriginProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "CINECLOUD_SERVER__HOME": str(self.home),
            "CINECLOUD_STORAGE__BACKEND": "local",
            "CINECLOUD_STORAGE__ROOT": str(self.root),
            "CINECLOUD_DELIVERY__SECRET": self.secret,
        }
        cmd = [
            *(sys.executable, "-m", "uvicorn", "--factory"),
            "cinecloud.testing.edge:origin_app_from_env",
            *("--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"),
            *("--workers", str(self.workers), "--log-level", "warning"),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_http(f"{self.url}/cdn/probe", self.proc, self.log, 30.0)
        return self

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)

    def __enter__(self) -> OriginProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class NginxEdge:
    """nginx with the rendered edge config, in its own prefix under ``prefix``."""

    def __init__(self, prefix: Path, origin: str, secret: str, binary: str | None = None) -> None:
        found = binary or nginx_binary()
        if found is None:
            raise FileNotFoundError("nginx is not installed")
        self.binary, self.prefix = found, prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = EdgeSettings(
            listen=f"127.0.0.1:{self.port}",
            origin=origin.removeprefix("http://"),
            cache_dir=prefix / "cache",
            secret=secret,
            user=pwd.getpwuid(os.getuid()).pw_name,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def write_config(self, template: Path = EDGE_TEMPLATE) -> Path:
        for sub in ("logs", "temp", "cache"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(render_edge_config(template.read_text(), self.settings))
        conf.chmod(0o600)
        return conf

    def start(self) -> NginxEdge:
        conf = self.write_config()
        cmd = [self.binary, "-p", f"{self.prefix}/", "-c", str(conf), "-e", str(self.error_log)]
        with (self.prefix / "logs" / "stderr.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT
            )
        _wait_http(f"{self.url}/", self.proc, self.error_log, 15.0)
        return self

    def stop(self) -> None:
        _stop(self.proc, signal.SIGQUIT)  # graceful: let in-flight responses finish

    def __enter__(self) -> NginxEdge:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
