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
Those shapes have fixed lengths. A class whose lengths spread widely has its TTFT percentile
taken over its sampled prompts (`_ttft_quantile`: each one's own prefill, and an M/G/1 wait
behind prompts whose services differ): at its mean prompt alone, a lognormal class (sigma 0.8,
p99) was put at 2-6x its simulated capacity, now at 1.3-2.3x: its TPOT side also reads the
samples, each prompt past the mean count adding the samples' root mean square (`Spread`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

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
    # what a prompt's own prefill steps are made of (`own_prefill_s`): the decoding batch as
    # the steps took it, the tokens a step has left for prefill, the prefill tokens a step
    # that carries some holds, and the decoding sequences' mean context
    step_batch: float = 0.0
    room: float = 0.0
    prefill_tokens: float = 0.0
    ctx: float = 0.0


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
    delta, _ = prompt_delta(pm, batch, room, tokens, ctx, t_decode, p)
    wider = b + 1
    slope = pm.step_time(wider, wider * ctx, wider * ctx, wider) - t_decode
    prefill_step = pm.step(
        batch + tokens, batch * ctx + tokens * p / 2.0, batch * ctx + tokens, batch + 1
    )
    own = own_prefill_s(pm, batch, room, tokens, ctx, p)
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
        batch,
        room,
        tokens,
        ctx,
    )


def prompt_delta(
    pm: PerfModel, batch: float, room: float, tokens: float, ctx: float, t_decode: float, p: float
) -> tuple[float, int]:
    """The time a prompt of `p` tokens adds to the steps its chunks join (beside `batch`
    decoding sequences of mean context `ctx`, `room` prefill tokens to a step, at least
    `tokens` of them other prompts'), and its chunks."""
    chunks = math.ceil(p / room)
    chunk = min(float(p), room)

    def step_s(x: float) -> float:
        return pm.step_time(batch + x, batch * ctx + x * p / 2.0, batch * ctx + x, batch + 1)

    if tokens + chunk <= room:  # it joins a step that carries prefill already
        return chunks * (step_s(tokens + chunk) - step_s(tokens)), chunks
    return chunks * (step_s(chunk) - t_decode), chunks


def own_prefill_s(
    pm: PerfModel, batch: float, room: float, tokens: float, ctx: float, p: float
) -> float:
    """The steps that prefill a prompt of `p` tokens take: ceil(p / room) chunks, each in a
    step beside `batch` decoding sequences of mean context `ctx` and at least `tokens`
    prefill tokens (other prompts' chunks share the step)."""
    chunk = min(p, room)
    x = max(chunk, tokens)
    return math.ceil(p / room) * pm.step_time(
        batch + x, batch * ctx + x * p / 2.0, batch * ctx + x, batch + 1
    )


class Spread(NamedTuple):
    """A class whose prompts vary: for each sampled prompt, its own prefill seconds and its
    service (`_ttft_quantile`), and the time it adds to the steps it joins and its chunks
    (`prompt_delta`: the TPOT side)."""

    owns: Sequence[float] = ()
    services: Sequence[float] = ()
    adds: Sequence[float] = ()
    chunks: Sequence[int] = ()


FIXED = Spread()  # every prompt at the class's mean


