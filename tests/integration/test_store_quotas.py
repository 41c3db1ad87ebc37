"""Quotas counted in the database: what a tenant holds, and admission that never
overshoots when many requests (or replicas) create at once; SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from cinecloud.jobs import AccountStore, Billing, JobStore, NewJob, make_engine, migrate
from cinecloud.jobs import tables as t
from cinecloud.jobs.store import Admit
from cinecloud.jobs.usage import TenantUsage, UsageLedger
from cinecloud.testing.clock import FakeClock
from tests.jobs import new_job

MODEL = "cinecloud/shapes-t2v"
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


class Full(Exception):
    pass


def cap(n: int) -> Admit:
    def admit(usage: TenantUsage) -> None:
        if usage.active_jobs >= n:
            raise Full(usage.active_jobs)

    return admit


def new(tenant: str, key: str | None = None) -> NewJob:
    return new_job(
        tenant, MODEL, seconds="2", idempotency_key=key, request_hash="h" if key else None
    )


@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[JobStore, AccountStore, FakeClock]]:
    clock = FakeClock(T0)
    engine = make_engine(db_url)
    migrate(engine)
    yield JobStore(engine, clock=clock), AccountStore(engine, clock=clock), clock
    engine.dispose()


def test_what_a_tenant_holds(stores: tuple[JobStore, AccountStore, FakeClock]) -> None:
    jobs, accounts, clock = stores
    a, b = accounts.ensure_tenant("a").id, accounts.ensure_tenant("b").id
    ids = [jobs.create_job(new(a))[0].id for _ in range(5)]
    run = jobs.lease("w", [MODEL], ttl_s=30, max_jobs=3)
    jobs.create_job(new(b))
    jobs.progress(run[0].id, run[0].lease_id or "", [{"eta_s": 30.0}], ttl_s=30)
    jobs.progress(run[1].id, run[1].lease_id or "", [{"eta_s": 12.5}], ttl_s=30)
    bill = Billing(gpu_type="H100", gpu_count=2, spot=False, cost_usd=1.0)
    jobs.complete(
        run[2].id, run[2].lease_id or "", artifacts=(), timings={}, gpu_seconds=40.0,
        engine={}, billing=bill,
    )  # fmt: skip
    queued = [i for i in ids if i not in {j.id for j in run}]
    jobs.cancel(queued[0], a)
    ledger = UsageLedger(jobs.engine)
    held = ledger.holding(a, clock())
    # one queued and two running; 40 s on 2 GPUs billed today
    assert held == TenantUsage(3, 12.5, 80.0, "2027-01-15", T0)
    assert ledger.holding(b, clock()) == TenantUsage(1, None, 0.0, "2027-01-15", T0)
    clock.advance(16 * 3600)  # the next UTC day: nothing billed yet
    assert ledger.holding(a, clock()).gpu_seconds == 0.0


def test_admission_never_overshoots(stores: tuple[JobStore, AccountStore, FakeClock]) -> None:
    """12 threads create at once against a cap of 3: exactly 3 jobs exist after."""
    jobs, accounts, _ = stores
    a = accounts.ensure_tenant("a").id
    start = threading.Barrier(12)
    made: list[str] = []
    full: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        start.wait()
        try:
            job, _ = jobs.create_job(new(a), cap(3))
        except Full as exc:
            with lock:
                full.append(exc.args[0])
            return
        with lock:
            made.append(job.id)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(made) == 3 and full == [3] * 9
    assert UsageLedger(jobs.engine).holding(a, T0).active_jobs == 3


def test_twins_with_one_idempotency_key_get_one_job(
    stores: tuple[JobStore, AccountStore, FakeClock],
) -> None:
    """At one place left, 6 copies of one request (one Idempotency-Key) sent at once all
    get the same job: none is refused for the place its twin took."""
    jobs, accounts, _ = stores
    a = accounts.ensure_tenant("a").id
    jobs.create_job(new(a))
    start = threading.Barrier(6)
    got: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def one() -> None:
        start.wait()
        try:
            job, created = jobs.create_job(new(a, key="same"), cap(2))
            got.append((job.id, created))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len({job_id for job_id, _ in got}) == 1
    assert sorted(created for _, created in got) == [False] * 5 + [True]
    # and once full, the repeat still returns it
    job, created = jobs.create_job(new(a, key="same"), cap(2))
    assert (job.id, created) == (got[0][0], False)
    with pytest.raises(Full):
        jobs.create_job(new(a, key="other"), cap(2))


def test_refused_creation_leaves_nothing(stores: tuple[JobStore, AccountStore, FakeClock]) -> None:
    jobs, accounts, _ = stores
    a = accounts.ensure_tenant("a").id
    with pytest.raises(Full):
        jobs.create_job(new(a), cap(0))
    assert jobs.list_jobs(a, after=None, limit=10, order="asc") == ([], False)
    with jobs.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.job_events)).scalar_one() == 0


def test_migration_counts_the_days_already_billed(db_url: str) -> None:
    """Upgrading a database with completed jobs fills ``tenant_days`` from them."""
    from alembic import command

    from cinecloud.jobs.db import alembic_config

    engine = make_engine(db_url)
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
    rows = [
        ("a", "completed", "2027-01-15", 10.0, 2),
        ("a", "completed", "2027-01-15", 5.0, None),
        ("a", "completed", "2027-01-16", 1.0, 1),
        ("a", "failed", None, 99.0, 1),
        ("b", "completed", "2027-01-15", 3.0, 1),
    ]
    with engine.begin() as conn:
        for tenant in ("a", "b"):
            conn.execute(t.tenants.insert().values(id=tenant, name=tenant, created_at=T0))
        for i, (tenant, status, day, gpu_s, gpus) in enumerate(rows):
            conn.execute(
                t.jobs.insert().values(
                    id=f"video_{i}", tenant_id=tenant, status=status, model=MODEL, prompt="p",
                    params={}, seconds="1", size="64x64", seed=1, created_at=T0,
                    max_attempts=3, billed_day=day, gpu_seconds=gpu_s, gpu_count=gpus,
                )
            )  # fmt: skip
    migrate(engine)
    d = t.tenant_days.c
    with engine.connect() as conn:
        got = conn.execute(
            select(d.tenant_id, d.day, d.gpu_seconds, d.jobs).order_by(d.tenant_id, d.day)
        )
        assert [tuple(r) for r in got] == [
            ("a", "2027-01-15", 25.0, 2),
            ("a", "2027-01-16", 1.0, 1),
            ("b", "2027-01-15", 3.0, 1),
        ]
    engine.dispose()
