"""The one token bucket: a rate limit of `rate_per_s` requests a second with a burst, on
whatever clock the caller passes (the simulator's virtual seconds or the gateway's monotonic
ones). Hosted APIs' limits in `simulate` and `serve`, and API keys' limits, all use it."""

from __future__ import annotations

import math


class TokenBucket:
    """Starts full; holds at most `burst` tokens (default: one second's worth, at least one)."""

    __slots__ = ("burst", "rate_per_s", "t", "tokens")

    def __init__(self, rate_per_s: float, *, burst: float | None = None, now: float = 0.0):
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, rate_per_s) if burst is None else burst
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
    it is Erlang's loss, lambda s / (1 + lambda s); tests check it against the bucket itself."""
    if arrivals_per_s <= 0.0:
        return 0.0
    burst = max(1.0, rate_per_s) if burst is None else burst
    s = 1.0 / rate_per_s
    # grid points per s: fine for small bursts, at most about 20,000 points in all
    m = max(2, min(64, math.ceil(20_000 / burst)))
    h = s / m
    k = round((burst - 1.0) * m)  # K on the grid
    c = arrivals_per_s * h / 2.0
    f = [1.0]  # F at the grid points, unnormalised (F(0) = P(no deficit) taken as 1)
    for i in range(1, k + m + 1):
        g = f[i - m] if i >= m else 0.0  # F(x - s)
        g_prev = f[i - 1 - m] if i - 1 >= m else 0.0
        if i <= k:  # F' = lambda (F(x) - F(x - s)): the trapezoid step, solved for F_i
            f.append((f[i - 1] * (1.0 + c) - c * (g + g_prev)) / (1.0 - c))
        else:  # past K every arrival is refused: F' = lambda (F(K) - F(x - s))
            f.append(f[i - 1] + c * (2.0 * f[k] - g - g_prev))
    return 1.0 - f[k] / f[-1]


def poisson_rate_within(rate_per_s: float, share: float, burst: float | None = None) -> float:
    """The largest Poisson arrival rate a TokenBucket(rate_per_s, burst) refuses at most
    `share` of (refused_share, by bisection to 0.1%); at most `rate_per_s`."""
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
