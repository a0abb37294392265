"""PowerGovernor: per-site power caps, enforced at admission and at every engine step.

The gateway and the simulator report each engine's power as it changes; the governor keeps
each site's total, answers whether a change fits under the cap (when enforcing), and accounts
peaks, time over the cap and the largest excess (when not enforcing, this is what the report
shows). Times are whatever clock the caller uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from wattserve.errors import ConfigError

if TYPE_CHECKING:
    from wattserve.core.engine import StepPlan

EPS_W = 1e-6
# The longest a request may wait for power or a link (`--max-wait` of simulate and serve): a
# day. Past it a wait is no serving decision, and an infinite one never ends: simulate retried
# a request the cap could never admit every 0.25 s of simulated time, forever.
MAX_WAIT_S = 86_400.0


def check_max_wait(value: float, field: str = "--max-wait") -> float:
    """`value` as seconds in [0, MAX_WAIT_S], else ConfigError naming `field`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_WAIT_S
    ):
        raise ConfigError(
            f"must be a number of seconds from 0 to {MAX_WAIT_S:,.0f} (a day), got {value!r:.40}",
            field=field,
        )
    return float(value)


class PowerDraw(Protocol):
    """What admission asks of a target about power."""

    @property
    def max_marginal_w(self) -> float:
        """The most power one more request can add there (an upper bound, 0 when unknown)."""
        ...

    def marginal_power_w(self) -> float:
        """The power one more request adds there now (0 when unknown: it cannot be governed)."""
        ...


# the most bins a site's power timeline keeps (SitePower._coarsen): the simulator starts at
# 1/400 of the trace's span, so a run may last ten times its arrivals before they widen
MAX_BINS = 4096


