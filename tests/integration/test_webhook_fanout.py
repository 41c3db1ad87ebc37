"""Webhook fan-out (jobs.webhooks.WebhookStore.fanout) on a real database: with no
endpoint it reads no event and moves its cursor at most every IDLE_ADVANCE_S, and an
endpoint that appears later gets the events from then on, none from before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from cinecloud.jobs import AccountStore, JobStore, make_engine, migrate
from cinecloud.jobs import tables as t
from cinecloud.jobs.webhooks import IDLE_ADVANCE_S, WebhookStore
from cinecloud.testing.clock import FakeClock
from tests.jobs import new_job

pytestmark = pytest.mark.integration

GRACE_S = 5.0
MODEL = "cinecloud/tiny-wan"


@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[JobStore, AccountStore, WebhookStore, FakeClock]]:
    clock = FakeClock()
    engine = make_engine(db_url)
    migrate(engine)
    yield (
        JobStore(engine, clock=clock),
        AccountStore(engine, clock=clock),
        WebhookStore(engine, clock=clock),
        clock,
    )
    engine.dispose()


def started_job(jobs: JobStore, tenant: str) -> str:
    """A job created and leased: its ``started`` event is the newest."""
    job, _ = jobs.create_job(new_job(tenant, MODEL))
    (leased,) = jobs.lease("w1", [MODEL], ttl_s=600)
    assert leased.id == job.id
    return job.id


def cursor(hooks: WebhookStore) -> int:
    with hooks.engine.connect() as conn:
        q = select(t.webhook_cursor.c.event_id)
        return int(conn.execute(q).scalar() or 0)


def last_event(hooks: WebhookStore) -> int:
    with hooks.engine.connect() as conn:
        q = select(t.job_events.c.id).order_by(t.job_events.c.id.desc())
        return int(conn.execute(q).scalar() or 0)


def messages(hooks: WebhookStore) -> list[str]:
    with hooks.engine.connect() as conn:
        return list(conn.execute(select(t.webhook_deliveries.c.job_id)).scalars())


def test_no_endpoint_reads_nothing_and_a_later_one_gets_only_what_follows(
    stores: tuple[JobStore, AccountStore, WebhookStore, FakeClock],
) -> None:
    jobs, accounts, hooks, clock = stores
    tenant = accounts.ensure_tenant("a").id
    started_job(jobs, tenant)
    clock.advance(GRACE_S + 1)
    settled = last_event(hooks)
    started_job(jobs, tenant)  # too recent to pass over yet
    assert hooks.fanout(GRACE_S) == 0
    assert cursor(hooks) == settled  # up to the settled events, not the recent one
    clock.advance(GRACE_S + 1)
    assert hooks.fanout(GRACE_S) == 0
    assert cursor(hooks) == settled  # not again before IDLE_ADVANCE_S
    clock.advance(IDLE_ADVANCE_S)
    assert hooks.fanout(GRACE_S) == 0
    assert cursor(hooks) == last_event(hooks)

    before = started_job(jobs, tenant)  # made before the endpoint, fanned out after it
    clock.advance(1)
    hooks.create_endpoint(tenant, "https://example.test/hook", ["started"], "whsec_x")
    clock.advance(1)
    after = started_job(jobs, tenant)
    assert hooks.fanout(GRACE_S) >= 1
    assert set(messages(hooks)) == {after}, before
    (due,) = hooks.claim(10, 30.0, 3)
    assert due.job_id == after
