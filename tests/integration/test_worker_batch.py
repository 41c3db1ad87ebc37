"""Worker batching with real processes: ``cinecloud serve`` on PostgreSQL and real worker
processes (parent, engine child, render processes) with ``worker.max_batch = 4``.

The engine is the fake runner (``FakeRunner.run_batch`` denoises a batch in one loop of
``step_s`` steps, as the real engine's ``run_batch`` does), so the tests are about the
worker: compatible jobs leased together run as one engine call, each gets its own files,
progress and bill; a job canceled mid-batch ends canceled while the others complete; an
incompatible job runs on its own; a batch whose engine call fails runs again job by job;
a SIGTERM mid-batch gives every lease back.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from cinecloud.config import Config
from cinecloud.engine.registry import GenerationParams, ModelSpec
from cinecloud.engine.runner import RunResult, StepInfo
from cinecloud.testing.fake_runner import FakeRunner
from cinecloud.testing.fleet import Workers, job_events, wait_for_video, wait_until
from cinecloud.testing.service import (
    Service,
    limits_env,
    quick_queue_env,
    request_counts,
    running,
)

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
SLOW = "cinecloud.testing.fake_runner:slow_fake_runner_factory"  # 0.5 s a step
BATCH_FAILS = f"{Path(__file__).stem}:batch_fails_runner_factory"
UNSAVEABLE = f"{Path(__file__).stem}:unsaveable_runner_factory"
STEPS = 8
SERVER_ENV = {**limits_env(), **quick_queue_env()}
END = ("completed", "failed", "canceled")


class _BatchFails(FakeRunner):
    """A fake whose batched call fails at its first step; its jobs alone run fine."""

    def run_batch(
        self,
        batch: Sequence[GenerationParams],
        on_step: Callable[[StepInfo], None],
        should_cancel: Callable[[], bool],
    ) -> list[RunResult]:
        on_step(StepInfo("denoise", 0, batch[0].steps, 0.0))
        raise RuntimeError("batched call failed")


def batch_fails_runner_factory(spec: ModelSpec, cfg: Config) -> FakeRunner:
    return _BatchFails(spec, step_s=0.05)


class _Unsaveable(FakeRunner):
    """A fake whose frames for an "unsaveable" prompt cannot be written for the render
    (an object array: ``np.save`` refuses it without pickling)."""

    def run(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None],
        should_cancel: Callable[[], bool],
    ) -> RunResult:
        result = super().run(params, on_step, should_cancel)
        if "unsaveable" not in params.prompt:
            return result
        return dataclasses.replace(result, frames=result.frames.astype(object))


def unsaveable_runner_factory(spec: ModelSpec, cfg: Config) -> FakeRunner:
    return _Unsaveable(spec, step_s=0.02)


@pytest.fixture
def service(tmp_path: Path, pg_url: str) -> Iterator[Service]:
    with running(tmp_path / "home", pg_url, workers=0, env=SERVER_ENV) as svc:
        yield svc


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with service.client() as c:
        yield c


def workers(service: Service, tmp_path: Path, factory: str, max_batch: int = 4) -> Workers:
    return Workers(
        service.url,
        service.home,
        tmp_path / "work",
        worker={"runner_factory": factory, "max_batch": max_batch, "preview_interval_s": 0},
    )


def submit(client: httpx.Client, n: int, **params: Any) -> list[str]:
    ids = []
    for i in range(n):
        body = {"prompt": f"shape {i} moving to the left", "seed": 100 + i, "steps": STEPS}
        resp = client.post("/v1/videos", json={**body, **params})
        assert resp.status_code == 200, resp.text
        ids.append(resp.json()["id"])
    return ids


def ended(client: httpx.Client, video_id: str) -> dict[str, Any]:
    return wait_for_video(client, video_id, lambda v: v["status"] in END, timeout=90)


def denoise_events(events: list[dict[str, Any]]) -> dict[int, float]:
    """step -> when the worker saw it (the ``at`` stamp), for the denoise progress sent."""
    return {
        int(e["step"]): float(e["at"])
        for e in events
        if e["type"] == "progress" and e.get("stage") == "denoise"
    }


def test_compatible_jobs_share_one_engine_call(
    service: Service, client: httpx.Client, tmp_path: Path
) -> None:
    batch = submit(client, 4)
    alone = submit(client, 1, steps=STEPS - 2)[0]  # another shape: no batch with them
    with workers(service, tmp_path, SLOW) as fleet:
        fleet.start()
        victim = batch[1]
        # cancel one job of the batch once the batch is denoising
        wait_until("the batch to denoise", lambda: _stepped(client, victim, 2), timeout=60)
        assert client.post(f"/v1/videos/{victim}/cancel").status_code == 200
        videos = {v: ended(client, v) for v in [*batch, alone]}

    assert videos[victim]["status"] == "canceled"
    done = [v for v in batch if v != victim]
    assert all(videos[v]["status"] == "completed" for v in done), videos
    events = {v: job_events(client, v) for v in [*batch, alone]}

    # One engine call: each says it ran in a batch of 4, with the same batch engine time,
    # and the same engine steps reached every job at the same instant.
    engines = [videos[v]["engine"] for v in done]
    assert [e["batch"] for e in engines] == ["4", "4", "4"]
    assert len({e["batch_engine_s"] for e in engines}) == 1
    batch_s = float(engines[0]["batch_engine_s"])
    assert batch_s >= STEPS * 0.5 * 0.9  # one loop of STEPS slow steps, not four
    steps = [denoise_events(events[v]) for v in done]
    shared = set.intersection(*(set(s) for s in steps))
    assert 0 in shared and STEPS in shared, steps
    for step in shared:
        assert len({s[step] for s in steps}) == 1, f"step {step} at different times: {steps}"
    # each job's own progress ran to the end, and it is billed a quarter of the call
    for v in done:
        assert max(denoise_events(events[v])) == STEPS
        assert videos[v]["usage"]["gpu_seconds"] == pytest.approx(batch_s / 4, rel=1e-3)
    # each its own files (rendered and checked one by one) and seed
    for v in done:
        assert set(videos[v]["outputs"]) >= {"video", "poster", "thumbnail", "hls"}, videos[v]
        assert videos[v]["qc"], videos[v]
        assert videos[v]["seed"] == 100 + batch.index(v)
    assert len({_video_bytes(client, videos[v]) for v in done}) == 3
    # the canceled job's progress stopped mid-batch
    assert max(denoise_events(events[victim])) < STEPS

    # the incompatible job ran alone, after the batch
    assert videos[alone]["status"] == "completed"
    assert "batch" not in (videos[alone]["engine"] or {})
    assert max(denoise_events(events[alone])) == STEPS - 2

    # the batch's jobs reported each step together, and were delivered together (at
    # least two of its three in one request: the third may render late)
    counts = request_counts(client)
    assert counts.get(("POST", "/internal/v1/events", "200"), 0) > 0
    assert 0 < counts.get(("POST", "/internal/v1/deliveries", "200"), 0) <= len(done)  # of 4


def _importable_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the worker processes import this module's runner factories."""
    pythonpath = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", pythonpath)


