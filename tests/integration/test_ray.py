"""RayLauncher on real Ray clusters on loopback: several nodes, a node lost, an autoscaler.

The control plane is a real ``cinecloud serve`` (SQLite, short leases); the workers
are real worker processes (the fake runner, 0.5 s a step) inside Ray actors.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import select

from cinecloud.config import Config, load_config
from cinecloud.jobs import tables
from cinecloud.jobs.accounts import WorkerStore
from cinecloud.jobs.db import make_engine
from cinecloud.testing.fleet import wait_until
from cinecloud.testing.ray_cluster import (
    FakeAutoscalingCluster,
    alive_nodes,
    local_cluster,
    loopback_ray,
)
from cinecloud.testing.service import Service

loopback_ray()  # before Ray is imported: every node and the driver on 127.0.0.1

if os.environ.get("CI"):
    import ray  # CI must run these tests, not skip them
else:
    ray = pytest.importorskip("ray")

from cinecloud.workers.ray_launcher import RayLauncher, RayPool  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.timeout(180)]

SLOW = "cinecloud.testing.fake_runner:slow_fake_runner_factory"  # 0.5 s a step
FAST_LEASES = {
    "CINECLOUD_QUEUE__LEASE_TTL_S": "3",
    "CINECLOUD_QUEUE__SWEEP_INTERVAL_S": "0.5",
    "CINECLOUD_QUEUE__HEARTBEAT_INTERVAL_S": "1",
}
POOL = "cinecloud/shapes-t2v"  # a pool is a model id: its workers load only that model
CPU = RayPool(num_gpus=0, num_cpus=1)  # what one worker asks of Ray here


class Plane:
    """The control plane, its client and what the tests read from its database."""

    def __init__(self, svc: Service, db_url: str) -> None:
        self.svc = svc
        self.client = svc.client()
        self.engine = make_engine(db_url)
        self.workers = WorkerStore(self.engine, clock=time.time)

    def config(self, work: Path) -> Config:
        """What the launcher hands its workers: this plane's home (its worker token)."""
        return load_config(
            server={"home": self.svc.home},
            worker={"runner_factory": SLOW, "work_dir": work, "cancel_grace_s": 1.0},
        )

    def registered(self, names: set[str]) -> bool:
        seen = {w.name for w in self.workers.active(within_s=3.0)}
        return names <= seen

    def worker_names(self) -> dict[str, str]:
        return {w.id: w.name for w in self.workers.active(within_s=3600.0)}

    def submit(self, prompt: str, steps: int) -> str:
        body = {"prompt": prompt, "steps": steps}
        resp = self.client.post("/v1/videos", json=body)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["id"])

    def get(self, video_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.client.get(f"/v1/videos/{video_id}").json()
        return data

    def wait_done(self, video_id: str, timeout: float) -> dict[str, Any]:
        done = ("completed", "failed", "canceled")
        return dict(wait_until(video_id, lambda: _if(self.get(video_id), done), timeout, 0.2))

    def events(self, video_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(type, data) of every event of a finished job, from its SSE stream."""
        out: list[tuple[str, dict[str, Any]]] = []
        kind = ""
        with self.client.stream("GET", f"/v1/videos/{video_id}/events") as resp:
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    kind = line.split(": ", 1)[1]
                elif line.startswith("data: "):
                    out.append((kind, json.loads(line.split(": ", 1)[1])))
        return out

    def holder_of(self, video_id: str) -> str:
        """The name of the worker that holds the running job's lease now."""
        with self.engine.connect() as conn:
            q = select(tables.jobs.c.lease_owner).where(tables.jobs.c.id == video_id)
            owner = conn.execute(q).scalar_one()
        assert owner, f"{video_id} is not leased"
        return self.worker_names()[owner]

    def runner_of(self, video_id: str) -> str:
        """The name of the worker that last held the finished job's lease."""
        leases = [d for kind, d in self.events(video_id) if d.get("worker_id")]
        assert leases, f"{video_id} was never leased"
        return self.worker_names()[leases[-1]["worker_id"]]


def _if(job: dict[str, Any], statuses: tuple[str, ...]) -> dict[str, Any] | None:
    return job if job["status"] in statuses else None


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("ray-plane")
    db_url = f"sqlite:///{root / 'cinecloud.db'}"
    svc = Service(root / "home", db_url, workers=0, env=FAST_LEASES).start()
    p = Plane(svc, db_url)
    try:
        yield p
    finally:
        p.client.close()
        svc.stop()


def _nodes_of(launcher: RayLauncher) -> dict[str, str]:
    """worker name -> node id, for the pool's running workers."""
    return {w.name: str(w.node_id) for w in launcher.workers(POOL) if w.state == "running"}


class TestMultiNode:
    """Three one-CPU nodes, one worker each; then one node is removed mid-job."""

    @pytest.fixture(scope="class")
    @classmethod
    def cluster(cls) -> Iterator[Any]:
        with local_cluster(nodes=3, cpus_per_node=1) as cluster:
            yield cluster

    @pytest.fixture(scope="class")
    @classmethod
    def launcher(
        cls, cluster: Any, plane: Plane, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[RayLauncher]:
        cfg = plane.config(tmp_path_factory.mktemp("ray-work"))
        launcher = RayLauncher(cfg, default=CPU, server_url=plane.svc.url, address=cluster.address)
        try:
            yield launcher
        finally:
            launcher.stop()
            launcher.close()

    def test_workers_on_every_node_run_jobs(self, launcher: RayLauncher, plane: Plane) -> None:
        launcher.scale(POOL, 3)
        assert launcher.current(POOL) == 3
        nodes = wait_until("3 running workers", lambda: _full(_nodes_of(launcher), 3), 60, 0.2)
        assert len(set(nodes.values())) == 3, nodes  # one worker on each node
        wait_until("the workers to register", lambda: plane.registered(set(nodes)), 60, 0.2)

        ids = [plane.submit(f"job {i}", steps=3) for i in range(6)]
        for vid in ids:
            assert plane.wait_done(vid, 60)["status"] == "completed"
        ran_on = {nodes[plane.runner_of(vid)] for vid in ids}
        assert len(ran_on) == 3, ran_on  # the jobs ran across all three nodes

    def test_lost_node_job_completes_elsewhere(
        self, launcher: RayLauncher, plane: Plane, cluster: Any
    ) -> None:
        launcher.scale(POOL, 3)
        nodes = wait_until("3 running workers", lambda: _full(_nodes_of(launcher), 3), 60, 0.2)
        pids = {w.name: w.pid for w in launcher.workers(POOL)}
        vid = plane.submit("a long one", steps=12)
        wait_until("the job to be running", lambda: (plane.get(vid)["step"] or 0) >= 2, 30, 0.2)
        victim = plane.holder_of(vid)
        node = next(n for n in cluster.list_all_nodes() if n.node_id == nodes[victim])

        cluster.remove_node(node)
        # The worker went with its node: it is not left holding the lease.
        victim_pid = pids[victim]
        wait_until("the worker to die", lambda: not psutil.pid_exists(victim_pid), 20, 0.2)

        done = plane.wait_done(vid, 60)
        assert done["status"] == "completed", done
        assert done["attempts"] == 2
        types = [kind for kind, _ in plane.events(vid)]
        assert types.count("completed") == 1 and "requeued" in types, types
        finisher = plane.runner_of(vid)
        assert finisher != victim and nodes[finisher] != nodes[victim]

        # The launcher forgets the dead actor, and a new worker starts on a new node.
        assert launcher.current(POOL) == 2
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        launcher.scale(POOL, 3)
        after = wait_until("a third worker", lambda: _full(_nodes_of(launcher), 3), 60, 0.2)
        assert nodes[victim] not in set(after.values())
        wait_until("the new worker to register", lambda: plane.registered(set(after)), 60, 0.2)

    def test_new_launcher_adopts_workers_and_scales_down(
        self, launcher: RayLauncher, plane: Plane, tmp_path: Path
    ) -> None:
        launcher.scale(POOL, 3)
        newest = launcher.workers(POOL)[-1].name
        second = RayLauncher(
            plane.config(tmp_path), default=CPU, server_url=plane.svc.url, busy=lambda: {newest}
        )
        assert second.current(POOL) == launcher.current(POOL) == 3
        assert second.current("another/model") == 0
        before = {w.name: w.pid for w in second.workers(POOL)}
        assert newest in before
        second.scale(POOL, 1)  # the idle ones go first (stopped before scale returns)
        assert [w.name for w in second.workers(POOL)] == [newest]
        assert {n: psutil.pid_exists(p) for n, p in before.items() if p} == {
            n: n == newest for n in before
        }
        with pytest.raises(ValueError, match="must be >= 0"):
            second.scale(POOL, -1)
        second.close()  # the connection was not its own: Ray stays initialised
        assert ray.is_initialized()


def _full(nodes: dict[str, str], n: int) -> dict[str, str] | None:
    return nodes if len(nodes) == n else None


def test_autoscaler_adds_nodes_for_workers_that_do_not_fit(plane: Plane, tmp_path: Path) -> None:
    if ray.is_initialized():
        ray.shutdown()
    loopback_ray()
    types = {"cpu1": {"resources": {"CPU": 1}, "max_workers": 2}}
    with FakeAutoscalingCluster(tmp_path / "ray", types, idle_timeout_s=2.0) as cluster:
        launcher = RayLauncher(
            plane.config(tmp_path / "work"),
            default=CPU,
            server_url=plane.svc.url,
            address=cluster.address,
            namespace="autoscale",
        )
        try:
            (head,) = alive_nodes()  # the head alone, and it has no CPU for workers
            launcher.scale(POOL, 2)
            # None runs on the head: each waits for a node, or already has an added one
            # (the fake autoscaler can be that quick when the probe is slow).
            workers = launcher.workers(POOL)
            assert all(w.state == "pending" or w.node_id != head["NodeID"] for w in workers)
            nodes = wait_until("new nodes", lambda: _full(_nodes_of(launcher), 2), 90, 0.2)
            assert len(alive_nodes()) == 3 and len(set(nodes.values())) == 2
            wait_until("the workers to register", lambda: plane.registered(set(nodes)), 60, 0.2)
            vid = plane.submit("on an added node", steps=2)
            assert plane.wait_done(vid, 60)["status"] == "completed"
            assert plane.runner_of(vid) in nodes

            # The request for nodes stands while the workers are wanted: with the actors
            # gone behind the launcher's back, the idle nodes stay (idle timeout: 2 s).
            for name in nodes:
                (worker,) = [w for w in launcher.workers(POOL) if w.name == name]
                assert worker.pid is not None
                psutil.Process(worker.pid).parent().kill()  # the actor's process
            time.sleep(4)  # > idle timeout 2 s + an autoscaler pass (1 s)
            assert len(alive_nodes()) == 3
            launcher.scale(POOL, 0)  # the request is withdrawn: the idle nodes go
            wait_until("the idle nodes to be removed", lambda: len(alive_nodes()) == 1, 60, 0.2)
        finally:
            launcher.stop()
            launcher.close()
