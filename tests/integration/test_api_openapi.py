"""The OpenAPI document says what the server answers, and the inputs Schemathesis
(tests/integration/test_schemathesis.py) found answered 500 now get a 400: each case
here, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinecloud.api import build_state, create_app
from tests.conftest import make_config
from tests.integration.test_api import create, expect_error, h

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[tuple[TestClient, str]]:
    cfg = make_config(tmp_path, db_url)
    state = build_state(cfg)
    with TestClient(create_app(cfg, state)) as client:
        key, _ = state.accounts.create_key(state.accounts.ensure_tenant("a").id, admin=True)
        yield client, key
    state.jobs.engine.dispose()


def test_document_names_errors_security_and_the_create_body(api: tuple[TestClient, str]) -> None:
    client, _ = api
    doc = client.get("/openapi.json").json()
    assert set(doc["components"]["securitySchemes"]) == {"apiKey", "workerToken"}
    create_op = doc["paths"]["/v1/videos"]["post"]
    assert create_op["security"] == [{"apiKey": []}]
    assert create_op["requestBody"]["required"] is True
    assert {"application/json", "multipart/form-data"} <= set(create_op["requestBody"]["content"])
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses: dict[str, Any] = op["responses"]
            assert "422" not in responses, (method, path)  # this server sends 400
            if "security" in op:
                assert "401" in responses, (method, path)
    limited = doc["paths"]["/v1/videos"]["get"]["responses"]["429"]
    assert limited["headers"]["Retry-After"]["required"] is True
    assert doc["paths"]["/internal/v1/leases"]["post"]["security"] == [{"workerToken": []}]


def test_405_allows_every_method_of_the_path(api: tuple[TestClient, str]) -> None:
    client, key = api
    resp = client.request("PATCH", "/v1/videos/video_x", headers=h(key))
    expect_error(resp, 405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(", ")) >= {"GET", "DELETE"}


def test_overview_window_below_a_second_is_refused(api: tuple[TestClient, str]) -> None:
    client, key = api
    resp = client.get("/v1/admin/overview", params={"window_s": "5e-324"}, headers=h(key))
    expect_error(resp, 400, "invalid_value", "window_s")
    assert client.get("/v1/admin/overview", params={"window_s": 1}, headers=h(key)).is_success


def test_empty_idempotency_key_is_refused(api: tuple[TestClient, str]) -> None:
    client, key = api
    for _ in range(2):  # twice: the second once stored a duplicate "" key
        resp = client.post(
            "/v1/videos",
            json={"prompt": "a red ball"},
            headers={**h(key), "Idempotency-Key": ""},
        )
        expect_error(resp, 400, "invalid_value", "idempotency-key")


def test_nul_characters_are_refused(api: tuple[TestClient, str]) -> None:
    client, key = api
    expect_error(create(client, key, prompt="a red\x00ball"), 400, "invalid_value", "prompt")
    expect_error(create(client, key, metadata={"k": "v\x00"}), 400, "invalid_value", "metadata.k")
    resp = client.post("/v1/webhooks", json={"url": "http://example.com/\x00"}, headers=h(key))
    assert resp.status_code == 400, resp.text
    expect_error(client.get("/v1/videos/video%00x", headers=h(key)), 400, "invalid_value")
    expect_error(client.get("/v1/usage?tenant=a%00", headers=h(key)), 400, "invalid_value")


def test_event_cursor_past_the_largest_event_id_is_refused(api: tuple[TestClient, str]) -> None:
    client, key = api
    video = create(client, key).json()["id"]
    url = f"/v1/videos/{video}/events"
    expect_error(client.get(url, params={"after": 2**31}, headers=h(key)), 400, "invalid_value")
    resp = client.get(url, headers={**h(key), "Last-Event-ID": str(2**31)})
    expect_error(resp, 400, "invalid_value", "Last-Event-ID")
