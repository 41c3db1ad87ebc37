"""A network outage in front of a server: a TCP forwarder on loopback a test can cut.

Stopping a server is not an outage: moto's server, for one, stops accepting but keeps
serving the keep-alive connections it holds, so clients that pooled one never notice.
:class:`TcpGate` sits between the clients and the server instead::

    gate = TcpGate(("127.0.0.1", s3_port)).open()   # clients use gate.url
    gate.close()   # new connections are refused, open ones are cut
    gate.open()    # back, on the same port

It is hand-rolled (threads copying bytes, about sixty lines) because no test library here
offers a forwarder that cuts its open connections; it runs in the test's process.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["TcpGate"]

_ACCEPT_POLL_S = 0.1
_CHUNK = 64 * 1024


class TcpGate:
    """Forwards connections on ``host``:``port`` (a free port at the first open) to
    ``target`` while open."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def open(self) -> TcpGate:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        listener.settimeout(_ACCEPT_POLL_S)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        """Refuse new connections and cut the open ones (both ways)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the end of the stream on
        except OSError:  # cut, or the other side went
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        finally:
            with self._lock:
                done = src in self._conns and dst not in self._conns
                self._conns.discard(src)
            if done:
                src.close()
                dst.close()
