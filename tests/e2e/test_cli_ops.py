"""``cinecloud status``, ``cinecloud top --once`` and ``cinecloud generate`` (stage, step
and ETA as they happen) through Typer's CliRunner against a real server and worker."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cinecloud.cli import generate as generate_module
from cinecloud.cli import main as cli
from cinecloud.testing.service import Service

pytestmark = pytest.mark.e2e

MODEL = "cinecloud/shapes-t2v"
PROMPT = "a blue circle bouncing on a grass background"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    # wide consoles, so table cells (job ids) are not folded
    monkeypatch.setattr(cli.out, "width", 200)
    monkeypatch.setattr(generate_module.console, "width", 200)
    return CliRunner()


def wait_for(check: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError("condition not met in time")


def test_status_and_top_show_health_queue_and_workers(
    runner: CliRunner, shapes_service: Service
) -> None:
    svc = shapes_service
    with svc.client() as client:
        # one job runs (long), one waits behind it at a higher priority
        running = client.post("/v1/videos", json={"prompt": PROMPT, "steps": 100}).json()
        wait_for(lambda: (client.get(f"/v1/videos/{running['id']}").json()["step"] or 0) >= 1)
        waiting = client.post(
            "/v1/videos", json={"prompt": PROMPT, "steps": 4, "priority": 3}
        ).json()
        try:
            args = ["--server", svc.url, "--api-key", svc.admin_key]
            status = runner.invoke(cli.app, ["status", *args])
            top = runner.invoke(cli.app, ["top", "--once", *args])
        finally:
            for job in (waiting, running):
                client.post(f"/v1/videos/{job['id']}/cancel")
    for result in (status, top):
        assert result.exit_code == 0, result.output
        text = result.output
        assert f"server {svc.url}" in text and "ok (database ok, storage ok)" in text
        assert re.search(r"1 queued, 1 running, 1 worker", text), text
        # the queue row: model, priority 3, one queued, its wait, one running
        assert re.search(rf"{re.escape(MODEL)}\s*│\s*3\s*│\s*1\s*│\s*[\d.]+s\s*│\s*1", text), text
        assert "local-1" in text and "busy" in text
        assert re.search(rf"{running['id']} denoise \d+/100", text), text


def test_status_needs_an_admin_key(
    runner: CliRunner, shapes_service: Service, user_key: str
) -> None:
    result = runner.invoke(
        cli.app, ["status", "--server", shapes_service.url, "--api-key", user_key]
    )
    assert result.exit_code == 1
    assert "403 admin_required" in result.output
    gone = runner.invoke(
        cli.app, ["top", "--once", "--server", "http://127.0.0.1:9", "--api-key", "x"]
    )
    assert gone.exit_code == 1 and "cannot reach" in gone.output


def test_generate_shows_stage_step_and_eta(
    runner: CliRunner, shapes_service: Service, tmp_path: Path
) -> None:
    out = tmp_path / "clip.mp4"
    result = runner.invoke(
        cli.app,
        [
            "generate",
            PROMPT,
            "-o",
            str(out),
            "--steps",
            "8",
            "--seed",
            "4",
            "--server",
            shapes_service.url,
            "--api-key",
            shapes_service.admin_key,
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    denoise = [line for line in lines if line.startswith("denoise ")]
    # a line per quarter of the steps, each with the step and the server's ETA
    assert denoise and all(re.fullmatch(r"denoise \d/8 ETA [\d.]+s", line) for line in denoise[1:])
    assert denoise[-1] == "denoise 8/8 ETA 0.0s", lines
    assert len(denoise) >= 3, lines
    stages = [line.split()[0] for line in lines]
    assert stages.index("denoise") < stages.index("render") < stages.index("upload")
    assert "completed" in stages
    assert out.read_bytes()[4:8] == b"ftyp"  # an MP4
    assert result.stdout.strip().startswith(f"{shapes_service.url}/cdn/")


def test_top_redraws_until_interrupted(shapes_service: Service) -> None:
    import io

    from rich.console import Console

    from cinecloud.cli.ops import run_top

    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    with shapes_service.client() as client, pytest.raises(KeyboardInterrupt):
        run_top(client, console, interval_s=0.5, once=False, sleep=sleep)
    assert naps == [0.5, 0.5, 0.5]
    # the first screen, two redraws and the last one left on screen, each with the worker
    assert screen.getvalue().count("local-1") == 4
