"""One job's trace, from the API through the queue to the worker's stages.

The control plane runs under uvicorn and the worker's parent in threads of this process,
so one in-memory exporter sees both; they still talk over HTTP, and the trace context
travels the real way: stored with the job at submit, handed out in the lease's RunJob.
The worker's engine child is a spawned process (the fake runner) and its render process
encodes the real files; their stage times come back in its Done message.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from cinecloud.api.tracing import fastapi_telemetry
from cinecloud.cli.serve import start_server_thread
from cinecloud.testing.service import free_port
from cinecloud.workers.parent import Worker
from tests.conftest import make_config

FAST = "cinecloud.testing.fake_runner:fake_runner_factory"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
STAGES = ("model_load", "text_encode", "denoise", "decode", "render", "upload")


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The process's tracer provider, exporting to memory (it can be set only once)."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
def service(tmp_path: Path, exporter: InMemorySpanExporter) -> Iterator[tuple[str, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = make_config(
        tmp_path,
        f"sqlite:///{tmp_path / 't.db'}",
        server={"port": port},
        worker={"server_url": url, "runner_factory": FAST, "name": "traced"},
    )
    server, thread, _ = start_server_thread(cfg)
    stop = threading.Event()
    worker = threading.Thread(target=Worker(cfg, stop).run, name="worker")
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        worker.start()
        exporter.clear()
        yield url, (cfg.server.home / "admin-key").read_text().strip()
    finally:
        stop.set()
        if worker.is_alive():
            worker.join(timeout=30)
        server.should_exit = True
        thread.join(timeout=10)


def test_one_job_one_trace(service: tuple[str, str], exporter: InMemorySpanExporter) -> None:
    url, key = service
    headers = {
        "Authorization": f"Bearer {key}",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
    }
    body = {"prompt": "a red ball moving left", "size": "64x64", "num_frames": 16, "steps": 3}
    with httpx.Client(base_url=url, timeout=30) as client:
        job = client.post("/v1/videos", json=body, headers=headers).json()
        deadline = time.monotonic() + 60
        while job["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
            job = client.get(f"/v1/videos/{job['id']}", headers=headers).json()
    assert job["status"] == "completed", job
    # the worker records its spans after reporting completion
    deadline = time.monotonic() + 10
    while not any(s.name == "upload" for s in exporter.get_finished_spans()):
        assert time.monotonic() < deadline, [s.name for s in exporter.get_finished_spans()]
        time.sleep(0.05)

    spans = [s for s in exporter.get_finished_spans() if _attr(s, "cinecloud.job_id") == job["id"]]
    by_name: dict[str, ReadableSpan] = {}
    for span in spans:
        assert span.name not in by_name, f"two {span.name} spans"
        by_name[span.name] = span
    assert set(by_name) == {"submit", "queue_wait", "run", *STAGES}
    # one trace: the client's, carried through the database and the lease
    assert {format(_ctx(s).trace_id, "032x") for s in spans} == {CLIENT_TRACE}
    submit, run = by_name["submit"], by_name["run"]
    # submit sits under the request's server span (FastAPI's), under the client's span
    api = _ancestors(submit, exporter.get_finished_spans())
    assert submit.parent is not None
    top = api[-1].parent if api else submit.parent
    assert top is not None and format(top.span_id, "016x") == CLIENT_SPAN
    assert {format(_ctx(s).trace_id, "032x") for s in api} <= {CLIENT_TRACE}
    if fastapi_telemetry():
        assert api[-1].name == "POST /v1/videos" and api[-1].kind is SpanKind.SERVER
    # the worker protocol's calls make no traces of their own
    assert not [s.name for s in exporter.get_finished_spans() if "/internal/" in s.name]
    assert _parent(by_name["queue_wait"]) == _ctx(submit).span_id
    assert _parent(run) == _ctx(submit).span_id
    for stage in STAGES:
        assert _parent(by_name[stage]) == _ctx(run).span_id, stage
    # the stages follow one another, as measured
    t = {n: (s.start_time or 0, s.end_time or 0) for n, s in by_name.items()}
    slack = 50_000_000  # 50 ms, in ns
    assert t["queue_wait"][0] >= t["submit"][0]
    for before, after in itertools.pairwise(STAGES[1:]):  # model_load came before the job
        assert t[before][1] <= t[after][0] + slack, (before, after)
    assert t["denoise"][1] > t["denoise"][0]
    assert t["upload"][1] <= t["run"][1]
    assert _attr(run, "cinecloud.attempt") == 1


def _ctx(span: ReadableSpan) -> trace.SpanContext:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx


def _ancestors(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """The recorded spans above ``span``, nearest first."""
    by_id = {_ctx(s).span_id: s for s in spans}
    found = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        found.append(span)
    return found


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _attr(span: ReadableSpan, key: str) -> object:
    return (span.attributes or {}).get(key)


_WITHOUT_OTEL = r"""
import sys
blocked = sys.argv[2]
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == blocked or name.startswith(blocked + "."):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from cinecloud.config import TracingConfig, load_config
from cinecloud.telemetry import tracing
from cinecloud.workers.messages import RunJob
from cinecloud.workers.tracing import trace_run
parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
with tracing.submit_span("x", parent) as span:
    pass
assert tracing.record_span(tracing.SpanRecord("y", 1.0, 2.0), parent) is None
assert trace_run(RunJob("j", "l", "m", {}, traceparent=parent), 1.0, 2.0, {}) is None
try:
    tracing.setup_tracing(TracingConfig(exporter="console"), "api")
except RuntimeError as exc:
    assert "cinecloud[otel]" in str(exc), exc
else:
    raise AssertionError("setup_tracing must refuse without the SDK")
try:
    from fastapi.testclient import TestClient
except ImportError:  # this FastAPI needs opentelemetry-api itself
    print("ok without the API")
    sys.exit(0)
from cinecloud.api import build_state, create_app
cfg = load_config(None, server={"home": sys.argv[1]})
state = build_state(cfg)
with TestClient(create_app(cfg, state)) as client:
    key, _ = state.accounts.create_key(state.accounts.ensure_tenant("a").id)
    resp = client.post("/v1/videos", json={"prompt": "a ball"},
                       headers={"Authorization": "Bearer " + key})
    assert resp.status_code == 200, resp.text
    assert state.jobs.get_job(resp.json()["id"]).traceparent is None
assert not any(m == blocked or m.startswith(blocked + ".") for m in sys.modules)
print("ok")
"""


@pytest.mark.parametrize("blocked", ["opentelemetry", "opentelemetry.sdk"])
def test_everything_works_without_opentelemetry(tmp_path: Path, blocked: str) -> None:
    """Without the ``otel`` extra (the SDK; or, where FastAPI does not need it, the API
    too): the spans are silently not made, a job goes through the API untraced, and
    asking for an exporter says what to install."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL, str(tmp_path), blocked],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() in ("ok", "ok without the API"), out.stdout
    if blocked == "opentelemetry.sdk":
        assert out.stdout.strip() == "ok"
