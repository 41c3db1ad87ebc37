"""``RayLauncher``: workers as actors on a Ray cluster, one actor per worker.

Each actor asks Ray for what one worker needs (its pool's ``num_gpus``, ``num_cpus``
and custom resources) and runs ``python -m cinecloud.workers --server URL --name NAME``
as a subprocess on the node Ray placed it on. Ray picks the node and sets
``CUDA_VISIBLE_DEVICES`` for the GPUs it granted; the worker then pulls jobs from the
control plane like any other worker.

Settings travel as ``CINECLOUD_*`` variables (see :func:`worker_env`): the launcher
works them out once from its config and they are written over the node's own
environment, so the nodes keep their own ``PATH``, caches and drivers.

The launcher asks the Ray autoscaler for room for every desired worker with
``ray.autoscaler.sdk.request_resources`` (one bundle per worker): when the desired
workers do not fit, the autoscaler adds nodes, and the actors waiting for room start
on them. The request replaces any earlier one, so it also lets nodes go once fewer
workers are wanted.

A pool is a model id, as for the autoscaler and ``LocalLauncher``: its workers load
only that model (the pool ``""`` loads the configured ``worker.models``). Each pool
takes its :class:`RayPool` (what one worker asks of Ray), or the default one.

Actors are named ``worker:{pool}:{n}`` in one Ray namespace and, by default, detached: they
outlive the process that made them, and a new launcher (a restarted control plane, or
the replica that takes over the background loops) adopts them instead of starting
over. :meth:`RayLauncher.close` leaves detached workers running; :meth:`RayLauncher.stop`
ends them.

If a worker's node goes away, its actor dies with it; the worker's subprocess is bound
to the actor's process (``PR_SET_PDEATHSIG``), so it cannot go on holding leases. The
job's lease then expires and the job goes back to the queue. The next :meth:`scale`
forgets dead actors and starts new ones where there is room.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

import cinecloud
from cinecloud.config import Config
from cinecloud.workers.launcher import worker_env

__all__ = ["ACTOR_PREFIX", "RayLauncher", "RayPool", "RayWorker", "WorkerActor", "node_env"]

log = logging.getLogger(__name__)

#: The start of every worker actor's name: ``worker:{pool}:{n}``.
ACTOR_PREFIX = "worker:"


class _SupportsTotal(Protocol):
    """A worker count split by capacity (the autoscaler's ``Desired``)."""

    @property
    def total(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class RayPool:
    """What each worker of one pool asks of Ray, and the settings only it gets.

    ``env`` holds extra ``CINECLOUD_*`` settings for this pool's workers, e.g.
    ``{"CINECLOUD_ENGINE__QUANTIZE": "fp8"}``.
    """

    num_gpus: float = 1.0
    num_cpus: float = 1.0
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        amounts = {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus, **self.resources}
        for name, value in amounts.items():
            if value < 0:
                raise ValueError(f"worker pool {name} must be >= 0 (got {value})")

    def bundle(self) -> dict[str, float]:
        """The resources one worker takes, as ``request_resources`` wants them."""
        shape = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: v for k, v in shape.items() if v > 0}


@dataclasses.dataclass(frozen=True)
class RayWorker:
    """One worker actor as last seen: ``state`` is ``pending``, ``running`` or ``exited``.

    ``name`` is the worker's name at the control plane."""

    pool: str
    name: str
    state: str
    node_id: str | None = None
    pid: int | None = None
    exit_code: int | None = None


def node_env(settings: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The node's environment with ``settings`` written over it; this cinecloud first on
    ``PYTHONPATH``, as :func:`worker_env` does for local workers."""
    env = dict(os.environ if base is None else base)
    env.update(settings)
    src = str(Path(cinecloud.__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    env["PYTHONPATH"] = os.pathsep.join([src, *paths])
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """``preexec_fn``: SIGKILL this process when the actor process that started it dies.

    Ray does the same for its own processes (fate sharing); only the call is ours. It
    runs between fork and exec and only calls prctl(2), which is safe there.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class WorkerActor:
    """The Ray actor of one worker: it starts the worker process and can stop it.

    Kept a plain class here; :class:`RayLauncher` wraps it with ``ray.remote`` so that
    this module imports without Ray.
    """

    def __init__(self, name: str, server_url: str, settings: Mapping[str, str]) -> None:
        self._name = name
        cmd = [sys.executable, "-m", "cinecloud.workers", "--server", server_url, "--name", name]
        self._proc = subprocess.Popen(
            cmd, env=node_env(settings), preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL
        )
        log.info("started worker %s (pid %s)", name, self._proc.pid)

    def info(self) -> dict[str, Any]:
        """Where the worker runs, and its exit code once it has exited (else None)."""
        import ray

        return {
            "name": self._name,
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": self._proc.pid,
            "exit_code": self._proc.poll(),
        }

    def stop(self, timeout: float) -> int:
        """SIGTERM the worker (it gives back its work), SIGKILL it after ``timeout``."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return self._proc.wait()


@dataclasses.dataclass
class _Handle:
    pool: str
    seq: int
    name: str  # the worker's name at the control plane
    actor: Any = None  # ray.actor.ActorHandle

    @property
    def actor_name(self) -> str:
        return f"{ACTOR_PREFIX}{self.pool}:{self.seq}"


class RayLauncher:
    """Worker actors on a Ray cluster, by pool; ``scale(pool, desired)`` reaches it.

    ``pools`` gives some pools their own :class:`RayPool`; the others take ``default``.
    ``address`` is the Ray cluster (``"auto"``: the one on this node, or
    ``RAY_ADDRESS``); when Ray is already initialised in this process, that connection
    is used. ``server_url`` is where the workers reach the control plane (default
    ``cfg.server.public_url``). ``env`` is where ``CINECLOUD_*`` settings are read
    besides ``cfg`` (default ``os.environ``). ``busy`` names the workers that hold a
    job; scaling down stops the others first (newest first).
    """

    def __init__(
        self,
        cfg: Config,
        pools: Mapping[str, RayPool] | None = None,
        *,
        default: RayPool | None = None,
        server_url: str | None = None,
        address: str = "auto",
        namespace: str = "cinecloud",
        detached: bool = True,
        request_nodes: bool = True,
        env: Mapping[str, str] | None = None,
        busy: Callable[[], Collection[str]] | None = None,
        stop_timeout_s: float = 15.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is in the dev environment
            raise RuntimeError("RayLauncher needs Ray: pip install 'cinecloud[ray]'") from exc
        self._ray = ray
        self._pools = dict(pools or {})
        self._default = default or RayPool()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, namespace=namespace, log_to_driver=False)
        self._namespace = namespace
        self._detached = detached
        self._request_nodes = request_nodes
        self._busy = busy
        self._stop_timeout_s = stop_timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._server_url = server_url or cfg.server.public_url
        self._prefix = cfg.worker.name or "ray"
        self._settings = _settings(cfg, self._server_url, os.environ if env is None else env)
        self._remote = ray.remote(WorkerActor)
        self._lock = threading.Lock()
        self._actors: dict[str, list[_Handle]] = {}
        self._desired: dict[str, int] = {}
        self._requested: list[dict[str, float]] | None = None
        self._closed = False
        self._adopt()

    # ------------------------------------------------------------ the launcher protocol

    def scale(self, pool: str, desired: int | _SupportsTotal) -> None:
        """Reach ``desired`` workers in ``pool``: forget dead ones, start new ones or stop
        some (idle before busy, newest first); ask the autoscaler for room for all
        desired workers of every pool. A split count (on demand, spot) runs its total."""
        n = desired if isinstance(desired, int) else desired.total
        if n < 0:
            raise ValueError(f"worker count must be >= 0 (got {n})")
        with self._lock:
            if self._closed:
                log.info("launcher stopped: pool %r stays down", pool)
                return
            handles = self._reap(pool)
            self._desired[pool] = n
            self._ask_for_nodes()
            while len(handles) < n:
                handles.append(self._start(pool))
            extra = self._surplus(handles, n)
            self._actors[pool] = [h for h in handles if h not in extra]
        self._end(extra)

    def current(self, pool: str) -> int:
        """Workers of ``pool`` running or waiting for room; dead ones are forgotten."""
        with self._lock:
            return len(self._reap(pool))

    def close(self) -> None:
        """Let go of the cluster. Detached workers keep running (a new launcher adopts
        them); the others are stopped, as they would die with this process anyway."""
        if not self._detached:
            self.stop()
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    # ------------------------------------------------------------ beyond the protocol

    def stop(self) -> None:
        """Stop every worker of every pool and withdraw the request for nodes; later
        calls to :meth:`scale` start nothing."""
        with self._lock:
            handles = [h for pool in self._actors.values() for h in pool]
            self._actors = {}
            self._desired = {}
            self._closed = True
            self._ask_for_nodes()
        self._end(handles)

    def workers(self, pool: str) -> list[RayWorker]:
        """The pool's workers: where each runs, or that it still waits for a node."""
        with self._lock:
            handles = list(self._actors.get(pool, []))
        infos = self._probe(handles)
        result = []
        for h in handles:
            info = infos.get(h.actor_name)
            if info is None:
                result.append(RayWorker(pool, h.name, "pending"))
                continue
            state = "running" if info["exit_code"] is None else "exited"
            node, pid, code = info["node_id"], info["pid"], info["exit_code"]
            result.append(RayWorker(pool, h.name, state, node, pid, code))
        return result

    # ------------------------------------------------------------ internals

    def _start(self, pool: str) -> _Handle:
        spec = self._pools.get(pool, self._default)
        seq = max((h.seq for h in self._actors.get(pool, [])), default=0) + 1
        settings = dict(self._settings)
        if pool:
            settings["CINECLOUD_WORKER__MODELS"] = json.dumps([pool])
        settings.update(spec.env)
        options: dict[str, Any] = {
            "namespace": self._namespace,
            "num_cpus": spec.num_cpus,
            "num_gpus": spec.num_gpus,
            "max_restarts": 0,
        }
        if spec.resources:
            options["resources"] = dict(spec.resources)
        if self._detached:
            options["lifetime"] = "detached"
        while True:
            handle = _Handle(pool, seq, self._worker_name(pool, seq))
            try:
                opts = self._remote.options(name=handle.actor_name, **options)
                handle.actor = opts.remote(handle.name, self._server_url, settings)
            except ValueError as exc:  # the name is taken: another launcher just used it
                if "already exists" not in str(exc):
                    raise
                seq += 1
                continue
            log.info("asked Ray for worker %s (%s)", handle.name, spec.bundle())
            return handle

    def _worker_name(self, pool: str, seq: int) -> str:
        slug = "".join(ch if ch.isalnum() else "-" for ch in pool)
        return f"{self._prefix}-{slug}-{seq}" if pool else f"{self._prefix}-{seq}"

    def _surplus(self, handles: list[_Handle], n: int) -> list[_Handle]:
        """The workers to stop to keep ``n``: idle before busy, newest first."""
        if len(handles) <= n:
            return []
        busy = set(self._busy()) if self._busy is not None else set()
        order = sorted(enumerate(handles), key=lambda ih: (ih[1].name in busy, -ih[0]))
        return [h for _, h in order[: len(handles) - n]]

    def _probe(self, handles: list[_Handle]) -> dict[str, dict[str, Any] | None]:
        """``info()`` of each actor that answers within the probe timeout; None: dead."""
        if not handles:
            return {}
        ray = self._ray
        refs = {h.actor.info.remote(): h for h in handles}
        ready, _ = ray.wait(
            list(refs), num_returns=len(refs), timeout=self._probe_timeout_s, fetch_local=True
        )
        result: dict[str, dict[str, Any] | None] = {}
        for ref in ready:
            try:
                result[refs[ref].actor_name] = ray.get(ref)
            except ray.exceptions.RayActorError:
                result[refs[ref].actor_name] = None
        return result

    def _reap(self, pool: str) -> list[_Handle]:
        """The pool's live actors: those that died (their node went away) or whose
        worker exited are forgotten and ended."""
        handles = self._actors.setdefault(pool, [])
        infos = self._probe(handles)
        gone = []
        for h in handles:
            if h.actor_name not in infos:
                continue  # waiting for room, or slow to answer: still ours
            info = infos[h.actor_name]
            if info is None:
                log.warning("worker actor %s died (its node is gone?)", h.name)
                gone.append(h)
            elif info["exit_code"] is not None:
                log.warning("worker %s exited with code %s", h.name, info["exit_code"])
                gone.append(h)
        for h in gone:
            handles.remove(h)
            self._ray.kill(h.actor, no_restart=True)
        return handles

    def _end(self, handles: list[_Handle]) -> None:
        """Stop each worker gracefully (in parallel), then end its actor."""
        if not handles:
            return
        ray = self._ray
        refs = [h.actor.stop.remote(self._stop_timeout_s) for h in handles]
        ray.wait(refs, num_returns=len(refs), timeout=self._stop_timeout_s + 5.0)
        for h in handles:
            ray.kill(h.actor, no_restart=True)
            log.info("stopped worker %s", h.name)

    def _ask_for_nodes(self) -> None:
        """Ask the autoscaler for one bundle per desired worker (replacing the last ask)."""
        if not self._request_nodes:
            return
        wanted = sorted(self._desired.items())
        bundles = [self._pools.get(p, self._default).bundle() for p, n in wanted for _ in range(n)]
        bundles = [b for b in bundles if b]
        if bundles == self._requested:
            return
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)
        self._requested = bundles

    def _adopt(self) -> None:
        """Take over the live worker actors in our namespace (a previous launcher's)."""
        ray = self._ray
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] != self._namespace or not name.startswith(ACTOR_PREFIX):
                continue
            pool, _, seq = name.removeprefix(ACTOR_PREFIX).rpartition(":")
            if not seq.isdigit():
                continue
            try:
                actor = ray.get_actor(name, namespace=self._namespace)
            except ValueError:  # gone since it was listed
                continue
            handle = _Handle(pool, int(seq), self._worker_name(pool, int(seq)), actor)
            self._actors.setdefault(pool, []).append(handle)
        for pool, handles in self._actors.items():
            handles.sort(key=lambda h: h.seq)
            for h in handles:  # their names as the launcher that made them chose
                info = self._probe([h]).get(h.actor_name)
                h.name = str(info["name"]) if info else h.name
            log.info("adopted %d worker actor(s) of pool %r", len(handles), pool)


def _settings(cfg: Config, server_url: str, env: Mapping[str, str]) -> dict[str, str]:
    """The ``CINECLOUD_*`` settings every worker gets: those in ``env``, then ``cfg``'s."""
    base = {k: v for k, v in env.items() if k.startswith("CINECLOUD_")}
    settings = worker_env(cfg, server_url, base)
    settings.pop("PYTHONPATH", None)  # each node puts its own cinecloud first
    return settings
