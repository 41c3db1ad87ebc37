"""Jobs overlapping on one worker: ``cinecloud serve`` on PostgreSQL and real worker
processes (parent, engine child, render processes) running the fake runner.

The worker keeps the next job waiting in its engine child while earlier ones render and
upload, renders on several processes at once, and gives every lease it holds back when
it is stopped (SIGTERM); a job canceled while it waits in the child never starts.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from cinecloud.testing.fleet import Workers, job_events, wait_for_video, wait_until
from cinecloud.testing.service import Service, quick_queue_env, running

pytestmark = pytest.mark.integration

FAST = "cinecloud.testing.fake_runner:fake_runner_factory"  # 20 ms a step
SLOW = "cinecloud.testing.fake_runner:slow_fake_runner_factory"  # 0.5 s a step
PROMPT = "a small red circle moves left on a blue background"
SERVER_ENV = quick_queue_env(lease_ttl_s=5)


@pytest.fixture
def service(tmp_path: Path, pg_url: str) -> Iterator[Service]:
    with running(tmp_path / "home", pg_url, workers=0, env=SERVER_ENV) as svc:
        yield svc


def fleet(
    service: Service, root: Path, runner: str, render_processes: int, **worker: Any
) -> Workers:
    return Workers(
        service.url,
        service.home,
        root,
        worker={"runner_factory": runner, "render_processes": render_processes, **worker},
    )


def submit(c: httpx.Client, steps: int, seed: int) -> str:
    resp = c.post("/v1/videos", json={"prompt": PROMPT, "steps": steps, "seed": seed})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def ended(c: httpx.Client, vid: str, timeout: float = 120.0) -> dict[str, Any]:
    return wait_for_video(
        c, vid, lambda v: v["status"] in ("completed", "failed", "canceled"), timeout=timeout
    )


def moments(events: list[dict[str, Any]]) -> dict[str, float]:
    """When (the worker's ``at`` stamps) the job's engine started denoising, its render
    began (the engine was done) and its upload began (the render had ended)."""

    def first(stage: str) -> float:
        return float(next(e["at"] for e in events if e.get("stage") == stage))

    return {"denoise": first("denoise"), "render": first("render"), "upload": first("upload")}


VARIANTS = ("thumbnail", "poster", "spritesheet", "preview", "hls")


def video_frames(c: httpx.Client, vid: str) -> np.ndarray:
    """The job's MP4, decoded; every other variant must be there too."""
    for variant in VARIANTS:
        resp = c.get(f"/v1/videos/{vid}/content", params={"variant": variant})
        assert resp.status_code == 307, (variant, resp.text)
    resp = c.get(f"/v1/videos/{vid}/content", follow_redirects=True)
    assert resp.status_code == 200, resp.text
    with av.open(io.BytesIO(resp.content)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_jobs_overlap_and_render_side_by_side(service: Service, tmp_path: Path) -> None:
    """Each job's denoise starts before the job before it has finished rendering, renders
    run side by side on two render processes, and every job completes whole."""
    with fleet(service, tmp_path / "work", FAST, 2) as workers, service.client() as c:
        workers.start()
        ids = [submit(c, steps=4, seed=seed) for seed in range(6)]
        videos = {vid: ended(c, vid) for vid in ids}
        assert all(v["status"] == "completed" and v["attempts"] == 1 for v in videos.values())
        times = sorted((moments(job_events(c, vid)) for vid in ids), key=lambda m: m["denoise"])
        for prev, nxt in itertools.pairwise(times):
            assert nxt["denoise"] < prev["upload"], (prev, nxt)  # denoised while it rendered
        # Every render ran between the first engine end and the last upload; one render
        # process at a time would need at least their summed seconds for that.
        span = max(m["upload"] for m in times) - min(m["render"] for m in times)
        rendering = sum(float(v["timings"]["render"]) for v in videos.values())
        assert span < rendering, (span, rendering)
        clips = {vid: video_frames(c, vid) for vid in ids}  # every job's own files
        for vid, clip in clips.items():
            assert len(clip) == videos[vid]["num_frames"], clip.shape
        fingerprints = {clip.tobytes() for clip in clips.values()}
        assert len(fingerprints) == len(ids)  # six seeds, six videos


def test_sigterm_gives_every_held_job_back(service: Service, tmp_path: Path) -> None:
    """A stopped worker holding several jobs (on the engine, waiting in the child,
    rendering) gives all of them back at once, no attempt counted; another worker
    completes them."""
    # leasing ahead at once (as for short jobs), so that it holds several
    with (
        fleet(service, tmp_path / "work", SLOW, 1, lease_ahead_s=60) as workers,
        service.client() as c,
    ):
        first = workers.launchers[workers.start()]
        ids = [submit(c, steps=3, seed=seed) for seed in range(6)]

        def held() -> list[str]:
            states = [c.get(f"/v1/videos/{vid}").json() for vid in ids]
            return [v["id"] for v in states if v["status"] == "in_progress"]

        # the first job renders while the second denoises and the third waits for it
        holding = wait_until("three jobs held", lambda: len(held()) >= 3 and held(), 60)
        assert first.stop(timeout=30) == [0]
        # the stop settled every held job: given back, or delivered if its render ended
        # before the stop reached the worker (the first one's may, on a loaded machine)
        settled = ("queued", "completed")
        states = {
            vid: wait_for_video(c, vid, lambda v: v["status"] in settled, timeout=10)["status"]
            for vid in holding
        }
        given_back = [vid for vid in holding if states[vid] != "completed"]
        assert len(given_back) >= len(holding) - 1, states
        assert all(states[vid] == "queued" for vid in given_back), states
        workers.start()
        videos = {vid: ended(c, vid) for vid in ids}
        assert all(v["status"] == "completed" for v in videos.values()), videos
        for vid in given_back:
            assert videos[vid]["attempts"] == 1, videos[vid]  # the preemption did not count
            reasons = [e["reason"] for e in job_events(c, vid) if e["type"] == "requeued"]
            assert reasons == ["preempted"], reasons


def test_cancel_of_a_job_waiting_in_the_child(service: Service, tmp_path: Path) -> None:
    """A job leased ahead and waiting in the engine child, canceled, never starts; the
    job on the engine goes on and completes."""
    with fleet(service, tmp_path / "work", SLOW, 1) as workers, service.client() as c:
        workers.start()
        running = submit(c, steps=12, seed=1)  # 6 s on the engine
        wait_for_video(c, running, lambda v: (v["step"] or 0) >= 1, timeout=60)
        waiting = submit(c, steps=4, seed=2)
        wait_for_video(c, waiting, lambda v: v["status"] == "in_progress", timeout=10)
        resp = c.post(f"/v1/videos/{waiting}/cancel")
        assert resp.status_code == 200, resp.text
        assert ended(c, waiting)["status"] == "canceled"
        assert ended(c, running)["status"] == "completed"
        progress = [e for e in job_events(c, waiting) if e.get("stage") == "denoise"]
        assert progress == []  # it never reached the engine
        after = submit(c, steps=2, seed=3)  # the worker carries on
        assert ended(c, after)["status"] == "completed"


def test_a_long_job_leaves_the_next_to_other_workers(service: Service, tmp_path: Path) -> None:
    """With a long job on its engine a worker does not take the next job until that job
    is within ``worker.lease_ahead_s`` of its end, so an idle worker could have it."""
    with fleet(service, tmp_path / "work", SLOW, 1) as workers, service.client() as c:
        workers.start()
        running = submit(c, steps=20, seed=1)  # 10 s on the engine
        wait_for_video(c, running, lambda v: (v["step"] or 0) >= 1, timeout=60)
        waiting = submit(c, steps=2, seed=2)
        time.sleep(1.5)  # 5 s or more of the long job left: above lease_ahead_s (2 s)
        assert c.get(f"/v1/videos/{waiting}").json()["status"] == "queued"
        # leased once the long job nears its end, before it completes
        wait_for_video(c, waiting, lambda v: v["status"] == "in_progress", timeout=30)
        assert c.get(f"/v1/videos/{running}").json()["status"] == "in_progress"
        assert ended(c, waiting)["status"] == "completed"
