"""The ranks of one parallel worker: the process group, the device mesh, small broadcasts.

Ranks meet through a TCP store on the loopback address: rank 0 opens it on a free port
(:func:`open_store`) and the others connect to that port. The backend is gloo on the
CPU and NCCL on CUDA. Every collective has the group's timeout, so a rank that dies or
hangs turns into an error on the others within ``timeout_s`` rather than a hang.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed import Store, TCPStore  # type: ignore[attr-defined]
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from cinecloud.engine.parallel.plan import ParallelPlan

__all__ = [
    "LOOPBACK",
    "MESH_DIMS",
    "RankGroup",
    "agree",
    "broadcast_json",
    "broadcast_text",
    "close_ranks",
    "init_ranks",
    "join_ranks",
    "open_store",
    "rank_device",
    "rank_group",
]

LOOPBACK = "127.0.0.1"
MESH_DIMS = ("cfg", "ring", "ulysses")


def open_store(port: int, world_size: int, timeout_s: float, *, master: bool) -> TCPStore:
    """The rendezvous store on the loopback address; ``master`` with port 0 picks a free one
    (read it back from ``store.port``)."""
    return TCPStore(
        LOOPBACK,
        port,
        world_size,
        is_master=master,
        timeout=datetime.timedelta(seconds=timeout_s),
        wait_for_workers=False,
    )


def rank_device(device: str, rank: int) -> str:
    """The device of ``rank``: the CPU, or the rank's own CUDA device."""
    if device.startswith("cuda"):
        return f"cuda:{rank % max(1, torch.cuda.device_count())}"
    return "cpu"


@dataclass(frozen=True)
class RankGroup:
    """One rank's view of the parallel world: its place in the ``cfg x ring x ulysses`` mesh."""

    rank: int
    world_size: int
    device: str
    plan: ParallelPlan
    mesh: DeviceMesh

    @property
    def cfg_index(self) -> int:
        """Which classifier-free guidance branch this rank's group computes (0 or 1)."""
        return int(self.mesh["cfg"].get_local_rank())

    @property
    def cfg_group(self) -> Any:
        return self.mesh["cfg"].get_group()


def join_ranks(world_size: int, rank: int, store: Store, *, device: str, timeout_s: float) -> None:
    """Join the process group of ``world_size`` ranks through ``store``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1} (got {rank})")
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def rank_group(plan: ParallelPlan, device: str) -> RankGroup:
    """This rank's place in ``plan``'s mesh; every rank of the joined group calls it."""
    world_size = dist.get_world_size()
    if plan.world_size != world_size:
        raise ValueError(
            f"ulysses*ring*cfg must equal world size {world_size} "
            f"(got {plan.ulysses}x{plan.ring}x{plan.cfg})"
        )
    mesh = init_device_mesh(
        "cuda" if device.startswith("cuda") else "cpu",
        (plan.cfg, plan.ring, plan.ulysses),
        mesh_dim_names=MESH_DIMS,
    )
    return RankGroup(
        rank=dist.get_rank(), world_size=world_size, device=device, plan=plan, mesh=mesh
    )


def init_ranks(
    plan: ParallelPlan, rank: int, store: Store, *, device: str, timeout_s: float
) -> RankGroup:
    """Join the process group through ``store`` and build the mesh; every rank calls it."""
    join_ranks(plan.world_size, rank, store, device=device, timeout_s=timeout_s)
    return rank_group(plan, device)


def close_ranks() -> None:
    """Leave the process group (if joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_text(text: str | None, src: int = 0) -> str:
    """Rank ``src``'s ``text`` on every rank (the others pass None)."""
    box: list[Any] = [text]
    dist.broadcast_object_list(box, src=src)
    value = box[0]
    if not isinstance(value, str):
        raise RuntimeError(f"rank {src} broadcast no text (got {type(value).__name__})")
    return value


def agree(flag: bool, src: int = 0) -> bool:
    """Rank ``src``'s ``flag`` on every rank: how the ranks stop at the same step."""
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(value, src=src)
    return bool(value.item())


def broadcast_json(data: dict[str, Any] | None, src: int = 0) -> dict[str, Any]:
    """Rank ``src``'s JSON object on every rank (the others pass None)."""
    text = broadcast_text(json.dumps(data) if data is not None else None, src=src)
    value = json.loads(text)
    if not isinstance(value, dict):
        raise RuntimeError("the broadcast command is not a JSON object")
    return value
