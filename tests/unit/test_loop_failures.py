"""Background loops log a database outage once, not a traceback per turn."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from cinecloud.api.loops import LoopFailures


def _refused() -> OperationalError:
    """A real driver error: PostgreSQL on a port nothing listens on."""
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("a connection to port 1 succeeded")


def test_an_outage_is_one_warning_then_one_recovery(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.loops")
    failures = LoopFailures("webhook delivery", log)
    with caplog.at_level(logging.DEBUG, logger="test.loops"):
        for _ in range(5):
            failures.failed(_refused())
        failures.passed()
        failures.passed()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert "database is unavailable" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # no traceback for weather
    assert warnings[1].getMessage() == "webhook delivery: the database is back after 5 failed turns"
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 4


def test_any_other_error_keeps_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.loops")
    failures = LoopFailures("loop sweep", log)
    with caplog.at_level(logging.DEBUG, logger="test.loops"):
        for _ in range(2):
            try:
                raise ValueError("a bug")
            except ValueError as exc:
                failures.failed(exc)
        failures.passed()  # no outage to end: nothing logged
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all(r.exc_info for r in errors)
    assert len(caplog.records) == 2
