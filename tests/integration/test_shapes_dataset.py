"""The shapes dataset and its reader: rendering, sampling, captions, and reading back MP4s."""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from cinecloud.engine.shapes.dataset import (
    Scene,
    ShapesStream,
    caption,
    eval_prompts,
    render,
    render_backgrounds,
    sample_scenes,
    scenes_for_combos,
)
from cinecloud.engine.shapes.evaluate import ClipReading, read_clip, read_mp4, score
from cinecloud.engine.shapes.vocab import (
    BACKGROUNDS,
    COLOURS,
    HELDOUT,
    MOTIONS,
    PARAPHRASE_TEMPLATES,
    PARAPHRASES,
    PHRASES,
    SHAPES,
    TEMPLATES,
    fill_template,
)
from cinecloud.render import encode_mp4


def _scenes(n: int, seed: int, split: str = "any") -> list[Scene]:
    return sample_scenes(n, torch.Generator().manual_seed(seed), split=split)  # type: ignore[arg-type]


def _uint8(clips: torch.Tensor) -> np.ndarray:
    return (clips.permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)


# ---------------------------------------------------------------- render


@pytest.mark.parametrize(("frames", "size"), [(16, 64), (8, 32)])
def test_render_shape_dtype_and_range(frames: int, size: int) -> None:
    clips = render(_scenes(12, 0), frames=frames, size=size)
    assert clips.shape == (12, frames, 3, size, size)
    assert clips.dtype == torch.float32
    assert float(clips.min()) >= 0.0
    assert float(clips.max()) <= 1.0


def test_render_is_deterministic() -> None:
    scenes = _scenes(16, 1)
    assert torch.equal(render(scenes, frames=8), render(scenes, frames=8))
    assert _scenes(16, 1) == scenes


def test_different_seeds_give_different_clips() -> None:
    assert _scenes(8, 2) != _scenes(8, 3)
    assert not torch.equal(render(_scenes(8, 2), frames=4), render(_scenes(8, 3), frames=4))


