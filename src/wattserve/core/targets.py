"""Routing targets: what a request can be sent to, as policies and admission see them.

Two pools live here, shared by both clocks: a deployment's engine replicas (`EnginePool`,
predictions from the PerfModel and the replicas' live state) and a hosted API (`HostedPool`,
its published profile and token prices). The gateway adds its own live kind over real servers
(`wattserve.serve.targets.UpstreamTarget`); all of them satisfy `Target`.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable
from typing import Any, Protocol

from wattserve.core.cost import token_usd
from wattserve.core.engine import EngineModel
from wattserve.core.fleet import DeploymentSpec, HostedSpec, replica_name
from wattserve.core.governor import EPS_W, Room
from wattserve.core.policy import TargetView, predict_each
from wattserve.core.ratelimit import TokenBucket
from wattserve.core.workload import Request


class Target(TargetView, Protocol):
    """A routing target: what policies read (TargetView) plus what admission, the governor
    and the two mechanisms use."""

    kind: str
    model: str
    outstanding: int
    rate_limited: bool

    @property
    def max_marginal_w(self) -> float:
        """The most power one more request can add (0 when unknown or none)."""
        ...

    def marginal_power_w(self) -> float:
        """The power one more request adds now (0 when unknown)."""
        ...

    def add(self, n: int) -> None:
        """Count `n` more (or fewer) outstanding requests."""
        ...

    def available(self, now: float) -> bool:
        """Whether its rate limit lets a request through at `now` (always, without one)."""
        ...

    def take(self) -> None:
        """Spend the rate limit's token of a request placed here."""
        ...

    def describe(self) -> dict[str, Any]:
        """Kind-specific live state for `/v1/fleet` (replicas or backends)."""
        ...


def make_engines(spec: DeploymentSpec, *, exact: bool) -> list[EngineModel]:
    """The replicas of a deployment as EngineModels (named deployment/index)."""
    return [
        EngineModel(
            replica_name(spec.name, i),
            spec.perf,
            spec.kv_blocks,
            exact=exact,
            priority=spec.scheduling == "priority",
        )
        for i in range(spec.replicas)
    ]


_outstanding = operator.attrgetter("outstanding")


