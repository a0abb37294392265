"""How much a power cap stretches an engine's steps: what a budget's hold for a request scales
the request's time-priced dollars by (see budgets.worst_case).

An emulated engine under a site's cap waits for power before a step, or runs it slowed to the
power it can have; either way its devices are held longer than the PerfModel's time at full
power, which the predictions assume, and each request pays its share of that time. The stretch
is measured per engine (a lone request on an engine whose steps wait for a busier engine's
long prefill steps pays more than the site's average). Times are whatever clock the caller
uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A step's weight halves every STRETCH_HALF_LIFE_S seconds (the last half minute or so counts),
# and the stretch is at most MAX_STRETCH: a few pathological steps (a cap lowered to a sliver
# for a moment) must not multiply every hold without bound.
STRETCH_HALF_LIFE_S = 10.0
MAX_STRETCH = 16.0


@dataclass
class StepStretch:
    """The recent ratio of the time an engine's steps held its devices (waiting for power,
    then running, slowed where a cap demanded) to their time at full power: 1.0 where no step
    waited or was slowed (or none ran), at most MAX_STRETCH. Each step counts with a weight
    that halves every `half_life_s` seconds after it ended."""

    half_life_s: float = STRETCH_HALF_LIFE_S
    model_s: float = 0.0  # decayed sums of the steps' full-power and held seconds
    held_s: float = 0.0
    last_t: float | None = None

    def add(self, t: float, model_s: float, held_s: float) -> None:
        """A step that ended at `t` would take `model_s` seconds at full power and held the
        devices `held_s` seconds. Negative or non-finite figures count as 0; sums past a
        float's range start afresh."""
        if not math.isfinite(t):
            return
        last = self.last_t
        if last is None or t > last:
            if last is not None:
                decay = 0.5 ** ((t - last) / self.half_life_s)
                self.model_s *= decay
                self.held_s *= decay
            self.last_t = t
        self.model_s += model_s if math.isfinite(model_s) and model_s > 0 else 0.0
        self.held_s += held_s if math.isfinite(held_s) and held_s > 0 else 0.0
        if not math.isfinite(self.model_s + self.held_s):
            self.model_s = self.held_s = 0.0

    @property
    def ratio(self) -> float:
        if self.held_s <= self.model_s:
            return 1.0
        if self.model_s <= 0:
            return MAX_STRETCH
        return min(MAX_STRETCH, self.held_s / self.model_s)
