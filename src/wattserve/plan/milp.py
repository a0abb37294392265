"""The mixed-integer program, solved by HiGHS through `scipy.optimize.milp`.

Variables: x[j] replicas of option j (integer), r[q, j] requests/s of flow q sent to option j,
h[q, k] requests/s of flow q sent to hosted API k, and a (the served share of every flow's
rate; fixed at 1 except for the throughput objective). With lambda[q] the flow's rate and
cap[q, j] one replica's capacity for it at its SLO:

    sum_j r[q, j] + sum_k h[q, k]            = a * lambda[q]          every flow, in full
    sum_q r[q, j] / cap[q, j]               <= x[j]                   replicas carry the load
    sum_q r[q, j] / lambda[q]               <= n[j] * x[j]            (a = 1; n[j]: its flows)
    sum_{j at s} peak_w[j] * x[j]           <= (1 - headroom) * cap_s  site power
    sum_{j of hw at s} devices[j] * x[j]    <= available[s, hw]        and over all sites
    sum_q h[q, k]                           <= limit[k, l]  if a flow of strictness l goes to k
    $/h                                     <= budget

$/h = sum_j x[j] * usd_h[j] + 3600 * usd_j[j] * (idle_w[j] * x[j] + w[j])
      + 3600 * sum h[q, k] * usd_req[q, k], with w[j] option j's draw above idle: the lesser
of a lightly loaded line (from idle to its draw at a quarter of capacity) and a busy one (a
busy W per replica plus J per request), by one binary per option (`_two_pieces`): a replica's
draw is concave in its load. Where a capacity carries no part-load draw, or energy weighs
nothing, w[j] is the busy line alone.
Energy (W at the meter) and carbon (g/h) are the same sums weighted by PUE and intensity.

The columns hold shares, r[q, j] / lambda[q], not req/s: the solver's tolerances (about
1e-7) are absolute, and a flow of 1e-7 req/s once "fitted" nowhere, so a plan of no devices
served it. The third row adds nothing to the program (a replica that carries load is at least
one, and each share is at most 1) but states in shares of order 1 that a flow sent to an option
needs a replica of it, which no tolerance hides.

When the program is infeasible, `diagnose` solves it again with an elastic slack on every
family of constraints (power, budget, availability, rate limits, unserved demand), minimising
the relative size of the slacks: the slacks left non-zero are the binding constraints and the
smallest change that makes the plan feasible.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from wattserve.core.cost import J_PER_KWH
from wattserve.plan.capacity import PART_LOADS
from wattserve.plan.problem import Flow, HostedOption, Option, Problem

# Past this many options the heuristic of `solve` runs: HiGHS's exact search over 8,000
# options did not finish within 60 s, nor did the LP relaxation alone
# (benchmarks/plan_scale.py, docs/benchmarks.md).
HEURISTIC_OPTIONS = 2000
HEURISTIC_GAP = 0.01  # the restricted program stops within 1% of its own optimum
UNSERVED_WEIGHT = 1000.0  # in the elastic program: traffic left unserved weighs this much more
Objective = Literal["cost", "energy", "carbon", "throughput"]
OBJECTIVES: tuple[str, ...] = ("cost", "energy", "carbon", "throughput")


@dataclass
class Solution:
    """A solved program: replicas per option, rates per (flow, option), and the figures."""

    status: str  # optimal, time-limit, infeasible
    replicas: dict[int, int] = field(default_factory=dict)
    rates: dict[tuple[int, int], float] = field(default_factory=dict)  # (flow, option)
    hosted_rates: dict[tuple[int, int], float] = field(default_factory=dict)  # (flow, hosted)
    share: float = 1.0
    objective: float = math.nan
    bound: float = math.nan  # HiGHS's dual bound (the LP bound when stopped early)
    gap: float | None = None
    solve_s: float = 0.0
    message: str = ""
    # the throughput objective put an option's replicas at NO_BOUND_REPLICAS, the stand-in
    # for no limit at all: nothing caps how much more could be served
    unbounded: bool = False


# replicas of an option that no power cap, budget or availability limits (the program needs
# finite bounds); a throughput plan reaching it is unbounded
NO_BOUND_REPLICAS = 1e6


class _Builder:
    """Columns and rows of a sparse program, added by name."""

    def __init__(self) -> None:
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[int] = []
        self.c: list[float] = []
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.rlo: list[float] = []
        self.rhi: list[float] = []

    def var(self, lb: float, ub: float, cost: float = 0.0, integer: bool = False) -> int:
        self.lb.append(lb)
        self.ub.append(ub)
        self.c.append(cost)
        self.integer.append(1 if integer else 0)
        return len(self.c) - 1

    def row(self, terms: list[tuple[int, float]], lo: float, hi: float) -> int:
        i = len(self.rlo)
        for col, val in terms:
            self.rows.append(i)
            self.cols.append(col)
            self.vals.append(val)
        self.rlo.append(lo)
        self.rhi.append(hi)
        return i

    def solve(
        self, time_limit_s: float, relax: bool = False, gap: float | None = None
    ) -> tuple[object, float]:
        # scipy is imported here, not at import time: `import wattserve` stays light
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_array

        n = len(self.c)
        a = coo_array((self.vals, (self.rows, self.cols)), shape=(len(self.rlo), n)).tocsr()
        start = time.perf_counter()
        with _solver_quiet():
            res = milp(
                np.asarray(self.c),
                constraints=[LinearConstraint(a, np.asarray(self.rlo), np.asarray(self.rhi))]
                if self.rlo
                else None,
                integrality=np.zeros(n) if relax else np.asarray(self.integer),
                bounds=Bounds(np.asarray(self.lb), np.asarray(self.ub)),
                options={"time_limit": time_limit_s, "disp": False}
                | ({} if gap is None else {"mip_rel_gap": gap}),
            )
        return res, time.perf_counter() - start


@contextmanager
def _solver_quiet() -> Iterator[None]:
    """HiGHS writes some internal diagnostics from C straight to file descriptor 1 even with
    `disp` off (scipy 1.17: "HighsMipSolverData::transformNewIntegerFeasibleSolution
    tmpSolver.run();" during an infeasible plan's elastic re-solve), which corrupted `plan
    --json` and means nothing to a user. For the solve, descriptor 1 points at /dev/null."""
    try:
        out = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # captured or replaced streams: nothing to do
        yield
        return
    sys.stdout.flush()
    saved = os.dup(out)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, out)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, out)
        os.close(saved)


def _cost_terms(p: Problem, j: int) -> tuple[float, float]:
    """($/h per replica held, $ per joule) of option j."""
    o = p.options[j]
    return o.usd_per_h + 3600.0 * o.usd_per_j * o.busy_w(), o.usd_per_j


def _watts_weight(p: Problem, j: int, objective: str) -> float:
    """What one watt drawn by option j weighs in the objective (energy or carbon)."""
    site = p.sites[p.options[j].site]
    if objective == "energy":
        return site.pue
    g = site.carbon_g_per_kwh or 0.0
    return site.pue * g * 3600.0 / J_PER_KWH  # grams per hour per watt


@dataclass
class _Vars:
    x: dict[int, int] = field(default_factory=dict)
    r: dict[tuple[int, int], int] = field(default_factory=dict)
    h: dict[tuple[int, int], int] = field(default_factory=dict)
    a: int = -1
    slack: dict[str, int] = field(default_factory=dict)
    w: dict[int, int] = field(default_factory=dict)  # an option's draw above idle (pieces)


def _rate_limit_rows(
    b: _Builder, v: _Vars, k: int, h: HostedOption, flows: list[Flow], elastic: bool
) -> None:
    """Hosted API k's rate limit: the flows sent there at most the loosest of their planned
    limits (`HostedOption.limits`), and at most a stricter one wherever a flow of that
    strictness is sent there (a binary per level: the bucket refuses every flow alike, so a
    p99.9 flow that may go there, and does not, must not hold a p50 one to its limit)."""
    shares = {q: col for (q, kk), col in v.h.items() if kk == k and q in h.limits}
    published = h.spec.rate_limit_rps
    if not shares or published is None:
        return
    terms = [(col, flows[q].rate_rps) for q, col in shares.items()]
    loosest = max(h.limits[q] for q in shares)
    slack = []
    if elastic:
        s = v.slack[f"rate_limit:{h.name}"] = b.var(0, math.inf, 1.0 / published)
        slack = [(s, -1.0)]
    b.row(terms + slack, -math.inf, loosest)
    for level in sorted({h.limits[q] for q in shares if h.limits[q] < loosest}):
        used = b.var(0, 1, 0.0, integer=True)  # a flow this strict is sent to the API
        for q, col in shares.items():
            if h.limits[q] <= level:  # its req/s there: none, or within the loosest
                b.row([(col, flows[q].rate_rps), (used, -loosest)], -math.inf, 0.0)
        b.row(terms + slack + [(used, loosest - level)], -math.inf, loosest)


def _upper_replicas(p: Problem, j: int, objective: str) -> float:
    o = p.options[j]
    if objective != "throughput":
        return _whole(
            sum(p.flows[q].rate_rps / c.rate_rps for q, c in o.caps.items()) + 1e-9, up=True
        )
    bounds = [math.inf]
    cap = p.sites[o.site].power_cap_w
    if cap is not None and o.peak_w > 0:
        bounds.append(_whole(cap * (1 - p.limits.headroom) / o.peak_w))
    avail = p.sites[o.site].available_count(o.hardware.id)
    if avail is not None:
        bounds.append(avail // o.devices)
    for hw_id, n in p.limits.available:
        if hw_id == o.hardware.id:
            bounds.append(n // o.devices)
    if p.limits.budget_usd_per_h is not None and o.usd_per_h > 0:
        bounds.append(_whole(p.limits.budget_usd_per_h / o.usd_per_h))
    return float(min(bounds))


def _whole(x: float, up: bool = False) -> float:
    """x rounded to a whole number of replicas; a quotient past float range stays inf (math's
    ceil and floor raise on it)."""
    if not math.isfinite(x):
        return math.inf
    return float(math.ceil(x) if up else math.floor(x))


def _build(p: Problem, objective: str, elastic: bool) -> tuple[_Builder, _Vars]:
    b = _Builder()
    v = _Vars()
    opts, flows = p.options, p.flows
    # objective weights: cost, with energy/carbon as the aim and cost as a small tie-break
    small = 1e-6
    for j, o in enumerate(opts):
        _, usd_j = _cost_terms(p, j)
        # what a replica held and a watt it draws weigh in the objective
        if objective == "cost":
            per_h, per_w = o.usd_per_h, 3600.0 * usd_j
        elif objective in ("energy", "carbon"):
            per_h = small * o.usd_per_h
            per_w = _watts_weight(p, j, objective) + small * 3600.0 * usd_j
        else:
            per_h, per_w = small * o.usd_per_h, small * 3600.0 * usd_j
        ub = _upper_replicas(p, j, objective)
        if math.isinf(ub):
            ub = NO_BOUND_REPLICAS
        # the draw as two pieces wherever it costs something (the objective or the budget)
        pieces = objective != "throughput" and (per_w > 0 or usd_j > 0) and _measured(o)
        if pieces:  # no more replicas than all the option's flows need (more only draw more)
            ub = min(
                ub, _whole(sum(flows[q].rate_rps / c.rate_rps for q, c in o.caps.items()), True)
            )
        base_w = o.idle_w if pieces else o.busy_w()
        v.x[j] = b.var(0, ub, 0.0 if elastic else per_h + per_w * base_w, integer=True)
        for q in o.caps:
            e_dyn = 0.0 if pieces or objective == "throughput" else o.joules_per_request(q)
            rc = per_w * e_dyn * flows[q].rate_rps
            v.r[(q, j)] = b.var(0, math.inf, 0.0 if elastic else rc)
        if pieces:
            _two_pieces(b, v, p, j, 0.0 if elastic else per_w, ub)
    for k, h in enumerate(p.hosted):
        for q, usd in h.usd_per_request.items():
            hc = 3600.0 * usd if objective == "cost" else small * 3600.0 * usd
            v.h[(q, k)] = b.var(0, math.inf, 0.0 if elastic else hc * flows[q].rate_rps)
    total_tok = sum(f.rate_rps * f.output_tokens for f in flows)
    if objective == "throughput" and not elastic:
        v.a = b.var(0, math.inf, -total_tok)
    # every flow in full (or the share a)
    for q in range(len(flows)):
        terms = [(col, 1.0) for (qq, _), col in v.r.items() if qq == q]
        terms += [(col, 1.0) for (qq, _), col in v.h.items() if qq == q]
        if elastic:
            # the last resort: a limit the user can raise is the change to report first
            s = v.slack[f"unserved:{q}"] = b.var(0, 1.0, UNSERVED_WEIGHT)
            terms.append((s, 1.0))
        if v.a >= 0:
            b.row([*terms, (v.a, -1.0)], 0.0, 0.0)
        else:
            b.row(terms, 1.0, 1.0)
    # replicas carry their load; with every share at most 1, a share sent needs a replica
    for j, o in enumerate(opts):
        terms = [(v.r[(q, j)], flows[q].rate_rps / cap.rate_rps) for q, cap in o.caps.items()]
        b.row([*terms, (v.x[j], -1.0)], -math.inf, 0.0)
        if v.a < 0:
            shares = [(v.r[(q, j)], 1.0) for q in o.caps]
            b.row([*shares, (v.x[j], -float(len(shares)))], -math.inf, 0.0)
    # site power, with headroom
    for name, site in p.sites.items():
        if site.power_cap_w is None:
            continue
        terms = [(v.x[j], o.peak_w) for j, o in enumerate(opts) if o.site == name]
        if not terms:
            continue
        allow = site.power_cap_w * (1 - p.limits.headroom)
        if elastic:
            # relative to the cap, but never to less than one replica's draw: against a cap of
            # 1 mW each watt weighed a million, and leaving the traffic unserved won, reported
            # as "residency, links or SLO" where the cap bound
            scale = max(allow, min(w for _, w in terms))
            s = v.slack[f"power:{name}"] = b.var(0, math.inf, 1.0 / scale)
            terms.append((s, -1.0))
        b.row(terms, -math.inf, allow)
    # availability at a site, and over all sites
    for name, site in p.sites.items():
        for hw_id, n in site.available:
            terms = [
                (v.x[j], float(o.devices))
                for j, o in enumerate(opts)
                if o.site == name and o.hardware.id == hw_id
            ]
            if terms:
                if elastic:
                    s = v.slack[f"available:{name}:{hw_id}"] = b.var(0, math.inf, 1.0 / max(n, 1))
                    terms.append((s, -1.0))
                b.row(terms, -math.inf, float(n))
    for hw_id, n in p.limits.available:
        terms = [(v.x[j], float(o.devices)) for j, o in enumerate(opts) if o.hardware.id == hw_id]
        if terms:
            if elastic:
                s = v.slack[f"available:*:{hw_id}"] = b.var(0, math.inf, 1.0 / max(n, 1))
                terms.append((s, -1.0))
            b.row(terms, -math.inf, float(n))
    # hosted rate limits
    for k, h in enumerate(p.hosted):
        _rate_limit_rows(b, v, k, h, flows, elastic)
    # budget
    budget = p.limits.budget_usd_per_h
    if budget is not None:
        terms = _usd_terms(p, v)
        if elastic:  # as power's: never relative to less than one replica's $/h
            least = min((_cost_terms(p, j)[0] for j in range(len(opts))), default=budget)
            s = v.slack["budget"] = b.var(0, math.inf, 1.0 / max(budget, least))
            terms.append((s, -1.0))
        b.row(terms, -math.inf, budget)
    return b, v


def _measured(o: Option) -> bool:
    """Whether every flow's capacity on `o` carries its part-load draw (`_two_pieces`)."""
    return all(math.isfinite(c.quarter_power_w) for c in o.caps.values())


def _two_pieces(b: _Builder, v: _Vars, p: Problem, j: int, per_w: float, most: float) -> None:
    """Option j's draw above idle as the lesser of two lines, its replicas lightly loaded or
    busy: A = the line from idle to the draw at a quarter of capacity (J per request:
    e1), B = the busy draw of `Option.busy_w` per replica plus `joules_per_request`. A replica's
    draw is concave in its load, so it is about the lesser of the two at every load, which a
    minimising program states with one binary z: w >= A - M z and w >= B - M (1 - z), w
    weighed `per_w`. One line alone either put a third-loaded H100 at half its draw (idle to
    full load) or charged a nearly idle L4 pair three times its draw (the busy line), and the
    energy objective chose by the error."""
    o = p.options[j]
    lam = {q: p.flows[q].rate_rps for q in o.caps}
    # (never under the line from idle to full load: where a flow's draw is not concave, such
    # as short answers to long prompts, the lesser line would otherwise undercut its full-load
    # draw, and the energy objective chose by it)
    light = {
        q: max(
            (c.quarter_power_w - o.idle_w) / (PART_LOADS[0] * c.rate_rps),
            (c.avg_power_w - o.idle_w) / c.rate_rps,
        )
        for q, c in o.caps.items()
    }
    busy = o.busy_w() - o.idle_w
    m_light = sum(max(0.0, light[q]) * lam[q] for q in o.caps)
    m_busy = busy * most + sum(o.joules_per_request(q) * lam[q] for q in o.caps)
    w = v.w[j] = b.var(0, math.inf, per_w)
    z = b.var(0, 1, 0.0, integer=True)
    b.row(
        [(w, 1.0), *((v.r[(q, j)], -light[q] * lam[q]) for q in o.caps), (z, m_light)],
        0.0,
        math.inf,
    )
    terms = [(w, 1.0), (v.x[j], -busy), (z, -m_busy)]
    terms += [(v.r[(q, j)], -o.joules_per_request(q) * lam[q]) for q in o.caps]
    b.row(terms, -m_busy, math.inf)


def _usd_terms(p: Problem, v: _Vars) -> list[tuple[int, float]]:
    terms: list[tuple[int, float]] = []
    for j, o in enumerate(p.options):
        usd_h, usd_j = _cost_terms(p, j)
        if j in v.w:  # as the objective charges it: idle, and the draw above it (pieces)
            terms += [(v.x[j], o.usd_per_h + 3600.0 * usd_j * o.idle_w)]
            terms += [(v.w[j], 3600.0 * usd_j)]
            continue
        terms.append((v.x[j], usd_h))
        for q in o.caps:
            e_dyn = o.joules_per_request(q)
            terms.append((v.r[(q, j)], 3600.0 * usd_j * e_dyn * p.flows[q].rate_rps))
    for (q, k), col in v.h.items():
        terms.append((col, 3600.0 * p.hosted[k].usd_per_request[q] * p.flows[q].rate_rps))
    return terms


def solve(
    p: Problem,
    objective: str = "cost",
    time_limit_s: float = 60.0,
    heuristic_options: int = HEURISTIC_OPTIONS,
) -> Solution:
    """Solve the program; status 'infeasible' leaves the diagnosis to `diagnose`.

    Past `heuristic_options` options (and not for throughput) the stated heuristic runs instead:
    `_restricted` keeps, for every flow, its k cheapest options per request, solves that
    program exactly, doubles k while it is infeasible, and reports the gap to a lower bound.
    """
    served = {q for o in p.options for q in o.caps} | {
        q for h in p.hosted for q in h.usd_per_request
    }
    if len(served) < len(p.flows):
        return Solution("infeasible", message="a flow has no candidate")
    if len(p.options) > heuristic_options and objective != "throughput":
        return _restricted(p, objective, time_limit_s)
    return _exact(p, objective, time_limit_s)


def _exact(p: Problem, objective: str, time_limit_s: float, gap: float | None = None) -> Solution:
    b, v = _build(p, objective, elastic=False)
    res, took = b.solve(time_limit_s, gap=gap)
    status = int(getattr(res, "status", 4))
    xs = getattr(res, "x", None)
    if xs is None:
        text = "infeasible" if status == 2 else ("time-limit" if status == 1 else "failed")
        return Solution(text, solve_s=took, message=str(getattr(res, "message", "")))
    bound = getattr(res, "mip_dual_bound", None)
    sol = Solution(
        "optimal" if status == 0 else "time-limit",
        objective=float(getattr(res, "fun", math.nan)),
        bound=math.nan if bound is None else float(bound),
        gap=getattr(res, "mip_gap", None),
        solve_s=took,
        message=str(getattr(res, "message", "")),
    )
    sol = _fill(sol, v, xs, p)
    if objective == "throughput":  # 200 req/s on 2,000,000 L4s had been printed as a plan
        sol.unbounded = any(
            n >= NO_BOUND_REPLICAS - 0.5 and math.isinf(_upper_replicas(p, j, objective))
            for j, n in sol.replicas.items()
        )
    return sol


def _per_request(p: Problem, j: int, q: int, objective: str) -> float:
    """What serving one req/s of flow q on option j adds to the objective, replicas taken
    as fractional (the LP's view): the option's hourly weight over its capacity plus energy."""
    o = p.options[j]
    cap = o.caps[q]
    e_dyn = o.joules_per_request(q)
    if objective == "cost":
        usd_h, usd_j = _cost_terms(p, j)
        return usd_h / cap.rate_rps + 3600.0 * usd_j * e_dyn
    return _watts_weight(p, j, objective) * (o.busy_w() / cap.rate_rps + e_dyn)


def _restricted(p: Problem, objective: str, time_limit_s: float) -> Solution:
    """The heuristic for large programs (see `solve`). Its lower bound drops the integrality
    and every coupling limit (power, availability, budget, rate limits): each flow at its
    cheapest option per request, so the true optimum lies between the bound and the plan."""
    start = time.perf_counter()
    ranked: list[list[int]] = []
    bound = 0.0
    for q, f in enumerate(p.flows):
        js = sorted(
            (j for j, o in enumerate(p.options) if q in o.caps),
            key=lambda j: _per_request(p, j, q, objective),
        )
        ranked.append(js)
        best = [_per_request(p, j, q, objective) for j in js[:1]]
        if objective == "cost":
            best += [3600.0 * h.usd_per_request[q] for h in p.hosted if q in h.usd_per_request]
        elif any(q in h.usd_per_request for h in p.hosted):
            best.append(0.0)  # hosted APIs publish no energy
        bound += f.rate_rps * min(best)
    k = 4
    while True:
        keep = sorted({j for js in ranked for j in js[:k]})
        sub = replace(p, options=[p.options[j] for j in keep])
        left = max(1.0, time_limit_s - (time.perf_counter() - start))
        sol = _exact(sub, objective, left, HEURISTIC_GAP)
        if sol.status in ("optimal", "time-limit"):
            break
        if len(keep) >= len(p.options) or time.perf_counter() - start > time_limit_s:
            return sol
        k *= 2
    mapped = Solution(
        "heuristic",
        replicas={keep[j]: n for j, n in sol.replicas.items()},
        rates={(q, keep[j]): r for (q, j), r in sol.rates.items()},
        hosted_rates=sol.hosted_rates,
        share=sol.share,
        objective=sol.objective,
        bound=bound,
        gap=(sol.objective - bound) / bound if bound > 0 else None,
        solve_s=time.perf_counter() - start,
        message=f"heuristic: {len(p.options)} options, over {HEURISTIC_OPTIONS}; the exact "
        f"program over each flow's {k} cheapest options per request ({len(keep)} options)",
    )
    return mapped


def _fill(sol: Solution, v: _Vars, xs: object, p: Problem) -> Solution:
    """The solution in replicas and req/s (the columns hold shares of each flow)."""
    vals = np.asarray(xs)
    for j, col in v.x.items():
        n = round(float(vals[col]))
        if n > 0:
            sol.replicas[j] = n
    for key, col in v.r.items():
        if vals[col] > 1e-9:
            sol.rates[key] = float(vals[col]) * p.flows[key[0]].rate_rps
    for key, col in v.h.items():
        if vals[col] > 1e-9:
            sol.hosted_rates[key] = float(vals[col]) * p.flows[key[0]].rate_rps
    if v.a >= 0:
        sol.share = float(vals[v.a])
    return sol


@dataclass(frozen=True, slots=True)
class Binding:
    """One constraint that binds, and by how much it would have to give."""

    kind: str  # power, budget, available, rate_limit, unserved
    what: str
    change: float
    message: str


def diagnose(p: Problem, time_limit_s: float = 60.0) -> list[Binding]:
    """The constraints that make the program infeasible and the smallest change to each."""
    out: list[Binding] = []
    for q, f in enumerate(p.flows):
        if not any(q in o.caps for o in p.options) and not any(
            q in h.usd_per_request for h in p.hosted
        ):
            out.append(
                Binding(
                    "unserved",
                    f.label,
                    f.rate_rps,
                    f"class {f.label} can meet its SLO (TTFT {f.slo.ttft_s * 1e3:.0f} ms, "
                    f"TPOT {f.slo.tpot_s * 1e3:.0f} ms at p{f.slo.percentile * 100:g}) on no "
                    f"candidate{_why_none(p, q)}; relax its SLO or add hardware",
                )
            )
    if out:
        return out
    joint = _relaxed(p, time_limit_s)
    if joint is None:
        return [Binding("unknown", "", 0.0, "the solver found no way to relax the program")]
    kinds = list(dict.fromkeys(b.kind for b in joint))
    if len(kinds) < 2:  # one family: its changes at several sites are needed together
        return joint if len(joint) < 2 else _together(joint)
    # the smallest changes together are no advice to follow one by one (raised alone, the
    # budget they name still left the plan infeasible): what each family of limits needs when
    # it is the only one to give, where that is enough, comes first
    for kind in kinds:
        alone = (_relaxed(p, time_limit_s, only=kind) if kind != "unserved" else None) or []
        # a family's changes at several sites are needed together: each alone was not
        # enough, though each had been printed "alone, this is enough"
        out += _together(alone) if len(alone) > 1 else _headed("alone, this is enough", alone)
    head = "or all of these together" if out else "all of these together"
    return out + _headed(head, joint)


def _headed(head: str, bindings: list[Binding]) -> list[Binding]:
    return [replace(b, message=f"{head}: {b.message}") for b in bindings]


def _together(bindings: list[Binding]) -> list[Binding]:
    """Changes none of which is enough alone, each headed as one of the set (two sites' caps
    had read as two bullets, alternatives to a reader, where raising one left the plan
    infeasible)."""
    n = len(bindings)
    return [
        replace(b, message=f"these {n} together are enough, with no other change ({i} of {n}): "
                f"{b.message}")
        for i, b in enumerate(bindings, 1)
    ]  # fmt: skip


def _relaxed(p: Problem, time_limit_s: float, only: str | None = None) -> list[Binding] | None:
    """The program solved with elastic slacks (on one family of constraints where `only` names
    it, the others held), minimising their relative size: the slacks left non-zero, or None
    where no relaxation is feasible."""
    b, v = _build(p, "cost", elastic=True)
    if only is not None:
        for name, col in v.slack.items():
            if name.partition(":")[0] != only:
                b.ub[col] = 0.0
    res, _ = b.solve(time_limit_s)
    xs = getattr(res, "x", None)
    if xs is None:
        return None
    out = []
    for name, col in v.slack.items():
        amount = float(xs[col])
        if amount <= 1e-6:
            continue
        kind, _, what = name.partition(":")
        if kind == "unserved":  # a share of the flow: in req/s
            amount *= p.flows[int(what)].rate_rps
        out.append(Binding(kind, what, amount, _say(p, kind, what, amount)))
    return out


def _why_none(p: Problem, q: int) -> str:
    reasons = {
        c.reason
        for o in p.options
        for qq, c in o.caps.items()
        if qq == q and c.reason  # options keep only serving flows; reasons come from excluded
    }
    reasons |= set(p.excluded.values())
    return f" ({'; '.join(sorted(reasons)[:3])})" if reasons else ""


def _say(p: Problem, kind: str, what: str, amount: float) -> str:
    if kind == "power":
        cap = p.sites[what].power_cap_w or 0.0
        # rounded up: a figure rounded to the nearest (444 W for 444.4) was still too little
        need = math.ceil(cap + amount / (1 - p.limits.headroom) - 1e-9)
        h = p.limits.headroom
        fix = (  # with most of the cap kept free, the headroom is what to change
            f"; or keep less free: --headroom {h:g} leaves {1 - h:.2g} of the cap to plan"
            if h >= 0.5
            else ""
        )
        shown = f"{cap:.0f}" if cap >= 1 or cap == 0 else f"{cap:.2g}"  # not "from 0 W"
        return (
            f"site {what}'s power cap binds: raise it from {shown} W to at least {need} W "
            f"(+{need - cap:.0f} W, with {h:.0%} headroom kept free){fix}"
        )
    if kind == "budget":
        budget = p.limits.budget_usd_per_h or 0.0
        need_usd = math.ceil((budget + amount) * 100 - 1e-9) / 100  # up to the cent
        gap = need_usd - budget  # under half a cent it was printed "+$0.00/h"
        shown = f"{gap:.2f}" if gap >= 0.005 else f"{gap:.2g}"
        return f"the budget binds: it needs at least ${need_usd:.2f}/h (+${shown}/h)"
    if kind == "available":
        site, _, hw = what.partition(":")
        where = "over all sites" if site == "*" else f"at {site}"
        return f"availability of {hw} {where} binds: {math.ceil(amount - 1e-6)} more device(s)"
    if kind == "rate_limit":
        api = next(a for a in p.hosted if a.name == what)
        most = max(api.limits.values(), default=0.0)
        return (
            f"the rate limit of {what} binds: it would need {amount:.2f} req/s more (of its "
            f"{api.spec.rate_limit_rps:g} req/s, at most {most:.3g} can be sent at random "
            "arrivals with no more refused than the SLOs allow)"
        )
    q = int(what)
    f = p.flows[q]
    return (
        f"class {f.label} cannot be fully served: {amount:.2f} of its {f.rate_rps:.2f} req/s "
        "fit nowhere (residency, links or SLO); relax them or add a site"
    )
