"""Worker messages survive the trip through plain dicts, and nothing else is accepted.

Also the parent's pure helpers (progress, throttling) and the protocol client's retry
rules, over an in-memory transport.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from cinecloud.workers.client import ControlPlaneClient, LeaseLost, RetryPolicy, Unreachable
from cinecloud.workers.messages import (
    Cancel,
    Checkpoint,
    Done,
    Failed,
    GpuInfo,
    Message,
    OutputFile,
    Preempt,
    Progress,
    Ready,
    Render,
    Rendered,
    RunJob,
    Shutdown,
    UnknownMessage,
    from_dict,
    to_dict,
)
from cinecloud.workers.progress import EventThrottle, progress_event, progress_percent

pytestmark = pytest.mark.unit

PARAMS = {
    "prompt": "a red fox in snow",
    "negative_prompt": "",
    "width": 64,
    "height": 64,
    "num_frames": 9,
    "fps": 8,
    "steps": 4,
    "guidance_scale": 5.0,
    "seed": 42,
}

MESSAGES: list[Message] = [
    RunJob("video_1", "lse_1", "cinecloud/tiny-wan", PARAMS, attempt=2, queued_at=1.7e9),
    Cancel("video_1"),
    Preempt(),
    Checkpoint("video_1", 5, 24, "/w/video_1/checkpoints/step-000005.ckpt"),
    Shutdown(),
    Ready(("cinecloud/tiny-wan",), 1.25, "cuda", (GpuInfo("H100", 85_000, 80_000),)),
    Progress("video_1", "denoise", 3, 4, 0.6),
    Progress("video_1", "render", 0, 1, 0.0, at=1_700_000_000.5),
    Render("video_1", "/w/video_1/frames.npy", "/w/video_1", 8, (256, 256)),
    Render("video_1", "/w/video_1/frames.npy", "/w/video_1", 8),
    Rendered("video_1", (OutputFile("video.mp4", "/w/video_1/video.mp4", "video/mp4"),), 0.05),
    Render("video_1", "/w/video_1/frames.npy", "/w/video_1", 8, (256, 256), "cinecloud/shapes-t2v"),
    Rendered(
        "video_1",
        (),
        0.3,
        {"qc": 0.01, "provenance": 0.02},
        {"frames": 16, "flicker": 0.001, "flow_warp_error": None, "passed": 1},
    ),
    Failed("video_1", "qc_failed", "quality check failed: black: 16 of 16 frames are black"),
    Done(
        "video_1",
        (
            OutputFile("video.mp4", "/w/video_1/video.mp4", "video/mp4"),
            OutputFile("poster.jpg", "/w/video_1/poster.jpg", "image/jpeg"),
        ),
        {"text_encode": 0.01, "denoise": 0.5, "decode": 0.1, "render": 0.2},
        42,
        "cpu",
        "float32",
        0.61,
    ),
    Failed("video_1", "engine_error", "RuntimeError: boom", retryable=False),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_through_json(msg: Message) -> None:
    data = to_dict(msg)
    assert data["type"]
    assert from_dict(json.loads(json.dumps(data))) == msg


@pytest.mark.parametrize(
    "data",
    [
        {"type": "reboot"},
        {"type": None},
        {"job_id": "video_1"},
        {"type": "cancel", "job_id": "video_1", "extra": 1},
        {"type": "cancel"},
        {"type": "done", "job_id": "x", "files": [{"name": "a"}]},
    ],
)
def test_unknown_or_malformed_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(UnknownMessage):
        from_dict(data)


def test_only_messages_serialize() -> None:
    with pytest.raises(UnknownMessage, match="not a worker message"):
        to_dict(GpuInfo("x", 1, 1))  # type: ignore[arg-type]


def test_progress_percent_spans_stages() -> None:
    assert progress_percent("text_encode", 0, 1) == 0
    assert progress_percent("denoise", 0, 20) == 5
    assert progress_percent("denoise", 20, 20) == 90
    assert progress_percent("upload", 0, 3) == 97
    assert progress_percent("denoise", 3, 0) == 5
    event = progress_event("denoise", 5, 20, 1.0)
    assert event["eta_s"] == pytest.approx(3.0)
    assert event["type"] == "progress"
    assert event["progress"] == 26
    assert "at" not in event  # no stamp given: none sent
    assert progress_event("render", 0, 1, 0.0, at=1_700_000_000.25)["at"] == 1_700_000_000.25


def test_event_throttle_keeps_stage_changes_and_last_step() -> None:
    t = EventThrottle(interval_s=0.1)
    sent = [
        (stage, step, now)
        for stage, step, total, now in [
            ("denoise", 0, 4, 0.00),
            ("denoise", 1, 4, 0.02),
            ("denoise", 2, 4, 0.11),
            ("denoise", 3, 4, 0.15),
            ("denoise", 4, 4, 0.16),
            ("render", 0, 1, 0.17),
        ]
        if t.should_send(stage, step, total, now)
    ]
    assert sent == [
        ("denoise", 0, 0.0),
        ("denoise", 2, 0.11),
        ("denoise", 4, 0.16),
        ("render", 0, 0.17),
    ]


# ---------------------------------------------------------------- the protocol client

REGISTERED = {"worker_id": "wkr_1", "heartbeat_interval_s": 1.0, "lease_ttl_s": 9.0}


def _client(handler: Any, slept: list[float], now: list[float] | None = None) -> ControlPlaneClient:
    clock = now if now is not None else [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    return ControlPlaneClient(
        "http://cp.test",
        "tok",
        retry=RetryPolicy(deadline_s=1.0, first_delay_s=0.1, max_delay_s=0.4),
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        clock=lambda: clock[0],
    )


def test_client_retries_connection_errors_and_5xx() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("refused")
        if len(seen) == 2:
            return httpx.Response(503)
        return httpx.Response(200, json=REGISTERED)

    slept: list[float] = []
    reg = _client(handler, slept).register("w-1", None, {"device": "cpu"})
    assert reg.worker_id == "wkr_1" and reg.lease_ttl_s == 9.0
    assert slept == [0.1, 0.2]
    assert {r.url.path for r in seen} == {"/internal/v1/workers/register"}
    assert seen[-1].headers["authorization"] == "Bearer tok"
    assert json.loads(seen[-1].content)["name"] == "w-1"


def test_client_gives_up_at_the_deadline() -> None:
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502)

    with pytest.raises(Unreachable, match="HTTP 502"):
        _client(handler, slept).fail("video_1", "lse_1", "engine_error", "boom", False)
    assert slept == [0.1, 0.2, 0.4]


def test_client_lease_lost_is_final() -> None:
    slept: list[float] = []
    body = {"error": {"code": "lease_lost", "message": "gone", "param": None, "type": "x"}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json=body)

    with pytest.raises(LeaseLost):
        _client(handler, slept).events("video_1", "lse_1", [progress_event("denoise", 1, 4, 0.1)])
    assert slept == []


def test_client_parses_leased_jobs() -> None:
    job = {
        "job_id": "video_1",
        "lease_id": "lse_1",
        "attempt": 2,
        "model": "m",
        "params": PARAMS,
        "lease_ttl_s": 30.0,
        "queued_at": 1.0,
        "future_field": True,
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["wait_s"] == 5
        return httpx.Response(200, json={"jobs": [job]})

    [leased] = _client(handler, []).lease("wkr_1", ["m"], wait_s=5)
    assert leased == RunJob("video_1", "lse_1", "m", PARAMS, attempt=2, queued_at=1.0)
