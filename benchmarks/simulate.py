"""A day of a video studio's traffic against three autoscaling policies, simulated.

A discrete-event simulation in pure Python, seeded: one model pool, one job per worker
(one GPU each), first come first served. The policy under test is cinecloud's own
:func:`cinecloud.scheduler.autoscale.autoscale`, called every ``--tick`` seconds of the
simulated clock with what the control plane's loop would observe. It is compared with a
**fixed** fleet (the fewest workers that hold the peak's p95 queue wait at
``--target-wait``, by bisection; or ``--fixed N``) and a **ray-like** policy (Ray
Serve's ``ceil(ongoing / target_ongoing_requests)`` with its 30 s look-back, 30 s
upscale and 600 s downscale delays). Load: a non-homogeneous Poisson process of
``--videos`` a day, a working-day curve plus a burst peaking at ``--peak-per-min``.
Spot workers are reclaimed at ``--preempt-per-hour``; their jobs requeue after
``--lease-ttl`` and redo ``--lost-steps`` steps. Each policy runs on-demand only and as
a spot mix. docs/autoscaling.md states the defaults, their sources and the results.

    python benchmarks/simulate.py                          # the defaults
    python benchmarks/simulate.py --cold-start 150 --out r.json

Prints the assumptions and a table, and writes JSON (``--out``; default
``benchmarks/results/simulate.json``).
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import json
import math
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from cinecloud.config import AutoscaleConfig
from cinecloud.scheduler.autoscale import (
    AutoscaleContext,
    PoolMemory,
    PoolObservation,
    PoolPolicy,
    RateEstimate,
    autoscale,
    ewma_rate,
    split_capacity,
)
from cinecloud.scheduler.service import JobShape, load_service_models

DEFAULTS = AutoscaleConfig()
POOL = "wan2.1-t2v-1.3b"
# Wan2.1-T2V-1.3B, 832x480, 81 frames, 50 steps, cfg 5 on one H200 (docs/benchmarks.md).
SHAPE = JobShape(width=832, height=480, num_frames=81, steps=50, guidance_scale=5.0)


@dataclass(frozen=True)
class Params:
    seed: int = 1
    day_s: float = 86_400.0
    videos: float = 560.0
    burst_videos: float = 200.0
    peak_per_min: float = 200.0
    burst_at_h: float = 14.0
    peak_window_s: float = 300.0
    service_s: float = field(
        default_factory=lambda: load_service_models().service_s("wan-t2v", SHAPE, 1)
    )
    service_jitter: float = 0.05
    steps: int = 50
    cold_start_s: float = 45.0
    tick_s: float = 5.0
    target_wait_s: float = 60.0
    max_workers: int = 256
    price_on_demand: float = 4.00
    price_spot: float = 1.60
    preempt_per_hour: float = 0.05
    lost_steps: float = 2.5
    lease_ttl_s: float = 30.0
    # cinecloud's policy with the shipped defaults (cinecloud.config.AutoscaleConfig)
    on_demand_base: int = DEFAULTS.on_demand_base
    half_life_s: float = DEFAULTS.arrival_half_life_s
    idle_to_zero_s: float = DEFAULTS.idle_to_zero_s
    downscale_delay_s: float = DEFAULTS.downscale_delay_s
    ray_targets: tuple[float, ...] = (2.0, 1.0)


# ---------------------------------------------------------------- load


def _day_shape(t: float) -> float:
    """Relative arrival rate at ``t`` seconds after midnight: a night floor and two
    working-day humps (11:00 and 16:00)."""
    h = (t / 3600.0) % 24.0
    hump = lambda mid, w: math.exp(-((h - mid) ** 2) / (2 * w * w))  # noqa: E731
    return 0.06 + hump(11.0, 2.0) + 0.8 * hump(16.0, 2.2)


def rate_fn(p: Params) -> Callable[[float], float]:
    """Arrivals a second at ``t``: the day's curve scaled to ``videos - burst_videos``,
    plus the burst."""
    grid = [_day_shape(t) for t in range(0, int(p.day_s), 60)]
    base_scale = (p.videos - p.burst_videos) / (sum(grid) * 60.0)
    peak = p.peak_per_min / 60.0
    sigma = p.burst_videos / (peak * math.sqrt(2 * math.pi)) if p.burst_videos > 0 else 1.0
    centre = p.burst_at_h * 3600.0

    def rate(t: float) -> float:
        burst = peak * math.exp(-((t - centre) ** 2) / (2 * sigma * sigma))
        return base_scale * _day_shape(t) + (burst if p.burst_videos > 0 else 0.0)

    return rate


def arrivals(p: Params, rng: random.Random) -> list[float]:
    """Arrival times by thinning a Poisson process at the curve's maximum."""
    rate = rate_fn(p)
    top = 1.05 * max(rate(float(t)) for t in range(0, int(p.day_s), 5))
    times, t = [], 0.0
    while True:
        t += rng.expovariate(top)
        if t >= p.day_s:
            return times
        if rng.random() * top < rate(t):
            times.append(t)


