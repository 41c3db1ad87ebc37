"""Image to video through the real service: the SDK's ``input_reference`` upload."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from openai import OpenAI
from PIL import Image

from cinecloud.config import EngineConfig, repo_root
from cinecloud.engine.registry import ModelSpec, check_installed, default_registry
from cinecloud.render import probe_video
from cinecloud.testing.service import Service


def i2v_spec() -> ModelSpec:
    # our tiny checkpoints only: the published ones are not on a CI machine
    specs = [
        s
        for s in default_registry(EngineConfig()).list()
        if s.input_image != "none" and s.id.startswith("cinecloud/")
    ]
    if not specs:
        pytest.fail("no image-to-video model is registered")
    return sorted(specs, key=lambda s: s.id)[0]


def ensure_built(spec: ModelSpec) -> None:
    try:
        check_installed(spec)
    except FileNotFoundError:
        cmd = shlex.split(spec.build_command)
        if cmd[0] == "python":
            cmd[0] = sys.executable
        subprocess.run(cmd, cwd=repo_root(), check=True)


def test_image_to_video_with_the_sdk(start_service: Callable[..., Service], tmp_path: Path) -> None:
    spec = i2v_spec()
    ensure_built(spec)
    svc = start_service(workers=1, env={"CINECLOUD_WORKER__MODELS": f'["{spec.id}"]'})
    client = OpenAI(base_url=f"{svc.url}/v1", api_key=svc.admin_key, max_retries=0)
    d = spec.defaults
    buf = io.BytesIO()
    Image.new("RGB", (d.width, d.height), (30, 120, 220)).save(buf, format="PNG")
    video = client.videos.create_and_poll(
        prompt="the picture comes alive",
        model=spec.id,
        input_reference=("ref.png", buf.getvalue(), "image/png"),
        extra_body={"steps": 2, "seed": 5},
        poll_interval_ms=100,
        timeout=180,
    )
    assert video.status == "completed", video
    out = tmp_path / "i2v.mp4"
    client.videos.download_content(video.id).write_to_file(out)
    probe = probe_video(out)
    assert probe.codec == "h264" and probe.frames == (video.model_extra or {})["num_frames"]
