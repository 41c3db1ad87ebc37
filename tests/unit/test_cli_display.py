"""``cinecloud generate``'s live display: stage, step and ETA on a terminal, plain lines
elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from cinecloud.cli.generate import SseEvent, _Display


def progress(step: int, eta: float | None, stage: str = "denoise") -> SseEvent:
    data = {"stage": stage, "step": step, "total_steps": 8, "eta_s": eta, "progress": 5 + step * 10}
    return SseEvent(step + 10, "progress", data)


def test_terminal_bar_shows_stage_step_and_eta() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    display = _Display(console)
    assert display.live
    display.queued({"queue_position": 2})
    frames = []
    for event in (progress(4, 30.0), progress(8, 0.0), SseEvent(30, "completed", {})):
        display.show(event)
        buf = io.StringIO()
        Console(file=buf, width=120).print(display._bar.get_renderable())
        frames.append(buf.getvalue())
    assert "denoise" in frames[0] and "4/8" in frames[0] and "45%" in frames[0]
    assert "ETA 29." in frames[0] or "ETA 30.0s" in frames[0]  # counted down from 30 s
    assert "8/8" in frames[1] and "ETA 0.0s" in frames[1]
    assert "done" in frames[2] and "100%" in frames[2]
    assert screen.getvalue() == ""  # the bar draws only once started


def test_plain_lines_per_stage_and_quarter() -> None:
    screen = io.StringIO()
    display = _Display(Console(file=screen, width=120))
    assert not display.live
    display.queued({"queue_position": 0})
    display.show(SseEvent(1, "queued", {"status": "queued"}))  # nothing new: no line
    display.show(SseEvent(2, "started", {"status": "in_progress"}))
    for step in range(9):
        display.show(progress(step, None if step == 0 else 8.0 - step))
    display.show(progress(0, None, stage="render"))
    display.show(SseEvent(40, "completed", {}))
    assert screen.getvalue().splitlines() == [
        "queued #1",
        "started",
        "denoise 0/8",
        "denoise 2/8 ETA 6.0s",
        "denoise 4/8 ETA 4.0s",
        "denoise 6/8 ETA 2.0s",
        "denoise 8/8 ETA 0.0s",
        "render 0/8",
        "completed",
    ]
