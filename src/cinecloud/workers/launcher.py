"""Launchers put workers somewhere. ``LocalLauncher``: OS processes beside the control plane.

It follows the autoscaler's launcher protocol (``scale(pool, desired)``,
``current(pool)``; :mod:`cinecloud.scheduler.autoscaler`): a pool is a model id, and
its workers load only that model.

Each worker is ``python -m cinecloud.workers --server URL --name NAME``. The
worker's settings travel in its environment: the caller's environment passes
through, and the launcher's ``worker``, ``engine``, ``queue``, ``tracing``,
``provenance`` and ``qc`` settings (and ``server.home``) are written over it as
``CINECLOUD_*`` variables, so flags given to ``cinecloud serve`` reach the workers too.
The token goes in the environment, not on the command line, where ``ps`` would show it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cinecloud
from cinecloud.config import Config

__all__ = ["DEFAULT_POOL", "LocalLauncher", "SupportsTotal", "worker_env"]

log = logging.getLogger(__name__)

_FORWARDED_SECTIONS = ("worker", "engine", "queue", "tracing", "provenance", "qc")


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
            if value is None:  # unset: the worker's own default (or its environment's)
                continue
            env[f"CINECLOUD_{section.upper()}__{key.upper()}"] = _env_value(value)
    env["CINECLOUD_SERVER__HOME"] = str(cfg.server.home)
    env["CINECLOUD_WORKER__SERVER_URL"] = server_url
    # The workers import the same cinecloud as the launcher, installed or not.
    src = str(Path(cinecloud.__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([src, *(p for p in paths if p != src)])
    return env


#: The pool of workers that load the configured ``worker.models`` (``--workers N``).
DEFAULT_POOL = ""


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]


class LocalLauncher:
    """Worker processes on this machine, by pool; ``scale(pool, desired)`` adds or stops.

    A pool is a model id: its workers load only that model. :data:`DEFAULT_POOL` holds
    workers of the configured ``worker.models``; ``count`` of them start with
    :meth:`start`. ``server_url`` defaults to ``cfg.server.public_url`` (the control
    plane they sit beside); pass the bound address when the server listens on port 0.
    ``busy`` names the workers that hold a job; scaling down stops the others first
    (newest first), so a running job is not cut short while an idle worker remains.
    """

    def __init__(
        self,
        cfg: Config,
        count: int = 1,
        *,
        server_url: str | None = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        busy: Callable[[], Collection[str]] | None = None,
    ) -> None:
        if count < 0:
            raise ValueError(f"worker count must be >= 0 (got {count})")
        self._cfg = cfg
        self._count = count
        # Local workers sit beside the control plane: they reach it at its own address.
        self._server_url = server_url or cfg.server.public_url
        self._env = worker_env(cfg, self._server_url, os.environ if env is None else env)
        self._python = python
        self._busy = busy
        self._pools: dict[str, list[_Proc]] = {}
        self._started = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """The pids of the workers started and not yet stopped (alive or not)."""
        return [p.popen.pid for procs in self._pools.values() for p in procs]

    def alive(self, pool: str | None = None) -> int:
        """How many worker processes (of ``pool``, or of all pools) are running now."""
        pools = self._pools.values() if pool is None else [self._pools.get(pool, [])]
        return sum(1 for procs in pools for p in procs if p.popen.poll() is None)

    def start(self) -> None:
        """Start the ``count`` workers given at construction, in the default pool."""
        self.scale(DEFAULT_POOL, self._count)

    def current(self, pool: str) -> int:
        """Workers of ``pool`` running (starting ones included); dead ones are forgotten."""
        with self._lock:
            return len(self._reap(pool))

    def scale(self, pool: str, desired: int | SupportsTotal, timeout: float = 15.0) -> None:
        """Reach ``desired`` running workers in ``pool``: forget dead ones, start new ones
        or stop some (idle before busy, newest first). A local machine has no spot
        capacity: a split count runs its total."""
        n = desired if isinstance(desired, int) else desired.total
        if n < 0:
            raise ValueError(f"worker count must be >= 0 (got {n})")
        with self._lock:
            if self._closed:
                log.info("launcher stopped: pool %r stays down", pool)
                return
            procs = self._reap(pool)
            while len(procs) < n:
                procs.append(self._spawn(pool))
            if len(procs) <= n:
                return
            busy = set(self._busy()) if self._busy is not None else set()
            order = sorted(enumerate(procs), key=lambda ip: (ip[1].name in busy, -ip[0]))
            extra = [p for _, p in order[: len(procs) - n]]
            self._pools[pool] = [p for p in procs if p not in extra]
        _terminate([p.popen for p in extra], timeout)

    def stop(self, timeout: float = 15.0) -> list[int]:
        """SIGTERM every worker, then SIGKILL those still running after ``timeout``; later
        calls to :meth:`scale` start nothing.

        Returns the workers' exit codes (0 for a clean stop, -9 for a kill).
        """
        with self._lock:
            procs = [p.popen for ps in self._pools.values() for p in ps]
            self._pools = {}
            self._closed = True
        return _terminate(procs, timeout)

    def _reap(self, pool: str) -> list[_Proc]:
        procs = self._pools.setdefault(pool, [])
        for p in [p for p in procs if p.popen.poll() is not None]:
            log.warning("worker %s exited with code %s", p.name, p.popen.returncode)
            procs.remove(p)
        return procs

    def _spawn(self, pool: str) -> _Proc:
        self._started += 1
        base = self._cfg.worker.name or "local"
        slug = "".join(ch if ch.isalnum() else "-" for ch in pool)
        name = f"{base}-{slug}-{self._started}" if pool else f"{base}-{self._started}"
        env = dict(self._env)
        if pool:
            env["CINECLOUD_WORKER__MODELS"] = json.dumps([pool])
        cmd = [self._python, "-m", "cinecloud.workers", "--server", self._server_url]
        proc = subprocess.Popen([*cmd, "--name", name], env=env)
        log.info("started worker %s (pid %s)", name, proc.pid)
        return _Proc(name, proc)


class SupportsTotal(Protocol):
    """A worker count split by capacity (the autoscaler's ``Desired``)."""

    @property
    def total(self) -> int: ...


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
