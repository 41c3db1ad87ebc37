"""The service-time model: a job's work from its shape and its family's numbers."""

from __future__ import annotations

from typing import Any

import pytest

from cinecloud.scheduler import (
    FamilyModel,
    JobShape,
    guidance_branches,
    job_work,
    parse_service_models,
    speedup,
    with_alpha,
)

TABLE: dict[str, Any] = {
    "default": {"alpha": 0.3, "seconds_per_unit": 2e-8},
    "families": {
        "fast": {"alpha": 0.1, "seconds_per_unit": 1e-9, "alpha_source": "measured"},
        "solo": {"alpha": 1.0, "seconds_per_unit": 1e-8},
    },
}


@pytest.mark.parametrize(("scale", "branches"), [(0.0, 1), (1.0, 1), (1.01, 2), (5.0, 2)])
def test_guidance_branches(scale: float, branches: int) -> None:
    assert guidance_branches(scale) == branches


@pytest.mark.parametrize(
    ("shape", "units"),
    [
        (JobShape(64, 64, 9, 4, 5.0), 64 * 64 * 9 * 4 * 2),
        (JobShape(64, 64, 9, 4, 1.0), 64 * 64 * 9 * 4),
        (JobShape(832, 480, 81, 50, 5.0), 832 * 480 * 81 * 50 * 2),
    ],
)
def test_job_work_is_units_times_seconds_per_unit(shape: JobShape, units: int) -> None:
    assert job_work(shape, FamilyModel(alpha=0.1, seconds_per_unit=1e-8)) == pytest.approx(
        units * 1e-8
    )


def test_work_grows_with_each_factor() -> None:
    model = FamilyModel(alpha=0.1, seconds_per_unit=1e-8)
    base = job_work(JobShape(64, 64, 9, 4, 5.0), model)
    assert job_work(JobShape(128, 64, 9, 4, 5.0), model) == pytest.approx(2 * base)
    assert job_work(JobShape(64, 64, 18, 4, 5.0), model) == pytest.approx(2 * base)
    assert job_work(JobShape(64, 64, 9, 8, 5.0), model) == pytest.approx(2 * base)


def test_table_lookup_falls_back_to_default() -> None:
    models = parse_service_models(TABLE)
    assert models.get("fast").alpha == 0.1 and models.get("fast").alpha_source == "measured"
    assert models.get("unknown") == models.default
    assert models.default.alpha_source == "default"


def test_service_seconds_divide_work_by_the_speedup() -> None:
    models = parse_service_models(TABLE)
    shape = JobShape(832, 480, 81, 50, 5.0)
    work = models.work("fast", shape)
    assert models.service_s("fast", shape, 1) == pytest.approx(work)
    assert models.service_s("fast", shape, 4) == pytest.approx(work / speedup(4, 0.1))
    assert models.service_s("solo", shape, 4) == pytest.approx(models.work("solo", shape))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"families": {}}, "'default' entry"),
        ({"default": {"alpha": 0.1}}, "lacks 'seconds_per_unit'"),
        ({"default": {"alpha": 1.5, "seconds_per_unit": 1.0}}, "alpha"),
        ({"default": {"alpha": 0.1, "seconds_per_unit": 0}}, "positive"),
        ({"default": TABLE["default"], "families": []}, "must be an object"),
        ({"default": TABLE["default"], "families": {"x": 3}}, "must be an object"),
    ],
)
def test_bad_tables_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_service_models(data)


def test_with_alpha_sets_a_family_and_its_source() -> None:
    data = with_alpha(TABLE, "fast", 0.07, "H200 x4, 2026-12-03")
    models = parse_service_models(data)
    assert models.get("fast").alpha == 0.07
    assert models.get("fast").alpha_source == "H200 x4, 2026-12-03"
    assert models.get("fast").seconds_per_unit == 1e-9  # kept
    assert TABLE["families"]["fast"]["alpha"] == 0.1  # the input is not changed


def test_with_alpha_adds_a_family_from_the_default() -> None:
    models = parse_service_models(with_alpha(TABLE, "new", 0.2, "measured"))
    assert models.get("new").alpha == 0.2
    assert models.get("new").seconds_per_unit == models.default.seconds_per_unit


@pytest.mark.parametrize("alpha", [-0.1, 1.2])
def test_with_alpha_refuses_an_alpha_outside_the_range(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        with_alpha(TABLE, "fast", alpha, "measured")
