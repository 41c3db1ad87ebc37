"""``cinecloud status`` and ``cinecloud top``: the server's health, the queue by model and
the workers, read from ``/readyz`` and the admin overview (``GET /v1/admin/overview``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["OpsError", "Snapshot", "fetch_snapshot", "render_snapshot", "run_top"]


class OpsError(RuntimeError):
    """The server could not be asked (unreachable, or the key was refused)."""


@dataclass(frozen=True)
class Snapshot:
    server: str
    ready: dict[str, Any]  # /readyz: {"status", "checks"}
    overview: dict[str, Any]  # /v1/admin/overview
    taken_at: float


def fetch_snapshot(client: httpx.Client, *, window_s: float = 600.0) -> Snapshot:
    """Health and overview from the server ``client`` points at (with an admin key)."""
    try:
        ready = client.get("/readyz")
        resp = client.get("/v1/admin/overview", params={"window_s": window_s, "buckets": 1})
    except httpx.TransportError as exc:
        raise OpsError(f"cannot reach {client.base_url}: {exc}") from None
    if resp.status_code >= 400:
        raise OpsError(_error_text(resp))
    return Snapshot(str(client.base_url), ready.json(), resp.json(), time.time())


def _error_text(resp: httpx.Response) -> str:
    try:
        err = resp.json()["error"]
        return f"{resp.status_code} {err['code']}: {err['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{resp.status_code}: {resp.text[:200]}"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def _health(snap: Snapshot) -> Text:
    ok = snap.ready.get("status") == "ok"
    checks = ", ".join(f"{k} {v}" for k, v in snap.ready.get("checks", {}).items())
    text = Text(f"server {snap.server} ")
    text.append("ok" if ok else "unavailable", style="green" if ok else "bold red")
    text.append(f" ({checks})" if checks else "")
    t = snap.overview["totals"]
    window = snap.overview["latency"]["window_s"]
    text.append(
        f"\n{t['queued']} queued, {t['in_progress']} running, {t['workers']} worker(s), "
        f"{t['completed']} completed in the last {_secs(window)}"
    )
    return text


def _queue_table(overview: dict[str, Any]) -> Table:
    table = Table("model", "priority", "queued", "oldest wait", "running", title="Queue")
    running = {r["model"]: r["jobs"] for r in overview["in_progress"]}
    seen = set()
    for g in overview["queue"]:
        first = g["model"] not in seen
        seen.add(g["model"])
        table.add_row(
            g["model"],
            str(g["priority"]),
            str(g["queued"]),
            _secs(g["oldest_wait_s"]),
            str(running.get(g["model"], 0)) if first else "",
        )
    for model, n in sorted(running.items()):
        if model not in seen:
            table.add_row(model, "-", "0", "-", str(n))
    if not table.rows:
        table.add_row("(empty)", "", "", "", "")
    return table


def _device(worker: dict[str, Any]) -> str:
    gpus = worker.get("gpus") or []
    if not gpus:
        return str(worker.get("device") or "cpu")
    names = ", ".join(str(g.get("name", "gpu")) for g in gpus)
    return f"{len(gpus)}x {names}" if len(gpus) > 1 else names


def _job_text(job: dict[str, Any]) -> str:
    text = f"{job['id']} {job.get('stage') or 'starting'}"
    if job.get("total_steps"):
        text += f" {job.get('step') or 0}/{job['total_steps']}"
    if job.get("eta_s"):
        text += f" ETA {_secs(job['eta_s'])}"
    return text


def _workers_table(overview: dict[str, Any]) -> Table:
    table = Table("worker", "status", "device", "models", "busy", "job", title="Workers")
    for w in overview["workers"]:
        jobs = "\n".join(_job_text(j) for j in w["jobs"]) or "-"
        table.add_row(
            w["name"],
            w["status"],
            _device(w),
            ", ".join(w["models"]),
            f"{w['busy'] * 100:.0f}%",
            jobs,
        )
    if not table.rows:
        table.add_row("(none seen in the last minute)", "", "", "", "", "")
    return table


def render_snapshot(snap: Snapshot) -> RenderableType:
    """The status screen: health line, the queue, the workers."""
    return Group(_health(snap), _queue_table(snap.overview), _workers_table(snap.overview))


def run_top(
    client: httpx.Client,
    console: Console,
    *,
    interval_s: float,
    once: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Redraw the status screen every ``interval_s`` until interrupted; ``once`` draws
    one screen and returns. A server that stops answering is shown, not fatal."""
    view: RenderableType = render_snapshot(fetch_snapshot(client))  # a refused key ends here
    if once:
        console.print(view)
        return
    with Live(view, console=console, auto_refresh=False, screen=False) as live:
        while True:
            sleep(interval_s)
            try:
                view = render_snapshot(fetch_snapshot(client))
            except OpsError as exc:
                view = Text(f"{exc} (retrying)", style="red")
            live.update(view, refresh=True)