# ---------------------------------------------------------------- the fleet


@dataclass
class Job:
    arrived: float
    service_s: float
    remaining_s: float
    queued_at: float
    waited_s: float = 0.0
    started_at: float | None = None
    attempt_at: float | None = None
    done_at: float | None = None
    preempted: int = 0


@dataclass
class Worker:
    id: int
    spot: bool
    launched: float
    ready_at: float
    job: Job | None = None
    stopped: float | None = None

    def ready(self, now: float) -> bool:
        return self.stopped is None and self.ready_at <= now


class Policy(Protocol):
    name: str

    def desired(self, now: float, sim: Sim) -> tuple[int, int]:
        """``(on_demand, spot)`` workers wanted at ``now``."""


@dataclass
class Sim:
    p: Params
    policy: Policy
    spot_mix: bool
    rng: random.Random
    queue: list[Job] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    active: list[Worker] = field(default_factory=list)
    limbo: int = 0  # jobs of reclaimed workers, waiting for their lease to expire
    jobs: list[Job] = field(default_factory=list)
    events: list[tuple[float, int, str, Any]] = field(default_factory=list)
    seq: int = 0
    arrived_since_tick: int = 0
    preemptions: int = 0
    lost_gpu_s: float = 0.0
    peak_workers: int = 0
    end: float | None = None  # the last tick: the day is over and every job is done

    def push(self, t: float, kind: str, data: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, data))

    def live(self) -> list[Worker]:
        return [w for w in self.active if w.stopped is None]

    def in_flight(self) -> int:
        return sum(1 for w in self.live() if w.job is not None)

    # ------------------------------------------------------------ workers

    def launch(self, now: float, spot: bool) -> None:
        w = Worker(len(self.workers), spot, now, now + self.p.cold_start_s)
        self.workers.append(w)
        self.active.append(w)
        self.push(w.ready_at, "ready", w)
        if spot and self.p.preempt_per_hour > 0:
            self.push(now + self.rng.expovariate(self.p.preempt_per_hour / 3600), "reclaim", w)

    def stop_idle(self, now: float, spot: bool, n: int) -> None:
        """Stop up to ``n`` workers of a kind that hold no job: starting ones first."""
        idle = [w for w in self.live() if w.spot == spot and w.job is None]
        idle.sort(key=lambda w: (w.ready_at <= now, -w.launched))
        for w in idle[:n]:
            w.stopped = now

    def apply(self, now: float, on_demand: int, spot: int) -> None:
        self.active = self.live()
        for want, is_spot in ((on_demand, False), (spot, True)):
            have = sum(1 for w in self.live() if w.spot == is_spot)
            for _ in range(want - have):
                self.launch(now, is_spot)
            if have > want:
                self.stop_idle(now, is_spot, have - want)
        self.peak_workers = max(self.peak_workers, len(self.live()))

    def dispatch(self, now: float) -> None:
        for w in self.live():
            if not self.queue:
                return
            if w.job is None and w.ready(now):
                job = self.queue.pop(0)
                job.waited_s += now - job.queued_at
                job.started_at = job.started_at if job.started_at is not None else now
                job.attempt_at = now
                w.job = job
                self.push(now + job.remaining_s, "done", (w, job, now))

    # ------------------------------------------------------------ events

    def on_reclaim(self, now: float, w: Worker) -> None:
        if w.stopped is not None:
            return
        w.stopped = now
        self.preemptions += 1
        job, w.job = w.job, None
        if job is None:
            return
        step_s = job.service_s / self.p.steps
        ran = now - (job.attempt_at or now)
        redo = min(ran, self.p.lost_steps * step_s)
        job.remaining_s = max(0.0, job.remaining_s - ran) + redo
        self.lost_gpu_s += redo
        job.preempted += 1
        job.attempt_at = None
        self.limbo += 1
        self.push(now + self.p.lease_ttl_s, "requeue", job)

    def handle(self, now: float, kind: str, data: Any) -> None:
        if kind == "arrive":
            self.arrived_since_tick += 1
            self.queue.append(data)
        elif kind == "done":
            w, job, started = data
            if w.job is job and w.stopped is None and job.attempt_at == started:
                job.done_at, w.job, job.remaining_s = now, None, 0.0
        elif kind == "reclaim":
            self.on_reclaim(now, data)
        elif kind == "requeue":
            self.limbo -= 1
            data.queued_at = now
            self.queue.append(data)
            self.queue.sort(key=lambda j: j.arrived)
        elif kind == "tick":
            self.apply(now, *self.policy.desired(now, self))
            self.arrived_since_tick = 0
            if now < self.p.day_s or self.queue or self.in_flight() or self.limbo:
                self.push(now + self.p.tick_s, "tick")
            else:
                self.end = now
        self.dispatch(now)

    def run(self, times: Sequence[float]) -> None:
        for t in times:
            s = self.p.service_s * math.exp(self.rng.gauss(0.0, self.p.service_jitter))
            job = Job(arrived=t, service_s=s, remaining_s=s, queued_at=t)
            self.jobs.append(job)
            self.push(t, "arrive", job)
        self.push(0.0, "tick")
        while self.events and self.end is None:
            now, _, kind, data = heapq.heappop(self.events)
            self.handle(now, kind, data)
        for w in self.live():
            w.stopped = self.end


