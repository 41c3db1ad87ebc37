"""The official ``openai`` package as the client, against a real server and worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from cinecloud.render import mp4_box_order, probe_video
from cinecloud.testing.service import Service


def test_openai_sdk_full_path(start_service: Callable[..., Service], tmp_path: Path) -> None:
    svc = start_service(workers=1)
    client = OpenAI(base_url=f"{svc.url}/v1", api_key=svc.admin_key, max_retries=0)

    video = client.videos.create_and_poll(
        prompt="a red ball moving to the left",
        size="64x64",  # type: ignore[arg-type]
        extra_body={"steps": 2, "seed": 3, "fps": 8},
        poll_interval_ms=100,
        timeout=120,
    )
    assert video.status == "completed", video
    assert video.progress == 100 and video.size == "64x64"
    extra = video.model_extra or {}
    assert extra["num_frames"] == 16 and extra["seed"] == 3
    assert set(extra["timings"]) >= {
        "queue_wait",
        "model_load",
        "text_encode",
        "denoise",
        "decode",
        "render",
        "upload",
        "total",
    }

    assert client.videos.retrieve(video.id).id == video.id
    assert video.id in [v.id for v in client.videos.list(limit=10).data]

    out = tmp_path / "dl.mp4"
    client.videos.download_content(video.id).write_to_file(out)
    probe = probe_video(out)
    assert (probe.codec, probe.pix_fmt) == ("h264", "yuv420p")
    assert (probe.width, probe.height, probe.frames) == (256, 256, 16)  # 64x64, shown at 256
    boxes = mp4_box_order(out)
    assert boxes.index("moov") < boxes.index("mdat")

    thumb = client.videos.download_content(video.id, variant="thumbnail").read()
    assert thumb[:2] == b"\xff\xd8"  # JPEG

    deleted = client.videos.delete(video.id)
    assert deleted.deleted and deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    assert not list((svc.home / "blobs").rglob("*.mp4"))


def test_sdk_errors_are_openai_errors(start_service: Callable[..., Service]) -> None:
    svc = start_service(workers=0)
    client = OpenAI(base_url=f"{svc.url}/v1", api_key=svc.admin_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.videos.create(prompt="x", model="no/such-model")
    assert info.value.code == "model_not_found"
    bad = OpenAI(base_url=f"{svc.url}/v1", api_key="cc-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.videos.list()
