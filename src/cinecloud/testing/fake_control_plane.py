"""A tiny in-process control plane that speaks docs/worker-protocol.md, for worker tests.

It keeps jobs in memory, stores uploaded blobs under a directory, and serves on
127.0.0.1 on a free port from a background thread::

    with FakeControlPlane(tmp_path / "blobs") as cp:
        job_id = cp.submit({"prompt": "a cat", ...})
        ...  # point a worker at cp.url with cp.token
        cp.wait_for(lambda: cp.job(job_id).status == "completed", timeout=20)

Not a reference implementation of scheduling: one queue, first in first out.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import FileResponse, JSONResponse

__all__ = ["FakeControlPlane", "FakeJob"]

_TENANT = "t_test"


@dataclass
class FakeJob:
    job_id: str
    model: str
    params: dict[str, Any]
    status: str = "queued"  # queued | in_progress | completed | failed | canceled
    attempt: int = 0
    lease_id: str | None = None
    lease_expires: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    leased_at: float | None = None  # the clock at the last lease
    completed_at: float | None = None
    # the newest checkpoint call's body (with the lease that made it), and the releases
    checkpoint: dict[str, Any] | None = None
    releases: list[dict[str, Any]] = field(default_factory=list)


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeControlPlane:
    """Serves the worker protocol for tests; inspect ``jobs``/``workers`` afterwards."""

    def __init__(
        self,
        blob_dir: Path,
        *,
        token: str = "test-worker-token",
        lease_ttl_s: float = 30.0,
        heartbeat_interval_s: float = 0.5,
        max_attempts: int = 3,
        put_delay_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.blob_dir = blob_dir
        self.put_delay_s = put_delay_s  # each blob PUT takes at least this long (a slow store)
        self.token = token
        self.lease_ttl_s = lease_ttl_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_attempts = max_attempts
        self._clock = clock
        self.jobs: dict[str, FakeJob] = {}
        self.workers: dict[str, dict[str, Any]] = {}
        self.heartbeats = 0
        self.lease_widths: list[int] = []  # the ``width`` of every lease call
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._closing = False
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(build_app(self), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],), daemon=True)

    # ---------------------------------------------------------- lifecycle

    def start(self) -> FakeControlPlane:
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake control plane did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.should_exit = True
        self._thread.join(timeout=10.0)

    def __enter__(self) -> FakeControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------- test controls

    def submit(self, params: dict[str, Any], model: str = "cinecloud/tiny-wan") -> str:
        with self._cond:
            job_id = f"video_{next(self._ids):04d}"
            self.jobs[job_id] = FakeJob(job_id=job_id, model=model, params=dict(params))
            self._cond.notify_all()
        return job_id

    def cancel(self, job_id: str) -> None:
        with self._cond:
            self.jobs[job_id].status = "canceled"
            self._cond.notify_all()

    def job(self, job_id: str) -> FakeJob:
        with self._cond:
            return self.jobs[job_id]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked on every change, and every 50 ms)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    # ---------------------------------------------------------- protocol handlers

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            worker_id = body.get("worker_id") or f"wkr_{next(self._ids):04d}"
            self.workers[worker_id] = {"name": body.get("name"), **body.get("capabilities", {})}
            self._cond.notify_all()
        return {
            "worker_id": worker_id,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "lease_ttl_s": self.lease_ttl_s,
        }

    def heartbeat(self, worker_id: str, body: dict[str, Any]) -> dict[str, Any]:
        cancel = []
        with self._cond:
            if worker_id not in self.workers:
                raise _ApiError(404, "worker_not_found", f"no worker {worker_id}")
            self.heartbeats += 1
            for held in body.get("jobs", []):
                job = self.jobs.get(held["job_id"])
                if job is None or not self._holds(job, held["lease_id"]):
                    cancel.append(held["job_id"])
                else:
                    job.lease_expires = self._clock() + self.lease_ttl_s
            self._cond.notify_all()
        return {"cancel": cancel, "lease_ttl_s": self.lease_ttl_s}

    def lease(self, body: dict[str, Any]) -> dict[str, Any]:
        models = set(body.get("models", []))
        with self._cond:
            self.lease_widths.append(int(body.get("width", 1)))
        deadline = time.monotonic() + float(body.get("wait_s", 0))
        with self._cond:
            while True:
                self._expire_leases()
                queued = [j for j in self.jobs.values() if j.status == "queued"]
                ready = [j for j in queued if j.model in models]
                if ready or self._closing or time.monotonic() >= deadline:
                    break
                self._cond.wait(min(deadline - time.monotonic(), 0.1))
            leased = [self._lease(job) for job in ready[: int(body.get("max_jobs", 1))]]
            self._cond.notify_all()
        return {"jobs": leased}

    def events(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            job = self._held(job_id, body.get("lease_id"))
            job.events.extend(body.get("events", []))
            job.lease_expires = self._clock() + self.lease_ttl_s
            self._cond.notify_all()
        return {"cancel": False}

    def uploads(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            job = self._held(job_id, body.get("lease_id"))
            lease_id = job.lease_id
        urls = {}
        for name in body.get("names", []):
            key = f"t/{_TENANT}/v/{job_id}/{name}"
            urls[name] = {"key": key, "url": f"{self.url}/internal/v1/blobs/{key}?lease={lease_id}"}
        return {"uploads": urls}

    async def put_blob(self, key: str, lease: str, request: Request) -> dict[str, Any]:
        if "authorization" in request.headers:  # like S3: a signed URL takes no other auth
            raise _ApiError(400, "unexpected_credentials", "signed upload URLs take no token")
        parts = key.split("/")
        # t/{tenant}/v/{job}/{name}; a name may have folders (hls/480p/seg_00000.m4s).
        bad_part = any(p in ("", ".", "..") for p in parts)
        if len(parts) < 5 or parts[0] != "t" or parts[2] != "v" or bad_part:
            raise _ApiError(400, "invalid_key", f"bad blob key {key!r}")
        with self._cond:
            self._held(parts[3], lease)
        if self.put_delay_s > 0:
            await asyncio.sleep(self.put_delay_s)
        path = self.blob_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with path.open("wb") as fh:
            async for chunk in request.stream():
                fh.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        ctype = request.headers.get("content-type", "application/octet-stream")
        return {"key": key, "size": size, "sha256": digest.hexdigest(), "content_type": ctype}

    def complete(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            job = self.jobs.get(job_id)
            if job is not None and job.status == "completed" and job.lease_id == body["lease_id"]:
                return {"status": "completed"}  # a retried call
            job = self._held(job_id, body.get("lease_id"))
            for art in body.get("artifacts", []):
                self._verify(art)
            job.status, job.result = "completed", dict(body)
            job.completed_at = self._clock()
            self._cond.notify_all()
        return {"status": "completed"}

    def fail(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            job = self.jobs.get(job_id)
            last = job.failures[-1] if job is not None and job.failures else {}
            if job is not None and last.get("lease_id") == body.get("lease_id"):
                return {"status": job.status}  # a retried call
            job = self._held(job_id, body.get("lease_id"))
            job.failures.append(dict(body))
            retry = bool(body.get("retryable")) and job.attempt < self.max_attempts
            job.status = "queued" if retry else "failed"
            job.lease_id = None
            self._cond.notify_all()
        return {"status": job.status}

    def checkpoint(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            job = self._held(job_id, body.get("lease_id"))
            if not str(body.get("key", "")).startswith(f"t/{_TENANT}/v/{job_id}/checkpoints/"):
                raise _ApiError(400, "invalid_checkpoint", f"bad key {body.get('key')!r}")
            self._verify(body)
            last = job.checkpoint
            if last is None or last["lease_id"] != body["lease_id"] or last["step"] < body["step"]:
                job.checkpoint = last = dict(body)  # else a repeat, or an older one come late
            self._cond.notify_all()
            return {"step": last["step"], "key": last["key"]}

    def release(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            job = self.jobs.get(job_id)
            last = job.releases[-1] if job is not None and job.releases else {}
            if job is not None and last.get("lease_id") == body.get("lease_id"):
                return {"status": job.status}  # a retried call
            job = self._held(job_id, body.get("lease_id"))
            job.releases.append(dict(body))
            job.status, job.lease_id = "queued", None
            job.attempt -= 1  # a preemption is not a failed attempt
            self._cond.notify_all()
        return {"status": "queued"}

    def get_blob(self, key: str) -> FileResponse:
        path = self.blob_dir / key
        if ".." in key.split("/") or not path.is_file():
            raise _ApiError(404, "not_found", f"no blob {key!r}")
        return FileResponse(path)

    # ---------------------------------------------------------- helpers (lock held)

    def _holds(self, job: FakeJob, lease_id: Any) -> bool:
        live = job.lease_expires > self._clock()
        return job.status == "in_progress" and job.lease_id == lease_id and live

    def _held(self, job_id: str, lease_id: Any) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None or not self._holds(job, lease_id):
            raise _ApiError(409, "lease_lost", f"lease {lease_id} on {job_id} is not held")
        return job

    def _expire_leases(self) -> None:
        now = self._clock()
        for job in self.jobs.values():
            if job.status == "in_progress" and job.lease_expires <= now:
                job.status, job.lease_id = "queued", None

    def _lease(self, job: FakeJob) -> dict[str, Any]:
        job.attempt += 1
        job.status = "in_progress"
        job.lease_id = f"lse_{next(self._ids):04d}"
        job.lease_expires = self._clock() + self.lease_ttl_s
        job.leased_at = self._clock()
        inputs = {}
        if job.checkpoint is not None:  # the next lease resumes from it
            inputs["checkpoint"] = f"{self.url}/internal/v1/blobs/{job.checkpoint['key']}"
        return {
            "job_id": job.job_id,
            "lease_id": job.lease_id,
            "attempt": job.attempt,
            "model": job.model,
            "params": job.params,
            "inputs": inputs,
            "lease_ttl_s": self.lease_ttl_s,
            "queued_at": time.time(),
        }

    def _verify(self, art: dict[str, Any]) -> None:
        path = self.blob_dir / art["key"]
        if not path.is_file():
            raise _ApiError(400, "artifact_missing", f"{art['key']} was not uploaded")
        data = path.read_bytes()
        if len(data) != art["size"] or hashlib.sha256(data).hexdigest() != art["sha256"]:
            raise _ApiError(400, "artifact_mismatch", f"{art['key']} size or sha256 differs")


def build_app(cp: FakeControlPlane) -> FastAPI:
    """The FastAPI app serving ``cp``."""
    app = FastAPI()

    @app.exception_handler(_ApiError)
    async def _error(request: Request, exc: _ApiError) -> JSONResponse:
        body = {"error": {"code": exc.code, "message": exc.message, "param": None, "type": "x"}}
        return JSONResponse(body, status_code=exc.status)

    def auth(authorization: str = Header(default="")) -> None:
        if authorization != f"Bearer {cp.token}":
            raise _ApiError(401, "invalid_token", "bad worker token")

    guarded = [Depends(auth)]
    base = "/internal/v1"
    app.post(f"{base}/workers/register", dependencies=guarded)(cp.register)
    app.post(f"{base}/workers/{{worker_id}}/heartbeat", dependencies=guarded)(cp.heartbeat)
    app.post(f"{base}/leases", dependencies=guarded)(cp.lease)
    app.post(f"{base}/jobs/{{job_id}}/events", dependencies=guarded)(cp.events)
    app.post(f"{base}/jobs/{{job_id}}/uploads", dependencies=guarded)(cp.uploads)
    app.post(f"{base}/jobs/{{job_id}}/complete", dependencies=guarded)(cp.complete)
    app.post(f"{base}/jobs/{{job_id}}/fail", dependencies=guarded)(cp.fail)
    app.post(f"{base}/jobs/{{job_id}}/checkpoint", dependencies=guarded)(cp.checkpoint)
    app.post(f"{base}/jobs/{{job_id}}/release", dependencies=guarded)(cp.release)
    app.put(f"{base}/blobs/{{key:path}}")(cp.put_blob)
    app.get(f"{base}/blobs/{{key:path}}")(cp.get_blob)
    return app