# ---------------------------------------------------------------- the policies


@dataclass
class Fixed:
    """``n`` workers all day (``split``: the capacity mix)."""

    n: int
    split: PoolPolicy
    name: str = "fixed"

    def desired(self, now: float, sim: Sim) -> tuple[int, int]:
        return split_capacity(self.n, self.split)


@dataclass
class RayLike:
    """Ray Serve's rule: ``ceil(ongoing / target_ongoing_requests)``, the average of
    ongoing requests over ``look_back_s``, kept for the up/downscale delay before it
    applies; from zero at once. Defaults are Ray Serve's."""

    target: float
    max_workers: int
    split: PoolPolicy
    look_back_s: float = 30.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    current: int = 0
    pending: tuple[bool, float] | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)
    name: str = "ray-like"

    def desired(self, now: float, sim: Sim) -> tuple[int, int]:
        ongoing = len(sim.queue) + sim.in_flight() + sim.limbo
        self.samples = [s for s in self.samples if s[0] > now - self.look_back_s]
        self.samples.append((now, ongoing))
        avg = sum(n for _, n in self.samples) / len(self.samples)
        want = min(self.max_workers, math.ceil(avg / self.target - 1e-9))
        if self.current == 0 and ongoing > 0:
            self.current, self.pending = max(1, want), None
        elif want == self.current:
            self.pending = None
        else:
            up = want > self.current
            if self.pending is None or self.pending[0] != up:
                self.pending = (up, now)
            delay = self.upscale_delay_s if up else self.downscale_delay_s
            if now - self.pending[1] >= delay:
                self.current, self.pending = want, None
        return split_capacity(self.current, self.split)


