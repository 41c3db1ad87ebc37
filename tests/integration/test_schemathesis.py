"""Schemathesis against a real server's ``/openapi.json``, on SQLite and on PostgreSQL.

``cinecloud serve`` runs on loopback with no workers (jobs stay queued: the API is what
is tested, not the engine) and without the abuse limits (``limits_env``), so generated
cases are not answered 429. Schemathesis's CLI generates cases from the document (its
examples, coverage, fuzzing and stateful phases, following the document's links from
created videos and webhook endpoints) in two runs: the public API with an admin API key,
the worker protocol with the worker token. Each database must see at least
``MIN_CASES`` cases, no 5xx and no response that the document does not describe.

Two of Schemathesis's checks are left out, on purpose:

- ``positive_data_acceptance``: JSON Schema cannot say everything the API checks (a
  size the model supports, a webhook URL that resolves, a date range in order, a
  non-blank prompt), so some schema-valid requests are rightly refused with 400;
- ``ensure_resource_availability``: a repeated ``Idempotency-Key`` returns the video it
  first created even after that video was deleted (the key is bound to it), which this
  check reads as a created resource that is missing.

The figures of one run are in docs/reliability.md ("Schemathesis").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cinecloud.testing.databases import temp_database
from cinecloud.testing.service import Service, limits_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIN_CASES = 1000
# Per operation and phase; with ~33 operations this gives well over MIN_CASES.
MAX_EXAMPLES = 30
EXCLUDED_CHECKS = ("positive_data_acceptance", "ensure_resource_availability")
SEED = 20261203
# The event stream stays open while its video is unfinished (workers=0: always).
EVENTS = "^/v1/videos/[^/]+/events$"  # a fixed seed: a failure reproduces with the same command
SERVER_ENV = {
    **limits_env(),
    # a worker-protocol lease long-polls at most this long (generated cases ask for 60 s)
    "CINECLOUD_QUEUE__LEASE_LONG_POLL_S": "0.2",
}


@dataclass(frozen=True)
class Run:
    """One Schemathesis run's figures, from its JSON report."""

    cases: int
    failures: list[dict[str, Any]]
    errors: list[Any]
    server_errors: int
    seconds: float
    output: str

    def describe(self) -> str:
        return f"{self.cases} cases, {len(self.failures)} failure kinds, {len(self.errors)} errors"


def schemathesis(
    svc: Service,
    token: str,
    paths: str,
    report: Path,
    *,
    exclude: str | None = None,
    phases: str = "examples,coverage,fuzzing,stateful",
) -> Run:
    """``st run`` against ``svc`` for the operations whose path matches ``paths`` (and
    not ``exclude``)."""
    report.mkdir(parents=True, exist_ok=True)
    st = Path(sys.executable).with_name("st")
    cmd = [
        str(st),
        "run",
        f"{svc.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--include-path-regex",
        paths,
        *(["--exclude-path-regex", exclude] if exclude else []),
        "--phases",
        phases,
        "--suppress-health-check",
        # /v1/models/{model_id} takes a path (ids hold '/'): most generated ids are
        # filtered out as unusable path segments, which this health check counts
        "filter_too_much",
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(EXCLUDED_CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--report",
        "json",
        "--report-json-path",
        str(report / "report.json"),
        "--no-color",
    ]
    # in the report's folder: Schemathesis keeps a cache (.schemathesis/) where it runs
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=report)
    data = json.loads((report / "report.json").read_text())
    failures: list[dict[str, Any]] = data["failures"]
    server = sum(f["count"] for f in failures if f["code"] == "ST101")
    return Run(
        cases=int(data["test_cases"]["generated"]),
        failures=failures,
        errors=list(data["errors"]),
        server_errors=server,
        seconds=float(data["running_time"]),
        output=out.stdout[-20000:] + out.stderr[-4000:],
    )


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_openapi_conformance(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind == "postgres":
        request.getfixturevalue("pg_url")  # skips (or, in CI, fails) without PostgreSQL
    started = time.monotonic()
    with temp_database(kind, tmp_path) as db_url:
        svc = Service(tmp_path / "home", db_url, workers=0, env=SERVER_ENV).start()
        try:
            worker_token = (svc.home / "worker-token").read_text().strip()
            key = svc.admin_key
            public = schemathesis(
                svc, key, "^/(v1|healthz|readyz|metrics)", tmp_path / "p", exclude=EVENTS
            )
            # no stateful phase: a video it created would be queued, its stream open
            events = schemathesis(
                svc, key, EVENTS, tmp_path / "e", phases="examples,coverage,fuzzing"
            )
            # the worker protocol's ids come from leases, which the document does not link
            internal = schemathesis(
                svc, worker_token, "^/internal/", tmp_path / "i", phases="examples,coverage,fuzzing"
            )
        finally:
            svc.stop()
    log = svc.log.read_text(errors="replace")
    elapsed = time.monotonic() - started
    runs = {"public": public, "events": events, "worker protocol": internal}
    cases = sum(r.cases for r in runs.values())
    server_errors = sum(r.server_errors for r in runs.values())
    # one line for docs/reliability.md
    print(
        f"\nSCHEMATHESIS {kind}: {cases} cases "
        f"({', '.join(f'{name} {r.cases} in {r.seconds:.0f} s' for name, r in runs.items())}), "
        f"{server_errors} server errors, "
        f"{sum(len(r.failures) for r in runs.values())} failures, {elapsed:.0f} s in all"
    )
    for run in runs.values():
        assert run.server_errors == 0, run.output
        assert run.failures == [], run.output
        assert run.errors == [], run.output
    assert "unhandled error" not in log, log[-5000:]
    assert cases >= MIN_CASES, [r.describe() for r in runs.values()]
