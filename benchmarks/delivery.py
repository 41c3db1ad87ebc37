"""Delivery throughput: the origin (uvicorn) against the nginx edge on cache hits.

Starts, on loopback, a real origin (``cinecloud.testing.edge.OriginProcess``: the
origin router under uvicorn, one process, over a LocalStore) and nginx with
``deploy/nginx/cinecloud.conf`` in front of it, stores a 20 MiB file, warms the
edge's cache with one full fetch, then measures side by side, the same client
against each:

- ``full``: whole-file GETs of the 20 MiB file;
- ``range``: 1 MiB ranges at random offsets (seeded), most of them across two of
  the edge's 1 MiB slices.

Every request carries a valid signed URL. Each edge response must say
``X-Cache-Status: HIT`` and every body is checked against the file (the first on each
connection in full, the others at their start, middle and end), so the figures are
cache hits of correct bytes. The client is a small keep-alive HTTP/1.1 reader
on raw sockets (``--connections`` threads, each its own connection) that reads
bodies into a reused buffer, so it costs little next to the servers. Each case
runs for ``--seconds`` or ``--max-requests``, whichever ends first, in each of
``--rounds`` rounds that interleave origin and edge (so other load on the machine
weighs on both alike); the table sums the rounds.

It also times our render (``cinecloud.render.encode_mp4``: BT.709 Lanczos scaling,
H.264 CRF 18) against PyAV's bare encode of the same frames (``libx264`` defaults,
``VideoFrame.reformat`` to yuv420p), in frames per second (``--no-render`` skips it).

    python benchmarks/delivery.py                     # 3 rounds of 1 s a case, 4 connections
    python benchmarks/delivery.py --seconds 1 --no-render

Prints a table and writes ``benchmarks/results/delivery.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import secrets
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import numpy as np

from cinecloud.delivery import signed_url
from cinecloud.render import encode_mp4
from cinecloud.storage import LocalStore
from cinecloud.testing.edge import NginxEdge, OriginProcess

MiB = 1024 * 1024
KEY = "t/bench/v/video_1/video.mp4"


@dataclass(frozen=True)
class Case:
    name: str
    server: str
    requests: int
    seconds: float
    bytes: int
    hits: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def mib_s(self) -> float:
        return self.bytes / MiB / self.seconds


class Conn:
    """One keep-alive HTTP/1.1 connection that reads bodies into a reused buffer."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{host}:{port}"
        self.buf = bytearray(size + 65536)
        self.view = memoryview(self.buf)

    def get(self, target: str, rng: tuple[int, int] | None) -> tuple[int, dict[str, str], int]:
        extra = f"Range: bytes={rng[0]}-{rng[1]}\r\n" if rng else ""
        request = f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n"
        self.sock.sendall(request.encode())
        head, have = self._read_head()
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        length = int(headers["content-length"])
        while have < length:
            n = self.sock.recv_into(self.view[have:length])
            if n == 0:
                raise ConnectionError("server closed mid-body")
            have += n
        return status, headers, length

    def _read_head(self) -> tuple[bytes, int]:
        got = 0
        while True:
            n = self.sock.recv_into(self.view[got : got + 65536])
            if n == 0:
                raise ConnectionError("server closed before the headers")
            got += n
            end = self.buf.find(b"\r\n\r\n", 0, got)
            if end >= 0:
                head = bytes(self.buf[:end])
                rest = got - end - 4
                self.buf[:rest] = self.buf[end + 4 : got]
                return head, rest

    def close(self) -> None:
        self.sock.close()


