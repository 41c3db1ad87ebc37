"""Cost: a job's GPU-seconds priced from the deployment's price table.

The worker reports where it ran: its GPU type (the device name, e.g. ``NVIDIA H100
80GB HBM3``, or ``cpu`` for a CPU worker), how many GPUs the job held (its ranks) and
whether the machine is spot. The job's GPU-seconds are the engine's wall time times
that count, and its dollars those GPU-hours at the type's hourly price, on-demand or
spot. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cinecloud.config import GpuPrice

__all__ = ["UNKNOWN_GPU", "gpu_type_of", "job_dollars", "price_for"]

UNKNOWN_GPU = "unknown"


def gpu_type_of(device: str, gpu_names: Sequence[str], override: str = "") -> str:
    """The GPU type a worker reports: its configured ``override``, else its first GPU's
    name when it runs on one, else ``cpu`` (or the device it names)."""
    if override:
        return override
    if gpu_names and not device.startswith("cpu"):
        return gpu_names[0]
    return "cpu" if device.startswith("cpu") else (device or UNKNOWN_GPU)


def price_for(prices: Mapping[str, GpuPrice], gpu_type: str) -> GpuPrice | None:
    """The price of ``gpu_type``: the entry equal to it, else the longest entry found in
    it (``H100`` prices ``NVIDIA H100 80GB HBM3``), ignoring case; None if none fits."""
    wanted = gpu_type.casefold()
    best: tuple[int, GpuPrice] | None = None
    for name, price in prices.items():
        key = name.casefold()
        if key == wanted:
            return price
        if key and key in wanted and (best is None or len(key) > best[0]):
            best = (len(key), price)
    return best[1] if best else None


def job_dollars(gpu_seconds: float, price: GpuPrice | None, spot: bool) -> float:
    """Dollars for ``gpu_seconds`` (already times the GPU count) at ``price``; 0 unpriced."""
    if price is None:
        return 0.0
    return gpu_seconds / 3600.0 * (price.spot if spot else price.on_demand)
