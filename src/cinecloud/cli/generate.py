"""``cinecloud generate``: submit, follow the job's events with a progress bar, download."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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
    if d.get("total_steps"):
        text += f" {d.get('step', 0)}/{d['total_steps']}"
    if d.get("eta_s") is not None:
        text += f" ETA {float(d['eta_s']):.1f}s"
    return text


def _follow(client: httpx.Client, video_id: str) -> str:
    """Follow the event stream to the end; returns the final status."""
    last = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("queued", total=100)
        for _attempt in range(20):
            try:
                headers = {"Last-Event-ID": str(last)} if last else {}
                with client.stream(
                    "GET",
                    f"/v1/videos/{video_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(10, read=60),
                ) as resp:
                    _raise_for(resp)
                    for ev in iter_sse(resp.iter_lines()):
                        last = ev.id
                        if "progress" in ev.data:
                            bar.update(task, completed=int(ev.data["progress"]))
                        bar.update(task, description=_describe(ev))
                        if ev.type in _FINAL:
                            if ev.type == "completed":
                                bar.update(task, completed=100)
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
        status = _follow(client, video["id"])
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
