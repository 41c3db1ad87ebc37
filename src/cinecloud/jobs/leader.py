"""Which control-plane replica runs the background loops: a PostgreSQL advisory lock.

Several ``cinecloud serve`` replicas may share one PostgreSQL database. The one that
holds a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its
own is the **leader** and runs the loops (lease expiry and retries, deadlines,
retention, the autoscaler); the others try again every few seconds. The lock lives as
long as that connection: when the leader dies, however it dies, PostgreSQL ends its
session and the lock is free for the next try. The connection turns on TCP keepalives
both ways, so a leader cut off by the network also loses the lock within seconds
instead of after the kernel's two-hour default.

SQLite allows a single replica, which always leads (:class:`SingleReplica`).
"""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

__all__ = ["AdvisoryLock", "LeaderLock", "SingleReplica", "leader_lock"]

log = logging.getLogger(__name__)

# libpq's client-side keepalives: notice a dead server within ~10 s.
_CLIENT_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "connect_timeout": 5,
}
# The server side of the same: PostgreSQL ends a silent leader's session (and frees the
# lock) within ~11 s; a check that hangs longer than the timeout counts as lost.
_SESSION_SETTINGS = (
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
    "SET statement_timeout = '5s'",
    "SET application_name = 'cinecloud-leader'",
)


class LeaderLock(Protocol):
    def hold(self) -> bool:
        """Take the lock, or check it is still held; True while this replica leads."""

    def release(self) -> None:
        """Give the lock back (on shutdown)."""


class SingleReplica:
    """SQLite: one replica, always the leader."""

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        return None


class AdvisoryLock:
    """``pg_try_advisory_lock(key)`` held on one dedicated connection."""

    def __init__(self, url: str, key: int) -> None:
        self._engine = create_engine(url, poolclass=NullPool, connect_args=_CLIENT_KEEPALIVE)
        self._key = key
        self._conn: Connection | None = None
        self._held = False

    def hold(self) -> bool:
        try:
            return self._hold()
        except Exception as exc:  # any driver error: the session (and the lock) may be gone
            if self._held:
                log.error("lost the leader lock's connection: %s", exc)
            else:
                log.warning("cannot reach the database for the leader lock: %s", exc)
            self._drop()
            return False

    def _hold(self) -> bool:
        if self._conn is None:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for statement in _SESSION_SETTINGS:
                conn.execute(text(statement))
            self._conn = conn
        if self._held:
            # The lock lasts as long as the session: a live session still holds it.
            self._conn.execute(text("SELECT 1"))
            return True
        got = self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})
        self._held = bool(got.scalar_one())
        return self._held

    def _drop(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # already broken; nothing more to free
                log.debug("closing the leader connection failed", exc_info=True)

    def release(self) -> None:
        if self._conn is not None and self._held:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            except Exception:  # the session ends below anyway, and the lock with it
                log.debug("unlock failed", exc_info=True)
        self._drop()
        self._engine.dispose()


def leader_lock(engine: Engine, key: int) -> LeaderLock:
    """The lock for ``engine``'s database: advisory on PostgreSQL, none on SQLite."""
    if engine.dialect.name == "sqlite":
        return SingleReplica()
    return AdvisoryLock(engine.url.render_as_string(hide_password=False), key)
