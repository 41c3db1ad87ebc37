"""Batched denoising (engine.batch): each video of a batch equals its solo run."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from cinecloud.config import EngineConfig, repo_root
from cinecloud.engine.batch import can_batch, split_compatible
from cinecloud.engine.registry import GenerationParams, default_registry
from cinecloud.engine.runner import Runner, StepInfo

PROMPTS = (
    "a red star moving to the left on a sky background",
    "a blue circle bouncing on a grass background",
    "a yellow square spinning on a brick wall",
)


@pytest.fixture(scope="module")
def runner() -> Runner:
    registry = default_registry(EngineConfig(models_dir=repo_root() / "models"))
    r = Runner(registry.get("cinecloud/shapes-t2v"), device="cpu", dtype="float32")
    r.load()
    return r


def _params(runner: Runner, prompt: str, seed: int, **kw: object) -> GenerationParams:
    return replace(runner.spec.default_params(prompt, steps=4), seed=seed, **kw)  # type: ignore[arg-type]


def test_a_batch_equals_its_solo_runs(runner: Runner) -> None:
    batch = [_params(runner, p, seed) for seed, p in enumerate(PROMPTS, start=11)]
    steps: list[StepInfo] = []
    results = runner.run_batch(batch, steps.append, lambda: False)
    assert [r.engine["batch"] for r in results] == ["3"] * 3
    assert [s.step for s in steps] == [0, 1, 2, 3, 4]
    for params, result in zip(batch, results, strict=True):
        solo = runner.run(params, lambda s: None, lambda: False)
        assert result.frames.shape == solo.frames.shape
        diff = np.abs(result.frames.astype(int) - solo.frames.astype(int))
        assert diff.max() <= 2, f"{params.prompt}: max frame difference {diff.max()}"
    # different prompts and seeds make different videos
    assert np.abs(results[0].frames.astype(int) - results[1].frames.astype(int)).mean() > 5


def test_incompatible_videos_run_one_by_one(runner: Runner) -> None:
    a = _params(runner, PROMPTS[0], 1)
    b = _params(runner, PROMPTS[1], 2, steps=3)
    assert split_compatible([a, b, a]) == [[0, 2], [1]]
    assert not can_batch(runner._family, [a, b])
    results = runner.run_batch([a, b], lambda s: None, lambda: False)
    assert [r.engine.get("batch") for r in results] == [None, None]


def test_static_shapes_pad_a_batch_and_warm_each_shape_once(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under CUDA graphs (static shapes) the warm-up runs the padded shapes up to a
    worker's max_batch; then a batch of 3 runs as 4 and its 3 videos are still their
    own, decoded alone; without the memory for the copies it runs as it is."""
    import cinecloud.engine.runner as runner_module
    from cinecloud.engine.memory import MemoryProfile

    batch = [_params(runner, p, seed) for seed, p in enumerate(PROMPTS, start=21)]
    plain = runner.run_batch(batch, lambda s: None, lambda: False)
    monkeypatch.setitem(runner.tuning, "compile", "graphs")  # as auto picks on a GPU
    monkeypatch.setattr(runner, "_batch_most", 0)
    family = runner._family
    denoise, decode = family.denoise_batch, family.decode_batch  # type: ignore[union-attr]
    seen: list[int] = []
    decoded: list[int] = []

    def counting(encoded: object, params: list[GenerationParams], **kw: object) -> object:
        seen.append(len(params))
        return denoise(encoded, params, **kw)

    def decoding(latents: Any) -> object:
        decoded.append(len(latents))
        return decode(latents)

    monkeypatch.setattr(family, "denoise_batch", counting)
    monkeypatch.setattr(family, "decode_batch", decoding)
    unpadded = runner.run_batch(batch, lambda s: None, lambda: False)
    assert seen == [3] and "batch_padded_to" not in unpadded[0].engine  # not warmed yet
    seen.clear()
    assert runner.warm_batches(8) > 0
    assert seen == [2, 4, 8]
    seen.clear()
    decoded.clear()
    padded = runner.run_batch(batch, lambda s: None, lambda: False)
    assert seen == [4] and decoded == [3]
    assert [r.engine["batch"] for r in padded] == ["3"] * 3
    assert [r.engine["batch_padded_to"] for r in padded] == ["4"] * 3
    assert [r.seed for r in padded] == [p.seed for p in batch]
    for a, b in zip(plain, padded, strict=True):
        assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 2
    # the copies must fit in the free memory, as the scheduler's batch did
    profile = MemoryProfile(0.1, 0.1, 0.1, denoise_gib_per_mpf=1.0, decode_gib_per_mpf=1.0)
    monkeypatch.setattr(runner, "spec", replace(runner.spec, memory=profile))
    monkeypatch.setattr(runner_module, "free_gpu_gib", lambda device: 0.001)
    seen.clear()
    runner.run_batch(batch, lambda s: None, lambda: False)
    assert seen == [3]


def test_a_failed_batch_warm_up_pads_only_up_to_the_last_shape_that_ran(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(runner.tuning, "compile", "graphs")
    monkeypatch.setattr(runner, "_batch_most", 0)
    family = runner._family
    denoise = family.denoise_batch  # type: ignore[union-attr]
    seen: list[int] = []

    def short_of_memory(encoded: object, params: list[GenerationParams], **kw: object) -> object:
        seen.append(len(params))
        if len(params) > 4:
            raise RuntimeError("CUDA out of memory (a stand-in)")
        return denoise(encoded, params, **kw)

    monkeypatch.setattr(family, "denoise_batch", short_of_memory)
    runner.warm_batches(8)
    assert seen == [2, 4, 8]
    seen.clear()
    three = [_params(runner, PROMPTS[0], seed) for seed in (1, 2, 3)]
    runner.run_batch(three, lambda s: None, lambda: False)
    assert seen == [4]  # padded, within what ran
    seen.clear()
    with pytest.raises(RuntimeError):  # 5 is past it: it runs as it is (and fails here)
        runner.run_batch([*three, *three[:2]], lambda s: None, lambda: False)
    assert seen == [5]


@pytest.mark.parametrize(
    ("jobs", "size"), [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (7, 8), (8, 8), (9, 16)]
)
def test_padded_size_is_the_next_power_of_two(jobs: int, size: int) -> None:
    from cinecloud.engine.batch import batch_shapes, padded_size

    assert padded_size(jobs, 16) == size
    assert padded_size(jobs, 4) == max(jobs, min(size, 4))
    assert batch_shapes(8) == [2, 4, 8] and batch_shapes(6) == [2, 4, 6]
    assert batch_shapes(1) == []
