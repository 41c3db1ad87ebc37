"""The worker side of the worker protocol (docs/worker-protocol.md), over httpx.

Every call is idempotent on the server, so every call retries on connection
errors and 5xx answers with a short, capped backoff until its deadline: the
control plane may restart under a running worker. A 409 ``lease_lost`` raises
:class:`LeaseLost` at once; other 4xx answers raise :class:`ControlPlaneError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cinecloud.workers.messages import RunJob

__all__ = [
    "Artifact",
    "ControlPlaneClient",
    "ControlPlaneError",
    "Delivered",
    "Delivery",
    "HeartbeatReply",
    "HeldLease",
    "LeaseLost",
    "Registration",
    "RetryPolicy",
    "Unreachable",
    "UploadTarget",
    "outcome",
]

log = logging.getLogger(__name__)


class ControlPlaneError(Exception):
    """The control plane refused a call (4xx other than a lost lease)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class LeaseLost(ControlPlaneError):
    """409 ``lease_lost``: stop the job, delete its files, report nothing more."""


class Unreachable(Exception):
    """The control plane did not answer (or kept failing) until the call's deadline."""


@dataclass(frozen=True)
class RetryPolicy:
    deadline_s: float = 30.0
    first_delay_s: float = 0.1
    max_delay_s: float = 2.0


#: Progress events are best-effort: do not hold the job up for them.
EVENTS_RETRY = RetryPolicy(deadline_s=2.0, first_delay_s=0.05, max_delay_s=0.5)
#: Heartbeats repeat on their own; one short try each.
HEARTBEAT_RETRY = RetryPolicy(deadline_s=1.0, first_delay_s=0.05, max_delay_s=0.25)


@dataclass(frozen=True)
class Registration:
    worker_id: str
    heartbeat_interval_s: float
    lease_ttl_s: float
    # "deliveries": finished jobs' files go to the control plane in one request per job
    # or batch (:meth:`ControlPlaneClient.deliver`); otherwise one upload per file
    uploads: str = ""


@dataclass(frozen=True)
class HeldLease:
    job_id: str
    lease_id: str


@dataclass(frozen=True)
class HeartbeatReply:
    cancel: tuple[str, ...]
    lease_ttl_s: float


@dataclass(frozen=True)
class UploadTarget:
    key: str
    url: str
    # True: a presigned URL straight into the object store (S3), which answers with no
    # JSON record; the worker reports the size and sha256 it hashed itself, and the
    # control plane checks them against the stored object at ``complete``.
    direct: bool = False


@dataclass(frozen=True)
class Delivery:
    """One finished job for :meth:`ControlPlaneClient.deliver`: its files (name, path,
    content type) and its :func:`outcome`."""

    job_id: str
    lease_id: str
    files: Sequence[tuple[str, Path, str]]
    outcome: dict[str, Any]
    ready_at: float = 0.0  # when it was ready to go (the sender's clock), for its timing


@dataclass(frozen=True)
class Delivered:
    """The control plane's answer for one job of a delivery: its status, or the error
    that kept it from completing (``code`` "lease_lost": dropped)."""

    status: str = ""
    code: str = ""
    message: str = ""