def test_render_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one scene"):
        render([])
    bad = Scene("mauve", "circle", "still", "black", 0.1, 0.5, 0.5, 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown colour 'mauve'"):
        render([bad])


def test_objects_stay_inside_and_visible() -> None:
    scenes = _scenes(400, 4)
    clips = render(scenes, frames=16, size=64)
    backgrounds = render_backgrounds([s.background for s in scenes], 64)[:, None]
    diff = (clips - backgrounds).abs().amax(dim=2)  # (B, T, H, W)
    border = torch.cat([diff[..., 0, :], diff[..., -1, :], diff[..., :, 0], diff[..., :, -1]], -1)
    assert float(border.max()) < 1e-6, "an object touches the frame edge"
    assert bool((diff.amax(dim=(2, 3)) > 0.3).all()), "an object is missing from a frame"


def test_motions_are_large_enough() -> None:
    for s in _scenes(2000, 5):
        if s.motion in ("left", "right", "up", "down"):
            assert s.speed >= 0.25
        elif s.motion == "up-right":
            assert s.speed / math.sqrt(2) >= 0.25
        elif s.motion in ("growing", "shrinking"):
            assert (1 + s.speed) ** 2 >= 1.6
        elif s.motion == "rotating":
            assert abs(s.speed) >= math.pi / 2
        elif s.motion == "bouncing":
            assert s.speed >= 0.2


# ---------------------------------------------------------------- sampling


def test_train_split_never_yields_heldout_combos() -> None:
    train = _scenes(3000, 6, "train")
    assert not any(s.combo in HELDOUT for s in train)
    assert all(s.combo in HELDOUT for s in _scenes(300, 6, "heldout"))


def test_train_values_are_about_uniform() -> None:
    train = _scenes(6000, 7, "train")
    for i, values in enumerate((COLOURS, SHAPES, MOTIONS, BACKGROUNDS)):
        counts = Counter(s.combo[i] for s in train)
        expected = len(train) / len(values)
        assert set(counts) == set(values)
        assert all(abs(c - expected) < 0.2 * expected for c in counts.values()), counts


def test_scenes_for_combos_keeps_order_and_checks_values() -> None:
    combos = [("red", "star", "rotating", "gray"), ("white", "ring", "still", "black")]
    scenes = scenes_for_combos(combos, torch.Generator().manual_seed(0))
    assert [s.combo for s in scenes] == combos
    with pytest.raises(ValueError, match="unknown shape"):
        scenes_for_combos([("red", "hexagon", "still", "gray")], torch.Generator())


# ---------------------------------------------------------------- captions


def _all_captions(combo: tuple[str, str, str, str], paraphrase: bool) -> set[str]:
    templates, table = (PARAPHRASE_TEMPLATES, PARAPHRASES) if paraphrase else (TEMPLATES, PHRASES)
    names = ("colour", "shape", "motion", "background")
    options = [table[name][value] for name, value in zip(names, combo, strict=True)]
    out = set()
    for template in templates:
        for c in options[0]:
            for s in options[1]:
                for m in options[2]:
                    for b in options[3]:
                        words = {"colour": c, "shape": s, "motion": m, "background": b}
                        out.add(fill_template(template, words))
    return out


def test_captions_follow_their_style() -> None:
    gen = torch.Generator().manual_seed(8)
    for scene in _scenes(20, 8):
        assert caption(scene, gen) in _all_captions(scene.combo, paraphrase=False)
        assert caption(scene, gen, style="paraphrase") in _all_captions(scene.combo, True)


def test_eval_prompts_splits() -> None:
    seen = eval_prompts("seen", 40, 0)
    assert seen == eval_prompts("seen", 40, 0)
    assert not any(c in HELDOUT for _, c in seen)
    assert all(c in HELDOUT for _, c in eval_prompts("heldout", 40, 0))
    for prompt, combo in eval_prompts("paraphrase", 20, 0):
        assert combo not in HELDOUT
        assert prompt not in _all_captions(combo, paraphrase=False)
        assert prompt in _all_captions(combo, paraphrase=True)


def test_stream_batches_and_caption_dropout() -> None:
    stream = ShapesStream(64, 9, frames=4, size=16, caption_dropout=0.3)
    clips, texts = next(stream)
    assert clips.shape == (64, 4, 3, 16, 16)
    assert float(clips.min()) >= -1.0 and float(clips.max()) <= 1.0
    dropped = sum(t == "" for t in texts)
    for _ in range(9):
        dropped += sum(t == "" for t in next(stream)[1])
    assert 0.24 <= dropped / 640 <= 0.36
    assert all(next(ShapesStream(32, 9, frames=2, size=16))[1])


# ---------------------------------------------------------------- reader


def _read_through_mp4(clip: np.ndarray) -> ClipReading:
    with tempfile.TemporaryDirectory() as tmp:
        path = encode_mp4(clip, Path(tmp) / "clip.mp4", 8, display_size=(256, 256))
        return read_mp4(path)


def test_reader_recovers_ground_truth_through_mp4() -> None:
    scenes = _scenes(60, 10)
    clips = _uint8(render(scenes, frames=16, size=64))
    with ProcessPoolExecutor(2) as pool:
        readings = list(pool.map(_read_through_mp4, clips))
    result = score(readings, [s.combo for s in scenes])
    assert result["all"] >= 0.98, result
    assert all(r.flow_warp_error < 0.02 and r.flicker < 0.01 for r in readings)


def test_reader_rejects_bad_frames() -> None:
    with pytest.raises(ValueError, match="uint8"):
        read_clip(np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="readings for"):
        score([], [("red", "star", "still", "gray")])


def test_reader_names_nothing_on_an_empty_clip() -> None:
    plain = _uint8(render_backgrounds(["gray"], 64)[:, None].expand(1, 8, 3, 64, 64))[0]
    reading = read_clip(plain)
    assert (reading.colour, reading.shape, reading.motion) == (None, None, None)
    assert reading.background == "gray"
