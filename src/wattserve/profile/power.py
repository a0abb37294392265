"""Power meters: Intel/AMD RAPL through sysfs, NVIDIA NVML through nvidia-ml-py.

Each meter says why it cannot read when it cannot; callers report that instead of a number.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
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


def steady_watts(
    step: Callable[[], Any],
    sync: Callable[[], None],
    meter: PowerMeter,
    step_s: float,
    window_s: float,
) -> tuple[float, int]:
    """Mean watts of `step` run back to back for about `window_s` (at least two steps), and
    how many ran. Energy counters update every few tens of milliseconds and board power is
    averaged over up to a second, so a few milliseconds of steps read the power of whatever
    ran before them: on an H200, 8B decode steps timed alone read 905 W against a 700 W
    limit, and a 1B prefill the idle draw (tests/data/gpu_grid_h200_2026-12-04/run2/profile)."""
    steps = max(2, math.ceil(window_s / max(step_s, 1e-6)))
    meter.start()
    for _ in range(steps):
        step()
    sync()
    return meter.stop(), steps


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
    """One GPU's board power: sampled every 20 ms in a thread, and read from the GPU's total
    energy counter (millijoules since the driver loaded; Volta and later) where it has one.

    After stop(): `energy_j` over the interval (the counter's difference, else the mean of the
    samples times the interval), `seconds`, `samples_w`, and `energy_source` saying which."""

    name = "NVML"

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml = nvml
        self.handle = handle
        self.samples_w: list[float] = []
        self.energy_j = 0.0
        self.seconds = 0.0
        self.energy_source = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._counter0_mj: int | None = None

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

    def _counter_mj(self) -> int | None:
        try:
            return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:  # not supported on this GPU or driver: the samples stand in
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples_w.append(self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0)
            self._stop.wait(0.02)

    def start(self) -> None:
        self.samples_w = []
        self._stop.clear()
        self._counter0_mj = self._counter_mj()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Mean watts over the interval since start()."""
        end_mj = self._counter_mj() if self._counter0_mj is not None else None
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        mean_w = sum(self.samples_w) / len(self.samples_w) if self.samples_w else 0.0
        if end_mj is not None and self._counter0_mj is not None and end_mj > self._counter0_mj:
            self.energy_j = (end_mj - self._counter0_mj) / 1000.0
            self.energy_source = "NVML total-energy counter"
            return self.energy_j / self.seconds if self.seconds > 0 else mean_w
        self.energy_j = mean_w * self.seconds
        self.energy_source = f"NVML power samples ({len(self.samples_w)}, every 20 ms)"
        return mean_w

    def device_info(self) -> dict[str, Any]:
        """What NVML says of the GPU and its settings (each field only where NVML answers):
        driver, power limit (W), SM and memory clocks now and at most (MHz), temperature (C)."""
        n, h = self.nvml, self.handle
        queries: dict[str, Callable[[], Any]] = {
            "driver": lambda: n.nvmlSystemGetDriverVersion(),
            "power_limit_w": lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "sm_clock_mhz": lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
            "sm_clock_max_mhz": lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM),
            "mem_clock_max_mhz": lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_MEM),
            "temperature_c": lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
        }
        info: dict[str, Any] = {}
        for key, query in queries.items():
            try:
                value = query()
            except Exception:  # a field this GPU or driver does not report
                continue
            info[key] = value.decode() if isinstance(value, bytes) else value
        return info
