"""Cost: GPU types, the price table and a job's dollars."""

from __future__ import annotations

import pytest

from cinecloud.config import GpuPrice
from cinecloud.telemetry import UNKNOWN_GPU, gpu_type_of, job_dollars, price_for

PRICES = {
    "H100": GpuPrice(on_demand=4.0, spot=1.6),
    "H100 NVL": GpuPrice(on_demand=5.0, spot=2.0),
    "NVIDIA H200": GpuPrice(on_demand=6.0, spot=2.5),
    "cpu": GpuPrice(on_demand=0.2, spot=0.2),
}


@pytest.mark.parametrize(
    ("gpu_type", "expected"),
    [
        ("H100", 4.0),
        ("h100", 4.0),
        ("NVIDIA H100 80GB HBM3", 4.0),  # the entry found in the device name
        ("NVIDIA H100 NVL", 5.0),  # the longest entry found wins
        ("NVIDIA H200", 6.0),
        ("cpu", 0.2),
        ("NVIDIA A100-SXM4-80GB", None),
        (UNKNOWN_GPU, None),
        ("", None),
    ],
)
def test_price_for(gpu_type: str, expected: float | None) -> None:
    price = price_for(PRICES, gpu_type)
    assert (price.on_demand if price else None) == expected


@pytest.mark.parametrize(
    ("gpu_seconds", "gpu_type", "spot", "expected"),
    [
        (3600.0, "H100", False, 4.0),
        (3600.0, "H100", True, 1.6),
        (90.0, "NVIDIA H200", False, 0.15),
        (7200.0, "cpu", True, 0.4),
        (3600.0, "A100", False, 0.0),  # unpriced: no dollars
        (0.0, "H100", False, 0.0),
    ],
)
def test_job_dollars(gpu_seconds: float, gpu_type: str, spot: bool, expected: float) -> None:
    assert job_dollars(gpu_seconds, price_for(PRICES, gpu_type), spot) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("device", "names", "override", "expected"),
    [
        ("cuda", ["NVIDIA H100 80GB HBM3"], "", "NVIDIA H100 80GB HBM3"),
        ("cuda:1", ["NVIDIA H200", "NVIDIA H200"], "", "NVIDIA H200"),
        ("cpu", [], "", "cpu"),
        ("cpu", ["NVIDIA H100"], "", "cpu"),  # it runs on the CPU: that is what it bills
        ("cuda", ["NVIDIA H100 80GB HBM3"], "H100-SXM-spot-pool", "H100-SXM-spot-pool"),
        ("", [], "", UNKNOWN_GPU),
        ("mps", [], "", "mps"),
    ],
)
def test_gpu_type_of(device: str, names: list[str], override: str, expected: str) -> None:
    assert gpu_type_of(device, names, override) == expected
