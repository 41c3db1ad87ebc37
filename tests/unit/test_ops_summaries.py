"""The operators' summaries: stage percentiles over time, throughput, busy shares."""

from __future__ import annotations

import pytest

from cinecloud.telemetry.ops import busy_share, latency_series


def test_latency_series_buckets_counts_and_percentiles() -> None:
    now = 1000.0
    samples = [
        (410.0, {"denoise": 1.0, "total": 2.0}),  # bucket 0 of [400, 1000) by 200 s
        (590.0, {"denoise": 3.0, "total": 4.0}),  # bucket 0
        (600.0, {"denoise": 10.0}),  # bucket 1 (the edge belongs to the later bucket)
        (1000.0, {"denoise": 5.0}),  # exactly now: the last bucket
        (399.0, {"denoise": 99.0}),  # before the window: ignored
        (1001.0, {"denoise": 99.0}),  # after now: ignored
    ]
    series = latency_series(
        samples, now=now, window_s=600.0, buckets=3, stages=("denoise", "total")
    )
    assert [(b.start, b.end) for b in series] == [(400.0, 600.0), (600.0, 800.0), (800.0, 1000.0)]
    assert [b.completed for b in series] == [2, 1, 1]
    assert series[0].per_minute == pytest.approx(2 * 60 / 200)
    first = series[0].stages
    assert first["denoise"]["p50"] == pytest.approx(2.0)
    assert first["denoise"]["p95"] == pytest.approx(2.9)  # linear between 1 and 3
    assert first["total"]["p99"] == pytest.approx(3.98)
    assert set(series[1].stages) == {"denoise"}  # no job of bucket 1 timed "total"
    assert series[2].stages["denoise"] == {"p50": 5.0, "p95": 5.0, "p99": 5.0}


def test_latency_series_empty_and_bad_arguments() -> None:
    series = latency_series([], now=100.0, window_s=60.0, buckets=2)
    assert [b.completed for b in series] == [0, 0] and all(not b.stages for b in series)
    with pytest.raises(ValueError):
        latency_series([], now=100.0, window_s=0.0, buckets=2)
    with pytest.raises(ValueError):
        latency_series([], now=100.0, window_s=60.0, buckets=0)


@pytest.mark.parametrize(
    ("spans", "since", "now", "share"),
    [
        ([], 0.0, 100.0, 0.0),
        ([(10.0, 30.0)], 0.0, 100.0, 0.2),
        ([(10.0, 30.0), (20.0, 40.0)], 0.0, 100.0, 0.3),  # overlapping jobs count once
        ([(-50.0, 10.0), (90.0, 150.0)], 0.0, 100.0, 0.2),  # clipped to the window
        ([(0.0, 100.0), (20.0, 30.0)], 0.0, 100.0, 1.0),
        ([(5.0, 6.0)], 10.0, 10.0, 0.0),  # an empty window
    ],
)
def test_busy_share(
    spans: list[tuple[float, float]], since: float, now: float, share: float
) -> None:
    assert busy_share(spans, since=since, now=now) == pytest.approx(share)
