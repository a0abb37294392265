"""A manual clock: the test double for a mechanism's wall clock (the gateway's router and
emulated backends take any `() -> seconds` callable; this one moves only when told)."""

from __future__ import annotations


class ManualClock:
    """Call it for the time in seconds; `advance` moves it forward."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt_s: float) -> None:
        if dt_s < 0:
            raise ValueError("a clock does not go back")
        self.t += dt_s