def _same(buf: bytearray, want: bytes, *, whole: bool) -> bool:
    """Whether ``buf`` starts with ``want``: all of it, or 64 KiB at its start, middle and end
    (a full compare of 20 MiB costs about what the edge takes to send it)."""
    if whole:
        return buf[: len(want)] == want
    n = len(want)
    return all(buf[a : a + 65536] == want[a : a + 65536] for a in (0, n // 2, max(n - 65536, 0)))


def _worker(
    base: str, target: str, payload: bytes, ranges: bool, stop: float, cap: int, seed: int,
    out: list[tuple[int, int, int]], counter: list[int], lock: threading.Lock,
) -> None:  # fmt: skip
    parts = urlsplit(base)
    conn = Conn(parts.hostname or "127.0.0.1", parts.port or 80, len(payload))
    rand = random.Random(seed)
    done = nbytes = hits = 0
    try:
        while time.perf_counter() < stop:
            with lock:
                if counter[0] >= cap:
                    break
                counter[0] += 1
            rng = None
            if ranges:
                first = rand.randrange(0, len(payload) - MiB)
                rng = (first, first + MiB - 1)
            status, headers, length = conn.get(target, rng)
            want = payload if rng is None else payload[rng[0] : rng[1] + 1]
            if status != (206 if rng else 200) or not _same(conn.buf, want, whole=done == 0):
                raise AssertionError(f"bad response {status} for {rng}")
            hits += headers.get("x-cache-status") == "HIT"
            done, nbytes = done + 1, nbytes + length
    finally:
        conn.close()
        out.append((done, nbytes, hits))


def run_case(name: str, server: str, url: str, payload: bytes, args: argparse.Namespace) -> Case:
    parts = urlsplit(url)
    base, target = f"{parts.scheme}://{parts.netloc}", f"{parts.path}?{parts.query}"
    out: list[tuple[int, int, int]] = []
    counter, lock = [0], threading.Lock()
    start = time.perf_counter()
    stop = start + args.seconds
    threads = [
        threading.Thread(
            target=_worker,
            args=(
                base,
                target,
                payload,
                name == "range",
                stop,
                args.max_requests,
                i,
                out,
                counter,
                lock,
            ),
        )
        for i in range(args.connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if len(out) != len(threads):
        raise RuntimeError(f"{name}/{server}: a client thread failed")
    done = sum(o[0] for o in out)
    return Case(name, server, done, elapsed, sum(o[1] for o in out), sum(o[2] for o in out))


def bench_delivery(args: argparse.Namespace, home: Path) -> list[Case]:
    secret = secrets.token_urlsafe(32)
    payload = np.random.default_rng(0).integers(0, 256, args.size_mib * MiB, np.uint8).tobytes()
    store = LocalStore(home / "blobs")
    store.put_bytes(KEY, payload, "video/mp4")
    cases = []
    with (
        OriginProcess(home / "origin", home / "blobs", secret) as origin,
        NginxEdge(home / "nginx", origin.url, secret) as edge,
    ):
        expires = int(time.time()) + 3600
        urls = {
            "origin": signed_url(origin.url, KEY, secret=secret, expires=expires),
            "edge": signed_url(edge.url, KEY, secret=secret, expires=expires),
        }
        warm = Conn("127.0.0.1", edge.port, len(payload))
        warm.get(urlsplit(urls["edge"]).path + "?" + urlsplit(urls["edge"]).query, None)
        warm.close()
        # Rounds interleave origin and edge, so load from elsewhere on the machine
        # weighs on both alike.
        for _ in range(args.rounds):
            for name in ("full", "range"):
                for server in ("origin", "edge"):
                    case = run_case(name, server, urls[server], payload, args)
                    if server == "edge" and case.hits != case.requests:
                        raise RuntimeError(f"{name}: {case.requests - case.hits} edge misses")
                    cases.append(case)
    return _totals(cases)


def _totals(rounds: list[Case]) -> list[Case]:
    out = []
    for name in ("full", "range"):
        for server in ("origin", "edge"):
            mine = [c for c in rounds if (c.name, c.server) == (name, server)]
            out.append(
                Case(
                    name,
                    server,
                    sum(c.requests for c in mine),
                    sum(c.seconds for c in mine),
                    sum(c.bytes for c in mine),
                    sum(c.hits for c in mine),
                )
            )
    return out


def bench_render(frames: int, size: int, fps: int = 16) -> dict[str, float]:
    """Frames/s of our encode_mp4 and of PyAV's bare encode, same frames, same size."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, size // 8, size // 8, 3), np.uint8)
    clip = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)
    video = np.concatenate([np.roll(clip, i, axis=2) for i in range(frames)])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        encode_mp4(video, Path(tmp) / "ours.mp4", fps)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        with av.open(str(Path(tmp) / "bare.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
            for i, frame in enumerate(video):
                f = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
                f.pts, f.time_base = i, Fraction(1, fps)
                out.mux(stream.encode(f))
            out.mux(stream.encode(None))
        bare = time.perf_counter() - t0
    return {"frames": frames, "size": size, "ours_fps": frames / ours, "bare_fps": frames / bare}


def print_table(cases: list[Case], render: dict[str, float] | None) -> dict[str, float]:
    print("| case | server | requests | s | req/s | MiB/s | edge HIT |")
    print("|---|---|---|---|---|---|---|")
    for c in cases:
        hits = f"{c.hits}/{c.requests}" if c.server == "edge" else "-"
        print(
            f"| {c.name} | {c.server} | {c.requests} | {c.seconds:.2f} | {c.rps:.1f} | "
            f"{c.mib_s:.0f} | {hits} |"
        )
    ratios = {}
    for name in ("full", "range"):
        by = {c.server: c for c in cases if c.name == name}
        ratios[name] = by["edge"].mib_s / by["origin"].mib_s
        print(f"{name}: edge / origin = {ratios[name]:.2f}x")
    if render:
        print(
            f"render {render['frames']} frames {render['size']}x{render['size']}: "
            f"encode_mp4 {render['ours_fps']:.1f} frames/s, bare PyAV {render['bare_fps']:.1f}"
        )
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="time per case and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, origin and edge interleaved")
    ap.add_argument(
        "--max-requests", type=int, default=3000, help="requests per case and round, at most"
    )
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--size-mib", type=int, default=20)
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/delivery.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cinecloud-delivery-") as tmp:
        cases = bench_delivery(args, Path(tmp))
    render = None if args.no_render else bench_render(frames=48, size=256)
    ratios = print_table(cases, render)
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "cases": [{**c.__dict__, "rps": c.rps, "mib_s": c.mib_s} for c in cases],
        "edge_over_origin": ratios,
        "render": render,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    if min(ratios.values()) < 3.0:
        sys.exit("edge cache hits are under 3x the origin's throughput")


if __name__ == "__main__":
    main()