class EnginePool:
    """The replicas of one deployment (replica choice: see next_replica)."""

    kind = "engine"
    rate_limited = False

    def __init__(
        self,
        spec: DeploymentSpec,
        engines: list[EngineModel],
        rng: random.Random,
        rtt: Callable[[str | None, str], float],
        headroom: Room | None = None,
    ) -> None:
        self.spec = spec
        # the power left under the site's cap now (None: no cap): under a cap, a request goes
        # where it adds the least power when the usual replica's increase does not fit
        self.headroom = headroom
        self.name = spec.name
        self.site = spec.site
        self.model = spec.model
        self.engines = engines
        self.rng = rng
        self.rtt = rtt
        self.perf = spec.perf
        self.outstanding = 0
        self.load = 0.0  # outstanding requests per replica
        chunk = spec.deployment.max_batched_tokens
        pre = self.perf.step(chunk, chunk * (chunk + 1) / 2, chunk, 1)
        self.prefill_s_per_token = pre.time_s / chunk
        # no request can add more than one replica's full dynamic power (0 when unknown)
        dyn = self.perf.busy_devices * self.perf.dynamic_w
        self.max_marginal_w = dyn if math.isfinite(dyn) else 0.0
        self.prefill_dyn_j_per_token = (pre.energy_j - self.perf.idle_power_w * pre.time_s) / chunk
        self._decode: dict[int, tuple[float, float]] = {}  # see decode_step
        self._rtt: dict[str | None, float] = {}  # by origin site (links are fixed)
        self.usd_per_j = spec.cost.billable()[1]  # rented: in the hourly price; unknown: 0
        self.clock: list[float] = [0.0]  # shared with the view: the time of the decision
        self._memo: Request | None = None
        self._memo_engine: EngineModel | None = None
        self._memo_vals = (0.0, 0.0, 0.0, 0.0)
        self._next: EngineModel | None = None  # see next_replica

    def add(self, n: int) -> None:
        """Count `n` more (or fewer) outstanding requests."""
        self.outstanding += n
        self.load = self.outstanding / len(self.engines)

    def available(self, now: float) -> bool:
        return True

    def take(self) -> None:
        """A deployment has no rate limit."""

    def describe(self) -> dict[str, Any]:
        return {
            "hardware": self.spec.deployment.hardware.id,
            "replicas": [
                {
                    "name": e.name,
                    "batch": e.batch,
                    "waiting": len(e.waiting),
                    "power_w": round(e.power_w, 2),
                }
                for e in self.engines
            ],
        }

    def decode_step(self, batch: int, ctx: int) -> tuple[float, float]:
        """(seconds, dynamic joules) of one decode step of `batch` sequences at a context of
        `ctx` tokens, a power of 2 (memoised by batch and exponent)."""
        key = batch << 6 | ctx.bit_length() - 1
        hit = self._decode.get(key)
        if hit is None:
            c = self.perf.step(batch, batch * (ctx + 1.0), batch * (ctx + 1.0), batch)
            hit = (c.time_s, c.energy_j - self.perf.idle_power_w * c.time_s)
            self._decode[key] = hit
        return hit

    def forget(self) -> None:
        """Drop the predictions kept for the last request (View.decide_at)."""
        self._memo = None

    def predict(self, req: Request) -> tuple[float, float, float, float]:
        if self._memo is req:
            return self._memo_vals
        e = self._next or self.next_replica()
        self._memo_engine = e
        batch = len(e.running)
        running = batch + 1 if batch < e.max_seqs else e.max_seqs
        exp = (req.prompt_tokens + req.output_tokens // 2).bit_length()  # context, rounded up
        exp = exp if exp > 4 else 4  # to a power of 2 (at least 16)
        hit = self._decode.get(running << 6 | exp)
        step_s, step_j = hit or self.decode_step(running, 1 << exp)
        # queued prefill shares steps with the running decodes: each chunk also carries them
        ttft = (e.pending_prefill + req.prompt_tokens) * self.prefill_s_per_token + step_s
        if e.plan is not None:
            ttft += step_s
        ahead = batch + len(e.waiting) - e.max_seqs
        if ahead >= 0:  # no free sequence slot: wait for running ones to finish
            left = e.remaining_output(ahead)
            if left is not None:
                ttft += (left - e.steps_done(self.clock[0])) * step_s
        rtt = self._rtt.get(req.origin)
        if rtt is None:
            rtt = self._rtt[req.origin] = self.rtt(req.origin, self.site)
        joules = (
            req.prompt_tokens * self.prefill_dyn_j_per_token + req.output_tokens * step_j / running
        )
        self._memo, self._memo_vals = req, (ttft + rtt, step_s, joules, joules * self.usd_per_j)
        return self._memo_vals

    def replica_for(self, req: Request) -> EngineModel:
        """The replica the predictions for `req` were made on (so placement matches them)."""
        e = self._memo_engine if self._memo is req and self._memo_engine is not None else None
        e = e or self.next_replica()
        self._next = None  # the next request here draws afresh
        return e

    def next_replica(self) -> EngineModel:
        """The replica the next request placed here goes to. Up to 4 replicas: the least
        loaded now. More: the less loaded of two random picks, drawn once per placement rather
        than per prediction (policies predict every pool for every request); its live state is
        read at each prediction. Under a cap, see _within_power."""
        if len(self.engines) <= 4:
            least = min(self.engines, key=_outstanding)
            return least if self.headroom is None else self._within_power(least)
        drawn = self._next
        if drawn is None:
            drawn = self.pick_replica()
            if self.headroom is not None:
                drawn = self._within_power(drawn)
            self._next = drawn
        return drawn

    def _within_power(self, e: EngineModel) -> EngineModel:
        """`e`, or, when one more sequence there would not fit under the site's cap, the
        replica where it adds the least power, if that fits (a replica with a free sequence
        slot first): a capped site fills a running engine before it wakes an idle one, which
        draws the most (its first sequence brings the whole step's load)."""
        assert self.headroom is not None
        room = self.headroom() + EPS_W  # as the governor's fits: a site at its cap to the
        # last bit (a step slowed to the cap) takes what adds nothing, whatever the rounding
        if room >= self.max_marginal_w:
            return e  # even a replica's whole dynamic power fits
        slowed = self.headroom.slowed_to_w()
        if self._adds_w(e, slowed) <= room:
            return e
        cheapest = min(
            self.engines, key=lambda r: (r.outstanding >= r.max_seqs, self._adds_w(r, slowed))
        )
        return cheapest if self._adds_w(cheapest, slowed) <= room else e

    @property
    def first_request_w(self) -> float:
        """Power one request adds on an idle replica: what admission under a cap asks for
        first (0 when unknown)."""
        return self._marginal_at(0)

    def replica_marginal_w(self, e: EngineModel) -> float:
        """Power one more running sequence adds on replica `e` (0 when unknown). Under a cap
        that slows a step too big for it (`Room.slowed_to_w`), a replica that is running adds
        at most what the cap leaves above its draw: its next step, heavier by the request, is
        slowed to that, as a power-capped GPU takes the work and runs slower (so it adds
        nothing when its step is slowed already). An idle replica's first request adds its
        whole step's load: a cap too low for that admits none (core.governor.cap_blocks)."""
        return self._adds_w(e, None if self.headroom is None else self.headroom.slowed_to_w())

    def _adds_w(self, e: EngineModel, slowed_w: float | None) -> float:
        """replica_marginal_w, given the site's `slowed_to_w`."""
        w = self._marginal_at(min(e.max_seqs, e.outstanding))
        plan = e.plan
        if plan is None or slowed_w is None:
            return w
        left = slowed_w - (plan.power_w - e.idle_w)
        return w if w <= left else (left if left > 0.0 else 0.0)

    def _marginal_at(self, b: int) -> float:
        """Power a replica running `b` sequences adds with one more (0 when unknown)."""
        t1, j1 = self.decode_step(b + 1, 1024)
        w = j1 / t1
        if b:
            t0, j0 = self.decode_step(b, 1024)
            w -= j0 / t0
        return w if w > 0 else 0.0  # unknown power (NaN) cannot be governed: 0

    # each question about the request just predicted is a memo hit, asked inline
    def ttft_s(self, req: Request) -> float:
        return (self._memo_vals if self._memo is req else self.predict(req))[0]

    def tpot_s(self, req: Request) -> float:
        return (self._memo_vals if self._memo is req else self.predict(req))[1]

    def joules(self, req: Request) -> float:
        return (self._memo_vals if self._memo is req else self.predict(req))[2]

    def usd(self, req: Request) -> float:
        return (self._memo_vals if self._memo is req else self.predict(req))[3]

    def marginal_power_w(self) -> float:
        """Power added by one more running sequence: without a cap, on a replica at the
        deployment's mean load; under one, on the replica the next request goes to."""
        if self.headroom is not None:
            return self.replica_marginal_w(self._next or self.next_replica())
        n = len(self.engines)
        return self._marginal_at(min(self.spec.deployment.max_num_seqs, int(self.outstanding / n)))

    def pick_replica(self) -> EngineModel:
        """The less loaded of two random replicas."""
        engines = self.engines
        n = len(engines)
        if n <= 0xFFFF:  # both picks from one draw: its two 16-bit halves (bias < n / 65536)
            r = self.rng.getrandbits(32)
            a, b = engines[(r & 0xFFFF) % n], engines[(r >> 16) % n]
        else:
            a, b = engines[self.rng.randrange(n)], engines[self.rng.randrange(n)]
        return a if a.outstanding <= b.outstanding else b


class HostedPool:
    """A hosted API: latency from its profile, price per token, optional rate limit.
    For load it counts as 64 concurrent slots."""

    kind = "hosted"
    SLOTS = 64
    max_marginal_w = 0.0  # its power is not drawn at any site the fleet governs

    def __init__(self, spec: HostedSpec, rtt: Callable[[str | None, str], float]) -> None:
        self.spec = spec
        self.name = spec.name
        self.site = spec.site
        self.model = spec.model
        self.rtt = rtt
        self.outstanding = 0
        self.load = 0.0
        rate = spec.rate_limit_rps
        self.bucket = None if rate is None else TokenBucket(rate)
        self.rate_limited = self.bucket is not None

    def add(self, n: int) -> None:
        self.outstanding += n
        self.load = self.outstanding / self.SLOTS

    def available(self, now: float) -> bool:
        return self.bucket is None or self.bucket.available(now)

    def take(self) -> None:
        if self.bucket is not None:
            self.bucket.take()

    def marginal_power_w(self) -> float:
        return 0.0

    def describe(self) -> dict[str, Any]:
        return {"provider": self.spec.provider}

    def ttft_s(self, req: Request) -> float:
        return self.spec.ttft_s + self.rtt(req.origin, self.site)

    def tpot_s(self, req: Request) -> float:
        return 1.0 / self.spec.output_tokens_per_s

    def joules(self, req: Request) -> float:
        j = self.spec.energy_j(req.prompt_tokens, req.output_tokens)
        return math.inf if j is None else j

    def usd(self, req: Request) -> float:
        s = self.spec
        return token_usd(
            req.prompt_tokens, req.output_tokens, s.usd_per_mtok_input, s.usd_per_mtok_output
        )

    def predict(self, req: Request) -> tuple[float, float, float, float]:
        return predict_each(self, req)
