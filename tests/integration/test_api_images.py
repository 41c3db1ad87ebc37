"""Image-to-video input: the ``input_reference`` upload as the OpenAI SDK sends it."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from cinecloud.engine.registry import Registry
from tests.conftest import make_config

I2V = "test/i2v"
REQUIRED = "test/i2v-required"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, AppState, dict[str, str]]]:
    cfg = make_config(tmp_path, api={"max_image_bytes": 200_000, "max_image_pixels": 1_000_000})
    state = build_state(cfg)
    base = state.registry.get(None)
    state.registry = Registry(
        [
            *state.registry.list(),
            dataclasses.replace(base, id=I2V, input_image="optional"),
            dataclasses.replace(base, id=REQUIRED, input_image="required"),
        ],
        base.id,
    )
    key, _ = state.accounts.create_key(state.accounts.ensure_tenant("a").id)
    with TestClient(create_app(cfg, state)) as client:
        yield client, state, {"Authorization": f"Bearer {key}"}


def png(size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def noise_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, format="PNG")
    return buf.getvalue()


def post(client: TestClient, hdr: dict[str, str], model: str, image: bytes | None) -> Any:
    files = {"input_reference": ("ref.png", image, "image/png")} if image is not None else None
    return client.post(
        "/v1/videos", data={"prompt": "make it move", "model": model}, files=files, headers=hdr
    )


def test_text_only_model_refuses_an_image(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, state, hdr = api
    resp = post(client, hdr, state.registry.default_id, png())
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "input_reference_not_supported"


def test_required_image_missing(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, _, hdr = api
    resp = post(client, hdr, REQUIRED, None)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "input_reference_required"


@pytest.mark.parametrize(
    ("image", "status", "code"),
    [
        (b"not an image at all", 400, "invalid_image"),
        (png()[:60], 400, "invalid_image"),
        (png(fmt="GIF"), 400, "unsupported_image_type"),
        (png((8, 8)), 400, "image_too_small"),
        (noise_png(400), 413, "image_too_large"),
        (png((1200, 1000)), 400, "image_too_large"),
        (b"", 400, "invalid_image"),
    ],
)
def test_bad_images(
    api: tuple[TestClient, AppState, dict[str, str]], image: bytes, status: int, code: str
) -> None:
    client, state, hdr = api
    resp = post(client, hdr, I2V, image)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["param"] == "input_reference"
    assert state.jobs.counts() == {}


def test_image_reaches_the_worker(api: tuple[TestClient, AppState, dict[str, str]]) -> None:
    client, state, hdr = api
    image = png()
    resp = post(client, hdr, I2V, image)
    assert resp.status_code == 200, resp.text
    wh = {"Authorization": f"Bearer {state.cfg.worker.token}"}
    wid = client.post("/internal/v1/workers/register", json={}, headers=wh).json()["worker_id"]
    (job,) = client.post(
        "/internal/v1/leases", json={"worker_id": wid, "models": [I2V]}, headers=wh
    ).json()["jobs"]
    assert "input_image" not in job["params"]
    url = job["inputs"]["image"].split("127.0.0.1:8000", 1)[1]
    got = client.get(url)
    assert got.status_code == 200 and got.content == image
    assert got.headers["content-type"] == "image/png"
