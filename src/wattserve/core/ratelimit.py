"""The one token bucket: a rate limit of `rate_per_s` requests a second with a burst, on
whatever clock the caller passes (the simulator's virtual seconds or the gateway's monotonic
ones). Hosted APIs' limits in `simulate` and `serve`, and API keys' limits, all use it."""

from __future__ import annotations


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
