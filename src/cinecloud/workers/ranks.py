"""The ranks of a parallel worker: rank 0 is the engine child, ranks 1..N-1 follow it.

With ``worker.parallel`` set (e.g. ``ulysses=2,cfg=2``), the engine child is rank 0. It
spawns the other ranks (:class:`Followers`), and every rank loads the same models with
the plan applied (engine.parallel). Rank 0 alone speaks to the worker parent. It tells
the others what to do by broadcasting one small JSON command at a time (:class:`RankLink`):

- ``{"type": "idle"}`` about twice a second while there is no job, so a waiting rank never
  sits in a collective longer than the group's timeout;
- ``{"type": "run_job", ...}``: the :class:`RunJob` as its plain dict; every rank runs it,
  and at each step boundary they agree on rank 0's cancel flag, so all stop together;
- ``{"type": "shutdown"}``.

When a rank dies or hangs, rank 0's next collective fails (gloo notices the closed
connection, or the timeout of ``worker.parallel_timeout_s`` runs out). Rank 0 then ends
the other ranks, reports the job as failed and retryable (``worker_crashed``) and exits,
and the parent starts a fresh child with fresh ranks. A follower whose rank 0 is gone
exits by itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from cinecloud.config import Config
from cinecloud.workers.messages import RunJob, from_dict, to_dict

if TYPE_CHECKING:
    from cinecloud.engine.parallel import ParallelPlan
    from cinecloud.engine.parallel.ranks import RankGroup

__all__ = ["RANK_ENV", "Followers", "RankLink", "follower_main", "join_as_rank", "worker_plan"]

log = logging.getLogger(__name__)

#: Set in each follower's environment to its rank (how tools tell the ranks apart).
RANK_ENV = "CINECLOUD_RANK"
_WATCH_S = 0.5


def worker_plan(cfg: Config) -> ParallelPlan:
    """The worker's parallel plan (``worker.parallel``); one rank when unset."""
    from cinecloud.engine.parallel import parse_plan

    return parse_plan(cfg.worker.parallel)


def join_as_rank(cfg: Config, rank: int, port: int) -> RankGroup:
    """Join the worker's process group as ``rank`` and take its place in the mesh."""
    from cinecloud.engine.parallel.ranks import init_ranks, open_store, rank_device
    from cinecloud.engine.runner import resolve_device

    plan = worker_plan(cfg)
    timeout = cfg.worker.parallel_timeout_s
    device = rank_device(resolve_device(cfg.engine.device), rank)
    store = open_store(port, plan.world_size, timeout, master=False)
    return init_ranks(plan, rank, store, device=device, timeout_s=timeout)


class Followers:
    """Rank 0's handle on ranks 1..N-1: their processes and the store they meet at."""

    def __init__(self, cfg: Config, log_level: int) -> None:
        from cinecloud.engine.parallel.ranks import open_store

        self._cfg = cfg
        self._level = log_level
        plan = worker_plan(cfg)
        self.world_size = plan.world_size
        self.store = open_store(0, plan.world_size, cfg.worker.parallel_timeout_s, master=True)
        self.port = int(self.store.port)
        self._procs: list[BaseProcess] = []

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        for rank in range(1, self.world_size):
            os.environ[RANK_ENV] = str(rank)  # the spawned rank inherits it
            try:
                proc = ctx.Process(
                    target=follower_main,
                    args=(self._cfg, rank, self.port, self._level),
                    name=f"cinecloud-rank{rank}",
                )
                proc.start()
            finally:
                os.environ.pop(RANK_ENV, None)
            self._procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def all_alive(self) -> bool:
        return all(p.is_alive() for p in self._procs)

    def stop(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the ranks to exit, then kill what is left."""
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5.0)


class RankLink:
    """Rank 0's side of the commands it broadcasts to the other ranks."""

    def idle(self) -> None:
        self._send({"type": "idle"})

    def run(self, job: RunJob) -> None:
        self._send(to_dict(job))

    def shutdown(self) -> None:
        self._send({"type": "shutdown"})

    def agree(self, cancel: bool) -> bool:
        """Every rank's cancel decision at a step boundary: rank 0's."""
        from cinecloud.engine.parallel.ranks import agree

        return agree(cancel)

    def _send(self, command: dict[str, Any]) -> None:
        from cinecloud.engine.parallel.ranks import broadcast_json

        broadcast_json(command)


# ---------------------------------------------------------------- ranks 1..N-1


def _watch_parent() -> None:
    """Exit when rank 0 is gone, whatever this rank is doing."""
    parent = multiprocessing.parent_process()
    while parent is None or parent.is_alive():
        time.sleep(_WATCH_S)
    os._exit(1)


def follower_main(cfg: Config, rank: int, port: int, log_level: int = logging.INFO) -> None:
    """Target of ranks 1..N-1: load the models, then run what rank 0 broadcasts."""
    fmt = f"%(asctime)s rank{rank} %(levelname)s %(message)s"
    logging.basicConfig(level=log_level, format=fmt)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, name="cinecloud-watch", daemon=True).start()
    from cinecloud.engine.parallel.ranks import broadcast_json, close_ranks

    ranks = join_as_rank(cfg, rank, port)
    runners = _load_runners(cfg, ranks)
    link = RankLink()
    try:
        while True:
            command = broadcast_json(None)
            kind = command.get("type")
            if kind == "shutdown":
                break
            if kind == "run_job":
                job = from_dict(command)
                assert isinstance(job, RunJob)
                _follow(runners, job, link)
    finally:
        close_ranks()


def _load_runners(cfg: Config, ranks: RankGroup) -> dict[str, Any]:
    from cinecloud.workers.child import load_parallel_models

    return load_parallel_models(cfg, ranks)


def _follow(runners: dict[str, Any], job: RunJob, link: RankLink) -> None:
    """Run ``job`` as rank 0 does, reporting nothing; rank 0 decides when to stop."""
    from cinecloud.engine.registry import GenerationParams

    runner = runners[job.model]
    try:
        runner.run(GenerationParams(**job.params), lambda info: None, lambda: link.agree(False))
    except Exception as exc:  # rank 0 reports the job; a rank out of step times out
        log.info("job %s ended here with %s: %s", job.job_id, type(exc).__name__, exc)
