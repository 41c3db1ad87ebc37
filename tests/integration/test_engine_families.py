"""Every diffusers video family end to end on CPU, with tiny random-weight checkpoints."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from cinecloud.config import EngineConfig, repo_root
from cinecloud.engine.registry import GenerationParams, ModelSpec, default_registry
from cinecloud.engine.runner import Cancelled, Runner, RunResult, StepInfo
from tests.resume import assert_resumes_like_reference, kill_points, reference_run, resume_chain
from tests.scripts import load_script

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    name: str  # the script's --only name; the checkpoint is tiny-<name>
    model_id: str
    width: int
    height: int
    num_frames: int
    image: bool = False  # takes a conditioning image


CASES = [
    Case("ltx", "cinecloud/tiny-ltx", width=64, height=32, num_frames=9),
    Case("cogvideox", "cinecloud/tiny-cogvideox", width=32, height=16, num_frames=9),
    Case("wan-i2v", "cinecloud/tiny-wan-i2v", width=32, height=16, num_frames=5, image=True),
    Case("ltx-i2v", "cinecloud/tiny-ltx-i2v", width=32, height=64, num_frames=9, image=True),
    Case("svd", "cinecloud/tiny-svd", width=40, height=24, num_frames=3, image=True),
    Case("hunyuan", "cinecloud/tiny-hunyuan", width=48, height=16, num_frames=5),
]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    script = load_script("scripts/make_tiny_models.py")
    for case in CASES:
        script.build(case.name, root / f"tiny-{case.name}")
    return root


@pytest.fixture(scope="session")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "cond.png"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture(scope="session")
def runners(models_dir: Path) -> dict[str, Runner]:
    registry = default_registry(EngineConfig(models_dir=models_dir))
    loaded: dict[str, Runner] = {}
    for case in CASES:
        runner = Runner(registry.get(case.model_id), device="cpu", dtype="float32")
        runner.load()
        loaded[case.name] = runner
    return loaded


def params(case: Case, image_file: str, **kw: object) -> GenerationParams:
    base = GenerationParams(
        prompt="a red fox running through a snowy forest",
        negative_prompt="blurry, low quality",
        width=case.width,
        height=case.height,
        num_frames=case.num_frames,
        fps=8,
        steps=2,
        guidance_scale=3.0,
        seed=42,
        image_path=image_file if case.image else None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def run(
    runner: Runner, p: GenerationParams, cancel: Callable[[list[StepInfo]], bool] | None = None
) -> tuple[RunResult, list[StepInfo]]:
    steps: list[StepInfo] = []
    result = runner.run(
        p, on_step=steps.append, should_cancel=lambda: cancel is not None and cancel(steps)
    )
    return result, steps


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_two_steps_give_the_requested_frames(
    case: Case, runners: dict[str, Runner], image_path: str
) -> None:
    result, steps = run(runners[case.name], params(case, image_path))
    assert result.frames.shape == (case.num_frames, case.height, case.width, 3)
    assert result.frames.dtype == np.uint8
    assert [s.step for s in steps] == [0, 1, 2]
    assert set(result.timings) == {"text_encode", "denoise", "decode"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cancel_after_step_one(case: Case, runners: dict[str, Runner], image_path: str) -> None:
    with pytest.raises(Cancelled) as info:
        run(
            runners[case.name],
            params(case, image_path),
            cancel=lambda steps: bool(steps) and steps[-1].step >= 1,
        )
    assert (info.value.step, info.value.total_steps) == (1, 2)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_preview_of_the_run_while_it_denoises(
    case: Case, runners: dict[str, Runner], image_path: str
) -> None:
    previews: list[np.ndarray | None] = []

    def on_step(info: StepInfo) -> None:
        if info.step >= 1:
            assert info.preview is not None
            previews.append(info.preview())

    runners[case.name].run(params(case, image_path), on_step, lambda: False)
    if case.name.startswith("ltx"):  # packed latents: no cheap preview
        assert previews == [None, None]
        return
    first, last = previews
    assert first is not None and last is not None
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    assert first.shape == last.shape and not np.array_equal(first, last)
    assert first.min() == 0 and first.max() == 255  # each latent channel stretched


def test_same_seed_same_frames(runners: dict[str, Runner], image_path: str) -> None:
    case = CASES[0]
    p = params(case, image_path, seed=7)
    a, _ = run(runners[case.name], p)
    b, _ = run(runners[case.name], p)
    c, _ = run(runners[case.name], replace(p, seed=8))
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_ltx_refuses_a_one_step_schedule(runners: dict[str, Runner], image_path: str) -> None:
    case = next(c for c in CASES if c.name == "ltx")
    with pytest.raises(ValueError, match=r"steps must be in 2\.\.100"):
        run(runners[case.name], params(case, image_path, steps=1))


@pytest.mark.parametrize("case", [c for c in CASES if c.image], ids=lambda c: c.name)
def test_image_to_video_needs_its_image(
    case: Case, runners: dict[str, Runner], image_path: str, tmp_path: Path
) -> None:
    runner = runners[case.name]
    if runner.spec.input_image == "required":
        with pytest.raises(ValueError, match="needs a conditioning image"):
            run(runner, params(case, image_path, image_path=None))
    with pytest.raises(ValueError, match="not found"):
        run(runner, params(case, image_path, image_path=str(tmp_path / "none.png")))


@pytest.mark.parametrize("case", [c for c in CASES if c.image], ids=lambda c: c.name)
def test_the_image_conditions_the_video(
    case: Case, runners: dict[str, Runner], image_path: str, tmp_path: Path
) -> None:
    from PIL import Image

    other = tmp_path / "other.png"
    Image.new("RGB", (80, 48), (250, 10, 10)).save(other)
    a, _ = run(runners[case.name], params(case, image_path))
    b, _ = run(runners[case.name], params(case, image_path, image_path=str(other)))
    assert not np.array_equal(a.frames, b.frames)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_resume_at_20_random_kill_points_equals_an_uninterrupted_run(
    case: Case, runners: dict[str, Runner], image_path: str, tmp_path: Path
) -> None:
    """engine.checkpoint on every family: tests/resume.py interrupts one run at 20 random
    steps, each segment resuming from the last one's checkpoint in a fresh pipeline."""
    runner = runners[case.name]
    p = params(case, image_path, steps=24)
    reference = reference_run(runner, p)
    kills = kill_points(random.Random(f"8:{case.name}"), p.steps, 20)
    segments = resume_chain(runner, p, kills, tmp_path)
    # SVD's pipeline scales given latents by init_noise_sigma: a last-bit difference
    exact = case.name != "svd"
    assert assert_resumes_like_reference(segments, reference, exact=exact) == 20, kills


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_checkpoint_is_small(case: Case, models_dir: Path) -> None:
    files = (models_dir / f"tiny-{case.name}").rglob("*")
    assert sum(p.stat().st_size for p in files if p.is_file()) < 5_000_000