@dataclass
class Ours:
    """cinecloud's policy, :func:`autoscale`, on the simulated clock."""

    policy: PoolPolicy
    half_life_s: float
    memory: PoolMemory = field(default_factory=PoolMemory)
    rate: RateEstimate = field(default_factory=RateEstimate)
    name: str = "cinecloud"

    def desired(self, now: float, sim: Sim) -> tuple[int, int]:
        self.rate = ewma_rate(self.rate, sim.arrived_since_tick, now, self.half_life_s)
        obs = PoolObservation(
            queued=len(sim.queue),
            in_flight=sim.in_flight() + sim.limbo,
            workers=len(sim.live()),
            arrival_rate=self.rate.rate,
            service_s=sim.p.service_s,
        )
        ctx = AutoscaleContext(now, {POOL: obs}, {POOL: self.policy}, {POOL: self.memory})
        decision = autoscale(ctx)[POOL]
        self.memory = decision.memory
        return decision.on_demand, decision.spot


def our_policy(p: Params, spot_mix: bool) -> PoolPolicy:
    return PoolPolicy(
        min_workers=0,
        max_workers=p.max_workers,
        target_wait_s=p.target_wait_s,
        cold_start_s=p.cold_start_s,
        idle_to_zero_s=p.idle_to_zero_s,
        downscale_delay_s=p.downscale_delay_s,
        on_demand_base=p.on_demand_base,
        on_demand_share=0.0 if spot_mix else 1.0,
    )


# ---------------------------------------------------------------- measures


