"""Launchers put workers somewhere. ``LocalLauncher``: OS processes beside the control plane.

Each worker is ``python -m cinecloud.workers --server URL --name NAME``. The
worker's settings travel in its environment: the caller's environment passes
through, and the launcher's ``worker``, ``engine`` and ``queue`` settings (and
``server.home``) are written over it as ``CINECLOUD_*`` variables, so flags given
to ``cinecloud serve`` reach the workers too. The token goes in the environment,
not on the command line, where ``ps`` would show it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cinecloud.config
from cinecloud.config import Config

__all__ = ["LocalLauncher", "worker_env"]

log = logging.getLogger(__name__)

_FORWARDED_SECTIONS = ("worker", "engine", "queue", "tracing")


def _env_value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return json.dumps([str(v) for v in value])
    return str(value)


def worker_env(cfg: Config, server_url: str, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus the settings a local worker must share with ``cfg``."""
    env = dict(base)
    for section in _FORWARDED_SECTIONS:
        values = dataclasses.asdict(getattr(cfg, section))
        for key, value in values.items():
            env[f"CINECLOUD_{section.upper()}__{key.upper()}"] = _env_value(value)
    env["CINECLOUD_SERVER__HOME"] = str(cfg.server.home)
    env["CINECLOUD_WORKER__SERVER_URL"] = server_url
    # The workers import the same cinecloud as the launcher, installed or not.
    src = str(Path(cinecloud.config.__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([src, *(p for p in paths if p != src)])
    return env


class LocalLauncher:
    """``count`` worker processes on this machine; ``scale(n)`` adds or stops some.

    ``server_url`` defaults to ``cfg.server.public_url`` (the control plane they sit
    beside); pass the bound address when the server listens on port 0.
    """

    def __init__(
        self,
        cfg: Config,
        count: int = 1,
        *,
        server_url: str | None = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        if count < 0:
            raise ValueError(f"worker count must be >= 0 (got {count})")
        self._cfg = cfg
        self._count = count
        # Local workers sit beside the control plane: they reach it at its own address.
        self._server_url = server_url or cfg.server.public_url
        self._env = worker_env(cfg, self._server_url, os.environ if env is None else env)
        self._python = python
        self._procs: list[subprocess.Popen[bytes]] = []
        self._started = 0

    @property
    def pids(self) -> list[int]:
        """The pids of the workers started and not yet stopped (alive or not)."""
        return [p.pid for p in self._procs]

    def alive(self) -> int:
        """How many worker processes are running now."""
        return sum(1 for p in self._procs if p.poll() is None)

    def start(self) -> None:
        """Start the ``count`` workers given at construction."""
        self.scale(self._count)

    def scale(self, n: int, timeout: float = 15.0) -> None:
        """Reach ``n`` running workers: forget dead ones, start or stop (newest first)."""
        if n < 0:
            raise ValueError(f"worker count must be >= 0 (got {n})")
        for p in [p for p in self._procs if p.poll() is not None]:
            log.warning("worker %s exited with code %s", p.pid, p.returncode)
            self._procs.remove(p)
        while len(self._procs) < n:
            self._procs.append(self._spawn())
        extra = self._procs[n:]
        self._procs = self._procs[:n]
        _terminate(extra, timeout)

    def stop(self, timeout: float = 15.0) -> list[int]:
        """SIGTERM every worker, then SIGKILL those still running after ``timeout``.

        Returns the workers' exit codes (0 for a clean stop, -9 for a kill).
        """
        procs, self._procs = self._procs, []
        return _terminate(procs, timeout)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._started += 1
        name = f"{self._cfg.worker.name or 'local'}-{self._started}"
        cmd = [self._python, "-m", "cinecloud.workers", "--server", self._server_url]
        proc = subprocess.Popen([*cmd, "--name", name], env=self._env)
        log.info("started worker %s (pid %s)", name, proc.pid)
        return proc


def _terminate(procs: list[subprocess.Popen[bytes]], timeout: float) -> list[int]:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %s did not stop in %.0fs; killing it", p.pid, timeout)
            p.kill()
            p.wait()
    return [p.returncode for p in procs]