def test_spec_names_the_build_command(models_dir: Path) -> None:
    registry = default_registry(EngineConfig(models_dir=models_dir))
    for case in CASES:
        spec: ModelSpec = registry.get(case.model_id)
        assert spec.build_command.startswith(
            f"python scripts/make_tiny_models.py --only {case.name}"
        )


def test_every_family_through_the_worker(models_dir: Path, image_path: str, tmp_path: Path) -> None:
    """One real worker (parent and spawned child) serves every tiny family, Wan T2V
    included; each job's MP4, as uploaded, has the requested frames and size."""
    import av

    wan = repo_root() / "models" / "tiny-wan"  # built by scripts/setup.sh
    if not (models_dir / "tiny-wan").exists():
        (models_dir / "tiny-wan").symlink_to(wan, target_is_directory=True)
    cases = [*CASES, Case("wan", "cinecloud/tiny-wan", width=32, height=32, num_frames=5)]

    from cinecloud.config import load_config
    from cinecloud.testing.fake_control_plane import FakeControlPlane
    from cinecloud.workers import LocalLauncher

    with FakeControlPlane(tmp_path / "blobs", heartbeat_interval_s=0.5) as cp:
        cfg = load_config(
            server={"home": tmp_path / "home"},
            delivery={"secret": "test"},
            queue={"lease_long_poll_s": 1.0},
            engine={"models_dir": models_dir, "device": "cpu", "dtype": "float32"},
            worker={
                "token": cp.token,
                "models": [case.model_id for case in cases],
                "work_dir": tmp_path / "work",
            },
        )
        launcher = LocalLauncher(cfg, 1, server_url=cp.url, env=dict(os.environ))
        launcher.start()
        try:
            jobs = {}
            for case in cases:
                p = params(case, image_path)
                fields = {k: v for k, v in vars(p).items() if v is not None}
                jobs[case.name] = cp.submit(fields, model=case.model_id)
            ended = ("completed", "failed")
            assert cp.wait_for(
                lambda: all(cp.job(j).status in ended for j in jobs.values()), timeout=300
            ), {name: cp.job(j).status for name, j in jobs.items()}
        finally:
            launcher.stop(timeout=10)
        for case in cases:
            job = cp.job(jobs[case.name])
            assert job.status == "completed", (case.name, job.failures)
            assert job.result is not None
            (mp4,) = [a for a in job.result["artifacts"] if a["name"] == "video.mp4"]
            with av.open(str(cp.blob_dir / mp4["key"])) as container:
                stream = container.streams.video[0]
                frames = sum(1 for _ in container.decode(stream))
                size = (stream.codec_context.width, stream.codec_context.height)
            assert frames == case.num_frames, case.name
            assert size == (case.width, case.height), case.name
