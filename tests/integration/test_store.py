"""The job store on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import inspect, text

from cinecloud.jobs import (
    AccountStore,
    ArtifactRecord,
    InvalidTransition,
    JobRecord,
    JobStore,
    LeaseLost,
    NewJob,
    NotFound,
    ReusedIdempotencyKey,
    make_engine,
    migrate,
)
from cinecloud.jobs.tables import metadata
from cinecloud.scheduler import PlacementPolicy, lease_order, load_service_models
from cinecloud.testing.clock import FakeClock
from tests.jobs import new_job

MODEL = "cinecloud/tiny-wan"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stores(db_url: str, clock: FakeClock) -> Iterator[tuple[JobStore, AccountStore]]:
    engine = make_engine(db_url)
    migrate(engine)
    yield JobStore(engine, clock=clock, max_attempts=2), AccountStore(engine, clock=clock)
    engine.dispose()


def _new(tenant: str, **kw: object) -> NewJob:
    return new_job(tenant, MODEL, **kw)


def test_migration_matches_metadata(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # idempotent
    names = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= names
    cols = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert cols == {c.name for c in metadata.tables["jobs"].columns}
    engine.dispose()


def test_keys_are_hashed_and_authenticate(stores: tuple[JobStore, AccountStore]) -> None:
    _, accounts = stores
    tenant = accounts.ensure_tenant("acme")
    assert accounts.ensure_tenant("acme").id == tenant.id
    plaintext, rec = accounts.create_key(tenant.id, admin=True)
    got = accounts.authenticate(plaintext)
    assert got is not None and got.tenant_id == tenant.id and got.is_admin
    assert accounts.authenticate(plaintext + "x") is None
    assert accounts.revoke_key(rec.id)
    assert accounts.authenticate(plaintext) is None


def test_lease_complete_and_events(stores: tuple[JobStore, AccountStore], clock: FakeClock) -> None:
    jobs, accounts = stores
    tenant = accounts.ensure_tenant("a").id
    job, created = jobs.create_job(_new(tenant))
    assert created and job.status == "queued"
    assert jobs.queue_position(job) == 0
    clock.advance(2)
    (leased,) = jobs.lease("w1", [MODEL], ttl_s=10)
    assert leased.id == job.id and leased.status == "in_progress" and leased.attempts == 1
    assert jobs.lease("w2", [MODEL], ttl_s=10) == []
    jobs.progress(
        job.id,
        leased.lease_id or "",
        [{"type": "progress", "stage": "denoise", "step": 1, "total_steps": 2, "progress": 50}],
        10,
    )
    art = ArtifactRecord(job.id, "video.mp4", "t/x/v/y/video.mp4", "0" * 64, 10, "video/mp4")
    clock.advance(3)
    done = jobs.complete(
        job.id,
        leased.lease_id or "",
        artifacts=[art],
        timings={"denoise": 1.0},
        gpu_seconds=1.0,
        engine={},
    )
    assert done.status == "completed" and done.progress == 100
    assert done.timings is not None
    assert done.timings["queue_wait"] == pytest.approx(2) and done.timings[
        "total"
    ] == pytest.approx(5)
    assert [a.name for a in done.artifacts] == ["video.mp4"]
    # a stage timed after completion (the edge pre-warm) joins the others
    jobs.add_timing(job.id, "cdn_warm", 0.25)
    timings = jobs.get_job(job.id).timings or {}
    assert timings["cdn_warm"] == 0.25 and timings["denoise"] == 1.0
    jobs.add_timing("video_missing", "cdn_warm", 1.0)  # a deleted job: nothing to do
    # a retried complete is harmless; a cancel of a finished job is refused
    assert (
        jobs.complete(
            job.id, leased.lease_id or "", artifacts=[art], timings={}, gpu_seconds=0, engine={}
        ).status
        == "completed"
    )
    with pytest.raises(InvalidTransition):
        jobs.cancel(job.id, tenant)
    types = [e.type for e in jobs.events_after(job.id, 0)]
    assert types == ["queued", "started", "progress", "completed"]
    last = jobs.events_after(job.id, 0)[1].id
    assert [e.type for e in jobs.events_after(job.id, last)] == ["progress", "completed"]


def test_expired_lease_requeues_then_fails(
    stores: tuple[JobStore, AccountStore], clock: FakeClock
) -> None:
    jobs, accounts = stores
    tenant = accounts.ensure_tenant("a").id
    job, _ = jobs.create_job(_new(tenant))
    (first,) = jobs.lease("w1", [MODEL], ttl_s=5)
    clock.advance(6)
    assert jobs.expire_leases() == [job.id]
    assert jobs.get_job(job.id).status == "queued"
    # the dead worker's late completion is refused
    with pytest.raises(LeaseLost):
        jobs.complete(
            job.id, first.lease_id or "", artifacts=[], timings={}, gpu_seconds=0, engine={}
        )
    (second,) = jobs.lease("w2", [MODEL], ttl_s=5)
    assert second.attempts == 2
    clock.advance(6)
    jobs.expire_leases()
    final = jobs.get_job(job.id)
    assert final.status == "failed" and final.error_code == "lease_expired"
    assert "2 attempts" in (final.error_message or "")


def test_heartbeat_extends_lease(stores: tuple[JobStore, AccountStore], clock: FakeClock) -> None:
    jobs, accounts = stores
    tenant = accounts.ensure_tenant("a").id
    job, _ = jobs.create_job(_new(tenant))
    (leased,) = jobs.lease("w1", [MODEL], ttl_s=5)
    clock.advance(4)
    assert jobs.extend_leases([(job.id, leased.lease_id or "")], 5) == []
    clock.advance(4)
    assert jobs.expire_leases() == []
    assert jobs.extend_leases([(job.id, "lse_other")], 5) == [job.id]


def test_one_heartbeat_renews_every_held_lease_and_names_the_lost(
    stores: tuple[JobStore, AccountStore], clock: FakeClock
) -> None:
    jobs, accounts = stores
    tenant = accounts.ensure_tenant("a").id
    created = [jobs.create_job(_new(tenant))[0] for _ in range(3)]
    leased = {j.id: j.lease_id or "" for j in jobs.lease("w1", [MODEL], ttl_s=5, max_jobs=3)}
    assert set(leased) == {j.id for j in created}
    held, other, done = (j.id for j in created)
    jobs.complete(done, leased[done], artifacts=[], timings={}, gpu_seconds=0, engine={})
    clock.advance(4)
    pairs = [(held, leased[held]), (other, "lse_other"), (done, leased[done])]
    assert jobs.extend_leases(pairs, 5) == [other, done]
    clock.advance(4)  # 8 s after the lease: only the renewed one is still held
    assert jobs.expire_leases() == [other]
    assert jobs.get_job(held).status == "in_progress"


def test_priority_then_age(stores: tuple[JobStore, AccountStore], clock: FakeClock) -> None:
    jobs, accounts = stores
    tenant = accounts.ensure_tenant("a").id
    low, _ = jobs.create_job(_new(tenant))
    clock.advance(1)
    high, _ = jobs.create_job(_new(tenant, priority=5))
    clock.advance(1)
    low2, _ = jobs.create_job(_new(tenant))
    assert jobs.queue_position(jobs.get_job(low2.id)) == 2
    order = [jobs.lease("w", [MODEL], ttl_s=5)[0].id for _ in range(3)]
    assert order == [high.id, low.id, low2.id]
    assert jobs.lease("w", ["other/model"], ttl_s=5) == []


def test_idempotency_and_tenants(stores: tuple[JobStore, AccountStore]) -> None:
    jobs, accounts = stores
    a = accounts.ensure_tenant("a").id
    b = accounts.ensure_tenant("b").id
    j1, c1 = jobs.create_job(_new(a, idempotency_key="k1", request_hash="h1"))
    j2, c2 = jobs.create_job(_new(a, idempotency_key="k1", request_hash="h1"))
    assert c1 and not c2 and j1.id == j2.id
    with pytest.raises(ReusedIdempotencyKey):
        jobs.create_job(_new(a, idempotency_key="k1", request_hash="h2"))
    j3, c3 = jobs.create_job(_new(b, idempotency_key="k1", request_hash="h1"))
    assert c3 and j3.id != j1.id
    with pytest.raises(NotFound):
        jobs.get_job(j1.id, b)
    listed, more = jobs.list_jobs(a, after=None, limit=10, order="desc")
    assert [j.id for j in listed] == [j1.id] and not more


def test_cancel_and_delete(stores: tuple[JobStore, AccountStore]) -> None:
    jobs, accounts = stores
    a = accounts.ensure_tenant("a").id
    job, _ = jobs.create_job(_new(a))
    (leased,) = jobs.lease("w", [MODEL], ttl_s=5)
    canceled = jobs.cancel(job.id, a)
    assert canceled.status == "canceled"
    with pytest.raises(LeaseLost):
        jobs.progress(job.id, leased.lease_id or "", [], 5)
    assert jobs.extend_leases([(job.id, leased.lease_id or "")], 5) == [job.id]
    jobs.delete_job(job.id, a)
    with pytest.raises(NotFound):
        jobs.get_job(job.id, a)


def test_pagination(stores: tuple[JobStore, AccountStore], clock: FakeClock) -> None:
    jobs, accounts = stores
    a = accounts.ensure_tenant("a").id
    ids = []
    for _ in range(5):
        ids.append(jobs.create_job(_new(a))[0].id)
        clock.advance(1)
    page1, more1 = jobs.list_jobs(a, after=None, limit=2, order="asc")
    page2, more2 = jobs.list_jobs(a, after=page1[-1].id, limit=2, order="asc")
    page3, more3 = jobs.list_jobs(a, after=page2[-1].id, limit=2, order="asc")
    assert [j.id for j in page1 + page2 + page3] == ids
    assert (more1, more2, more3) == (True, True, False)
    desc, _ = jobs.list_jobs(a, after=None, limit=10, order="desc")
    assert [j.id for j in desc] == ids[::-1]


def test_concurrent_leases_never_double_claim(db_url: str) -> None:
    """Four threads lease from one queue at once: every job goes to exactly one."""
    import time

    engine = make_engine(db_url)
    migrate(engine)
    jobs = JobStore(engine, clock=time.time)
    tenant = AccountStore(engine, clock=time.time).ensure_tenant("a").id
    created = {jobs.create_job(_new(tenant))[0].id for _ in range(40)}
    got: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            leased = jobs.lease(name, [MODEL], ttl_s=30)
            if not leased:
                return
            with lock:
                got.extend(j.id for j in leased)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    engine.dispose()
    assert sorted(got) == sorted(created)


def test_lease_keeps_a_requested_degree_to_its_width(
    stores: tuple[JobStore, AccountStore], clock: FakeClock
) -> None:
    jobs, accounts = stores
    a = accounts.ensure_tenant("a").id
    wide, _ = jobs.create_job(_new(a, parallel=2))
    clock.advance(1)
    one, _ = jobs.create_job(_new(a, parallel=1))
    clock.advance(1)
    free, _ = jobs.create_job(_new(a))
    assert jobs.get_job(wide.id).parallel == 2 and jobs.get_job(free.id).parallel is None
    narrow = [j.id for j in jobs.lease("w1", [MODEL], ttl_s=5, max_jobs=5, width=1)]
    assert narrow == [one.id, free.id]
    assert jobs.lease("w4", [MODEL], ttl_s=5, width=4) == []
    (got,) = jobs.lease("w2", [MODEL], ttl_s=5, width=2)
    assert got.id == wide.id and got.lease_owner == "w2"


def test_lease_order_chooses_among_the_first_and_the_oldest(
    stores: tuple[JobStore, AccountStore], clock: FakeClock
) -> None:
    jobs, accounts = stores
    a = accounts.ensure_tenant("a").id
    old, _ = jobs.create_job(_new(a))
    clock.advance(1)
    urgent = []
    for _ in range(4):
        urgent.append(jobs.create_job(_new(a, priority=5))[0].id)
        clock.advance(1)
    seen: list[list[str]] = []

    def pick_old(candidates: Sequence[JobRecord], now: float) -> list[str]:
        seen.append(sorted(j.id for j in candidates))
        assert now == clock()
        return ["video_unknown", old.id, urgent[3]]

    leased = jobs.lease("w", [MODEL], ttl_s=5, max_jobs=1, order=pick_old, candidates=2)
    # two by priority and the two oldest: the old low-priority job is among them
    assert seen == [sorted([*urgent[:2], old.id])]
    assert [j.id for j in leased] == [old.id]
    two = jobs.lease("w", [MODEL], ttl_s=5, max_jobs=2, order=pick_old, candidates=8)
    assert [j.id for j in two] == [urgent[3]]  # the unknown id and the leased one drop out


def test_concurrent_placed_leases_never_double_claim(db_url: str) -> None:
    """Workers of widths 1 and 2 lease through the placement policy at once."""
    import time

    engine = make_engine(db_url)
    migrate(engine)
    jobs = JobStore(engine, clock=time.time)
    tenant = AccountStore(engine, clock=time.time).ensure_tenant("a").id
    degrees: dict[str, int | None] = {}
    for i in range(40):
        degree = (None, 1, 2)[i % 3]
        size = ("64x64", "128x128", "256x256")[i % 4 % 3]
        degrees[jobs.create_job(_new(tenant, parallel=degree, size=size))[0].id] = degree
    models = load_service_models()
    policy = PlacementPolicy(aging_s=300.0)
    got: dict[str, list[int]] = {}
    lock = threading.Lock()

    def worker(name: str, width: int) -> None:
        order = lease_order(width, policy, models, lambda _model: "wan-t2v")
        while True:
            leased = jobs.lease(name, [MODEL], ttl_s=30, width=width, order=order, candidates=8)
            if not leased:
                return
            with lock:
                for j in leased:
                    got.setdefault(j.id, []).append(width)

    widths = (1, 1, 2, 2)
    threads = [threading.Thread(target=worker, args=(f"w{i}", w)) for i, w in enumerate(widths)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    engine.dispose()
    assert sorted(got) == sorted(degrees)
    assert all(len(ws) == 1 for ws in got.values())
    assert all(degrees[j] in (None, ws[0]) for j, ws in got.items())


def test_event_ids_pass_32_bits(stores: tuple[JobStore, AccountStore]) -> None:
    """Event ids are 64-bit on both databases: a deployment's events outlive 2**31 ids."""
    jobs, accounts = stores
    tenant = accounts.ensure_tenant("big-ids")
    job, _ = jobs.create_job(_new(tenant.id))
    high = 2**31 + 10
    with jobs.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('job_events_id_seq', :v)"), {"v": high})
        else:  # SQLite continues after the largest rowid
            conn.execute(
                text(
                    "INSERT INTO job_events (id, job_id, type, data, created_at) "
                    "VALUES (:id, :job, 'note', '{}', 0)"
                ),
                {"id": high, "job": job.id},
            )
    jobs.cancel(job.id, tenant.id)  # the store's own insert takes the next id
    later = jobs.events_after(job.id, high)
    assert [e.type for e in later] == ["canceled"]
    assert later[0].id > high


