"""PowerGovernor: per-site power caps, enforced at admission and at every engine step.

The gateway and the simulator report each engine's power as it changes; the governor keeps
each site's total, answers whether a change fits under the cap (when enforcing), and accounts
peaks, time over the cap and the largest excess (when not enforcing, this is what the report
shows). Times are whatever clock the caller uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EPS_W = 1e-6


@dataclass
class SitePower:
    """One site's power account."""

    cap_w: float | None
    power_w: float = 0.0
    peak_w: float = 0.0
    exceeded_s: float = 0.0
    max_excess_w: float = 0.0
    energy_j: float = 0.0
    last_t: float = 0.0
    bin_s: float = 1.0
    bins: dict[int, float] = field(default_factory=dict)  # bin index -> peak power in the bin

    def advance(self, t: float) -> None:
        dt = t - self.last_t
        if dt <= 0:
            return
        self.energy_j += self.power_w * dt
        if self.cap_w is not None and self.power_w > self.cap_w + EPS_W:
            self.exceeded_s += dt
            self.max_excess_w = max(self.max_excess_w, self.power_w - self.cap_w)
        first, last = int(self.last_t / self.bin_s), int(t / self.bin_s)
        bins = self.bins
        for b in (first, last) if last - first > 1 else range(first, last + 1):
            if bins.get(b, 0.0) < self.power_w:
                bins[b] = self.power_w
        if last - first > 1:  # a long flat stretch: mark the bins in between
            for b in range(first + 1, last):
                if bins.get(b, 0.0) < self.power_w:
                    bins[b] = self.power_w
        self.last_t = t


class PowerGovernor:
    """Site power caps. With `enforce` False it only accounts."""

    def __init__(self, caps: dict[str, float | None], enforce: bool = True, bin_s: float = 1.0):
        self.enforce = enforce
        self.sites = {name: SitePower(cap, bin_s=bin_s) for name, cap in caps.items()}

    def add_base(self, site: str, watts: float) -> None:
        """Power drawn from the start (idle devices)."""
        s = self.sites[site]
        s.power_w += watts
        s.peak_w = max(s.peak_w, s.power_w)

    def headroom_w(self, site: str) -> float:
        s = self.sites[site]
        return float("inf") if s.cap_w is None else s.cap_w - s.power_w

    def fits(self, site: str, delta_w: float) -> bool:
        """Whether raising the site's power by `delta_w` keeps it under its cap."""
        if not self.enforce or delta_w <= 0:
            return True
        s = self.sites[site]
        return s.cap_w is None or s.power_w + delta_w <= s.cap_w + EPS_W

    def change(self, site: str, t: float, delta_w: float) -> None:
        """Record that the site's power changes by `delta_w` at time `t`."""
        s = self.sites[site]
        s.advance(t)
        s.power_w += delta_w
        if s.power_w > s.peak_w:
            s.peak_w = s.power_w

    def close(self, t: float) -> None:
        for s in self.sites.values():
            s.advance(t)