@dataclass
class SitePower:
    """One site's power account."""

    cap_w: float | None
    base_w: float = 0.0  # idle power of every device at the site
    # the least dynamic power (W) a step may be slowed down to (`PowerGovernor.slows`): a cap
    # that leaves less waits for power instead (a shared power lease can be a sliver for a
    # moment; slowing a step to it would stretch the step without bound)
    floor_w: float = 0.0
    power_w: float = 0.0
    # power promised to steps about to start and not yet drawn (the simulator's idle engines
    # given requests at one instant, whose first step starts once the instant is handled):
    # admission counts it as drawn, the accounts do not
    reserved_w: float = 0.0
    peak_w: float = 0.0
    exceeded_s: float = 0.0
    max_excess_w: float = 0.0
    last_t: float = 0.0
    bin_s: float = 1.0
    bins: dict[int, float] = field(default_factory=dict)  # bin index -> peak power in the bin
    # when a step waiting for power here could last go: the planned end of a step that gave
    # its power back, or a change of cap (see `PowerGovernor.freed`)
    ready_t: float = -math.inf

    def advance(self, t: float) -> None:
        """Account the stretch from the last change to `t` at the current power."""
        last_t = self.last_t
        if t <= last_t:
            return
        p = self.power_w
        cap = self.cap_w
        if cap is not None and p > cap + EPS_W:
            self.exceeded_s += t - last_t
            if p - cap > self.max_excess_w:
                self.max_excess_w = p - cap
        if t >= self.bin_s * MAX_BINS:
            self._coarsen(t)
        bs = self.bin_s
        first, last = int(last_t / bs), int(t / bs)
        bins = self.bins
        if first == last:
            if bins.get(first, 0.0) < p:
                bins[first] = p
        else:
            for b in range(first, last + 1):
                if bins.get(b, 0.0) < p:
                    bins[b] = p
        self.last_t = t

    def _coarsen(self, t: float) -> None:
        """Double the bins' width (each new bin the peak of the two it joins) until `t` falls
        within MAX_BINS of them: a run that lasts far past its last arrival (a long outage, a
        queue of long answers) or a gateway up for weeks keeps a bounded timeline."""
        while t >= self.bin_s * MAX_BINS and math.isfinite(t):  # inf: int() refuses it below
            joined: dict[int, float] = {}
            for b, p in self.bins.items():
                if joined.get(b // 2, 0.0) < p:
                    joined[b // 2] = p
            self.bins = joined
            self.bin_s *= 2.0

    def change(self, t: float, delta_w: float) -> None:
        """The site's power changes by `delta_w` at time `t`."""
        if t > self.last_t:
            self.advance(t)
        p = self.power_w + delta_w
        self.power_w = p
        if p > self.peak_w:
            self.peak_w = p


def slowed_to_w(s: SitePower, enforce: bool) -> float | None:
    """The power above idle that a step too big for the site `s` is slowed down to (the cap
    less every device's idle draw, what the step could have with all others idle), or None
    where such a step waits for power instead: no cap (or no enforcement), a cap that leaves
    nothing above idle, or less than the site's `floor_w`."""
    cap = s.cap_w
    if not enforce or cap is None:
        return None
    allowed = cap - s.base_w
    return allowed if allowed > EPS_W and allowed >= s.floor_w - EPS_W else None


class Room:
    """What an EnginePool reads of its site's power at each decision: called, the watts left
    under the cap (infinite without one or without enforcement; the cap may be set at run
    time); `slowed_to_w`, what a running replica's next step, too big for the cap with one
    more request, draws above idle once slowed (EnginePool.replica_marginal_w)."""

    __slots__ = ("enforce", "site")

    def __init__(self, site: SitePower, enforce: bool) -> None:
        self.site = site
        self.enforce = enforce

    def __call__(self) -> float:
        s = self.site
        if not self.enforce or s.cap_w is None:
            return math.inf
        return s.cap_w - s.power_w - s.reserved_w

    def slowed_to_w(self) -> float | None:
        """The module function slowed_to_w, but None under serve's shared power leases (a
        `floor_w` is set): there the cap is this gateway's share of the site's, which grows
        when admissions are refused for power (serve/leases.py), so a request that does not fit
        a replica's full step is refused, to ask for more, rather than slowing that step."""
        s = self.site
        return None if s.floor_w > 0.0 else slowed_to_w(s, self.enforce)


class PowerGovernor:
    """Site power caps. With `enforce` False it only accounts."""

    def __init__(self, caps: dict[str, float | None], enforce: bool = True, bin_s: float = 1.0):
        self.enforce = enforce
        self.sites = {name: SitePower(cap, bin_s=bin_s) for name, cap in caps.items()}

    def add_base(self, site: str, watts: float) -> None:
        """Power drawn from the start (idle devices)."""
        s = self.sites[site]
        s.base_w += watts
        s.power_w += watts
        s.peak_w = max(s.peak_w, s.power_w)

    def capped(self, site: str) -> bool:
        """Whether admission to `site` must be checked against a cap."""
        return self.enforce and self.sites[site].cap_w is not None

    def headroom_w(self, site: str) -> float:
        s = self.sites[site]
        return float("inf") if s.cap_w is None else s.cap_w - s.power_w - s.reserved_w

    def reserve(self, site: str, delta_w: float) -> None:
        """Promise (or, negative, release) power for a step about to start (`reserved_w`)."""
        self.sites[site].reserved_w += delta_w

    def room(self, site: str) -> Room:
        """The power left under `site`'s cap, as a function to call at each decision (its
        cap may be set at run time; infinite without one or without enforcement): what an
        EnginePool reads to place a request where it fits (see Room)."""
        return Room(self.sites[site], self.enforce)

    def account(self, site: str) -> SitePower:
        """The site's power account (callers on a hot path keep it instead of the name)."""
        return self.sites[site]

    def admits(self, site: str, target: PowerDraw) -> bool:
        """Whether one more request may be placed on `target` at `site` now: always without a
        cap (or without enforcement); at once when even the target's largest possible increase
        fits (no prediction needed); else when its predicted increase fits."""
        if not self.enforce:
            return True
        s = self.sites[site]
        cap = s.cap_w
        if cap is None or cap - s.power_w - s.reserved_w >= target.max_marginal_w:
            return True
        return self.fits(site, target.marginal_power_w())

    def fits(self, site: str, delta_w: float) -> bool:
        """Whether raising the site's power by `delta_w` keeps it under its cap."""
        if not self.enforce or delta_w <= 0:
            return True
        s = self.sites[site]
        return s.cap_w is None or s.power_w + s.reserved_w + delta_w <= s.cap_w + EPS_W

    def may_start(self, site: str, delta_w: float, first_waiting_w: float | None) -> bool:
        """The one rule both clocks follow before a step that adds `delta_w` at `site` takes
        its power: it fits under the cap, and the step at the head of the site's queue of
        steps waiting for power (`first_waiting_w`, what that one adds; None: no step waits
        ahead of this one) cannot go first. Waiting steps go in the order they began to wait;
        a new step passes them only while the first cannot fit (otherwise an engine that gives
        power back and takes it again for its next step starves the others)."""
        if not self.fits(site, delta_w):
            return False
        return first_waiting_w is None or not self.fits(site, first_waiting_w)

    def slows(self, site: str, delta_w: float) -> bool:
        """Whether a step adding `delta_w` could never fit under the site's cap, even with every
        other device idle, and is to be slowed down to fit it (`throttle`): when the cap leaves
        more than nothing and at least the site's `floor_w` of dynamic power. Else the step
        waits for power."""
        allowed = slowed_to_w(self.sites[site], self.enforce)
        return allowed is not None and delta_w > allowed + EPS_W

    def throttle(self, site: str, plan: StepPlan, idle_w: float) -> None:
        """Slow a step that `slows` down to the power it can have (as a GPU power limit does):
        its dynamic energy is unchanged, its time grows, its idle energy with it."""
        delta = plan.power_w - idle_w
        if not self.slows(site, delta):
            return
        s = self.sites[site]
        assert s.cap_w is not None
        allowed = s.cap_w - s.base_w
        duration = plan.end_s - plan.start_s
        stretched = duration * delta / allowed
        plan.energy_j += idle_w * (stretched - duration)
        plan.end_s = plan.start_s + stretched
        plan.power_w = idle_w + allowed
        plan.throttled = True

    def change(self, site: str, t: float, delta_w: float) -> None:
        """Record that the site's power changes by `delta_w` at time `t`."""
        self.sites[site].change(t, delta_w)

    def set_cap(self, site: str, cap_w: float | None, t: float) -> None:
        """Change the site's cap (None: none) at time `t`; steps waiting for power may go."""
        s = self.sites[site]
        if cap_w != s.cap_w:
            s.cap_w = cap_w
            self.freed(site, t)

    def freed(self, site: str, t: float) -> None:
        """A step at `site` gave its power back, due at `t` (its planned end: an engine loop
        that wakes late is the host's delay, not the step's), or the cap changed at `t`: a
        step waiting for power there could go from then on (SitePower.ready_t)."""
        s = self.sites[site]
        if t > s.ready_t:
            s.ready_t = t

    def close(self, t: float) -> None:
        for s in self.sites.values():
            s.advance(t)


class FirstRequest(Protocol):
    """A deployment as cap_blocks sees it (EnginePool)."""

    name: str
    site: str
    model: str

    @property
    def first_request_w(self) -> float:
        """Power one request adds on an idle replica (0 when unknown)."""
        ...


def cap_blocks(gov: PowerGovernor, pools: Sequence[FirstRequest]) -> dict[str, str]:
    """Per capped site where some model's requests can never start, why: before any request,
    its cap leaves less above the devices' idle draw than one request of that model adds on
    the least hungry deployment serving it there, so admission refuses them all (after
    waiting for power that never comes). Call it before any request is placed."""
    need: dict[str, dict[str, tuple[float, str]]] = {}
    for p in pools:
        if gov.capped(p.site):
            least = need.setdefault(p.site, {}).get(p.model)
            if least is None or p.first_request_w < least[0]:
                need[p.site][p.model] = (p.first_request_w, p.name)
    out = {}
    for site, models in need.items():
        blocked = {m: nw for m, nw in sorted(models.items()) if not gov.fits(site, nw[0])}
        if not blocked:
            continue
        s = gov.sites[site]
        adds = "; ".join(
            f"one request {'' if len(models) == 1 else f'for {m} '}adds {w:,.1f} W on {name}"
            for m, (w, name) in blocked.items()
        )
        whom = (
            "no request" if len(blocked) == len(models) else "no request for " + ", ".join(blocked)
        )
        out[site] = (
            f"its cap ({s.cap_w:,.1f} W) leaves {(s.cap_w or 0.0) - s.base_w:,.1f} W above the "
            f"devices' idle {s.base_w:,.1f} W, and {adds}: {whom} can start there"
        )
    return out
