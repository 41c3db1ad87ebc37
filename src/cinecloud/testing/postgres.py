"""A PostgreSQL server of a test's own, on 127.0.0.1, that the test may restart or kill.

The shared server (:mod:`cinecloud.testing.databases`) must stay up for everyone; a
fault test that takes the database away starts its own with ``initdb`` and ``pg_ctl``
in a temporary directory and a free port::

    with PrivatePostgres() as pg:
        url = pg.url          # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        pg.restart()          # pg_ctl restart -m fast: every session is cut
        pg.stop(); pg.start() # down for as long as the test likes

PostgreSQL refuses to run as root: under root the server runs as the ``postgres`` user
(its data directory is given to that user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from cinecloud.testing.service import free_port

__all__ = ["PrivatePostgres", "pg_binaries", "private_postgres"]

_SEARCH = ("/usr/local/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


def pg_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when there is none."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).parent] if found else []
    candidates += [Path(p) for p in _SEARCH]
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


class PrivatePostgres:
    """One PostgreSQL cluster in a temporary directory (``fsync`` off: it is thrown away)."""

    def __init__(self, port: int | None = None, bindir: Path | None = None) -> None:
        found = bindir or pg_binaries()
        if found is None:
            raise FileNotFoundError("initdb/pg_ctl not found (install PostgreSQL's server)")
        self.bindir = found
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cinecloud-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        # root may not run the server; it runs as the postgres user then
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, ok: tuple[int, ...] = (0,), timeout: float = 60.0) -> int:
        """Run one of the server's programs as its user; its exit code. Output goes to a
        file, not a pipe: a server ``pg_ctl`` starts would hold a pipe open."""
        cmd = [str(self.bindir / args[0]), *args[1:]]
        with tempfile.TemporaryFile() as out:
            # a working directory the server's user may enter (the caller's may be private)
            code = subprocess.call(
                cmd, user=self._user, cwd=self.root, stdout=out, stderr=out, timeout=timeout
            )
            out.seek(0)
            text = out.read().decode(errors="replace")
        if code not in ok:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({code}):\n{text}")
        return code

    def _initdb(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N", "-E", "UTF8"
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def _pg_ctl(self, *args: str, ok: tuple[int, ...] = (0,)) -> int:
        return self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), *args, ok=ok)

    def start(self) -> PrivatePostgres:
        self._pg_ctl("-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``mode``: fast (cut sessions, shut down cleanly) or immediate (a crash)."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop (cutting every session) and start again, on the same port."""
        self._pg_ctl("-m", mode, "-w", "restart")

    def running(self) -> bool:
        return self._pg_ctl("status", ok=(0, 3)) == 0  # 3: no server runs

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started :class:`PrivatePostgres`, destroyed afterwards."""
    with PrivatePostgres() as pg:
        yield pg
