"""``/metrics`` of the real app: it parses, it counts a job's life, workers' GPU samples
become per-worker gauges, and every metric the Grafana dashboard charts is exported."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cinecloud.api import build_state, create_app
from cinecloud.api.state import AppState
from tests.conftest import make_config
from tests.integration.jobplay import MODEL, Player

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "cinecloud.json"

# Series names each metric type puts in the exposition (what PromQL can select).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "unknown": ("",),
    "info": ("_info",),
    "stateset": ("",),
}
_MODIFIERS = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)"
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, label names, Grafana
    variables and keywords left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " 1 ", s)  # Grafana variables
    s = re.sub(_MODIFIERS, " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end() :].lstrip().startswith("(") or m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template queries."""
    found: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend(str(t["expr"]) for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*", str(text or ""))
        if var.get("type") == "query" and m:
            found.append(m.group(1))
    return found


def exported_names(exposition: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + s for s in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def missing_from(dashboard: dict[str, Any], exposition: str) -> dict[str, list[str]]:
    """Queries of the dashboard that name a metric ``exposition`` does not export."""
    exported = exported_names(exposition)
    missing: dict[str, list[str]] = {}
    for query in dashboard_queries(dashboard):
        absent = sorted(promql_metric_names(query) - exported)
        if absent:
            missing[query] = absent
    return missing


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, AppState, str]]:
    cfg = make_config(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    state = build_state(cfg)
    with TestClient(create_app(cfg, state)) as client:
        key, _ = state.accounts.create_key(state.accounts.ensure_tenant("a").id)
        yield client, state, key
    state.jobs.engine.dispose()


def scrape(client: TestClient) -> str:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


# ---------------------------------------------------------------- tests


def test_metrics_parse_and_follow_a_job(api: tuple[TestClient, AppState, str]) -> None:
    client, state, key = api
    idle = samples(scrape(client))
    # every known model has a queue figure, 0 when idle (a line in the chart, not a gap)
    assert idle[("cinecloud_queue_depth", (("model", MODEL),))] == 0
    play = Player(client, state)
    done_id, failed_id = play.submit(key), play.submit(key)
    queued = samples(scrape(client))
    assert queued[("cinecloud_queue_depth", (("model", MODEL),))] == 2
    assert queued[("cinecloud_jobs_submitted_total", (("model", MODEL),))] == 2
    first = play.lease()
    play.finish(first, {"text_encode": 0.02, "denoise": 1.5, "decode": 0.2})
    play.fail(play.lease(), code="engine_error")
    assert {first["job_id"]} <= {done_id, failed_id}
    after = samples(scrape(client))
    m = (("model", MODEL),)
    assert after[("cinecloud_jobs_completed_total", m)] == 1
    assert after[("cinecloud_jobs_failed_total", (("code", "engine_error"), ("model", MODEL)))] == 1
    assert after[("cinecloud_queue_depth", m)] == 0
    assert after[("cinecloud_gpu_seconds_total", m)] == pytest.approx(0.56)
    denoise = (("model", MODEL), ("stage", "denoise"))
    assert after[("cinecloud_stage_seconds_count", denoise)] == 1
    assert after[("cinecloud_stage_seconds_sum", denoise)] == pytest.approx(1.5)
    le2 = (("le", "2.5"), ("model", MODEL), ("stage", "denoise"))
    le1 = (("le", "1.0"), ("model", MODEL), ("stage", "denoise"))
    assert after[("cinecloud_stage_seconds_bucket", le2)] == 1
    assert after[("cinecloud_stage_seconds_bucket", le1)] == 0
    assert after[("cinecloud_workers_registered", ())] == 1


def test_requests_are_counted_by_route_template(api: tuple[TestClient, AppState, str]) -> None:
    client, state, key = api
    play = Player(client, state)
    ids = [play.submit(key) for _ in range(3)]
    auth = {"Authorization": f"Bearer {key}"}
    for vid in ids:
        assert client.get(f"/v1/videos/{vid}", headers=auth).status_code == 200
    assert client.get("/v1/videos/video_nope", headers=auth).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    got = samples(scrape(client))

    def count(method: str, route: str, status: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return got.get(("cinecloud_http_requests_total", labels), 0.0)

    assert count("POST", "/v1/videos", "200") == 3
    assert count("GET", "/v1/videos/{video_id}", "200") == 3  # one series, not one per id
    assert count("GET", "/v1/videos/{video_id}", "404") == 1
    assert count("GET", "unmatched", "404") == 1
    assert not [k for k in got if any(vid in str(k) for vid in ids)]


def test_canceled_counts_once(api: tuple[TestClient, AppState, str]) -> None:
    """A canceled job that is then deleted was canceled once; a queued job deleted is."""
    client, _, key = api
    h = {"Authorization": f"Bearer {key}"}
    body = {"prompt": "a ball", "size": "64x64", "num_frames": 16, "steps": 2}
    first = client.post("/v1/videos", json=body, headers=h).json()["id"]
    assert client.post(f"/v1/videos/{first}/cancel", headers=h).status_code == 200
    assert client.delete(f"/v1/videos/{first}", headers=h).status_code == 200
    canceled = ("cinecloud_jobs_canceled_total", (("model", MODEL),))
    assert samples(scrape(client))[canceled] == 1
    second = client.post("/v1/videos", json=body, headers=h).json()["id"]
    assert client.delete(f"/v1/videos/{second}", headers=h).status_code == 200
    assert samples(scrape(client))[canceled] == 2


def test_worker_gpu_samples_become_gauges(api: tuple[TestClient, AppState, str]) -> None:
    client, state, _ = api
    play = Player(client, state)
    hb = f"/internal/v1/workers/{play.worker_id}/heartbeat"
    # A worker without a GPU (NVML finds none) reports an empty list: no values, no error.
    assert client.post(hb, json={"gpus": []}, headers=play.wh).status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(scrape(client))}
    assert families["cinecloud_worker_gpu_utilization_ratio"].samples == []
    assert families["cinecloud_worker_gpu_memory_used_bytes"].samples == []
    gpu = {"name": "NVIDIA H200", "uuid": "GPU-1", "memory_total": 150_000_000_000}
    sample = [
        {"index": 0, **gpu, "utilization": 0.87, "memory_used": 90_000_000_000},
        {"index": 1, **gpu, "uuid": "GPU-2", "utilization": 0.0, "memory_used": 1_000_000},
    ]
    assert client.post(hb, json={"gpus": sample}, headers=play.wh).status_code == 200
    got = samples(scrape(client))
    labels = (("gpu", "0"), ("name", "NVIDIA H200"), ("worker", play.worker_id))
    assert got[("cinecloud_worker_gpu_utilization_ratio", labels)] == pytest.approx(0.87)
    assert got[("cinecloud_worker_gpu_memory_used_bytes", labels)] == 90e9
    assert got[("cinecloud_worker_gpu_memory_total_bytes", labels)] == 150e9
    second = (("gpu", "1"), ("name", "NVIDIA H200"), ("worker", play.worker_id))
    assert got[("cinecloud_worker_gpu_utilization_ratio", second)] == 0.0
    # a heartbeat that says nothing of GPUs keeps the last sample
    assert client.post(hb, json={}, headers=play.wh).status_code == 200
    assert samples(scrape(client))[("cinecloud_worker_gpu_utilization_ratio", labels)] == 0.87
    bad = [{**sample[0], "utilization": 87}]  # a percent, not a ratio
    resp = client.post(hb, json={"gpus": bad}, headers=play.wh)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_value"


def test_every_dashboard_metric_is_exported(api: tuple[TestClient, AppState, str]) -> None:
    client, _, _ = api
    dashboard = json.loads(DASHBOARD.read_text())
    exposition = scrape(client)
    queries = dashboard_queries(dashboard)
    named = set().union(*(promql_metric_names(q) for q in queries))
    # the dashboard charts queue, latency, throughput, GPUs and cost
    assert {
        "cinecloud_queue_depth",
        "cinecloud_stage_seconds_bucket",
        "cinecloud_jobs_completed_total",
        "cinecloud_worker_gpu_utilization_ratio",
        "cinecloud_gpu_seconds_total",
    } <= named
    assert missing_from(dashboard, exposition) == {}
    # ... and the check fails when a panel names a metric that is not exported
    broken = json.loads(json.dumps(dashboard))
    broken["panels"][1]["targets"][0]["expr"] = 'sum(rate(cinecloud_jobs_lost_total{a="b"}[5m]))'
    assert missing_from(broken, exposition) == {
        'sum(rate(cinecloud_jobs_lost_total{a="b"}[5m]))': ["cinecloud_jobs_lost_total"]
    }


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("cinecloud_queue_depth", {"cinecloud_queue_depth"}),
        (
            'histogram_quantile(0.95, sum by (le, stage) (rate(x_bucket{stage!="total"}[5m])))',
            {"x_bucket"},
        ),
        ("sum(rate(a_total[$__rate_interval])) by (model) / ignoring(x) b", {"a_total", "b"}),
        ("count(max by (worker, gpu) (m)) * $gpu_hour_price", {"m"}),
        ('a{job="rate(x)"} offset 5m > bool 1e3', {"a"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names
