"""Run a real ``cinecloud serve`` (and its local workers) as a subprocess on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "NO_LIMITS",
    "Service",
    "control_plane_cost",
    "free_port",
    "limits_env",
    "quick_queue_env",
    "request_counts",
    "running",
    "wait_videos",
]

#: Every abuse limit off (``config.LimitsConfig``), for load tests and benchmarks that
#: send far more than one client normally would: the ``limits`` config section.
NO_LIMITS: dict[str, Any] = {
    "rate": "",
    "create_rate": "",
    "max_active_jobs": 0,
    "gpu_seconds_per_day": 0,
    "max_pixel_steps": 0,
}


def limits_env(limits: dict[str, Any] = NO_LIMITS) -> dict[str, str]:
    """The ``limits`` section as ``CINECLOUD_LIMITS__*`` variables (for ``Service``)."""
    return {f"CINECLOUD_LIMITS__{name.upper()}": str(value) for name, value in limits.items()}


def quick_queue_env(lease_ttl_s: float | None = None) -> dict[str, str]:
    """Queue timings for tests that watch leases come and go: heartbeats every second,
    1-s long polls and, with ``lease_ttl_s``, short leases swept every half second."""
    env = {
        "CINECLOUD_QUEUE__HEARTBEAT_INTERVAL_S": "1",
        "CINECLOUD_QUEUE__LEASE_LONG_POLL_S": "1",
    }
    if lease_ttl_s is not None:
        env["CINECLOUD_QUEUE__LEASE_TTL_S"] = f"{lease_ttl_s:g}"
        env["CINECLOUD_QUEUE__SWEEP_INTERVAL_S"] = "0.5"
    return env


@contextlib.contextmanager
def running(home: Path, db_url: str, **kw: Any) -> Iterator[Service]:
    """A started :class:`Service` (``kw`` as its constructor takes them), stopped after."""
    svc = Service(home, db_url, **kw).start()
    try:
        yield svc
    finally:
        svc.stop()


def wait_videos(
    client: Any, ids: list[str], timeout: float, poll_s: float = 0.2
) -> dict[str, dict[str, Any]]:
    """Poll until every video in ``ids`` has ended; their final objects.

    Light on the server, which a benchmark measures: one call for the oldest open job per
    ``poll_s`` (jobs of one queue end roughly in order), and one more per job that has
    ended. Raises :class:`TimeoutError` after ``timeout`` seconds.
    """
    deadline = time.perf_counter() + timeout
    done: dict[str, dict[str, Any]] = {}
    for video_id in ids:
        while True:
            video = client.get(f"/v1/videos/{video_id}").json()
            if video["status"] in ("completed", "failed", "canceled"):
                done[video_id] = video
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(ids) - len(done)} jobs still open after {timeout} s")
            time.sleep(poll_s)
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Service:
    """A control plane subprocess with ``workers`` local workers.

    ``env`` adds ``CINECLOUD_*`` settings (e.g. a short lease for fault tests); ``args``
    adds flags to ``cinecloud serve`` (e.g. ``["--autoscale", "local"]``).
    """

    def __init__(
        self,
        home: Path,
        db_url: str,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.home = home
        self.db_url = db_url
        self.workers = workers
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "server.log"
        self.args = list(args)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CINECLOUD_SERVER__HOME": str(self.home),
                "CINECLOUD_SERVER__PORT": str(self.port),
                "CINECLOUD_DB__URL": self.db_url,
                "CINECLOUD_WORKER__SERVER_URL": self.url,
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> Service:
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "cinecloud.cli", "serve", "--workers", str(self.workers)]
        cmd += self.args
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server did not become ready:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    @property
    def admin_key(self) -> str:
        return (self.home / "admin-key").read_text().strip()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop the server and everything it started (its process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        # local workers live in the same group; make sure none outlive the server
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
            timeout=30,
            **kw,
        )


def request_counts(client: httpx.Client) -> dict[tuple[str, str, str], float]:
    """The server's ``cinecloud_http_requests_total`` so far, by (method, route, status)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        if family.name == "cinecloud_http_requests"
        for s in family.samples
        if s.name == "cinecloud_http_requests_total"
    }


def control_plane_cost(client: httpx.Client, svc: Service) -> dict[str, float]:
    """Counters so far, for the work per job a benchmark divides out: the worker's
    requests to the control plane (``/internal/`` routes but heartbeats, which come at a
    fixed rate, not per job), and the CPU seconds (user + system) of the server process
    and of its workers' parent processes (their engine and render processes left out;
    without psutil, a dev dependency, the requests alone)."""
    requests = sum(
        n
        for (_, route, _), n in request_counts(client).items()
        if route.startswith("/internal/") and not route.endswith("/heartbeat")
    )
    try:
        import psutil
    except ImportError:
        return {"worker_requests": requests}
    assert svc.proc is not None
    server = psutil.Process(svc.proc.pid)
    parents = [p for p in server.children() if "cinecloud.workers" in " ".join(p.cmdline())]
    return {
        "worker_requests": requests,
        "server_cpu_s": sum(server.cpu_times()[:2]),
        "worker_cpu_s": sum(sum(p.cpu_times()[:2]) for p in parents),
    }
