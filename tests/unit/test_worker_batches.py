"""The worker's batching rules (workers.batches): grouping, fan-out, cancel, billing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from cinecloud.config import WorkerConfig, load_config
from cinecloud.telemetry.gpu import GpuSample
from cinecloud.workers.batches import (
    AUTO_MAX_BATCH_GPU,
    BatchRun,
    batch_key,
    engine_share,
    free_memory,
    group_jobs,
    max_batch,
)
from cinecloud.workers.held import HeldJob, HeldJobs, LeaseLimits, lease_limits
from cinecloud.workers.messages import (
    Progress,
    RunBatch,
    RunJob,
    UnknownMessage,
    from_dict,
    to_dict,
)

pytestmark = pytest.mark.unit

MODEL = "cinecloud/shapes-t2v"
PARAMS: dict[str, Any] = {
    "prompt": "a red star moving to the left",
    "negative_prompt": "",
    "width": 64,
    "height": 64,
    "num_frames": 16,
    "fps": 8,
    "steps": 24,
    "guidance_scale": 3.0,
    "seed": 1,
}


def job(n: int, model: str = MODEL, inputs: dict[str, str] | None = None, **params: Any) -> RunJob:
    return RunJob(
        f"video_{n}", f"lse_{n}", model, {**PARAMS, "seed": n, **params}, inputs=inputs or {}
    )


@dataclass(frozen=True)
class Step:
    stage: str
    step: int
    total_steps: int
    elapsed_s: float


# ---------------------------------------------------------------- max_batch


def test_auto_batches_on_a_gpu_only() -> None:
    auto = WorkerConfig()
    assert auto.max_batch == 0
    assert max_batch(auto, "cuda") == AUTO_MAX_BATCH_GPU == 8
    assert max_batch(auto, "cuda:1") == 8
    assert max_batch(auto, "cpu") == 1
    assert max_batch(replace(auto, max_batch=3), "cpu") == 3
    assert max_batch(replace(auto, max_batch=1), "cuda") == 1


def test_max_batch_is_configurable_and_checked(tmp_path: Any) -> None:
    cfg = load_config(server={"home": tmp_path}, worker={"max_batch": 4})
    assert cfg.worker.max_batch == 4
    with pytest.raises(ValueError, match="max_batch"):
        load_config(server={"home": tmp_path}, worker={"max_batch": -1})


def test_free_memory_is_the_tightest_gpus() -> None:
    assert free_memory([]) is None
    a = GpuSample(0, "H200", "GPU-a", 0.5, memory_used=40, memory_total=140)
    b = GpuSample(1, "H200", "GPU-b", 0.5, memory_used=130, memory_total=140)
    assert free_memory([a]) == 100.0
    assert free_memory([a, b]) == 10.0
    full = GpuSample(0, "H200", "GPU-c", 1.0, memory_used=150, memory_total=140)
    assert free_memory([full]) == 0.0


# ---------------------------------------------------------------- keys and groups


def test_prompts_and_seeds_may_differ_in_one_batch() -> None:
    a, b = job(1), job(2, prompt="a blue circle", negative_prompt="blurry", fps=12)
    assert batch_key(a) == batch_key(b) is not None


@pytest.mark.parametrize(
    "change",
    [
        {"width": 128},
        {"height": 32},
        {"num_frames": 8},
        {"steps": 10},
        {"guidance_scale": 5.0},
    ],
)
def test_shape_differences_split_batches(change: dict[str, Any]) -> None:
    assert batch_key(job(1)) != batch_key(job(2, **change))


def test_other_models_never_batch_together() -> None:
    assert batch_key(job(1)) != batch_key(job(2, model="cinecloud/tiny-wan"))


@pytest.mark.parametrize(
    "alone",
    [
        job(1, inputs={"image": "https://x/in.png"}),
        job(1, inputs={"checkpoint": "https://x/ckpt"}),
        job(1, step_cache="fb"),
        job(1, image_path="/w/in.png"),
        job(1, width="wide"),
        RunJob("video_1", "lse_1", MODEL, {"prompt": "no size"}),
    ],
)
def test_some_jobs_always_run_alone(alone: RunJob) -> None:
    assert batch_key(alone) is None
    assert group_jobs([job(2), alone, job(3)], 8) == [[job(2), job(3)], [alone]]


def test_groups_keep_lease_order_and_the_limit() -> None:
    jobs = [job(1), job(2, steps=4), job(3), job(4), job(5, steps=4), job(6)]
    groups = group_jobs(jobs, 2)
    assert [[j.job_id for j in g] for g in groups] == [
        ["video_1", "video_3"],
        ["video_2", "video_5"],
        ["video_4", "video_6"],
    ]
    assert group_jobs(jobs, 1) == [[j] for j in jobs]
    assert group_jobs([], 8) == []
    with pytest.raises(ValueError):
        group_jobs(jobs, 0)


# ---------------------------------------------------------------- one batch in the engine


def test_progress_fans_out_to_live_jobs() -> None:
    batch = BatchRun((job(1), job(2), job(3)))
    sent = batch.progress(Step("denoise", 3, 24, 0.5), at=100.0)
    assert sent == [Progress(f"video_{n}", "denoise", 3, 24, 0.5, 100.0) for n in (1, 2, 3)]
    assert batch.cancel("video_2")
    assert [p.job_id for p in batch.progress(Step("denoise", 4, 24, 0.6), 101.0)] == [
        "video_1",
        "video_3",
    ]


def test_cancel_drops_one_job_and_stops_the_engine_only_when_all_are() -> None:
    batch = BatchRun((job(1), job(2)))
    assert not batch.cancel("video_9")  # not in the batch
    assert batch.cancel("video_1")
    assert not batch.cancel("video_1")  # once
    assert batch.canceled("video_1") and not batch.canceled("video_2")
    assert not batch.all_canceled
    assert [j.job_id for j in batch.unacknowledged()] == ["video_1"]
    assert list(batch.unacknowledged()) == []  # each acknowledgement goes once
    assert batch.cancel("video_2")
    assert batch.all_canceled and batch.live() == []


def test_split_gives_each_live_job_its_result_and_an_even_share() -> None:
    jobs = (job(1), job(2), job(3), job(4))
    batch = BatchRun(jobs)
    batch.cancel("video_3")
    shares = batch.split(["r1", "r2", "r3", "r4"], engine_s=2.0)
    assert [(s.job.job_id, s.result, s.engine_s) for s in shares] == [
        ("video_1", "r1", 0.5),
        ("video_2", "r2", 0.5),
        ("video_4", "r4", 0.5),
    ]
    with pytest.raises(ValueError, match="3 results"):
        batch.split(["r1", "r2", "r3"], 1.0)


def test_billing_splits_evenly() -> None:
    assert engine_share(3.0, 1) == 3.0
    assert engine_share(3.0, 4) == 0.75
    with pytest.raises(ValueError):
        engine_share(1.0, 0)


def test_a_batch_has_distinct_jobs() -> None:
    with pytest.raises(ValueError):
        BatchRun(())
    with pytest.raises(ValueError, match="twice"):
        BatchRun((job(1), job(1)))


# ---------------------------------------------------------------- the RunBatch message


def test_run_batch_survives_the_pipe() -> None:
    msg = RunBatch((job(1), job(2, prompt="a blue circle")))
    data = to_dict(msg)
    assert data["type"] == "run_batch"
    assert from_dict(data) == msg
    assert isinstance(from_dict(data), RunBatch)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "run_batch", "jobs": "video_1"},
        {"type": "run_batch", "jobs": [1, 2]},
        {"type": "run_batch", "jobs": [{"job_id": "video_1"}]},
        {"type": "run_batch", "jobs": [], "extra": 1},
    ],
)
def test_malformed_run_batch_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(UnknownMessage):
        from_dict(bad)


# ---------------------------------------------------------------- leasing for batches


def test_lease_limits_hold_two_batches_short_of_the_engine() -> None:
    assert lease_limits(True, 4) == LeaseLimits(ahead=2, cap=10)  # no batching
    assert lease_limits(True, 4, batch=8) == LeaseLimits(ahead=16, cap=24, batch=8)
    assert lease_limits(False, 4, batch=8) == LeaseLimits(ahead=8, cap=8, batch=8)
    assert lease_limits(False, 4, batch=0) == LeaseLimits(ahead=1, cap=1)


def test_room_waits_for_a_whole_batch(tmp_path: Path) -> None:
    held = HeldJobs(LeaseLimits(ahead=4, cap=6, batch=2))
    assert held.room() == 2  # an idle worker takes one batch
    first = [HeldJob(job(n), tmp_path / str(n)) for n in (1, 2, 3)]
    assert held.admit_all(first, lambda: False)
    assert held.room() == 0  # their engine work is not near its end
    for h in first:
        held.mark_near_end(h)
    assert len(held) == 3 and held.room() == 1
    assert held.wait_for_room(0.01, at_least=2) == 0  # one is not a batch of two
    assert held.wait_for_room(0.01) == 1
    for h in first:
        held.mark_engine_done(h)
    assert held.wait_for_room(0.01, at_least=2) == 2  # the next batch
    # more than a batch waits for a batch
    assert held.wait_for_room(0.01, at_least=99) == 2
    for h in first:
        held.remove(h)
    assert held.room() == 2


def test_a_closed_worker_admits_no_batch(tmp_path: Path) -> None:
    held = HeldJobs(LeaseLimits(ahead=4, cap=4))
    assert not held.admit_all([HeldJob(job(1), tmp_path)], lambda: True)
    assert len(held) == 0
