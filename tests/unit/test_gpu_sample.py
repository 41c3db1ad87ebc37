"""GPU samples: which NVML devices a worker reports, and no figures (no error) without NVML."""

from __future__ import annotations

import sys

import pytest

from cinecloud.telemetry.gpu import GpuSampler, visible_devices

UUIDS = ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-cccc-3333"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("2,0", [2, 0]),
        ("1,7,2", [1]),  # CUDA stops at the first invalid entry
        ("-1", []),
        ("GPU-bbbb", [1]),
        ("GPU-bbbb,GPU-zzzz,0", [1]),
        ("MIG-1234", []),
    ],
)
def test_visible_devices(env: str | None, expected: list[int]) -> None:
    assert visible_devices(env, 3, UUIDS) == expected


def test_no_nvml_package_means_no_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert GpuSampler().sample() == []


@pytest.mark.skipif("CUDA_VISIBLE_DEVICES" in __import__("os").environ, reason="GPU host")
def test_no_gpu_means_no_samples() -> None:
    """Here NVML's library or device is missing (a CPU host): an empty sample, no error."""
    import shutil

    if shutil.which("nvidia-smi"):
        pytest.skip("this host has an NVIDIA driver")
    sampler = GpuSampler()
    assert sampler.sample() == [] and sampler.sample() == []
