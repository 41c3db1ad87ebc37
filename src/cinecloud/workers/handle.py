"""The parent's handle on its spawned engine child: start, pipe, wait, stop."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import Any

from cinecloud.config import Config
from cinecloud.workers.child import child_main
from cinecloud.workers.messages import Message, Shutdown, from_dict, to_dict

__all__ = ["ChildExited", "ChildProcess"]


class ChildExited(Exception):
    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"engine process exited with code {exitcode}")
        self.exitcode = exitcode


class ChildProcess:
    """The parent's handle on one spawned engine child and its pipe."""

    def __init__(self, cfg: Config, log_level: int | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        level = logging.getLogger().getEffectiveLevel() if log_level is None else log_level
        self._proc = ctx.Process(
            target=child_main, args=(cfg, child_conn, level), name="cinecloud-engine"
        )
        self._child_conn = child_conn

    def start(self) -> None:
        self._proc.start()
        self._child_conn.close()  # so the parent sees EOF when the child dies

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def send(self, msg: Message) -> None:
        with contextlib.suppress(OSError):  # a dead child shows up in recv()
            self._conn.send(to_dict(msg))

    def recv(self, timeout: float, wake: Sequence[Any] = ()) -> Message | None:
        """The child's next message, None on timeout (or when one of ``wake``, objects
        with a ``fileno``, is ready first); raises ChildExited once the child is gone."""
        ready = wait([self._conn, self._proc.sentinel, *wake], timeout)
        if self._conn in ready:
            try:
                return from_dict(self._conn.recv())
            except (EOFError, OSError):
                self._proc.join(timeout=1.0)
        if ready and not self._proc.is_alive():
            raise ChildExited(self._proc.exitcode)
        return None

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(timeout=5.0)
        self._conn.close()

    def stop(self, timeout: float) -> None:
        """Ask the child to exit; kill it if it has not within ``timeout`` seconds."""
        if self._proc.is_alive():
            self.send(Shutdown())
            self._proc.join(timeout)
        self.kill()
