"""The quality gate: planted NaN, black and frozen outputs are all caught; good ones pass.

Bad outputs are planted into moving frames the way a broken model spoils them
(cinecloud.testing.planted), and into variations of them; good outputs include a
"still" shot with the sampler's noise and a small bright object on black.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cinecloud.config import QcConfig
from cinecloud.engine.families.base import decoded_to_uint8, to_uint8_frames
from cinecloud.engine.finite import NonFiniteFrames, to_uint8
from cinecloud.engine.registry import GenerationParams
from cinecloud.render.qc import QcFailed, QcStats, judge, measure, run_qc
from cinecloud.testing.fake_runner import fake_frames
from cinecloud.testing.planted import plant

pytestmark = pytest.mark.unit

LIMITS = QcConfig()
SEEDS = range(8)


def clip(seed: int, frames: int = 16, size: int = 32) -> np.ndarray:
    params = GenerationParams("x", "", size, size, frames, 8, 1, 1.0, seed)
    return fake_frames(params)


def failures(frames: np.ndarray) -> tuple[str, ...]:
    return judge(measure(frames, LIMITS, flow=False), LIMITS)


# ---------------------------------------------------------------- NaN


@pytest.mark.parametrize("seed", SEEDS)
def test_one_planted_nan_is_refused_before_the_uint8_conversion(seed: int) -> None:
    floats = plant(clip(seed), "nan", seed)
    assert np.isnan(floats).sum() == 1
    with pytest.raises(NonFiniteFrames, match="nan: 1 of") as caught:
        to_uint8(floats)
    assert caught.value.code == "qc_failed"
    # the families' conversion (a batch of one video) goes through the same check
    with pytest.raises(NonFiniteFrames):
        to_uint8_frames(floats[None])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_anywhere_are_refused(bad: float) -> None:
    floats = clip(1).astype(np.float32) / 255
    floats[-1, -1, -1, -1] = bad
    with pytest.raises(NonFiniteFrames):
        to_uint8(floats)
    assert "nan:" in failures(floats)[0]  # the gate counts them on float frames too


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("seed", range(3))
def test_the_device_conversion_gives_the_frames_of_the_host_one(dtype: str, seed: int) -> None:
    torch = pytest.importorskip("torch")
    from diffusers.video_processor import VideoProcessor

    processor = VideoProcessor(vae_scale_factor=8)
    gen = torch.Generator().manual_seed(seed)
    # a decoded batch of two (B, C, F, H, W), past [-1, 1] in places so the clamp counts
    video = (1.3 * torch.randn(2, 3, 5, 24, 40, generator=gen)).to(getattr(torch, dtype))
    host = to_uint8_frames(processor.postprocess_video(video, output_type="np"))
    frames = decoded_to_uint8(processor, video)
    assert frames.dtype == np.uint8 and frames.shape == (5, 24, 40, 3)
    assert frames.flags.c_contiguous
    assert np.array_equal(frames, host)
    assert 0 < int((frames == 255).sum()) < frames.size  # not all clamped, not none


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_the_device_conversion_refuses_non_finite_values(bad: float) -> None:
    torch = pytest.importorskip("torch")
    from diffusers.video_processor import VideoProcessor

    video = torch.zeros(1, 3, 4, 16, 16)
    video[0, 1, 2, 3, 4] = bad
    if bad == np.inf:  # the processor's clamp takes infinity to 1, as the host path does
        assert decoded_to_uint8(VideoProcessor(), video)[2, 3, 4, 1] == 255
        return
    with pytest.raises(NonFiniteFrames, match="nan: 1 of 3072"):
        decoded_to_uint8(VideoProcessor(), video)


def test_finite_frames_convert_as_before() -> None:
    frames = clip(2)
    assert np.array_equal(to_uint8(frames.astype(np.float32) / 255), frames)


# ---------------------------------------------------------------- black


def black_variants(seed: int) -> list[np.ndarray]:
    frames = clip(seed)
    rng = np.random.default_rng(seed)
    half = frames.copy()
    half[: len(half) // 2] = 0
    return [
        to_uint8(plant(frames, "black", seed)),  # near-black noise
        np.zeros_like(frames),
        np.full_like(frames, 12),  # a flat very dark grey
        rng.integers(0, 18, frames.shape, dtype=np.uint8),  # dark noise
        half,  # the first half of the video black
    ]


@pytest.mark.parametrize("seed", SEEDS)
def test_planted_black_outputs_are_caught(seed: int) -> None:
    for frames in black_variants(seed):
        assert any(f.startswith("black:") for f in failures(frames))


# ---------------------------------------------------------------- frozen


def frozen_variants(seed: int) -> list[np.ndarray]:
    frames = clip(seed)
    late = frames.copy()
    late[4:] = late[4]  # stuck from the 5th frame on
    return [to_uint8(plant(frames, "frozen", seed)), late]


@pytest.mark.parametrize("seed", SEEDS)
def test_planted_frozen_outputs_are_caught(seed: int) -> None:
    for frames in frozen_variants(seed):
        assert any(f.startswith("frozen:") for f in failures(frames))


# ---------------------------------------------------------------- good outputs pass


def good_variants(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    still = np.repeat(clip(seed)[:1], 16, axis=0).astype(np.float32)
    still += rng.normal(0, 1.2, still.shape)  # a still shot moves by ~1 level a frame
    dark = np.zeros((16, 64, 64, 3), np.uint8)
    for t in range(16):  # a small bright dot (9 pixels of 4096) moving on black
        dark[t, 30:33, 10 + 2 * t : 13 + 2 * t] = 255
    tiny = np.full((16, 256, 256, 3), 90, np.uint8)
    for t in range(16):  # a 3x3 dot moving on a flat, static background: a mean change
        tiny[t, 100:103, 10 + t : 13 + t] = 250  # of 0.02 levels, a local one of 160
    still8 = np.clip(still, 0, 255).round().astype(np.uint8)
    return [clip(seed), still8, dark, tiny]


@pytest.mark.parametrize("seed", SEEDS)
def test_good_outputs_pass(seed: int) -> None:
    for frames in good_variants(seed):
        assert failures(frames) == ()


# ---------------------------------------------------------------- the policy


def stats(**changes: int | float | None) -> QcStats:
    base = QcStats(frames=16, nonfinite=0, black_frames=0, frozen_pairs=0, flicker=0.0,
                   flow_warp_error=0.01)  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({}, ()),
        ({"nonfinite": 1}, ("nan",)),
        ({"black_frames": 7}, ()),
        ({"black_frames": 8}, ("black",)),
        ({"frozen_pairs": 7}, ()),
        ({"frozen_pairs": 8}, ("frozen",)),
        ({"frames": 1, "frozen_pairs": 0}, ()),  # one frame: no pair to be frozen
        ({"black_frames": 16, "frozen_pairs": 15}, ("black", "frozen")),
    ],
)
def test_judge(changes: dict[str, int], failed: tuple[str, ...]) -> None:
    assert tuple(f.split(":")[0] for f in judge(stats(**changes), LIMITS)) == failed


def test_limits_are_the_configured_ones() -> None:
    strict = QcConfig(black_fraction=0.25, frozen_fraction=0.25)
    assert judge(stats(black_frames=4), strict) and not judge(stats(black_frames=4), LIMITS)


def test_run_qc_raises_with_the_report_and_records_on_success() -> None:
    with pytest.raises(QcFailed, match="frozen") as caught:
        run_qc(frozen_variants(0)[0], LIMITS)
    assert caught.value.code == "qc_failed" and not caught.value.report.passed
    record = run_qc(clip(3), LIMITS).record()
    assert record["passed"] == 1 and record["frames"] == 16
    assert record["flow_warp_error"] is not None and record["flicker"] is not None
    assert record["black_frames"] == record["frozen_pairs"] == 0


def test_flicker_reads_a_flashing_video() -> None:
    frames = np.full((8, 16, 16, 3), 100, np.uint8)
    frames[1::2] = 150  # every other frame 50 levels brighter
    stats = measure(frames, LIMITS, flow=False)
    assert stats.flicker == pytest.approx(50 / 255, rel=1e-4)
    assert measure(clip(4), LIMITS, flow=False).flicker < 0.05