def test_a_failed_batch_runs_its_jobs_one_by_one(
    service: Service, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _importable_here(monkeypatch)
    ids = submit(client, 3)
    with workers(service, tmp_path, BATCH_FAILS) as fleet:
        fleet.start()
        videos = [ended(client, v) for v in ids]
    assert [v["status"] for v in videos] == ["completed"] * 3, videos
    assert all("batch" not in (v["engine"] or {}) for v in videos)
    assert all(v["attempts"] == 1 for v in videos)
    # the batch was tried first: the same step 0, at the same instant, for all three
    starts = [
        {e["at"] for e in job_events(client, v) if e.get("stage") == "denoise" and e["step"] == 0}
        for v in ids
    ]
    # (the first job's own step 0 follows so soon that the event throttle may skip it)
    assert len(set.intersection(*starts)) == 1, starts


def test_sigterm_mid_batch_gives_every_lease_back(
    service: Service, client: httpx.Client, tmp_path: Path
) -> None:
    ids = submit(client, 4)
    with workers(service, tmp_path, SLOW) as fleet:
        name = fleet.start()
        wait_until("the batch to denoise", lambda: _stepped(client, ids[0], 1), timeout=60)
        os.kill(fleet.pid(name), signal.SIGTERM)
        wait_until("the worker to exit", lambda: not fleet.alive(), timeout=30)
    for video_id in ids:
        video = wait_for_video(client, video_id, lambda v: v["status"] == "queued", timeout=10)
        assert video["attempts"] == 0, video  # given back, no attempt counted


def _stepped(client: httpx.Client, video_id: str, step: int) -> bool:
    """Whether the job has reported denoise step ``step`` (or a later one)."""
    video = client.get(f"/v1/videos/{video_id}").json()
    return video.get("stage") == "denoise" and int(video.get("step") or 0) >= step


def _video_bytes(client: httpx.Client, video: dict[str, Any]) -> bytes:
    resp = httpx.get(video["outputs"]["video"], timeout=30)
    assert resp.status_code == 200
    return resp.content


def test_frames_that_cannot_be_handed_to_the_render_fail_their_job_only(
    service: Service, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _importable_here(monkeypatch)
    bad = submit(client, 1, prompt="an unsaveable shape")[0]
    good = submit(client, 1, prompt="a red star moving to the left")[0]
    with workers(service, tmp_path, UNSAVEABLE, max_batch=1) as fleet:
        fleet.start()
        failed, done = ended(client, bad), ended(client, good)
    assert done["status"] == "completed", done
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "engine_error", failed["error"]
    assert "could not hand the frames to the render" in failed["error"]["message"]
