"""One replica's steady state with its prefill steps apart from its decode steps, and the
percentiles of TTFT and TPOT that follow: `plan --capacity analytic` (docs/plan.md).

The mean steady state of `capacity._steady_tau` spreads every arriving prompt evenly over the
steps (r * tau * p prefill tokens in each). A step's time is the larger of reading the weights
and computing, so a decode step that a 1,000-token prompt joins takes several times one that
no prompt joins, and the mean of the two is well above the step at the mean tokens: one L4
pair serving Llama-3.1-8B at 1,000/200 tokens was put at 2.74 req/s where the simulated
replica holds its p99 at 0.92. Here, as the engine schedules (chunked prefill, vLLM's
scheduler and `EngineModel`):

- prompts arrive Poisson at rate r, so a step of mean length tau sees r * tau of them, and a
  share f = 1 - exp(-r * tau * n) of steps carries a prefill chunk (n chunks to a prompt of p
  tokens, each within the step's token budget less its decodes), with r * tau * p / f prompt
  tokens in each such step (or the whole budget, and more such steps, once they fill it);
  tau = (1 - f) * t_decode + f * t_prefill, with r * (o - 1) * tau sequences decoding
  (Little's law: a request's first token ends its prefill, o - 1 decode steps follow);
- a prompt's own cost, delta, is the time its tokens add to the steps they join;
- TPOT at the class's percentile: for every prompt that arrives in a request's window (its
  decode steps, and the prefill and wait before its first token: prompts that came meanwhile
  are prefilled after it), one chunk's time lengthens one of its o - 1 steps (at most all of
  them); the count is Poisson, and a slow request's window is itself longer (solved
  together). The batch about its mean (Poisson, M/G/infinity) lengthens each decode step by
  its slope.
- TTFT at the percentile: the decode step under way, its own prefill steps, the wait behind
  other prompts' work and the prompts that arrive while it waits, which its own step carries
  (the engine admits every waiting prompt its token budget holds). The wait is an M/D/1
  queue whose service is delta or, once prompts fill the steps' token budget, a prompt's
  share of it (p / room full steps): one service's uniform residual at light load, the tail
  exp(-theta t) with r * (exp(theta * service) - 1) = theta beyond it (Cramer-Lundberg;
  Asmussen, "Applied Probability and Queues", XIII.5).

Held against the simulated capacity over 30 configurations and request shapes (L4, A100 and
H100; Llama-3.1-8B and 70B; `python benchmarks/plan_analytic.py`): 0.78-1.10x of it, where the
mean steady state gave 1.0-5.4x; classes whose TTFT budget leaves little beyond one
request's own prefill, up to 2.9x; with 256- to 8,192-token steps, 0.68-1.47x (docs/plan.md).
Those shapes have fixed lengths: a class is taken at its mean prompt and output, so one whose
lengths spread widely (lognormal, sigma 0.8, at p99) was put at 2-6x its simulated capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from wattserve.core.deployment import Deployment
from wattserve.core.perf import PerfModel

# Poisson counts past this mean take the normal approximation (their quantile within a count)
POISSON_EXACT_MAX = 50.0
WAIT_STEPS = 8  # grid points of the wait per service (`wait_quantile`)
WAIT_MAX_SERVICES = 15  # ... and the longest wait it follows, in services (past it: the tail)
MAX_SHARE = 0.9999  # the largest share of requests `percentiles` takes (an SLO's p100)
ITERATIONS = 200  # of the damped fixed point on tau; past them the rate counts as unstable


@dataclass(frozen=True, slots=True)
class MixedSteady:
    """A replica's steady state at one rate (times in seconds)."""

    tau: float  # mean time between a running sequence's tokens
    batch: float  # mean sequences in the batch, prefilling or decoding
    decoding: float  # ... of them decoding
    t_decode: float  # a step that no prompt joins
    t_own: float  # a prompt's own prefill steps
    delta: float  # the time a prompt's tokens add to the steps they join
    service: float  # the time a prompt holds the steps' prefill budget (the TTFT queue's)
    chunks: int  # the steps a prompt's prefill takes
    slope: float  # the time one more running sequence adds to a decode step
    prefill_share: float  # of steps, those that carry a prefill chunk
    t_prefill: float  # such a step
    decode_power_w: float
    prefill_power_w: float


