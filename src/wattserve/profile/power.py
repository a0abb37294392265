"""Power meters: Intel/AMD RAPL through sysfs, NVIDIA NVML through nvidia-ml-py.

Each meter says why it cannot read when it cannot; callers report that instead of a number.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

RAPL_ROOT = Path("/sys/class/powercap")


class PowerMeter(ABC):
    """Mean power (W) over an interval: start(), then stop() returns watts."""

    name: str = "meter"

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> float: ...


class RaplMeter(PowerMeter):
    """Package energy counters (intel-rapl:N, which AMD Zen also exposes), summed."""

    name = "RAPL"

    def __init__(self, zones: list[Path]) -> None:
        self.zones = zones
        self._start: list[int] = []
        self._t0 = 0.0

    @staticmethod
    def open(root: Path = RAPL_ROOT) -> tuple[RaplMeter | None, str]:
        zones = sorted(p for p in root.glob("intel-rapl:[0-9]*") if ":" not in p.name[11:])
        if not zones:
            return None, f"no RAPL zones under {root} (not exposed on this machine)"
        try:
            for z in zones:
                int((z / "energy_uj").read_text())
        except (OSError, ValueError) as exc:
            return None, f"RAPL counters not readable: {exc}"
        return RaplMeter(zones), "RAPL package counters"

    def _read(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def max_power_w(self) -> float | None:
        total = 0.0
        for z in self.zones:
            try:
                total += int((z / "constraint_0_max_power_uw").read_text()) / 1e6
            except (OSError, ValueError):
                return None
        return total or None

    def start(self) -> None:
        self._start = self._read()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        end = self._read()
        dt = time.perf_counter() - self._t0
        joules = 0.0
        for z, a, b in zip(self.zones, self._start, end, strict=True):
            if b < a:  # counter wrapped
                b += int((z / "max_energy_range_uj").read_text())
            joules += (b - a) / 1e6
        return joules / dt if dt > 0 else 0.0


class NvmlMeter(PowerMeter):
    """Samples one GPU's board power every 20 ms in a thread and averages."""

    name = "NVML"

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml = nvml
        self.handle = handle
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def open(index: int = 0) -> tuple[NvmlMeter | None, str]:
        try:
            import pynvml  # from nvidia-ml-py

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetPowerUsage(handle)
        except Exception as exc:  # any NVML failure means: no power reading
            return None, f"NVML not available: {exc}"
        return NvmlMeter(pynvml, handle), "NVML board power"

    def _run(self) -> None:
        while not self._stop.is_set():
            self._samples.append(self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0)
            self._stop.wait(0.02)

    def start(self) -> None:
        self._samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return sum(self._samples) / len(self._samples) if self._samples else 0.0
