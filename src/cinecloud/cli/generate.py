"""``cinecloud generate``: submit, follow the job's events (stage, step and ETA, live),
download."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

__all__ = ["GenerateError", "SseEvent", "generate", "iter_sse"]

console = Console(stderr=True)
_FINAL = {"completed", "failed", "canceled", "deleted"}


class GenerateError(RuntimeError):
    pass


@dataclass(frozen=True)
class SseEvent:
    id: int
    type: str
    data: dict[str, Any]


def iter_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Parse a text/event-stream into events (comments and keep-alives skipped)."""
    ev_id, ev_type = 0, "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(ev_id, ev_type, json.loads("\n".join(data)))
            ev_type, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id" and value.isdigit():
                ev_id = int(value)
            elif field == "event":
                ev_type = value
            elif field == "data":
                data.append(value)


def _describe(ev: SseEvent) -> str:
    d = ev.data
    stage = d.get("stage") or ev.type
    text = f"{stage}"
    if d.get("queue_position") is not None:
        text += f" #{int(d['queue_position']) + 1}"
    if d.get("total_steps"):
        text += f" {d.get('step', 0)}/{d['total_steps']}"
    if d.get("eta_s") is not None:
        text += f" ETA {float(d['eta_s']):.1f}s"
    return text


class _EtaColumn(ProgressColumn):
    """The server's ETA, counted down between its events."""

    def render(self, task: Task) -> Text:
        eta, seen = task.fields.get("eta"), task.fields.get("eta_seen")
        if eta is None or seen is None:
            return Text("ETA -", style="progress.remaining")
        left = max(0.0, float(eta) - (time.monotonic() - float(seen)))
        return Text(f"ETA {left:.1f}s", style="progress.remaining")


class _Display:
    """The job's stage, step and ETA as they happen: a live bar on a terminal, else
    (logs, pipes) one line per stage and per quarter of the denoising steps."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._bar = Progress(
            TextColumn("{task.fields[stage]:<11}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[step]:>7}"),
            _EtaColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._bar.add_task("", total=100, stage="queued", step="", eta=None)
        self._said: tuple[str, int] | None = None

    def __enter__(self) -> _Display:
        if self.live:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self._bar.stop()

    def queued(self, video: dict[str, Any]) -> None:
        position = video.get("queue_position")
        self.show(SseEvent(0, "queued", {"stage": "queued", "queue_position": position}))

    def show(self, ev: SseEvent) -> None:
        d = ev.data
        stage = str(d.get("stage") or ev.type)
        step, total = int(d.get("step") or 0), int(d.get("total_steps") or 0)
        label = stage if d.get("queue_position") is None else f"{stage} #{d['queue_position'] + 1}"
        fields: dict[str, Any] = {"stage": label, "step": f"{step}/{total}" if total else ""}
        if "eta_s" in d:
            fields.update(eta=d["eta_s"], eta_seen=time.monotonic())
        if ev.type == "completed":
            fields.update(stage="done", eta=0.0, eta_seen=time.monotonic())
        completed = 100 if ev.type == "completed" else d.get("progress")
        self._bar.update(self._task, completed=completed, **fields)
        if not self.live:
            self._line(ev, stage, step, total)

    def _line(self, ev: SseEvent, stage: str, step: int, total: int) -> None:
        quarter = 4 * step // total if total else -1
        said = (stage, quarter if stage == "denoise" else -1)
        if said != self._said:
            self._said = said
            self.console.print(_describe(ev) if ev.type != "completed" else "completed")


def _follow(client: httpx.Client, video: dict[str, Any]) -> str:
    """Follow the event stream to the end, showing it; returns the final status."""
    last = 0
    with _Display(console) as display:
        display.queued(video)
        for _attempt in range(20):
            try:
                headers = {"Last-Event-ID": str(last)} if last else {}
                with client.stream(
                    "GET",
                    f"/v1/videos/{video['id']}/events",
                    headers=headers,
                    timeout=httpx.Timeout(10, read=60),
                ) as resp:
                    _raise_for(resp)
                    for ev in iter_sse(resp.iter_lines()):
                        last = ev.id
                        display.show(ev)
                        if ev.type in _FINAL:
                            return ev.type
            except (httpx.TransportError, httpx.RemoteProtocolError):
                continue
    raise GenerateError("lost the event stream too many times")


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    resp.read()
    try:
        err = resp.json()["error"]
        raise GenerateError(f"{resp.status_code} {err['code']}: {err['message']}")
    except (ValueError, KeyError):
        raise GenerateError(f"{resp.status_code}: {resp.text[:200]}") from None


def generate(server: str, api_key: str, body: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one generation through the API; writes the MP4 to ``out`` and returns the video."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(
        base_url=server, headers=headers, timeout=30, follow_redirects=True
    ) as client:
        resp = client.post("/v1/videos", json=body)
        _raise_for(resp)
        video: dict[str, Any] = resp.json()
        console.print(
            f"submitted {video['id']} ({video['model']}, {video['size']}, "
            f"{video['num_frames']} frames, seed {video['seed']})",
            soft_wrap=True,
        )
        status = _follow(client, video)
        video = client.get(f"/v1/videos/{video['id']}").json()
        if status != "completed":
            err = video.get("error") or {}
            raise GenerateError(
                f"video {status}: {err.get('code', '')} {err.get('message', '')}".strip()
            )
        content = client.get(f"/v1/videos/{video['id']}/content")
        _raise_for(content)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(content.content)
        return video
