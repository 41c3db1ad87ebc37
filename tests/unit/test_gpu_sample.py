"""GPU samples: which NVML devices a worker reports, and no figures (no error) without NVML."""

from __future__ import annotations

import shutil
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


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a host with a GPU driver")
def test_no_gpu_means_no_samples() -> None:
    """Here NVML's library or device is missing (a CPU host): an empty sample, no error."""
    sampler = GpuSampler()
    assert sampler.sample() == [] and sampler.sample() == []


@pytest.mark.gpu
def test_nvml_sample_on_a_gpu() -> None:
    """On a GPU host: one sample per visible GPU, and a busy GPU reads busy."""
    import threading
    import time

    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    sampler = GpuSampler()
    idle = sampler.sample()
    assert [g.index for g in idle] == list(range(torch.cuda.device_count()))
    for g in idle:
        assert g.name and g.uuid.startswith("GPU-")
        assert 0.0 <= g.utilization <= 1.0 and 0 < g.memory_used <= g.memory_total
    x = torch.randn(8192, 8192, device="cuda:0", dtype=torch.bfloat16)  # 128 MiB
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            for _ in range(20):
                x @ x
            torch.cuda.synchronize()

    worker = threading.Thread(target=burn)
    worker.start()
    try:
        time.sleep(1.0)
        busy = []
        for _ in range(10):
            busy.append(sampler.sample()[0])
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join()
    print(
        "idle",
        idle[0],
        "busy utilization",
        [round(b.utilization, 2) for b in busy],
        "memory used",
        busy[-1].memory_used,
    )
    assert max(b.utilization for b in busy) >= 0.5
    assert busy[-1].memory_used >= idle[0].memory_used + 128 * 2**20
