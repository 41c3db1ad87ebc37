"""The speed-up model S(N) = N / (1 + alpha (N - 1)) and the fit of alpha."""

from __future__ import annotations

import pytest

from cinecloud.scheduler import (
    AlphaFitError,
    Measurement,
    fit_alpha,
    parse_measurement,
    service_time,
    speedup,
)


@pytest.mark.parametrize(
    ("n", "alpha", "expected"),
    [
        (1, 0.0, 1.0),
        (1, 0.7, 1.0),
        (2, 0.0, 2.0),
        (8, 0.0, 8.0),
        (4, 1.0, 1.0),
        (2, 0.5, 2 / 1.5),
        (4, 0.1, 4 / 1.3),
        (8, 0.15, 8 / 2.05),
    ],
)
def test_speedup_table(n: int, alpha: float, expected: float) -> None:
    assert speedup(n, alpha) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "alpha"), [(0, 0.1), (-2, 0.1), (2, -0.01), (2, 1.5)])
def test_speedup_refuses_what_it_cannot_mean(n: int, alpha: float) -> None:
    with pytest.raises(ValueError):
        speedup(n, alpha)


@pytest.mark.parametrize(
    ("work", "n", "alpha", "expected"),
    [(100.0, 1, 0.2, 100.0), (100.0, 2, 0.0, 50.0), (120.0, 4, 0.2, 120.0 * 1.6 / 4)],
)
def test_service_time(work: float, n: int, alpha: float, expected: float) -> None:
    assert service_time(work, n, alpha) == pytest.approx(expected)


def test_service_time_refuses_negative_work() -> None:
    with pytest.raises(ValueError, match="negative"):
        service_time(-1.0, 2, 0.1)


def _curve(t1: float, alpha: float, widths: tuple[int, ...]) -> list[Measurement]:
    return [Measurement(n, t1 / speedup(n, alpha)) for n in widths]


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("widths", [(1, 2), (1, 2, 4), (1, 2, 4, 8), (1, 1, 8)])
def test_fit_recovers_alpha_of_an_exact_curve(alpha: float, widths: tuple[int, ...]) -> None:
    assert fit_alpha(_curve(60.0, alpha, widths)) == pytest.approx(alpha, abs=1e-9)


def test_fit_is_least_squares_over_noisy_points() -> None:
    # N T(N) / T1 - 1 = 0.22 at N=2 and 0.54 at N=4: sum(xy)/sum(xx) = (0.22+1.62)/10
    points = [Measurement(1, 100.0), Measurement(2, 61.0), Measurement(4, 38.5)]
    assert fit_alpha(points) == pytest.approx((1 * 0.22 + 3 * 0.54) / (1 + 9))


def test_fit_averages_repeated_one_rank_timings() -> None:
    points = [Measurement(1, 90.0), Measurement(1, 110.0), Measurement(2, 60.0)]
    assert fit_alpha(points) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([], "1 rank"),
        ([Measurement(2, 10.0), Measurement(4, 6.0)], "1 rank"),
        ([Measurement(1, 10.0)], "more than 1 rank"),
        ([Measurement(1, 10.0), Measurement(1, 11.0)], "more than 1 rank"),
        ([Measurement(1, 10.0), Measurement(2, 0.0)], "seconds > 0"),
        ([Measurement(0, 10.0), Measurement(2, 6.0)], "ranks >= 1"),
        # faster than linear: 4 ranks in a fifth of the time
        ([Measurement(1, 100.0), Measurement(4, 20.0)], "outside"),
        # slower on 2 ranks than on 1
        ([Measurement(1, 100.0), Measurement(2, 130.0)], "outside"),
    ],
)
def test_fit_refuses_too_few_or_inconsistent_points(
    points: list[Measurement], message: str
) -> None:
    with pytest.raises(AlphaFitError, match=message):
        fit_alpha(points)


def test_fit_clips_noise_just_outside_the_range() -> None:
    # a hair faster than linear: within the tolerance, so a perfect split
    assert fit_alpha([Measurement(1, 100.0), Measurement(2, 49.5)]) == 0.0


@pytest.mark.parametrize(
    ("text", "expected"), [("1=49.6", Measurement(1, 49.6)), ("8=7", Measurement(8, 7.0))]
)
def test_parse_measurement(text: str, expected: Measurement) -> None:
    assert parse_measurement(text) == expected


@pytest.mark.parametrize("text", ["2", "2:27.1", "two=3", "2=fast", ""])
def test_parse_measurement_refuses_other_forms(text: str) -> None:
    with pytest.raises(AlphaFitError, match="RANKS=SECONDS"):
        parse_measurement(text)