def pct(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(sim: Sim) -> dict[str, Any]:
    p = sim.p
    centre = p.burst_at_h * 3600.0
    waits = [j.waited_s for j in sim.jobs]
    peak = [j.waited_s for j in sim.jobs if abs(j.arrived - centre) <= p.peak_window_s]
    held = [(w.stopped or 0.0) - w.launched for w in sim.workers]
    spot_s = sum(h for w, h in zip(sim.workers, held, strict=True) if w.spot)
    od_s = sum(held) - spot_s
    busy_s = sum(j.service_s for j in sim.jobs) + sim.lost_gpu_s
    cost = od_s / 3600 * p.price_on_demand + spot_s / 3600 * p.price_spot
    done = sum(1 for j in sim.jobs if j.done_at is not None)
    return {
        "policy": sim.policy.name,
        "capacity": "spot mix" if sim.spot_mix else "on-demand",
        "videos": len(sim.jobs),
        "completed": done,
        "p50_wait_s": pct(waits, 50),
        "p95_wait_s": pct(waits, 95),
        "max_wait_s": max(waits, default=0.0),
        "peak_videos": len(peak),
        "peak_p95_wait_s": pct(peak, 95),
        "peak_max_wait_s": max(peak, default=0.0),
        "gpu_hours": (od_s + spot_s) / 3600,
        "spot_gpu_hours": spot_s / 3600,
        "busy_gpu_hours": busy_s / 3600,
        "utilization": busy_s / max(od_s + spot_s, 1e-9),
        "cost_usd": cost,
        "usd_per_video": cost / max(done, 1),
        "launches": len(sim.workers),
        "peak_workers": sim.peak_workers,
        "preemptions": sim.preemptions,
        "lost_gpu_hours": sim.lost_gpu_s / 3600,
    }


def simulate(p: Params, policy: Policy, spot_mix: bool, times: Sequence[float]) -> dict[str, Any]:
    sim = Sim(p, policy, spot_mix, random.Random(p.seed * 7919 + 1))
    sim.run(times)
    return summarize(sim)


def size_fixed(p: Params, times: Sequence[float]) -> int:
    """The fewest on-demand workers that hold the peak's p95 wait at the target."""
    lo, hi = 1, p.max_workers
    base = our_policy(p, False)
    while lo < hi:
        mid = (lo + hi) // 2
        if simulate(p, Fixed(mid, base), False, times)["peak_p95_wait_s"] <= p.target_wait_s:
            hi = mid
        else:
            lo = mid + 1
    return lo


def policies(p: Params, fixed_n: int, spot_mix: bool) -> Iterator[Policy]:
    ours = our_policy(p, spot_mix)
    yield Fixed(fixed_n, ours)
    for target in p.ray_targets:
        yield RayLike(target, p.max_workers, ours, name=f"ray-like {target:g}")
    yield Ours(ours, p.half_life_s)


def run_all(p: Params, fixed: int | None = None) -> dict[str, Any]:
    """Every policy on both capacity mixes, on one seeded day of arrivals."""
    times = arrivals(p, random.Random(p.seed))
    fixed_n = fixed if fixed is not None else size_fixed(p, times)
    rows = [
        simulate(p, policy, spot_mix, times)
        for spot_mix in (False, True)
        for policy in policies(p, fixed_n, spot_mix)
    ]
    return {"params": asdict(p), "fixed_workers": fixed_n, "rows": rows, **verdict(p, rows)}


def verdict(p: Params, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The acceptance figures: our peak p95 wait, and our GPU-hours against the fixed
    fleet's (on-demand runs)."""
    by = {(r["policy"], r["capacity"]): r for r in rows}
    ours, fixed = by[("cinecloud", "on-demand")], by[("fixed", "on-demand")]
    saved = 1.0 - ours["gpu_hours"] / fixed["gpu_hours"]
    return {
        "peak_p95_ok": ours["peak_p95_wait_s"] <= p.target_wait_s,
        "gpu_hours_saved": saved,
        "gpu_hours_ok": saved >= 0.25,
    }


# ---------------------------------------------------------------- the command

FLAGS: dict[str, tuple[str, str]] = {
    # flag: (Params field, help)
    "--seed": ("seed", "random seed of the arrivals, service times and preemptions"),
    "--hours": ("day_s", "hours simulated (the load curve is a 24 h day)"),
    "--videos": ("videos", "videos over the simulated hours, the burst included"),
    "--burst-videos": ("burst_videos", "videos in the burst"),
    "--peak-per-min": ("peak_per_min", "the burst's peak arrival rate, videos a minute"),
    "--burst-at": ("burst_at_h", "hour of the burst's centre"),
    "--peak-window": ("peak_window_s", "seconds either side of the burst's centre: 'the peak'"),
    "--service": ("service_s", "one video's seconds on one GPU"),
    "--service-jitter": ("service_jitter", "log-normal sigma of a video's service time"),
    "--cold-start": ("cold_start_s", "seconds from a worker's launch to its first job"),
    "--tick": ("tick_s", "seconds between autoscaler decisions"),
    "--target-wait": ("target_wait_s", "the p95 queue-wait goal, seconds"),
    "--max-workers": ("max_workers", "the most workers (GPUs) a policy may hold"),
    "--price-on-demand": ("price_on_demand", "$ per on-demand GPU-hour"),
    "--price-spot": ("price_spot", "$ per spot GPU-hour"),
    "--preempt-per-hour": ("preempt_per_hour", "spot reclaims per spot GPU-hour"),
    "--lost-steps": ("lost_steps", "denoising steps redone after a reclaim, on average"),
    "--lease-ttl": ("lease_ttl_s", "seconds before a reclaimed worker's job is requeued"),
    "--on-demand-base": ("on_demand_base", "protected on-demand workers in the spot mix"),
    "--half-life": ("half_life_s", "half-life of our arrival-rate EWMA, seconds"),
    "--idle-to-zero": ("idle_to_zero_s", "our idle seconds before scaling to zero"),
    "--downscale-delay": ("downscale_delay_s", "our downscale delay, seconds"),
}


def parse(argv: Sequence[str] | None = None) -> tuple[Params, argparse.Namespace]:
    defaults = Params()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, (name, text) in FLAGS.items():
        value = getattr(defaults, name)
        value = value / 3600 if name == "day_s" else value
        kind = type(value)
        ap.add_argument(flag, type=kind, default=value, help=f"{text} (default {value:g})")
    ap.add_argument(
        "--ray-target",
        type=float,
        nargs="+",
        default=list(defaults.ray_targets),
        help="the ray-like policy's target_ongoing_requests, one row each (default 2 1)",
    )
    ap.add_argument("--fixed", type=int, help="the fixed fleet's size (default: sized by search)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/simulate.json"))
    ap.add_argument("--check", action="store_true", help="exit 1 unless the goals are met")
    args = ap.parse_args(argv)
    values = {name: getattr(args, flag[2:].replace("-", "_")) for flag, (name, _) in FLAGS.items()}
    values["day_s"] *= 3600
    values["ray_targets"] = tuple(args.ray_target)
    return replace(defaults, **values), args


def assumptions(p: Params) -> list[str]:
    return [
        f"load: {p.videos:g} videos/day over {p.day_s / 3600:g} h, a burst of "
        f"{p.burst_videos:g} at {p.burst_at_h:g}:00 peaking at {p.peak_per_min:g}/min; "
        f"'peak' = arrivals within {p.peak_window_s:g} s of the burst's centre",
        f"service: {p.service_s:.1f} s a video on one GPU (Wan2.1-T2V-1.3B 832x480, 81 f, "
        f"50 steps, cfg, H200, scheduler/alpha.json), jitter sigma {p.service_jitter:g}",
        f"cold start: {p.cold_start_s:g} s launch to first job; decisions every {p.tick_s:g} s",
        f"prices: on-demand ${p.price_on_demand:.2f}/GPU-h, spot ${p.price_spot:.2f}/GPU-h, "
        f"{p.preempt_per_hour:g} reclaims per spot GPU-h, {p.lost_steps:g} steps redone, "
        f"requeue after {p.lease_ttl_s:g} s; spot mix keeps {p.on_demand_base} on-demand",
        f"cinecloud: target p95 wait {p.target_wait_s:g} s, EWMA half-life {p.half_life_s:g} s, "
        f"downscale delay {p.downscale_delay_s:g} s, idle to zero {p.idle_to_zero_s:g} s, "
        f"max {p.max_workers} workers; ray-like: target_ongoing_requests "
        f"{', '.join(f'{t:g}' for t in p.ray_targets)}, "
        "look-back 30 s, upscale delay 30 s, downscale delay 600 s",
    ]


COLUMNS = (
    ("policy", "policy", "{}"),
    ("capacity", "capacity", "{}"),
    ("videos", "videos", "{}"),
    ("p95_wait_s", "p95 wait s", "{:.1f}"),
    ("peak_p95_wait_s", "peak p95 wait s", "{:.1f}"),
    ("peak_max_wait_s", "peak max wait s", "{:.1f}"),
    ("gpu_hours", "GPU-h", "{:.1f}"),
    ("utilization", "busy", "{:.0%}"),
    ("peak_workers", "most workers", "{}"),
    ("preemptions", "reclaims", "{}"),
    ("usd_per_video", "$/video", "{:.3f}"),
)


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        lines.append("| " + " | ".join(fmt.format(r[key]) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p, args = parse(argv)
    result = run_all(p, args.fixed)
    result["date"] = datetime.date.today().isoformat()
    print("\n".join(assumptions(p)))
    print(f"fixed fleet: {result['fixed_workers']} workers\n")
    print(table(result["rows"]))
    saved, ok = result["gpu_hours_saved"], result["peak_p95_ok"] and result["gpu_hours_ok"]
    print(
        f"\ncinecloud vs fixed (on-demand): {saved:.1%} fewer GPU-hours; peak p95 wait "
        f"{'within' if result['peak_p95_ok'] else 'OVER'} {p.target_wait_s:g} s: "
        f"{'goals met' if ok else 'goals NOT met'}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
