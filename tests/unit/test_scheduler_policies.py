"""Priority classes, deadlines, fair share, affinity and batching: tables and a fake clock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from cinecloud.scheduler import (
    Affinity,
    Candidate,
    FairShare,
    InvalidDeadline,
    InvalidPriority,
    LeaseContext,
    PlacementPolicy,
    batch_limit,
    choose,
    order,
    parse_cancel_after,
    parse_priority,
    plan,
    resolve_weights,
)
from cinecloud.testing.clock import FakeClock

T0 = 1_800_000_000.0
POLICY = PlacementPolicy(aging_s=600.0)
SHAPE = (64, 64, 9, 4, 5.0, "off")


def job(
    job_id: str,
    work: float = 10.0,
    *,
    tenant: str = "a",
    model: str = "m",
    age: float = 0.0,
    priority: int = 0,
    parallel: int | None = None,
    batch: tuple[object, ...] = SHAPE,
    mem: float = 0.0,
) -> Candidate:
    return Candidate(job_id, priority, T0 - age, work, 0.1, parallel, tenant, model, batch, mem)


# ---------------------------------------------------------------- priority classes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("high", 10),
        ("normal", 0),
        ("low", -10),
        (0, 0),
        (100, 100),
        (-100, -100),
        (7, 7),
        ("5", 5),
        ("-3", -3),
        ("+2", 2),
    ],
)
def test_priority_classes_and_numbers(value: object, expected: int) -> None:
    assert parse_priority(value) == expected


@pytest.mark.parametrize(
    "value", ["HIGH", "urgent", "", "1.5", 1.5, True, False, None, [1], {"p": 1}, 101, -101, "999"]
)
def test_bad_priority(value: object) -> None:
    with pytest.raises(InvalidPriority, match="priority"):
        parse_priority(value)


# ---------------------------------------------------------------- Cancel-After


def http_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", T0 + 120),
        (" 1 ", T0 + 1),
        ("3600", T0 + 3600),
        (http_date(T0 + 90), T0 + 90),
        ("Fri, 15 Jan 2027 09:30:00 GMT", T0 + 5400),  # T0 is 08:00:00 that day
    ],
)
def test_cancel_after(value: str, expected: float) -> None:
    assert parse_cancel_after(value, T0, max_s=30 * 86400) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("0", "at least 1"),
        ("-5", "whole seconds"),
        ("1.5", "whole seconds"),
        ("soon", "whole seconds"),
        ("", "whole seconds"),
        ("Fri, 15 Jan 2027 09:30:00 -0000", "whole seconds"),  # no zone: which instant?
        (http_date(T0 - 1), "in the past"),
        (http_date(T0), "in the past"),
        ("86401", "at most 86400"),
        (http_date(T0 + 86_401), "at most 86400"),
    ],
)
def test_bad_cancel_after(value: str, why: str) -> None:
    with pytest.raises(InvalidDeadline, match=why):
        parse_cancel_after(value, T0, max_s=86_400)


# ---------------------------------------------------------------- fair share


def test_resolve_weights_by_id_or_name() -> None:
    tenants = {"ten_1": "acme", "ten_2": "globex", "ten_3": "initech"}
    configured = {"acme": 3.0, "ten_2": 2.0, "globex": 9.0, "nobody": 5.0}
    assert resolve_weights(configured, tenants) == {"ten_1": 3.0, "ten_2": 2.0}


@pytest.mark.parametrize("weights", [{"a": 0.0}, {"a": -1.0}])
def test_weights_must_be_positive(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        FairShare(weights=weights)


@pytest.mark.parametrize(
    ("usage", "weights", "expected"),
    [
        ({}, {}, "a1"),  # no usage: size then age decide (a1 is older)
        ({"a": 50.0}, {}, "b1"),  # a used more: b goes first
        ({"a": 50.0, "b": 20.0}, {"a": 3.0}, "a1"),  # 50/3 < 20/1
        ({"a": 50.0, "b": 20.0}, {"a": 2.0}, "b1"),  # 25 > 20
        ({"b": 1e9}, {}, "a1"),
    ],
)
def test_the_smallest_share_goes_first(
    usage: dict[str, float], weights: dict[str, float], expected: str
) -> None:
    jobs = [job("a1", tenant="a", age=5), job("b1", tenant="b", age=1)]
    ctx = LeaseContext(fair=FairShare(usage=usage, weights=weights))
    got = choose(1, jobs, T0, POLICY, ctx)
    assert got is not None and got.job_id == expected


def test_priority_and_aging_come_before_fair_share() -> None:
    fair = FairShare(usage={"a": 1000.0})
    urgent = [job("a-high", tenant="a", priority=10), job("b", tenant="b")]
    assert [c.job_id for c in order(1, urgent, T0, POLICY, LeaseContext(fair=fair))] == [
        "a-high",
        "b",
    ]
    aged = [job("a-old", tenant="a", age=600), job("b", tenant="b")]
    assert choose(1, aged, T0, POLICY, LeaseContext(fair=fair)).job_id == "a-old"  # type: ignore[union-attr]


def test_one_lease_of_several_alternates_tenants_by_their_weights() -> None:
    jobs = [job(f"a{i}", tenant="a", age=100 - i) for i in range(6)]
    jobs += [job(f"b{i}", tenant="b", age=50 - i) for i in range(6)]
    ctx = LeaseContext(fair=FairShare(weights={"a": 2.0}))
    got = [c.tenant_id for c in order(1, jobs, T0, POLICY, ctx)][:9]
    assert Counter(got) == {"a": 6, "b": 3}


def heads(queued: list[Candidate], now: float, per_tenant: int = 4) -> list[Candidate]:
    """What the store reads for a lease: the oldest queued jobs, and each tenant's head."""
    ready = sorted((c for c in queued if c.created_at <= now), key=lambda c: c.created_at)
    by_tenant: dict[str, list[Candidate]] = {}
    for c in ready:
        by_tenant.setdefault(c.tenant_id, []).append(c)
    picked = {c.job_id: c for c in ready[:8]}
    for jobs in by_tenant.values():
        picked.update((c.job_id, c) for c in jobs[:per_tenant])
    return list(picked.values())