def percentiles(
    s: MixedSteady, rate: float, o: int, pct: float, spread: Spread = FIXED
) -> tuple[float, float]:
    """(TPOT, TTFT) at the `pct` share of requests (see the module docstring); a share of 1
    is taken as MAX_SHARE (Poisson arrivals leave no rate at which every request meets a
    limit). `spread`: the class's sampled prompts where they vary; empty: every prompt at
    the class's mean."""
    pct = min(pct, MAX_SHARE)
    u = rate * s.service  # the share of time prompts' work holds the steps' budget
    if u >= 1.0:
        return math.inf, math.inf
    # the decode step under way (prefill steps under way are other prompts' work: the wait)
    owns, services = spread.owns, spread.services
    if owns:
        ttft = s.t_decode + _ttft_quantile(rate, owns, services, pct)
    else:
        ttft = s.t_decode + s.t_own + wait_quantile(rate, s.service, pct)
    if o <= 1:  # one token: no time between tokens
        return 0.0, ttft
    before = s.t_own + u * s.service / (2.0 * (1.0 - u))  # its prefill and mean wait (M/D/1)
    mean_count = rate * ((o - 1) * s.tau + before)
    base = s.tau + NormalDist().inv_cdf(pct) * math.sqrt(s.decoding) * s.slope
    per_step = s.delta / s.chunks  # what one chunk adds to one of its steps
    if spread.adds:
        # prompts that vary: the count past the mean, each adding the root mean square of the
        # samples' times (a compound Poisson sum's spread about its mean), at most one chunk
        # to each of the o - 1 steps; at the mean prompt's cost, a quad of L4s was put at
        # 2.7x the rate its simulated replica holds (docs/plan.md)
        rms_add = math.sqrt(sum(a * a for a in spread.adds) / len(spread.adds))
        rms_chunk = math.sqrt(
            sum((a / c if c else 0.0) ** 2 for a, c in zip(spread.adds, spread.chunks, strict=True))
            / len(spread.adds)
        )
    tpot = base
    for _ in range(50):
        count = poisson_quantile(rate * ((o - 1) * tpot + before), pct)
        if spread.adds:
            added = min((o - 1.0) * rms_chunk, max(0.0, count - mean_count) * rms_add)
            new = base + added / (o - 1)
        else:
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
    """The `pct` quantile of what other prompts add to a request's first token (`_wait`,
    every prompt's service `service`)."""
    added, probs = _wait(rate, (service,), pct)
    total = 0.0
    for a, p in zip(added.tolist(), probs.tolist(), strict=True):
        total += p
        if total >= pct:
            return float(a)
    return float(added[-1])


def _ttft_quantile(
    rate: float, owns: Sequence[float], services: Sequence[float], pct: float
) -> float:
    """The `pct` quantile of a request's own prefill plus what other prompts add (`_wait`),
    its prompt one of the class's sampled ones (`owns[i]` its prefill seconds, `services[i]`
    the time it holds the steps' budget) with equal weight: the smallest t at which
    mean_i P(wait <= t - owns[i]) reaches `pct` less half a sample's weight: each sample is
    the midpoint of its slice of the class (plan.problem's `_sample`), half of whose requests
    are shorter. Read at `pct` exactly, the longest of 100 samples alone set a p99 (with the
    wait's tail, never quite 0, no rate met it), though in the class it stands for 1%. A
    class of spread lengths has its percentile in its long prompts, whose own prefill takes
    most of a TTFT budget: at the mean prompt, an L4 pair was put at 5x the rate the
    simulated replica holds (lognormal prompts of mean 1,000 tokens, sigma 0.8, p99 TTFT 1 s).
    """
    added, probs = _wait(rate, services, pct)
    pct -= 0.5 / len(owns)
    cdf = np.cumsum(probs)
    own = np.asarray(owns, dtype=float)
    if not np.isfinite(added[-1]):
        return math.inf

    def share(t: float) -> float:
        at = np.searchsorted(added, t - own, side="right")
        return float(np.mean(np.where(at > 0, cdf[np.maximum(at - 1, 0)], 0.0)))

    lo, hi = float(own.min()), float(own.max() + added[-1])
    if share(hi) < pct:  # the grid's last point holds less than pct (its tail cut): the top
        return hi
    for _ in range(60):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if share(mid) < pct else (lo, mid)
        if hi - lo <= 1e-6 * hi:
            break
    return hi


