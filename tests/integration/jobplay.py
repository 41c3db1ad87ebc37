"""Plays the worker protocol against an in-process app: the jobs' events are real."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from cinecloud.api.state import AppState

MODEL = "cinecloud/shapes-t2v"
SMALL: dict[str, Any] = {"size": "64x64", "num_frames": 16, "steps": 2}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Player:
    def __init__(self, client: TestClient, state: AppState) -> None:
        self.client = client
        self.wh = auth(state.cfg.worker.token)
        reg = client.post("/internal/v1/workers/register", json={"name": "play"}, headers=self.wh)
        assert reg.status_code == 200, reg.text
        self.registration: dict[str, Any] = reg.json()
        self.worker_id = str(reg.json()["worker_id"])

    def submit(self, key: str, **body: Any) -> str:
        body = {"prompt": "a red ball moving left", **SMALL, **body}
        resp = self.client.post("/v1/videos", json=body, headers=auth(key))
        assert resp.status_code == 200, resp.text
        return str(resp.json()["id"])

    def lease(self) -> dict[str, Any]:
        body = {"worker_id": self.worker_id, "models": [MODEL]}
        jobs = self.client.post("/internal/v1/leases", json=body, headers=self.wh).json()["jobs"]
        assert len(jobs) == 1, jobs
        return dict(jobs[0])

    def progress(self, run: dict[str, Any], step: int, total: int = 2) -> None:
        event = {"type": "progress", "stage": "denoise", "step": step, "total_steps": total}
        resp = self.client.post(
            f"/internal/v1/jobs/{run['job_id']}/events",
            json={"lease_id": run["lease_id"], "events": [event]},
            headers=self.wh,
        )
        assert resp.status_code == 200, resp.text

    def finish(self, run: dict[str, Any], timings: dict[str, float] | None = None) -> None:
        ups = self.client.post(
            f"/internal/v1/jobs/{run['job_id']}/uploads",
            json={"lease_id": run["lease_id"], "names": ["video.mp4"]},
            headers=self.wh,
        ).json()["uploads"]
        url = ups["video.mp4"]["url"].split("127.0.0.1:8000", 1)[1]
        put = self.client.put(url, content=b"0" * 1000, headers={"Content-Type": "video/mp4"})
        assert put.status_code == 200, put.text
        body = {
            "lease_id": run["lease_id"],
            "artifacts": [{"name": "video.mp4", **put.json()}],
            "timings": timings or {"text_encode": 0.01, "denoise": 0.5, "decode": 0.05},
            "gpu_seconds": 0.56,
        }
        done = self.client.post(
            f"/internal/v1/jobs/{run['job_id']}/complete", json=body, headers=self.wh
        )
        assert done.status_code == 200, done.text

    def fail(self, run: dict[str, Any], code: str = "engine_error") -> None:
        body = {"lease_id": run["lease_id"], "code": code, "message": "boom", "retryable": False}
        resp = self.client.post(
            f"/internal/v1/jobs/{run['job_id']}/fail", json=body, headers=self.wh
        )
        assert resp.status_code == 200, resp.text
