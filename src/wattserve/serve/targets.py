"""Live routing targets over real backends (OpenAI-compatible servers, hosted APIs reached
over HTTP), with the interface policies and admission read (`wattserve.core.targets.Target`):
predictions blend a prior (the PerfModel, or a provider's published profile) with measured TTFT
and TPOT, and load is the live count of requests in flight."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from wattserve.core.policy import predict_each
from wattserve.core.ratelimit import TokenBucket
from wattserve.core.workload import Request
from wattserve.serve.backends.base import Backend

EWMA = 0.2  # weight of the newest measurement
SLOTS = 64  # a server or hosted API counts as this many concurrent slots for `load`


class UpstreamTarget:
    """One deployment (or hosted API) reached over HTTP: one or more backends."""

    kind = "upstream"

    def __init__(
        self,
        name: str,
        site: str,
        model: str,
        backends: list[Backend],
        prior_ttft_s: float,
        prior_tpot_s: float,
        joules: Callable[[Request], float],
        usd: Callable[[Request], float],
        rtt: Callable[[str | None, str], float],
        rate_limit_rps: float | None = None,
        marginal_w: float | None = None,
    ) -> None:
        self.name, self.site, self.model = name, site, model
        self.backends = backends
        self.prior = (prior_ttft_s, prior_tpot_s)
        self.measured: list[float | None] = [None, None]
        self._joules, self._usd, self.rtt = joules, usd, rtt
        self.bucket = None if rate_limit_rps is None else TokenBucket(rate_limit_rps)
        self.rate_limited = self.bucket is not None
        self.max_marginal_w = marginal_w or 0.0
        self.outstanding = 0
        self.load = 0.0

    def add(self, n: int) -> None:
        self.outstanding += n
        self.load = self.outstanding / (SLOTS * max(1, len(self.backends)))

    def available(self, now: float) -> bool:
        return self.bucket is None or self.bucket.available(now)

    def take(self) -> None:
        if self.bucket is not None:
            self.bucket.take()

    def observe(self, ttft_s: float | None, tpot_s: float | None) -> None:
        for i, v in enumerate((ttft_s, tpot_s)):
            if v is not None and math.isfinite(v):
                old = self.measured[i]
                self.measured[i] = v if old is None else (1 - EWMA) * old + EWMA * v

    def _blend(self, i: int) -> float:
        m = self.measured[i]
        return self.prior[i] if m is None else 0.5 * (m + self.prior[i])

    def ttft_s(self, req: Request) -> float:
        queue = 1.0 + self.outstanding / (SLOTS * max(1, len(self.backends)))
        return self._blend(0) * queue + self.rtt(req.origin, self.site)

    def tpot_s(self, req: Request) -> float:
        return self._blend(1)

    def joules(self, req: Request) -> float:
        return self._joules(req)

    def usd(self, req: Request) -> float:
        return self._usd(req)

    def predict(self, req: Request) -> tuple[float, float, float, float]:
        return predict_each(self, req)

    def marginal_power_w(self) -> float:
        return self.max_marginal_w

    @property
    def first_request_w(self) -> float:
        """Power one request adds (0 when unknown): admission's one figure for a server, as
        EnginePool.first_request_w is for an idle replica."""
        return self.max_marginal_w

    def describe(self) -> dict[str, Any]:
        return {
            "backends": [
                {"name": b.name, "healthy": b.healthy, "kind": b.kind} for b in self.backends
            ],
            # what the predictions blend with the prior (None: nothing measured yet)
            "measured_ttft_s": self.measured[0],
            "measured_tpot_s": self.measured[1],
        }

    def pick(self, avoid: set[str]) -> Backend | None:
        """The healthy backend with the fewest requests in flight, not in `avoid`."""
        ok = [b for b in self.backends if b.healthy and b.name not in avoid]
        if not ok:
            return None
        return min(ok, key=lambda b: getattr(b, "in_flight", 0))