def _wait(rate: float, services: Sequence[float], pct: float) -> tuple[np.ndarray, np.ndarray]:
    """What other prompts add to a request's first token, as points in order (seconds, and
    their probabilities): W + S * N, where W is its wait behind their work (an M/G/1 queue
    of prompts whose services are `services`, equally likely, mean S: with probability u =
    rate * S it waits, its survival the larger of a service's residual, u * E[(S_i - x)+] / S
    (u * (1 - x / S) for one service), and the Cramer-Lundberg tail, u * exp(-theta * x)) and
    N ~ Poisson(rate * W) the prompts that arrive while it waits, which its own step then
    carries (the engine admits every waiting prompt its token budget holds). Computed on a
    grid of W."""
    service = sum(services) / len(services)
    u = rate * service
    if u <= 0.0:
        return np.array([0.0]), np.array([1.0])
    if u >= 1.0:
        return np.array([math.inf]), np.array([1.0])
    theta = _mg1_decay(rate, services)
    tail = math.log(u / (1.0 - pct)) / theta if u > 1.0 - pct else 0.0
    if tail > WAIT_MAX_SERVICES * service:  # heavy traffic: the wait is many services long,
        # and those who come meanwhile add their mean, rate * W * S
        return np.array([tail * (1.0 + u)]), np.array([1.0])
    h = service / WAIT_STEPS
    if len(services) > 1:
        return _spread_wait(rate, services, u, theta, pct)

    def survival(x: float) -> float:
        return u * max(1.0 - x / service, math.exp(-theta * x))

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
    return np.array([a for a, _ in points]), np.array([p for _, p in points])


# ln(n!) for the Poisson counts of `_spread_wait`
_LOG_FACTORIAL = np.array([math.lgamma(n + 1.0) for n in range(31)])


def _spread_wait(
    rate: float, services: Sequence[float], u: float, theta: float, pct: float
) -> tuple[np.ndarray, np.ndarray]:
    """`_wait` for services that differ, on the same grid of W, at once: the residual
    E[(S_i - x)+] from the services in order and their sums, and each grid cell's Poisson
    counts of prompts arriving meanwhile (0 to 30) as one table."""
    n_s = len(services)
    service = sum(services) / n_s
    h = service / WAIT_STEPS
    xs = np.arange(2 * WAIT_MAX_SERVICES * WAIT_STEPS + 2) * h
    ordered = np.sort(np.asarray(services, dtype=float))
    above = np.concatenate([np.cumsum(ordered[::-1])[::-1], [0.0]])  # sums from the ith on
    at = np.searchsorted(ordered, xs, side="right")
    residual = (above[at] - xs * (n_s - at)) / (n_s * service)
    survival = u * np.maximum(residual, np.exp(-theta * xs))
    # the cells up to the first edge where the survival is negligible (as `_wait` stops)
    small = np.nonzero(survival[1:] < (1.0 - pct) * 1e-3)[0]
    cells = int(small[0]) + 1 if small.size else len(xs) - 1
    mass = survival[:cells] - survival[1 : cells + 1]
    w = xs[:cells] + h / 2.0
    counts = np.arange(len(_LOG_FACTORIAL))
    lam = rate * w[:, None]
    prob = mass[:, None] * np.exp(counts * np.log(lam) - lam - _LOG_FACTORIAL)
    added = w[:, None] + counts * service
    order = np.argsort(added, axis=None, kind="stable")
    return np.concatenate([[0.0], added.ravel()[order]]), np.concatenate(
        [[1.0 - u], prob.ravel()[order]]
    )


def _mg1_decay(rate: float, services: Sequence[float]) -> float:
    """theta > 0 with rate * (E[exp(theta * S_i)] - 1) = theta (rate * E[S_i] < 1), the
    services equally likely."""
    service = sum(services) / len(services)
    if len(services) == 1:

        def excess(theta: float) -> float:
            return rate * math.expm1(theta * service) - theta

    else:
        spread = np.asarray(services, dtype=float)
        n = len(services)

        def excess(theta: float) -> float:
            return rate * float(np.expm1(np.minimum(theta * spread, 700.0)).sum()) / n - theta

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
