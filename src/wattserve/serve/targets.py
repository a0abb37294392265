"""Live routing targets over real backends (OpenAI-compatible servers, hosted APIs reached
over HTTP), with the interface policies and admission read (`wattserve.core.targets.Target`):
predictions blend a prior (the PerfModel, or a provider's published profile) with measured TTFT
and TPOT, and load is the live count of requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

from wattserve.core.governor import PowerGovernor
from wattserve.core.perf import PerfModel
from wattserve.core.policy import predict_each
from wattserve.core.ratelimit import TokenBucket
from wattserve.core.workload import Request
from wattserve.serve.backends.base import Backend

EWMA = 0.2  # weight of the newest measurement
SLOTS = 64  # a hosted API's server counts as this many concurrent slots


# the context a server's decode is drawn at: the figure its one-request draw (admission's
# `max_marginal_w`) has always been taken at
DRAW_CONTEXT = 1024


def server_draw(
    governor: PowerGovernor,
    site: str,
    pm: PerfModel,
    replicas: int,
    power_changed: asyncio.Condition | None = None,
) -> ServerDraw | None:
    """The ServerDraw of a deployment's servers, or None where their power is not known (a
    device without power figures: nothing is added, and admission lets any request on)."""
    if pm.power_missing or not math.isfinite(pm.idle_power_w):
        return None
    return ServerDraw(governor, site, pm, replicas, power_changed)


class ServerDraw:
    """What a deployment's servers draw at their site, by the PerfModel (the gateway reads no
    server's meter): its replicas' idle draw from the start, and over it a decode step's at
    the batch each replica has in flight (requests spread evenly over `replicas`), changed as
    requests start and end. Before 2026-12-06 a server drew nothing in the gateway's
    accounts, so a site of servers was never at its cap, however many requests it took."""

    def __init__(
        self,
        governor: PowerGovernor,
        site: str,
        pm: PerfModel,
        replicas: int,
        power_changed: asyncio.Condition | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.governor, self.site, self.pm, self.replicas = governor, site, pm, replicas
        self.power_changed, self.clock = power_changed, clock
        self.drawn_w = 0.0  # over idle, now
        self._by_batch: dict[int, float] = {}
        governor.add_base(site, replicas * pm.idle_power_w)

    def _batch_w(self, batch: int) -> float:
        """Watts over idle of one replica decoding `batch` sequences (kept: at most
        max_num_seqs of them)."""
        if batch <= 0:
            return 0.0
        w = self._by_batch.get(batch)
        if w is None:
            step = self.pm.decode_step(batch, DRAW_CONTEXT)
            w = self._by_batch[batch] = max(0.0, step.power_w - self.pm.idle_power_w)
        return w

    def dynamic_w(self, in_flight: int) -> float:
        """Watts over idle with `in_flight` requests spread over the replicas, each running
        at most its deployment's `max_num_seqs` at once (the rest wait in its queue, drawing
        nothing: a local llama.cpp server runs one)."""
        q, r = divmod(max(0, in_flight), self.replicas)
        most = self.pm.deployment.max_num_seqs
        return r * self._batch_w(min(q + 1, most)) + (self.replicas - r) * self._batch_w(
            min(q, most)
        )

    def set(self, in_flight: int) -> None:
        """The servers now have `in_flight` requests: the site's power follows; power given
        back is offered to the steps waiting for it there (emulated replicas at that site)."""
        new = self.dynamic_w(in_flight)
        delta = new - self.drawn_w
        if not delta:
            return
        self.drawn_w = new
        t = self.clock()
        self.governor.change(self.site, t, delta)
        if delta < 0:
            self.governor.freed(self.site, t)
            cond = self.power_changed
            if cond is not None:
                with contextlib.suppress(RuntimeError):  # no running loop: nobody waits
                    asyncio.get_running_loop().create_task(_notify(cond))


async def _notify(cond: asyncio.Condition) -> None:
    async with cond:
        cond.notify_all()


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
        draw: ServerDraw | None = None,
        replicas: int | None = None,
        max_num_seqs: int | None = None,
    ) -> None:
        """`replicas` and `max_num_seqs`: a deployment's, as its fleet file declares them:
        its `load` is requests per replica, as simulate's engine pool counts them, and its
        predicted TTFT grows by the prior's once per `max_num_seqs` requests a replica
        (until 2026-12-06 a deployment's servers counted as 64 slots a URL: with two
        emulated H100s beside one server, least loaded sent seven requests of eight to the
        server, simulate four). A hosted API,
        whose servers nobody here knows, counts as SLOTS a backend."""
        self.name, self.site, self.model = name, site, model
        self.backends = backends
        self.prior = (prior_ttft_s, prior_tpot_s)
        self.measured: list[float | None] = [None, None]
        self._joules, self._usd, self.rtt = joules, usd, rtt
        self.bucket = None if rate_limit_rps is None else TokenBucket(rate_limit_rps)
        self.rate_limited = self.bucket is not None
        self.draw = draw  # None: a hosted API, whose power no site here draws
        # one request's draw from idle: admission's figure (0: unknown, any request fits)
        self.max_marginal_w = 0.0 if draw is None else draw.dynamic_w(1)
        self.outstanding = 0
        self.load = 0.0
        slots = SLOTS * max(1, len(backends))
        self.per_load = slots if replicas is None else max(1, replicas)
        self.per_queue = slots if replicas is None else max(1, replicas * (max_num_seqs or 1))

    def add(self, n: int) -> None:
        self.outstanding += n
        self.load = self.outstanding / self.per_load
        if self.draw is not None:
            self.draw.set(self.outstanding)

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
        queue = 1.0 + self.outstanding / self.per_queue
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
        """What one more request adds now: less than the first one does once the servers
        batch several."""
        if self.draw is None:
            return self.max_marginal_w
        return self.draw.dynamic_w(self.outstanding + 1) - self.draw.drawn_w

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
