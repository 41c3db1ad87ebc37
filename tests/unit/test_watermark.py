"""The invisible watermark: the payload, embedding, and reading after noise and scaling."""

from __future__ import annotations

import numpy as np
import pytest

from cinecloud.engine.registry import GenerationParams
from cinecloud.render.watermark import (
    PAYLOAD_BITS,
    bit_accuracy,
    decode_watermark,
    embed_watermark,
    payload_bits,
    payload_hex,
)
from cinecloud.testing.fake_runner import fake_frames

pytestmark = pytest.mark.unit

JOB = "video_0123456789abcdef01234567"
LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


def clip(seed: int, size: tuple[int, int] = (64, 48), frames: int = 9) -> np.ndarray:
    params = GenerationParams("x", "", size[0], size[1], frames, 8, 1, 1.0, seed)
    return fake_frames(params)


def lumas(frames: np.ndarray) -> list[np.ndarray]:
    return list(frames.astype(np.float32) @ LUMA)


def test_a_control_plane_id_is_carried_whole() -> None:
    bits = payload_bits(JOB)
    assert bits.shape == (PAYLOAD_BITS,) and set(np.unique(bits)) <= {0, 1}
    assert payload_hex(JOB).startswith("0123456789abcdef01234567")
    reading = decode_watermark(lumas(embed_watermark(clip(0), JOB)))
    assert reading.found and reading.job_id == JOB and reading.id_hash is None
    assert reading.agreement == 1.0 and reading.matches(JOB)
    assert not reading.matches("video_0123456789abcdef01234568")


def test_any_other_id_is_carried_as_a_hash() -> None:
    reading = decode_watermark(lumas(embed_watermark(clip(1), "job-42")))
    assert reading.job_id is None and reading.id_hash is not None
    assert reading.matches("job-42") and not reading.matches("job-43")


@pytest.mark.parametrize("seed", range(4))
def test_it_is_faint(seed: int) -> None:
    frames = clip(seed)
    marked = embed_watermark(frames, JOB)
    mse = ((marked.astype(np.float64) - frames) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 38  # dB
    assert np.abs(marked.astype(int) - frames).max() <= 16


def test_saturated_frames_still_carry_it() -> None:
    frames = clip(2)
    frames[:, :, : frames.shape[2] // 2] = 0  # half black, half white
    frames[:, :, frames.shape[2] // 2 :] = 255
    frames[:, 10:20, 10:40] = (255, 0, 0)
    assert decode_watermark(lumas(embed_watermark(frames, JOB))).job_id == JOB


@pytest.mark.parametrize("seed", range(4))
def test_it_survives_noise_by_majority_vote(seed: int) -> None:
    marked = embed_watermark(clip(seed, frames=16), JOB).astype(np.float32)
    noisy = marked + np.random.default_rng(seed).normal(0, 3.0, marked.shape)
    per_frame = [bit_accuracy(decode_watermark([y]).bits, JOB) for y in lumas(noisy)]
    reading = decode_watermark(lumas(noisy))
    assert reading.job_id == JOB
    assert min(per_frame) < 1.0 or reading.agreement == 1.0  # the vote did the work


@pytest.mark.parametrize("seed", range(4))
def test_it_survives_halving_the_size(seed: int) -> None:
    marked = embed_watermark(clip(seed, size=(96, 64)), JOB).astype(np.float32)
    t, h, w, c = marked.shape
    half = marked.reshape(t, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))  # 2x2 box filter
    assert decode_watermark(lumas(half)).job_id == JOB


@pytest.mark.parametrize("seed", range(16))
def test_unmarked_video_carries_nothing(seed: int) -> None:
    reading = decode_watermark(lumas(clip(seed)))
    assert not reading.found and reading.job_id is None and reading.id_hash is None


def test_no_frames_reads_nothing() -> None:
    reading = decode_watermark([])
    assert reading.frames == 0 and not reading.found


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        embed_watermark(clip(0).astype(np.float32), JOB)
