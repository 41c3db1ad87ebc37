"""Real worker processes beside a test's control plane, and the checks a fault test ends
with: every job submitted completed, and completed once.

:class:`Workers` starts worker processes one at a time (each with a launcher of its own,
so a test can kill one and start the next). The polling helpers ride out a control plane
or database that is away for a while: a transport error or a 5xx answer is a "not yet".
:func:`audit` reads every job and its event stream into an :class:`Audit`: which jobs
completed, which were lost (not completed), which finished twice (more than one
``completed`` event), and each one's attempts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from cinecloud.config import load_config
from cinecloud.workers import LocalLauncher

__all__ = [
    "Audit",
    "Workers",
    "audit",
    "first_step_after",
    "get_video",
    "job_events",
    "wait_for_video",
    "wait_until",
]

T = TypeVar("T")
_END = ("completed", "failed", "canceled")


def wait_until(what: str, pred: Callable[[], T | None], timeout: float, every: float = 0.1) -> T:
    """Poll ``pred`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def get_video(client: httpx.Client, video_id: str) -> dict[str, Any] | None:
    """The video object, or None while the control plane cannot answer."""
    try:
        resp = client.get(f"/v1/videos/{video_id}")
    except httpx.TransportError:
        return None
    if resp.status_code >= 500:
        return None
    assert resp.status_code == 200, resp.text
    video: dict[str, Any] = resp.json()
    return video


def wait_for_video(
    client: httpx.Client,
    video_id: str,
    pred: Callable[[dict[str, Any]], bool],
    timeout: float = 120.0,
    every: float = 0.05,
) -> dict[str, Any]:
    """Poll the video until ``pred`` holds for it; the video."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        video = get_video(client, video_id)
        if video is not None:
            last = video
            if pred(video):
                return video
        assert time.monotonic() < deadline, f"timed out; last state {last}"
        time.sleep(every)


def job_events(client: httpx.Client, video_id: str) -> list[dict[str, Any]]:
    """The job's whole event stream (the stream ends with the job)."""
    with client.stream("GET", f"/v1/videos/{video_id}/events") as resp:
        assert resp.status_code == 200, resp.read()
        return [json.loads(ln[6:]) for ln in resp.iter_lines() if ln.startswith("data: ")]


def first_step_after(events: list[dict[str, Any]], index: int) -> int:
    """The first denoise step reported after ``events[index]``."""
    return int(next(e["step"] for e in events[index:] if e.get("stage") == "denoise"))


@dataclass
class Audit:
    """What became of a batch of jobs."""

    submitted: list[str]
    status: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    completions: dict[str, int] = field(default_factory=dict)  # completed events per job
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def completed(self) -> list[str]:
        return [j for j in self.submitted if self.status.get(j) == "completed"]

    @property
    def lost(self) -> list[str]:
        return [j for j in self.submitted if self.status.get(j) != "completed"]

    @property
    def twice(self) -> list[str]:
        return [j for j in self.submitted if self.completions.get(j, 0) > 1]

    def summary(self) -> str:
        n = len(self.submitted)
        done, lost, twice = len(self.completed), len(self.lost), len(self.twice)
        return f"submitted {n}, completed {done}, lost {lost}, finished twice {twice}"

    def assert_clean(self) -> None:
        """Every job completed, with exactly one ``completed`` event."""
        assert not self.lost, {j: self.status.get(j) for j in self.lost}
        assert not self.twice, {j: self.completions[j] for j in self.twice}
        assert all(self.completions[j] == 1 for j in self.submitted), self.completions


def audit(client: httpx.Client, video_ids: Iterable[str], timeout: float = 120.0) -> Audit:
    """Wait until every job has ended (or ``timeout`` passed), then read what became of
    each. A job still queued or running at the end is lost: stuck counts as lost."""
    result = Audit(list(video_ids))
    deadline = time.monotonic() + timeout
    for video_id in result.submitted:
        left = max(0.0, deadline - time.monotonic())
        try:
            video = wait_for_video(client, video_id, lambda v: v["status"] in _END, left, 0.2)
        except AssertionError:
            video = get_video(client, video_id) or {"status": "unknown", "attempts": 0}
        result.status[video_id] = video["status"]
        result.attempts[video_id] = int(video["attempts"])
        if video["status"] in _END:
            events = job_events(client, video_id)
            result.events[video_id] = events
            result.completions[video_id] = sum(e["type"] == "completed" for e in events)
    return result


class Workers:
    """Worker processes for a control plane at ``server_url``: :meth:`start` adds one.

    ``sections`` are config overrides (``worker={"runner_factory": ...}``); each worker
    gets its own work directory under ``root`` and is named ``w1``, ``w2``, ...
    (registered as ``w1-1``: the launcher numbers its processes).
    """

    def __init__(self, server_url: str, home: Path, root: Path, **sections: dict[str, Any]):
        self.server_url = server_url
        self.home = home
        self.root = root
        self.sections = sections
        self.launchers: dict[str, LocalLauncher] = {}

    def start(self) -> str:
        """Start one more worker; its registered name."""
        name = f"w{len(self.launchers) + 1}"
        worker = {"name": name, "work_dir": self.root / name, **self.sections.get("worker", {})}
        cfg = load_config(
            None,
            **{
                "engine": {"device": "cpu", "dtype": "float32"},
                **self.sections,
                "server": {"home": self.home},
                "worker": worker,
            },
        )
        launcher = LocalLauncher(cfg, 1, server_url=self.server_url, env=dict(os.environ))
        launcher.start()
        self.launchers[f"{name}-1"] = launcher
        return f"{name}-1"

    def pid(self, name: str) -> int:
        (pid,) = self.launchers[name].pids
        return pid

    def alive(self) -> list[str]:
        return [name for name, launcher in self.launchers.items() if launcher.alive()]

    def stop(self, timeout: float = 5.0) -> None:
        for launcher in self.launchers.values():
            launcher.stop(timeout=timeout)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
