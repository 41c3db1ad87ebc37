"""Which database errors answer 503 ``database_unavailable`` (retry) rather than 500."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from cinecloud.api.errors import database_unavailable

pytestmark = pytest.mark.unit


def wrapped(orig: Exception, invalidated: bool = False) -> OperationalError:
    return OperationalError("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (wrapped(psycopg.OperationalError("connection failed: Connection refused")), True),
        (wrapped(psycopg.errors.AdminShutdown("terminating connection")), True),
        (wrapped(sqlite3.OperationalError("database is locked")), True),
        (wrapped(sqlite3.OperationalError("disk I/O error"), invalidated=True), True),
        (wrapped(sqlite3.OperationalError("no such table: jobs")), False),
    ],
)
def test_database_unavailable(error: OperationalError, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable
