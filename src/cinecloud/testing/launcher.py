"""A launcher that starts nothing and remembers what it was told, and the contract every
launcher keeps (run against this fake and against ``LocalLauncher``'s real processes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["FakeLauncher", "PoolLauncher", "check_launcher_contract"]


class _Count(Protocol):
    @property
    def total(self) -> int: ...


class PoolLauncher(Protocol):
    """The autoscaler's launcher protocol, as the contract drives it."""

    def scale(self, pool: str, desired: _Count) -> None: ...

    def current(self, pool: str) -> int: ...


class FakeLauncher:
    """Runs ``desired.total`` workers per pool the moment it is told; ``calls`` keeps
    every ``(pool, on_demand, spot)``. ``fail_pools`` raise on :meth:`scale`."""

    def __init__(self, fail_pools: frozenset[str] = frozenset()) -> None:
        self.workers: dict[str, int] = {}
        self.calls: list[tuple[str, int, int]] = []
        self.fail_pools = fail_pools

    def scale(self, pool: str, desired: _Count) -> None:
        if pool in self.fail_pools:
            raise RuntimeError(f"cannot place workers of {pool}")
        if desired.total < 0:
            raise ValueError(f"worker count must be >= 0 (got {desired.total})")
        on_demand = int(getattr(desired, "on_demand", desired.total))
        self.calls.append((pool, on_demand, desired.total - on_demand))
        self.workers[pool] = desired.total

    def current(self, pool: str) -> int:
        return self.workers.get(pool, 0)


def check_launcher_contract(
    launcher: PoolLauncher,
    count: Callable[[int], _Count],
    settle: Callable[[Callable[[], bool]], bool],
    pools: tuple[str, str] = ("model-a", "model-b"),
) -> None:
    """What every launcher does: pools are independent, it reaches the count asked
    (up and down, to zero), and refuses a negative one. ``settle(pred)`` waits until
    ``pred()`` holds (at once for a fake) and says whether it did."""
    a, b = pools
    assert launcher.current(a) == 0 and launcher.current(b) == 0
    launcher.scale(a, count(2))
    launcher.scale(b, count(1))
    assert settle(lambda: launcher.current(a) == 2 and launcher.current(b) == 1)
    launcher.scale(a, count(1))
    assert settle(lambda: launcher.current(a) == 1 and launcher.current(b) == 1)
    launcher.scale(b, count(0))
    launcher.scale(a, count(0))
    assert settle(lambda: launcher.current(a) == 0 and launcher.current(b) == 0)
    try:
        launcher.scale(a, count(-1))
    except ValueError:
        pass
    else:
        raise AssertionError("a negative count must be refused")
    assert launcher.current(a) == 0
