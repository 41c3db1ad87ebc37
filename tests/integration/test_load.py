"""The bounded load test (benchmarks/load.py), small: a real server on loopback takes
200 submissions at 100 a second with no errors, none lost and none duplicated; and with
one CPU worker, a few jobs submitted at once all complete. The full run (2,000 at
100/s) is in docs/reliability.md ("Load test")."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinecloud.testing.load import run_load

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(240)
def test_submissions_at_rate_are_all_stored_once(tmp_path: Path) -> None:
    res = run_load(200, 100.0, workers=0, replay_every=5, root=tmp_path)
    print(
        f"\nLOAD {res.jobs} at {res.rate:g}/s: {res.errors} errors, {res.lost} lost, "
        f"{res.duplicated} duplicated, p50 {res.p50_ms} ms, p99 {res.p99_ms} ms"
    )
    assert res.ok == 200 and res.errors == 0, res.error_statuses
    assert res.lost == 0
    assert res.duplicated == 0
    assert res.replayed == 40 and res.replay_mismatches == 0
    # paced at 100/s: 200 take about 2 s unless the server holds the client up
    assert res.submit_seconds < 20


@pytest.mark.timeout(300)
def test_with_a_worker_every_job_completes(tmp_path: Path) -> None:
    res = run_load(12, 20.0, workers=1, replay_every=3, complete_s=180, root=tmp_path)
    print(f"\nLOAD {res.jobs} with 1 worker: {res.completed} completed in {res.complete_seconds} s")
    assert res.errors == 0 and res.lost == 0 and res.duplicated == 0
    assert res.replay_mismatches == 0
    assert res.completed == 12 and res.failed == 0
