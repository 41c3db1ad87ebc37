"""The engine stages' spans, from the run's bounds, its first denoise step and its timings."""

from __future__ import annotations

import pytest

from cinecloud.workers.tracing import engine_spans


def test_stages_lie_back_to_back() -> None:
    spans = engine_spans(100.0, 100.3, 110.0, {"text_encode": 0.25, "denoise": 9.0, "decode": 0.7})
    assert spans["text_encode"] == [100.0, 100.25]
    assert spans["denoise"] == [100.3, pytest.approx(109.3)]
    assert spans["decode"] == [pytest.approx(109.3), 110.0]


def test_no_step_reported_and_odd_timings_stay_in_bounds() -> None:
    spans = engine_spans(10.0, None, 12.0, {"text_encode": 0.5, "decode": 5.0})
    assert spans["text_encode"] == [10.0, 10.0]
    assert spans["denoise"] == [10.0, 10.0]
    assert spans["decode"] == [10.0, 12.0]
    for start, end in spans.values():
        assert 10.0 <= start <= end <= 12.0
