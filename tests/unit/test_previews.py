"""Preview frames: when one is due, how it is encoded, and the engine's cheap image."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from cinecloud.engine.families.base import latent_preview, step_callback
from cinecloud.testing.clock import FakeClock
from cinecloud.workers.messages import Progress, from_dict, to_dict
from cinecloud.workers.preview import MAX_SIDE, PreviewMaker, encode_preview, preview_due
from cinecloud.workers.progress import progress_event


def decode(url: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


@pytest.mark.parametrize(
    ("step", "total", "last_at", "now", "interval", "due"),
    [
        (0, 10, None, 0.0, 1.0, False),  # before the first step
        (1, 10, None, 0.0, 1.0, True),  # the first step
        (2, 10, 0.0, 0.5, 1.0, False),  # too soon
        (3, 10, 0.0, 1.0, 1.0, True),  # an interval later
        (10, 10, 9.9, 10.0, 1.0, True),  # the last step always
        (1, 10, None, 0.0, 0.0, False),  # previews off
    ],
)
def test_preview_due(
    step: int, total: int, last_at: float | None, now: float, interval: float, due: bool
) -> None:
    assert preview_due(step, total, last_at, now, interval) is due


def test_encode_preview_keeps_small_frames_and_shrinks_large_ones() -> None:
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    small = decode(encode_preview(red))
    assert small.size == (64, 64)
    r, g, b = np.asarray(small.convert("RGB"), dtype=np.int16).mean(axis=(0, 1))
    assert r > 240 and g < 15 and b < 15

    wide = encode_preview(np.full((480, 832, 3), 128, np.uint8))
    assert decode(wide).size == (MAX_SIDE, round(480 * MAX_SIDE / 832))
    assert len(wide) < 8_000  # small enough to ride in an event
    with pytest.raises(ValueError, match="uint8"):
        encode_preview(np.zeros((8, 8), np.float32))


def test_preview_maker_paces_previews_and_survives_a_failing_one() -> None:
    clock = FakeClock(0.0)
    maker = PreviewMaker(1.0, clock)
    frame = np.zeros((16, 16, 3), np.uint8)
    made = []
    for step in range(1, 11):
        made.append(bool(maker.take(step, 10, lambda: frame)))
        clock.advance(0.3)
    # steps 1, then the first step at least 1 s later (5 at 1.2 s, 9 at 2.4 s), then the last
    assert [s for s, m in zip(range(1, 11), made, strict=True) if m] == [1, 5, 9, 10]
    assert maker.take(3, 10, None) == ""

    def broken() -> np.ndarray:
        raise RuntimeError("no preview today")

    failing = PreviewMaker(1.0, clock)
    assert failing.take(1, 10, broken) == ""
    clock.advance(5.0)
    assert failing.take(2, 10, lambda: frame) == ""  # off for the rest of the job


def test_preview_rides_the_progress_message_and_event() -> None:
    url = encode_preview(np.zeros((8, 8, 3), np.uint8))
    msg = Progress("video_1", "denoise", 3, 4, 0.5, 1.0, url)
    assert from_dict(to_dict(msg)) == msg
    assert progress_event("denoise", 3, 4, 0.5, preview=url)["preview"] == url
    assert "preview" not in progress_event("denoise", 3, 4, 0.5)


@pytest.mark.parametrize("layout", ["BCFHW", "BFCHW"])
def test_latent_preview_is_the_middle_frame_stretched(layout: str) -> None:
    frames, channels, height, width = 5, 16, 6, 10
    latents = torch.zeros(1, channels, frames, height, width)
    latents[0, 0, 2] = torch.linspace(-3, 3, width)  # a ramp in channel 0 of the middle frame
    latents[0, 1, 2, :, 5:] = 1.0  # half bright in channel 1
    latents[0, 0, 0] = 100.0  # another frame: ignored
    if layout == "BFCHW":
        latents = latents.permute(0, 2, 1, 3, 4).contiguous()
    image = latent_preview(latents, layout)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert image[0, 0, 0] == 0 and image[0, -1, 0] == 255  # stretched to 0..255
    assert (image[:, :5, 1] == 0).all() and (image[:, 5:, 1] == 255).all()
    assert (image[..., 2] == 0).all()  # a flat channel stays dark
    with pytest.raises(ValueError, match="layout"):
        latent_preview(latents, "BTHWC")


def test_step_callback_keeps_the_latents_before_reporting() -> None:
    kept: list[object] = []
    steps: list[int] = []
    callback = step_callback(lambda k: steps.append(len(kept) * 100 + k), keep=kept.append)
    latents = torch.ones(1)
    assert callback(None, 0, None, {"latents": latents}) == {}
    assert kept == [latents] and steps == [101]  # kept first, then reported
    step_callback(steps.append)(None, 1, None, {})
    assert steps == [101, 2]
