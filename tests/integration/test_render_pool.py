"""The engine child's render processes (workers.renderer.RenderPool), spawned for real:
how many encoder threads each job gets from how many renders are running."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cinecloud.config import ProvenanceConfig, QcConfig
from cinecloud.engine.registry import GenerationParams
from cinecloud.render.trusted import TrustSettings
from cinecloud.testing.fake_runner import fake_frames
from cinecloud.workers.messages import Failed, Render, Rendered
from cinecloud.workers.renderer import RenderPool, save_frames

pytestmark = pytest.mark.integration


class Results:
    def __init__(self) -> None:
        self.got: dict[str, Rendered | Failed] = {}
        self._cond = threading.Condition()

    def __call__(self, result: Rendered | Failed) -> None:
        with self._cond:
            self.got[result.job_id] = result
            self._cond.notify_all()

    def wait(self, *job_ids: str) -> list[Rendered]:
        with self._cond:
            assert self._cond.wait_for(lambda: set(job_ids) <= set(self.got), timeout=120)
        out = [self.got[j] for j in job_ids]
        assert all(isinstance(r, Rendered) for r in out), out
        return out  # type: ignore[return-value]


def job(tmp: Path, n: int) -> Render:
    params = GenerationParams("x", "", 64, 64, 16, 8, 1, 1.0, n)
    here = tmp / f"job{n}"
    here.mkdir()
    path = save_frames(fake_frames(params), here / "frames.npy")
    return Render(f"video_{n}", str(path), str(here / "out"), 8)


def test_a_lone_render_uses_every_cpu_and_renders_side_by_side_share_them(
    tmp_path: Path,
) -> None:
    trust = TrustSettings(ProvenanceConfig(), QcConfig(), tmp_path / "home", "cinecloud/test")
    results = Results()
    pool = RenderPool(results, trust.to_dict(), size=2, cpus=8)  # 4 threads each at least
    pool.start()
    try:
        pool.submit(job(tmp_path, 1))
        (alone,) = results.wait("video_1")
        # two at once: the first starts alone, the second while it runs
        pool.submit(job(tmp_path, 2))
        pool.submit(job(tmp_path, 3))
        first, second = results.wait("video_2", "video_3")
        pool.submit(job(tmp_path, 4))  # both are done: alone again
        (again,) = results.wait("video_4")
    finally:
        pool.stop(timeout=30)
    assert (alone.threads, first.threads, second.threads, again.threads) == (8, 8, 4, 8)
    for rendered in (alone, first, second, again):
        names = {f.name for f in rendered.files}
        assert {"video.mp4", "poster.jpg"} <= names
        assert all(Path(f.path).stat().st_size > 0 for f in rendered.files)
