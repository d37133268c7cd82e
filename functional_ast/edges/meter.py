"""Energy meters: joules read from hardware counters where the machine exposes them.

`open_meter(device)` returns a meter for NVML (CUDA, needs the `nvidia-ml-py` package)
or Intel/AMD RAPL (`/sys/class/powercap/*/energy_uj`, readable), else None. A meter
is read before and after a stretch of work; `joules(start, end)` handles counter wrap.
Where no meter exists, `estimate_joules` converts FLOPs with a stated, assumed
efficiency; its result must always be labelled an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


@dataclass(frozen=True)
class Meter:
    """A named energy counter: `read()` returns joules since an arbitrary origin."""

    name: str
    read: Callable[[], float]
    wrap: float | None = None

    def joules(self, start: float, end: float) -> float:
        if end < start and self.wrap:
            return end + self.wrap - start
        return end - start


def _rapl() -> Meter | None:
    zones = sorted(Path("/sys/class/powercap").glob("intel-rapl:[0-9]*"))
    zones = [z for z in zones if (z / "energy_uj").is_file() and ":" not in z.name.split("intel-rapl:")[1]]
    try:
        wraps = [float((z / "max_energy_range_uj").read_text()) for z in zones]
        [float((z / "energy_uj").read_text()) for z in zones]
    except (OSError, ValueError):
        return None
    if not zones:
        return None

    def read() -> float:
        return sum(float((z / "energy_uj").read_text()) for z in zones) / 1e6

    return Meter(f"RAPL ({len(zones)} package zone(s))", read, wrap=sum(wraps) / 1e6)


def _nvml(device: torch.device) -> Meter | None:
    try:
        import pynvml  # from nvidia-ml-py

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # no package, no driver, or no energy counter on this GPU
        return None

    def read() -> float:
        torch.cuda.synchronize(device)
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3

    return Meter("NVML", read)


def open_meter(device: torch.device) -> Meter | None:
    """The meter that measures the work on `device`, or None where none is readable."""
    return _nvml(device) if device.type == "cuda" else _rapl()