def simulate(
    weights: dict[str, float],
    arrivals: dict[str, list[float]],
    *,
    fair: bool,
    until: float,
    policy: PlacementPolicy = POLICY,
) -> dict[str, list[float]]:
    """One narrow worker serving jobs of 10 s of work; returns each tenant's start times.

    Usage is what the store reports: the work of jobs started in the last window.
    """
    clock = FakeClock(T0)
    window = 300.0
    queued = [
        job(f"{t}{i}", tenant=t, age=T0 - at)
        for t, ats in arrivals.items()
        for i, at in enumerate(ats)
    ]
    started: dict[str, list[float]] = {t: [] for t in arrivals}
    while clock() < until:
        now = clock()
        usage = {t: 10.0 * sum(1 for s in ss if s >= now - window) for t, ss in started.items()}
        ctx = LeaseContext(fair=FairShare(usage=usage if fair else {}, weights=weights))
        best = choose(1, heads(queued, now), now, policy, ctx)
        if best is None:
            clock.advance(1.0)
            continue
        queued.remove(best)
        started[best.tenant_id].append(now)
        clock.advance(10.0)  # the job runs
    return started


def test_a_flood_does_not_starve_a_light_tenant() -> None:
    arrivals = {"flood": [T0] * 200, "light": [T0 + 50.0 + 100.0 * k for k in range(5)]}
    fair = simulate({}, arrivals, fair=True, until=T0 + 600)
    # each light job starts at most one job (10 s) after it arrives
    assert [s - a for s, a in zip(fair["light"], arrivals["light"], strict=True)] == [
        pytest.approx(d, abs=10.0) for d in [5.0] * 5
    ]
    # without fair share the light tenant waits behind the older flood until aging
    unfair = simulate({}, arrivals, fair=False, until=T0 + 600)
    assert unfair["light"] == [] or unfair["light"][0] - arrivals["light"][0] >= 500.0


