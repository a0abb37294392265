"""The one token bucket: a rate limit of `rate_per_s` requests a second with a burst, on
whatever clock the caller passes (the simulator's virtual seconds or the gateway's monotonic
ones). Hosted APIs' limits in `simulate` and `serve`, and API keys' limits, all use it."""

from __future__ import annotations

import math
from collections import deque

# the deepest bucket `refused_share` integrates (its grid grows with the burst)
MAX_GRID_BURST = 1e7


def default_burst(rate_per_s: float) -> float:
    """A bucket's burst when none is given: one second's worth, at least one token."""
    return max(1.0, rate_per_s)


class TokenBucket:
    """Starts full; holds at most `burst` tokens (default: one second's worth, at least one)."""

    __slots__ = ("burst", "rate_per_s", "t", "tokens")

    def __init__(self, rate_per_s: float, *, burst: float | None = None, now: float = 0.0):
        self.rate_per_s = rate_per_s
        self.burst = default_burst(rate_per_s) if burst is None else burst
        self.tokens = self.burst
        self.t = now

    def refill(self, now: float) -> float:
        """Tokens in the bucket at `now` (a clock that goes back adds nothing)."""
        if now > self.t:
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate_per_s)
            self.t = now
        return self.tokens

    def available(self, now: float) -> bool:
        """Whether a request may pass at `now` (without taking its token)."""
        return self.refill(now) >= 1.0

    def take(self) -> None:
        """Take the token of a request that `available` let through."""
        self.tokens -= 1.0

    def try_take(self, now: float) -> bool:
        """Take a token at `now` if there is one."""
        if self.refill(now) >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def refused_share(arrivals_per_s: float, rate_per_s: float, burst: float | None = None) -> float:
    """The share of Poisson arrivals at `arrivals_per_s` that a TokenBucket(rate_per_s, burst)
    refuses, in the long run.

    The bucket's deficit, in seconds of refill, is the workload of a single-server queue that
    admits an arrival only while the deficit is at most K = (burst - 1) / rate, each admitted
    one adding s = 1 / rate. Level crossing gives its distribution F (an atom at 0, a density
    on (0, K + s]): f(x) = lambda (F(min(x, K)) - F(x - s)), integrated here on a grid by the
    trapezoid rule; an arrival is refused when the deficit is past K (Poisson arrivals see
    the long-run distribution), so the share is 1 - F(K) / F(K + s). With a burst of one token
    it is Erlang's loss, lambda s / (1 + lambda s); tests check it against the bucket itself.
    The grid has about max(20,000, 2 * burst) points (a second per 2 million on the
    development machine): `poisson_rate_within` does not need it for deep buckets. A burst
    under one token passes nothing."""
    burst = default_burst(rate_per_s) if burst is None else burst
    if not (rate_per_s > 0.0 and math.isfinite(rate_per_s) and burst <= MAX_GRID_BURST):
        raise ValueError(
            f"a token bucket of {rate_per_s!r} tokens/s and burst {burst!r}: the grid takes "
            f"bursts of up to {MAX_GRID_BURST:,.0f} tokens"
        )
    if not arrivals_per_s > 0.0:
        return 0.0
    if burst < 1.0:
        return 1.0
    s = 1.0 / rate_per_s
    # grid points per s: fine for small bursts, about 20,000 in all; at least enough that a
    # step takes in under a quarter of an arrival (c below: the trapezoid step stays stable)
    m = max(2, min(64, math.ceil(20_000 / burst)), math.ceil(2.0 * arrivals_per_s * s))
    h = s / m
    k = round((burst - 1.0) * m)  # K on the grid
    c = arrivals_per_s * h / 2.0
    # F at the grid points, unnormalised (F(0) = P(no deficit) taken as 1); each step needs the
    # last m + 1 only, and F(K) once past it
    window: deque[float] = deque([1.0], maxlen=m + 1)
    f_k = 1.0
    for i in range(1, k + m + 1):
        g = window[-m] if i >= m else 0.0  # F(x - s)
        g_prev = window[-m - 1] if i > m else 0.0
        if i <= k:  # F' = lambda (F(x) - F(x - s)): the trapezoid step, solved for F_i
            new = (window[-1] * (1.0 + c) - c * (g + g_prev)) / (1.0 - c)
        else:  # past K every arrival is refused: F' = lambda (F(K) - F(x - s))
            new = window[-1] + c * (2.0 * f_k - g - g_prev)
        window.append(new)
        if i == k:
            f_k = new
        if new > 1e200:  # arrivals past the rate: F grows without bound; it is linear in F(0)
            window = deque((v * 1e-200 for v in window), maxlen=m + 1)
            f_k *= 1e-200
    share = 1.0 - f_k / window[-1]
    return min(1.0, max(0.0, share))


def poisson_rate_within(rate_per_s: float, share: float, burst: float | None = None) -> float:
    """The largest Poisson arrival rate a TokenBucket(rate_per_s, burst) refuses at most
    `share` of (refused_share, by bisection to 0.1%); at most `rate_per_s`. A bucket deep
    enough that arrivals at the full rate see about 1 / (2 burst) refused (the deficit's
    random walk without drift: 0.0050 at a burst of 100, 0.025 at 20, by the grid) passes the
    full rate; no share refused (`share` <= 0) passes none, as Poisson arrivals overflow any
    bucket some time."""
    burst_tokens = default_burst(rate_per_s) if burst is None else burst
    if share <= 0.0:
        return 0.0
    if 1.0 / (2.0 * burst_tokens) <= share:
        return rate_per_s
    lo, hi = 0.0, rate_per_s
    if refused_share(hi, rate_per_s, burst) <= share:
        return hi
    while hi - lo > 1e-3 * rate_per_s:
        mid = (lo + hi) / 2.0
        if refused_share(mid, rate_per_s, burst) <= share:
            lo = mid
        else:
            hi = mid
    return lo