def test_progress_of_several_jobs_is_recorded_together_and_lost_leases_named(
    stores: tuple[JobStore, AccountStore], clock: FakeClock
) -> None:
    jobs, accounts = stores
    tenant = accounts.ensure_tenant("a").id
    for _ in range(3):
        jobs.create_job(_new(tenant))
    held = jobs.lease("w1", [MODEL], ttl_s=10, max_jobs=3)
    assert len(held) == 3
    first, second, third = held
    jobs.cancel(third.id, tenant)  # its lease goes with it
    clock.advance(4)

    def step(n: int) -> dict[str, object]:
        return {"type": "progress", "stage": "denoise", "step": n, "total_steps": 4}

    lost = jobs.progress_many(
        [
            (first.id, first.lease_id or "", [step(1), step(2)]),
            (second.id, "not-its-lease", [step(1)]),
            (third.id, third.lease_id or "", [step(1)]),
        ],
        ttl_s=10,
    )
    assert lost == [second.id, third.id]
    recorded = [e.data.get("step") for e in jobs.events_after(first.id, 0) if e.type == "progress"]
    assert recorded == [1, 2]
    assert jobs.get_job(first.id).step == 2
    assert not [e for e in jobs.events_after(second.id, 0) if e.type == "progress"]
    # the reporting job's lease runs 10 s from now; the other's ran out 10 s after leasing
    clock.advance(7)
    assert jobs.expire_leases() == [second.id]