def outcome(
    *,
    timings: dict[str, float],
    gpu_seconds: float,
    seed: int,
    engine: dict[str, str],
    bill: dict[str, Any] | None = None,
    qc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a finished job reports besides its files. ``bill`` says where it ran
    (``gpu_type``, ``gpu_count``, ``spot``) for its cost; the control plane otherwise
    uses the registration's."""
    return {
        "timings": timings,
        "gpu_seconds": gpu_seconds,
        "seed": seed,
        "engine": engine,
        **(bill or {}),
        "qc": qc or {},
    }


@dataclass(frozen=True)
class Artifact:
    """One stored file, as the blob PUT reported it (sent back in ``complete``)."""

    name: str
    key: str
    sha256: str
    size: int
    content_type: str


class ControlPlaneClient:
    """One worker's connection to the control plane. Use one instance per thread."""

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = httpx.URL(server_url.rstrip("/") + "/")
        self._retry = retry
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._clock = clock
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self._base, headers=headers, timeout=timeout_s, transport=transport
        )
        # Upload URLs are signed: no credentials go with them (S3 would refuse two).
        self._blobs = httpx.Client(timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()
        self._blobs.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ protocol calls

    def register(
        self, name: str, worker_id: str | None, capabilities: dict[str, Any]
    ) -> Registration:
        body = {"name": name, "worker_id": worker_id, "capabilities": capabilities}
        data = self._post("internal/v1/workers/register", body)
        return Registration(
            worker_id=str(data["worker_id"]),
            heartbeat_interval_s=float(data.get("heartbeat_interval_s", 2.0)),
            lease_ttl_s=float(data.get("lease_ttl_s", 30.0)),
            uploads=str(data.get("uploads", "")),
        )

    def heartbeat(
        self,
        worker_id: str,
        jobs: Iterable[HeldLease],
        status: str,
        gpus: list[dict[str, Any]] | None = None,
    ) -> HeartbeatReply:
        """Extend the held leases; ``gpus`` (the worker's NVML sample) goes along when given."""
        body: dict[str, Any] = {
            "jobs": [{"job_id": j.job_id, "lease_id": j.lease_id} for j in jobs],
            "status": status,
        }
        if gpus is not None:
            body["gpus"] = gpus
        data = self._post(f"internal/v1/workers/{worker_id}/heartbeat", body, retry=HEARTBEAT_RETRY)
        return HeartbeatReply(
            cancel=tuple(str(j) for j in data.get("cancel", ())),
            lease_ttl_s=float(data.get("lease_ttl_s", 30.0)),
        )

    def lease(
        self,
        worker_id: str,
        models: Iterable[str],
        *,
        max_jobs: int = 1,
        wait_s: float = 10.0,
        width: int = 1,
        free_memory: float | None = None,
    ) -> list[RunJob]:
        """Ask for jobs for a worker of ``width`` ranks (the scheduler places by width);
        ``free_memory`` (bytes of GPU memory free) caps a batch at what fits."""
        body: dict[str, Any] = {
            "worker_id": worker_id,
            "models": list(models),
            "max_jobs": max_jobs,
            "wait_s": wait_s,
            "width": width,
        }
        if free_memory is not None:
            body["free_memory"] = free_memory
        data = self._post("internal/v1/leases", body, timeout_s=wait_s + self._timeout_s)
        return [_run_job(item) for item in data.get("jobs", ())]

    def events(self, job_id: str, lease_id: str, events: list[dict[str, Any]]) -> bool:
        """Send progress events; returns True when the job must be canceled."""
        body = {"lease_id": lease_id, "events": events}
        data = self._post(f"internal/v1/jobs/{job_id}/events", body, retry=EVENTS_RETRY)
        return bool(data.get("cancel", False))

    def many_events(self, items: Sequence[tuple[str, str, list[dict[str, Any]]]]) -> set[str]:
        """Send several jobs' progress events (job id, lease id, events) in one request;
        the ids of those whose lease is lost."""
        body = {
            "jobs": [{"job_id": j, "lease_id": lease, "events": evs} for j, lease, evs in items]
        }
        data = self._post("internal/v1/events", body, retry=EVENTS_RETRY)
        return {str(j) for j in data.get("lost", ())}

    def uploads(self, job_id: str, lease_id: str, names: list[str]) -> dict[str, UploadTarget]:
        body = {"lease_id": lease_id, "names": names}
        data = self._post(f"internal/v1/jobs/{job_id}/uploads", body)
        targets = data.get("uploads", {})
        missing = [n for n in names if n not in targets]
        if missing:
            raise ControlPlaneError(200, "bad_response", f"no upload URL for {missing}")
        return {
            n: UploadTarget(key=str(t["key"]), url=str(t["url"]), direct=bool(t.get("direct")))
            for n, t in targets.items()
        }

    def download(self, url: str, dest: Path) -> Path:
        """Fetch an input file (e.g. the conditioning image) from its signed URL."""
        try:
            with self._blobs.stream("GET", self._base.join(url)) as resp:
                if resp.status_code != 200:
                    status = resp.status_code
                    raise ControlPlaneError(status, "input_unavailable", f"GET input: {status}")
                with dest.open("wb") as fh:
                    for chunk in resp.iter_bytes():
                        fh.write(chunk)
        except httpx.HTTPError as exc:
            raise ControlPlaneError(0, "input_unavailable", f"GET input: {exc}") from None
        return dest

    def put_file(self, name: str, target: UploadTarget, path: Path, content_type: str) -> Artifact:
        """PUT ``path`` (streamed from disk) to its signed upload URL. Several may run at
        once from different threads (one job's files go up together)."""
        url = self._base.join(target.url)

        def send() -> httpx.Response:
            with path.open("rb") as fh:
                headers = {"Content-Type": content_type}
                return self._blobs.put(url, content=fh, headers=headers)

        if target.direct:
            return self._put_direct(name, target, path, content_type, send)
        data = self._with_retry(f"PUT {name}", send, self._retry)
        return Artifact(
            name=name,
            key=str(data.get("key", target.key)),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            content_type=str(data.get("content_type", content_type)),
        )

    def _put_direct(
        self,
        name: str,
        target: UploadTarget,
        path: Path,
        content_type: str,
        send: Callable[[], httpx.Response],
    ) -> Artifact:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)

        def checked() -> httpx.Response:
            resp = send()
            if resp.is_success:
                # The store answers without a JSON body; stand in the one _decode wants.
                return httpx.Response(200, json={}, request=resp.request)
            return resp

        self._with_retry(f"PUT {name}", checked, self._retry)
        size = path.stat().st_size
        return Artifact(name, target.key, digest.hexdigest(), size, content_type)

    def complete(
        self, job_id: str, lease_id: str, *, artifacts: list[Artifact], outcome: dict[str, Any]
    ) -> str:
        """Report the job done with its uploaded files and its :func:`outcome`."""
        body = {
            "lease_id": lease_id,
            "artifacts": [
                {
                    "name": a.name,
                    "key": a.key,
                    "sha256": a.sha256,
                    "size": a.size,
                    "content_type": a.content_type,
                }
                for a in artifacts
            ],
            **outcome,
        }
        return str(self._post(f"internal/v1/jobs/{job_id}/complete", body).get("status", ""))

    def deliver(self, items: Sequence[Delivery]) -> dict[str, Delivered]:
        """Send finished jobs' files and outcomes in one request (``deliveries``: a
        registration that says so); each job's answer by id. Retried whole, like every
        call: a job already completed by an earlier try answers "completed"."""
        manifest = {
            "jobs": [
                {
                    "job_id": d.job_id,
                    "lease_id": d.lease_id,
                    "files": [
                        {"name": name, "part": f"f{i}.{n}", "content_type": ctype}
                        for n, (name, _, ctype) in enumerate(d.files)
                    ],
                    **d.outcome,
                }
                for i, d in enumerate(items)
            ]
        }

        def send() -> httpx.Response:
            with contextlib.ExitStack() as stack:
                files = [
                    (
                        f"f{i}.{n}",
                        (Path(path).name, stack.enter_context(Path(path).open("rb")), ctype),
                    )
                    for i, d in enumerate(items)
                    for n, (_, path, ctype) in enumerate(d.files)
                ]
                data = {"manifest": json.dumps(manifest)}
                return self._http.post("internal/v1/deliveries", data=data, files=files)

        answers = self._with_retry("POST /internal/v1/deliveries", send, self._retry)
        jobs = answers.get("jobs")
        if not isinstance(jobs, dict) or any(d.job_id not in jobs for d in items):
            raise ControlPlaneError(200, "bad_response", "a delivery answer misses jobs")
        return {d.job_id: _delivered(jobs[d.job_id]) for d in items}

    def fail(self, job_id: str, lease_id: str, code: str, message: str, retryable: bool) -> str:
        body = {"lease_id": lease_id, "code": code, "message": message, "retryable": retryable}
        return str(self._post(f"internal/v1/jobs/{job_id}/fail", body).get("status", ""))

    def checkpoint(
        self, job_id: str, lease_id: str, step: int, total_steps: int, stored: Artifact
    ) -> int:
        """Point the job at its checkpoint ``stored`` (uploaded like an artifact), taken
        after ``step``; returns the step of the job's newest checkpoint."""
        body = {
            "lease_id": lease_id,
            "step": step,
            "total_steps": total_steps,
            "key": stored.key,
            "sha256": stored.sha256,
            "size": stored.size,
        }
        data = self._post(f"internal/v1/jobs/{job_id}/checkpoint", body)
        return int(data.get("step", step))

    def release(self, job_id: str, lease_id: str, reason: str) -> str:
        """Give the lease back: the job is queued again, and the attempt does not count."""
        body = {"lease_id": lease_id, "reason": reason}
        return str(self._post(f"internal/v1/jobs/{job_id}/release", body).get("status", ""))

    # ------------------------------------------------------------ plumbing

    def _post(
        self,
        path: str,
        body: dict[str, Any],
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        timeout = timeout_s if timeout_s is not None else self._timeout_s

        def send() -> httpx.Response:
            return self._http.post(path, json=body, timeout=timeout)

        return self._with_retry(f"POST /{path}", send, retry or self._retry)

    def _with_retry(
        self, what: str, send: Callable[[], httpx.Response], retry: RetryPolicy
    ) -> dict[str, Any]:
        deadline = self._clock() + retry.deadline_s
        delay = retry.first_delay_s
        while True:
            try:
                resp = send()
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 500:
                    return _decode(resp)
                problem = f"HTTP {resp.status_code}"
            if self._clock() + delay > deadline:
                raise Unreachable(f"{what} failed: {problem}")
            log.debug("%s failed (%s); retrying in %.2fs", what, problem, delay)
            self._sleep(delay)
            delay = min(delay * 2, retry.max_delay_s)


def _decode(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        data = None
    if resp.is_success:
        if not isinstance(data, dict):
            raise ControlPlaneError(resp.status_code, "bad_response", "expected a JSON object")
        return data
    code, message = _error_of(data, resp)
    if resp.status_code == 409 and code == "lease_lost":
        raise LeaseLost(resp.status_code, code, message)
    raise ControlPlaneError(resp.status_code, code, message)


def _error_of(data: Any, resp: httpx.Response) -> tuple[str, str]:
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("code") or "error"), str(err.get("message") or "")
    detail = data.get("detail") if isinstance(data, dict) else None
    return "http_error", str(detail if detail is not None else resp.text[:200])


def _delivered(answer: Any) -> Delivered:
    if not isinstance(answer, dict):
        return Delivered(code="bad_response", message=repr(answer)[:200])
    err = answer.get("error")
    if isinstance(err, dict):
        return Delivered(code=str(err.get("code") or "error"), message=str(err.get("message")))
    return Delivered(status=str(answer.get("status", "")))


def _run_job(item: dict[str, Any]) -> RunJob:
    """A lease's job record; unknown extra keys from a newer server are ignored."""
    try:
        return RunJob(
            job_id=str(item["job_id"]),
            lease_id=str(item["lease_id"]),
            model=str(item["model"]),
            params=dict(item.get("params") or {}),
            attempt=int(item.get("attempt", 1)),
            lease_ttl_s=float(item.get("lease_ttl_s", 30.0)),
            queued_at=None if item.get("queued_at") is None else float(item["queued_at"]),
            inputs={str(k): str(v) for k, v in (item.get("inputs") or {}).items()},
            traceparent=str(item["traceparent"]) if item.get("traceparent") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ControlPlaneError(200, "bad_response", f"malformed leased job: {exc!r}") from None
