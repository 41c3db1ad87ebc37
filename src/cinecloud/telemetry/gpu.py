"""GPU utilisation and memory from NVML (``nvidia-ml-py``), sampled by a worker.

NVML is optional: without the package, without the driver's library or without a GPU,
:func:`sample_gpus` returns an empty list and never raises, so the worker's heartbeat
carries no GPU figures and ``/metrics`` shows the GPU gauges with no values.

NVML asks the driver, not CUDA, so the worker's parent process can sample the GPUs its
engine child holds without creating a CUDA context of its own. NVML numbers every GPU of
the machine; ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-`` UUIDs) picks the worker's, and
each is reported by its CUDA index as the worker sees it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["GpuSample", "GpuSampler", "sample_gpus", "visible_devices"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one moment. ``utilization`` is the share of the last sample period
    (1/6 s to 1 s, by product) in which a kernel ran, 0 to 1."""

    index: int
    name: str
    uuid: str
    utilization: float
    memory_used: int
    memory_total: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def visible_devices(env: str | None, count: int, uuids: list[str]) -> list[int]:
    """NVML indices of the GPUs a process with ``CUDA_VISIBLE_DEVICES=env`` uses, in CUDA
    order. ``uuids`` are the NVML devices' UUIDs by index. Pure, for tests."""
    if env is None:
        return list(range(count))
    picked: list[int] = []
    for raw in env.split(","):
        item = raw.strip()
        if not item:
            break
        if item.lstrip("-").isdigit():
            index = int(item)
            if not 0 <= index < count:
                break  # CUDA ignores this entry and every one after it
            picked.append(index)
        elif item.startswith("GPU-"):
            match = [i for i, u in enumerate(uuids) if u.startswith(item)]
            if len(match) != 1:
                break
            picked.append(match[0])
        else:  # MIG instances and anything else: not sampled here
            break
    return picked


class GpuSampler:
    """Reads NVML; initialised once, on the first sample. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._tried = False

    def _init(self) -> Any:
        if self._tried:
            return self._nvml
        self._tried = True
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
        except Exception as exc:  # no package, no driver library or no GPU
            log.debug("NVML unavailable: %s", exc)
            return None
        self._nvml = pynvml
        return pynvml

    def sample(self) -> list[GpuSample]:
        with self._lock:
            nvml = self._init()
            if nvml is None:
                return []
            try:
                return _read(nvml)
            except Exception as exc:  # e.g. a GPU fell off the bus: no figures, no error
                log.debug("NVML sample failed: %s", exc)
                return []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read(nvml: Any) -> list[GpuSample]:
    count = int(nvml.nvmlDeviceGetCount())
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
    samples = []
    for cuda_index, nvml_index in enumerate(
        visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), count, uuids)
    ):
        handle = handles[nvml_index]
        util = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        samples.append(
            GpuSample(
                index=cuda_index,
                name=_text(nvml.nvmlDeviceGetName(handle)),
                uuid=uuids[nvml_index],
                utilization=float(util.gpu) / 100.0,
                memory_used=int(memory.used),
                memory_total=int(memory.total),
            )
        )
    return samples


_DEFAULT = GpuSampler()


def sample_gpus() -> list[GpuSample]:
    """This machine's visible GPUs now; empty without NVML or a GPU."""
    return _DEFAULT.sample()
