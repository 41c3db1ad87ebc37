"""Ray clusters for tests, entirely on loopback: several nodes on one machine.

:func:`loopback_ray` makes every Ray process this one starts use 127.0.0.1 (and send
no usage report). :func:`local_cluster` is ``ray.cluster_utils.Cluster`` with
``n`` nodes. :class:`FakeAutoscalingCluster` runs a head with Ray's fake multi-node
node provider, whose autoscaler adds and removes nodes (processes on this machine).

It is what ``ray.cluster_utils.AutoscalingCluster`` does, with three differences that
make it fit here: that one runs ``ray stop --force`` (it ends every Ray process of the
user, not only its own), binds the default GCS port (6379, Redis's), and reads an
example config that the Ray wheel does not ship. This one starts
``ray start --head --block`` in a process group of its own and ends that group.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from cinecloud.testing.service import free_port

__all__ = ["FakeAutoscalingCluster", "alive_nodes", "local_cluster", "loopback_ray"]

LOOPBACK = "127.0.0.1"
#: Each node's object store (Ray's default is 30% of the machine's memory per node).
OBJECT_STORE_BYTES = 100 * 1024 * 1024


def loopback_ray() -> None:
    """Environment for Ray here and in the processes started from here: loopback only,
    no usage report.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray take 127.0.0.1 as every node's
    address (its single-machine mode), instead of the machine's outward address. Ray
    reads it when it is imported, so where Ray is already imported its constant is set
    too, and the result is checked: a driver that resolved ``127.0.0.1`` to the outward
    address would connect there.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_SCHEDULER_EVENTS", "0")
    constants: Any = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
        services = importlib.import_module("ray._private.services")
        if services.get_node_ip_address() != LOOPBACK:
            raise RuntimeError("Ray resolves this node to a non-loopback address")


def alive_nodes() -> list[dict[str, Any]]:
    """The nodes of the connected cluster that are alive."""
    ray = importlib.import_module("ray")
    return [n for n in ray.nodes() if n["Alive"]]


@contextlib.contextmanager
def local_cluster(nodes: int, cpus_per_node: float = 1.0, **node_args: Any) -> Iterator[Any]:
    """A ``ray.cluster_utils.Cluster``: a head without CPUs and ``nodes`` worker nodes."""
    loopback_ray()
    from ray.cluster_utils import Cluster

    node = {"node_ip_address": LOOPBACK, "object_store_memory": OBJECT_STORE_BYTES}
    head = {"num_cpus": 0, "include_dashboard": False, **node}
    cluster: Any = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus_per_node, **node, **node_args)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


class FakeAutoscalingCluster:
    """A Ray head whose autoscaler adds nodes of ``node_types`` (fake multi-node provider).

    ``node_types`` maps a type name to its ``resources`` and ``max_workers``, as in a
    Ray cluster config. The head has no CPUs, so work waits for a node to be added.
    """

    def __init__(
        self,
        root: Path,
        node_types: Mapping[str, Mapping[str, Any]],
        *,
        idle_timeout_s: float = 3.0,
    ) -> None:
        self.root = root
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.config = _fake_config(self.address, node_types, idle_timeout_s)
        self.log = root / "ray-head.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # Ray's socket paths must stay under 108 bytes: its files go in a short /tmp path.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="cc-ray-", dir="/tmp"))

    def start(self, timeout: float = 60.0) -> FakeAutoscalingCluster:
        loopback_ray()
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "autoscaler.json"
        config.write_text(json.dumps(self.config))
        ray_cli = str(Path(sys.executable).with_name("ray"))
        cmd = [
            *(ray_cli, "start", "--head", "--block", f"--autoscaling-config={config}"),
            *(f"--node-ip-address={LOOPBACK}", f"--port={self.port}", "--num-cpus=0"),
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            *("--include-dashboard=false", f"--temp-dir={self.temp_dir}"),
        ]
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until the head's GCS takes connections (``ray.init`` then waits for the rest)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray head exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, self.port), 1):
                return
            time.sleep(0.2)
        raise TimeoutError(f"the ray head did not start:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-n:])

    def stop(self, timeout: float = 3.0) -> None:
        """End the head and every node its autoscaler started (one process group):
        SIGTERM, then SIGKILL after ``timeout`` (``ray start --block`` outlives its
        processes' graceful exit)."""
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> FakeAutoscalingCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _fake_config(
    gcs_address: str, node_types: Mapping[str, Mapping[str, Any]], idle_timeout_s: float
) -> dict[str, Any]:
    """A Ray cluster config for the fake multi-node provider (what ``ray up`` would read)."""
    types: dict[str, Any] = {
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}
    }
    for name, spec in node_types.items():
        types[name] = {
            "resources": {"object_store_memory": OBJECT_STORE_BYTES, **spec["resources"]},
            "node_config": {},
            "min_workers": int(spec.get("min_workers", 0)),
            "max_workers": int(spec["max_workers"]),
        }
    return {
        "cluster_name": "cinecloud-test",
        "max_workers": sum(int(t.get("max_workers", 0)) for t in types.values()),
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": types,
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60.0,
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