@pytest.mark.parametrize(("w_a", "w_b"), [(1.0, 1.0), (3.0, 1.0), (1.0, 4.0)])
def test_busy_tenants_share_the_worker_by_weight(w_a: float, w_b: float) -> None:
    arrivals = {"a": [T0] * 150, "b": [T0] * 150}
    never_aged = PlacementPolicy(aging_s=1e9)  # aging would serve the oldest, not the share
    started = simulate(
        {"a": w_a, "b": w_b}, arrivals, fair=True, until=T0 + 1200, policy=never_aged
    )
    share_a = len(started["a"]) / (len(started["a"]) + len(started["b"]))
    assert share_a == pytest.approx(w_a / (w_a + w_b), abs=0.04)


# ---------------------------------------------------------------- model affinity


@pytest.mark.parametrize(
    ("loaded", "idle_warm", "jobs", "expected"),
    [
        # a worker that says nothing holds everything: size decides
        (None, set(), [job("x", 20, model="x"), job("y", 10, model="y")], "y"),
        # within one tenant the warm job goes first, though bigger: no load, no thrash
        ({"x"}, set(), [job("x", 20, model="x"), job("y", 10, model="y")], "x"),
        ({"x"}, set(), [job("x", 100, model="x"), job("y", 10, model="y")], "x"),
        # a cold job is left to an idle worker that holds its model
        ({"x"}, {("y", 1)}, [job("x", 100, model="x"), job("y", 10, model="y")], "x"),
        ({"x"}, {("y", 1)}, [job("y", 10, model="y")], None),
        # ... of a width it may run on
        ({"x"}, {("y", 2)}, [job("y", 10, model="y", parallel=1)], "y"),
        ({"x"}, {("y", 2)}, [job("y", 10, model="y", parallel=2)], None),
        # ... but not once it has aged
        ({"x"}, {("y", 1)}, [job("y", 10, model="y", age=600)], "y"),
        # among cold jobs the cheaper load goes first
        (set(), set(), [job("x", 10, model="x"), job("z", 10, model="z")], "z"),
    ],
)
def test_affinity(
    loaded: set[str] | None,
    idle_warm: set[tuple[str, int]],
    jobs: list[Candidate],
    expected: str | None,
) -> None:
    aff = Affinity(
        loaded=None if loaded is None else frozenset(loaded),
        load_s={"x": 40.0, "y": 40.0, "z": 5.0},
        idle_warm=frozenset(idle_warm),
    )
    got = choose(1, jobs, T0, POLICY, LeaseContext(affinity=aff))
    assert (got.job_id if got else None) == expected


def test_a_cold_load_counts_against_its_tenant_share() -> None:
    aff = Affinity(loaded=frozenset({"x"}), default_load_s=30.0)
    jobs = [job("a-warm", tenant="a", model="x"), job("b-cold", tenant="b", model="y")]
    for usage_a, expected in ((20.0, "a-warm"), (31.0, "b-cold")):
        ctx = LeaseContext(fair=FairShare(usage={"a": usage_a}), affinity=aff)
        assert choose(1, jobs, T0, POLICY, ctx).job_id == expected  # type: ignore[union-attr]


def test_a_model_loaded_for_one_job_is_warm_for_the_next() -> None:
    aff = Affinity(loaded=frozenset(), default_load_s=30.0)
    jobs = [job("y1", 10, model="y", age=2), job("z1", 12, model="z"), job("y2", 13, model="y")]
    # y1 loads y, so y2 (warm now, 13 s) beats z1 (12 s plus a load)
    got = [c.job_id for c in order(1, jobs, T0, POLICY, LeaseContext(affinity=aff))]
    assert got == ["y1", "y2", "z1"]


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize(
    ("max_jobs", "free", "per_job", "expected"),
    [
        (1, None, 0.0, 1),
        (4, None, 1e9, 4),
        (4, 10e9, 0.0, 4),  # no memory estimate: max_jobs alone
        (4, 10e9, 3e9, 3),
        (4, 10e9, 6e9, 1),
        (4, 1e9, 6e9, 1),  # the first job always goes
        (8, 100e9, 1e9, 8),
    ],
)
def test_batch_limit(max_jobs: int, free: float | None, per_job: float, expected: int) -> None:
    assert batch_limit(max_jobs, free, per_job) == expected