def mixed_steady(pm: PerfModel, dep: Deployment, rate: float, p: int, o: int) -> MixedSteady | None:
    """The steady state at `rate` of requests of `p` prompt and `o` output tokens, or None
    when there is none (prefill outruns the steps, or the step time grows without end)."""
    ctx = p + o / 2.0
    tau = pm.decode_step(1, int(ctx)).time_s
    for _ in range(ITERATIONS):
        # the sequences decoding: a request's first token ends its prefill, o - 1 steps follow
        batch = rate * (o - 1) * tau
        room = dep.max_batched_tokens - batch  # a step's tokens left for prefill chunks
        if room < 1:
            return None
        b = max(batch, 1.0)
        t_decode = pm.step_time(b, b * ctx, b * ctx, b)
        chunks = math.ceil(p / room)
        share = -math.expm1(-rate * tau * chunks)
        tokens = rate * tau * p / share  # in a step that carries prefill
        if tokens > room:  # such steps fill their budget, and more steps carry prefill
            tokens, share = room, rate * tau * p / room
            if share > 1.0:  # even every step full: prefill outruns the steps
                return None

        def step_s(x: float, batch: float = batch) -> float:
            return pm.step_time(batch + x, batch * ctx + x * p / 2.0, batch * ctx + x, batch + 1)

        t_prefill = step_s(tokens)
        new = (1.0 - share) * t_decode + share * t_prefill
        if not math.isfinite(new) or new > 1e3:
            return None
        if abs(new - tau) <= 1e-9 + 1e-6 * tau:
            tau = new
            break
        tau = 0.5 * (tau + new)  # damped: the undamped iteration oscillates near saturation
    else:  # still moving: near a rate where a prompt takes one chunk more, tau hops between
        if abs(new - tau) > 0.05 * tau:  # two values; further apart, no steady state
            return None
    chunk = min(float(p), room)
    if tokens + chunk <= room:  # it joins a step that carries prefill already
        delta = chunks * (step_s(tokens + chunk) - step_s(tokens))
    else:
        delta = chunks * (step_s(chunk) - t_decode)
    wider = b + 1
    slope = pm.step_time(wider, wider * ctx, wider * ctx, wider) - t_decode
    prefill_step = pm.step(
        batch + tokens, batch * ctx + tokens * p / 2.0, batch * ctx + tokens, batch + 1
    )
    own = chunks * step_s(max(chunk, tokens))
    # the time a prompt holds the steps' prefill budget: its marginal time, or, once prefill
    # fills the steps' budget, its share of the steps (p / room full steps)
    service = max(delta, p / room * t_prefill)
    return MixedSteady(
        tau,
        rate * (own + (o - 1) * tau),  # in the system: prefilling, then decoding (Little)
        rate * (o - 1) * tau,
        t_decode,
        own,
        max(delta, 0.0),
        max(service, 0.0),
        chunks,
        max(slope, 0.0),
        share,
        t_prefill,
        pm.step(b, b * ctx, b * ctx, b).power_w,
        prefill_step.power_w,
    )