def test_batch_limit_refuses_nothing_asked() -> None:
    with pytest.raises(ValueError, match="max_jobs"):
        batch_limit(0, None, 0.0)


OTHER = (64, 64, 17, 4, 5.0, "off")


@pytest.mark.parametrize(
    ("jobs", "max_jobs", "free", "expected"),
    [
        ([job("a"), job("b"), job("c")], 1, None, ["a"]),
        ([job("a"), job("b"), job("c")], 2, None, ["a", "b"]),
        # another shape or model does not batch, however good its place
        ([job("a"), job("o", batch=OTHER), job("m", model="n"), job("b")], 4, None, ["a", "b"]),
        ([job("o", 5, batch=OTHER), job("a"), job("b")], 4, None, ["o"]),
        # memory bounds the batch
        ([job(i, mem=4e9) for i in "abcd"], 4, 9e9, ["a", "b"]),
        ([job(i, mem=4e9) for i in "abcd"], 4, 1e9, ["a"]),
        ([], 4, None, []),
    ],
)
def test_plan_batches(
    jobs: list[Candidate], max_jobs: int, free: float | None, expected: list[str]
) -> None:
    got = plan(1, jobs, T0, POLICY, max_jobs=max_jobs, free_bytes=free)
    assert sorted(c.job_id for c in got) == sorted(expected)
    assert not got or got[0].job_id == expected[0]


def test_plan_batches_behind_the_best_job_in_policy_order() -> None:
    jobs = [
        job("big-other", 90, batch=OTHER, age=3),
        job("s1", 10, age=2),
        job("s2", 10, age=1),
        job("s3-low", 10, priority=-10),
    ]
    got = plan(1, jobs, T0, POLICY, max_jobs=3)
    assert [c.job_id for c in got] == ["s1", "s2", "s3-low"]
    assert [c.job_id for c in plan(2, jobs, T0, POLICY, max_jobs=3)] == ["big-other"]


def test_a_batch_is_fair_between_tenants() -> None:
    jobs = [job(f"a{i}", tenant="a", age=10 - i) for i in range(4)] + [
        job(f"b{i}", tenant="b", age=5 - i) for i in range(4)
    ]
    got = plan(1, jobs, T0, POLICY, max_jobs=4)
    assert Counter(c.tenant_id for c in got) == {"a": 2, "b": 2}


# ---------------------------------------------------------------- the engine's batch key


@pytest.mark.parametrize(
    "params",
    [
        {"width": 64, "height": 64, "num_frames": 9, "steps": 4, "guidance_scale": 5.0},
        {
            "width": 832,
            "height": 480,
            "num_frames": 81,
            "steps": 50,
            "guidance_scale": 1.0,
            "step_cache": "first_block",
        },
        {
            "width": 64,
            "height": 64,
            "num_frames": 9,
            "steps": 4,
            "guidance_scale": 3.0,
            "input_image": "t/a/in/abc.png",
        },
    ],
)
def test_the_lease_batches_what_the_engine_batches(params: dict[str, object]) -> None:
    """The scheduler's key of a stored job equals the engine's key of its run."""
    from cinecloud.engine.batch import batch_key as engine_key
    from cinecloud.engine.specs import GenerationParams
    from cinecloud.jobs import JobRecord
    from cinecloud.scheduler import batch_key

    stored = {"negative_prompt": "", "fps": 8, **params}
    job = JobRecord(
        id="video_1",
        tenant_id="t",
        status="queued",
        model="m",
        prompt="p",
        params=stored,
        seconds="1",
        size=f"{params['width']}x{params['height']}",
        seed=1,
        priority=0,
        created_at=T0,
        attempts=0,
        max_attempts=3,
        progress=0,
    )
    run = {k: v for k, v in stored.items() if k != "input_image"}
    image = "/work/in.png" if "input_image" in stored else None
    engine = GenerationParams(prompt="p", seed=1, image_path=image, **run)  # type: ignore[arg-type]
    assert batch_key(job) == engine_key(engine)