def percentiles(s: MixedSteady, rate: float, o: int, pct: float) -> tuple[float, float]:
    """(TPOT, TTFT) at the `pct` share of requests (see the module docstring); a share of 1
    is taken as MAX_SHARE (Poisson arrivals leave no rate at which every request meets a
    limit)."""
    pct = min(pct, MAX_SHARE)
    u = rate * s.service  # the share of time prompts' work holds the steps' budget
    if u >= 1.0:
        return math.inf, math.inf
    # the decode step under way (prefill steps under way are other prompts' work: the wait)
    ttft = s.t_decode + s.t_own + wait_quantile(rate, s.service, pct)
    if o <= 1:  # one token: no time between tokens
        return 0.0, ttft
    before = s.t_own + u * s.service / (2.0 * (1.0 - u))  # its prefill and mean wait (M/D/1)
    mean_count = rate * ((o - 1) * s.tau + before)
    base = s.tau + NormalDist().inv_cdf(pct) * math.sqrt(s.decoding) * s.slope
    per_step = s.delta / s.chunks  # what one chunk adds to one of its steps
    tpot = base
    for _ in range(50):
        count = poisson_quantile(rate * ((o - 1) * tpot + before), pct)
        # the chunks past the mean, each lengthening one of its o - 1 steps (at most all)
        steps = min(o - 1.0, max(0.0, count - mean_count) * s.chunks)
        new = base + per_step * steps / (o - 1)
        if abs(new - tpot) <= 1e-9 or new > 1e3:
            return new, ttft
        tpot = new
    return tpot, ttft


def poisson_quantile(mean: float, q: float) -> float:
    """The smallest count whose Poisson(`mean`) CDF reaches `q` (normal past
    POISSON_EXACT_MAX)."""
    if mean <= 0:
        return 0.0
    if mean > POISSON_EXACT_MAX:
        return mean + NormalDist().inv_cdf(q) * math.sqrt(mean)
    k, term = 0, math.exp(-mean)
    total = term
    while total < q and k < POISSON_EXACT_MAX * 4:  # q near 1: the sum may stop short of it
        k += 1
        term *= mean / k
        total += term
    return float(k)


def wait_quantile(rate: float, service: float, pct: float) -> float:
    """The `pct` quantile of what other prompts add to a request's first token: W + service *
    N, where W is its wait behind their work (an M/D/1 queue: with probability u = rate *
    service it waits, its survival the larger of one service's uniform residual, u * (1 - x /
    service), and the Cramer-Lundberg tail, u * exp(-theta * x)) and N ~ Poisson(rate * W)
    the prompts that arrive while it waits, which its own step then carries (the engine
    admits every waiting prompt its token budget holds). Computed on a grid of W."""
    u = rate * service
    if u <= 0.0:
        return 0.0
    if u >= 1.0:
        return math.inf
    theta = _md1_decay(rate, service)
    tail = math.log(u / (1.0 - pct)) / theta if u > 1.0 - pct else 0.0
    if tail > WAIT_MAX_SERVICES * service:  # heavy traffic: the wait is many services long,
        return tail * (1.0 + u)  # and those who come meanwhile add their mean, rate * W * S

    def survival(x: float) -> float:
        return u * max(1.0 - x / service, math.exp(-theta * x))

    h = service / WAIT_STEPS
    points = [(0.0, 1.0 - u)]  # (what it adds, probability)
    x = 0.0
    while True:
        mass = survival(x) - survival(x + h)
        w = x + h / 2.0
        term, n, left = math.exp(-rate * w), 0, mass
        while left > 1e-5 * mass and n <= 30:
            points.append((w + n * service, mass * term))
            left -= mass * term
            n += 1
            term *= rate * w / n
        x += h
        if survival(x) < (1.0 - pct) * 1e-3 or x > 2 * WAIT_MAX_SERVICES * service:
            break
    points.sort()
    total = 0.0
    for added, p in points:
        total += p
        if total >= pct:
            return added
    return points[-1][0]


def _md1_decay(rate: float, service: float) -> float:
    """theta > 0 with rate * (exp(theta * service) - 1) = theta (rate * service < 1)."""

    def excess(theta: float) -> float:
        return rate * math.expm1(theta * service) - theta

    hi = 1.0 / service
    while excess(hi) <= 0:
        hi *= 2.0
    lo = hi
    while excess(lo) > 0 and lo > 1e-12 / service:  # below the root: excess < 0 near 0
        lo /= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if excess(mid) <= 0 else (lo, mid)
    return (lo + hi) / 2.0
