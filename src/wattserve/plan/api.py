"""`plan`: the fleet for a workload across sites, solved as a MILP and checked by simulation."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wattserve.core.catalog import Catalog, load_catalog
from wattserve.core.cost import J_PER_KWH
from wattserve.core.dtypes import Dtype
from wattserve.core.fleet import Fleet, file_named, load_sites
from wattserve.core.hardware import MATURITY_ORDER, SOFTWARE_ORDER
from wattserve.core.params import Calibration
from wattserve.core.policy import make_policy
from wattserve.core.sites import MAX_POWER_W, Site
from wattserve.core.workload import Request, Workload, load_workload, stream_workload
from wattserve.core.yamlio import Fields, load_yaml_file
from wattserve.errors import ConfigError, PlanInfeasibleError, closest
from wattserve.plan.capacity import CapacityCache, CapacityMethod
from wattserve.plan.milp import OBJECTIVES, Solution, diagnose, solve
from wattserve.plan.problem import Limits, Option, Problem, build_problem

# --verify's rounds of derating: by default (the multi-site example in docs/plan.md met every
# SLO at round 6 on 2026-12-04, when four were the most, and at round 4 once the capacities
# were sustained ones), and at most (each round simulates the whole workload)
DEFAULT_ROUNDS = 8


def falls_short(share: float, target: float) -> bool:
    """Whether a share of requests meeting their SLO misses its target percentile (within a
    float's rounding of it is met): a class in --verify, or its share on one deployment."""
    return share < target - 1e-12


MAX_ROUNDS = 50


@dataclass
class SiteRow:
    """One site's share of a plan."""

    site: str
    devices: dict[str, int]  # option name -> replicas
    peak_w: float
    cap_w: float | None
    usd_per_h: float
    avg_w: float
    utilisation: float
    output_tokens_per_s: float
    carbon_g_per_h: float | None
    # per deployment: (peak W, $/h, utilisation) of its replicas together
    details: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def usd_per_mtok(self) -> float | None:
        t = self.output_tokens_per_s
        return self.usd_per_h / (t * 3600) * 1e6 if t > 0 else None

    @property
    def j_per_token(self) -> float | None:
        t = self.output_tokens_per_s
        return self.avg_w / t if t > 0 else None

    @property
    def carbon_g_per_mtok(self) -> float | None:
        t = self.output_tokens_per_s
        if self.carbon_g_per_h is None or t <= 0:
            return None
        return self.carbon_g_per_h / (t * 3600) * 1e6


@dataclass
class Plan:
    """A solved plan: what to deploy where, its figures, comparisons and verification."""

    objective: str
    problem: Problem
    solution: Solution
    sites: list[SiteRow]
    hosted: dict[str, float]  # hosted name -> req/s
    usd_per_h: float
    avg_w: float
    carbon_g_per_h: float | None
    output_tokens_per_s: float
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    verify_stop: str = ""  # why --verify's rounds stopped short (a limit a round would break)
    hardware_files: list[str] = field(default_factory=list)  # absolute: the fleet file needs them
    device_tokens_per_s: float = 0.0  # output tokens/s of the plan's devices, not hosted APIs

    @property
    def replicas(self) -> dict[str, int]:
        return {self.problem.options[j].name: n for j, n in self.solution.replicas.items()}

    @property
    def unmet(self) -> dict[str, dict[str, Any]] | None:
        """The classes that missed their SLO in the last round of `--verify` (empty: the
        plan is verified); None when the plan was not simulated."""
        if not self.rounds:
            return None
        return {c: v for c, v in self.rounds[-1]["classes"].items() if not v["met"]}

    def as_dict(self) -> dict[str, Any]:
        tok = self.output_tokens_per_s
        return {
            "objective": self.objective,
            "status": self.solution.status,
            "solve_s": self.solution.solve_s,
            "gap": self.solution.gap,
            "served_share": self.solution.share,
            "usd_per_h": self.usd_per_h,
            "avg_power_w": self.avg_w,
            "carbon_g_per_h": self.carbon_g_per_h,
            "output_tokens_per_s": tok,
            "usd_per_mtok": self.usd_per_h / (tok * 3600) * 1e6 if tok else None,
            # over the devices' tokens: a hosted API publishes no energy (as simulate reports it)
            "j_per_token": (
                self.avg_w / self.device_tokens_per_s if self.device_tokens_per_s else None
            ),
            "replicas": self.replicas,
            "hosted_rps": self.hosted,
            "sites": {
                s.site: {
                    "replicas": s.devices,
                    "peak_w": s.peak_w,
                    "power_cap_w": s.cap_w,
                    "usd_per_h": s.usd_per_h,
                    "utilisation": s.utilisation,
                    "usd_per_mtok": s.usd_per_mtok,
                    "j_per_token": s.j_per_token,
                    "carbon_g_per_mtok": s.carbon_g_per_mtok,
                }
                for s in self.sites
            },
            "flows": [
                {
                    "class": f.cls,
                    "origin": f.origin,
                    "local_only": f.local_only,
                    "model": f.model,
                    "slo": f.slo_name,  # two flows of a class apart (its rows name two SLOs)
                    "rate_rps": f.rate_rps,
                    "prompt_tokens": f.prompt_tokens,
                    "output_tokens": f.output_tokens,
                }
                for f in self.problem.flows
            ],
            "comparisons": self.comparisons,
            "verify_rounds": self.rounds,
            "verified": None if self.unmet is None else not self.unmet,
            "verify_stopped": self.verify_stop or None,
            "excluded": self.problem.excluded,
            "left_out": list(self.problem.left_out),
            "capacity_cache": {
                "hits": self.problem.cache.hits,
                "misses": self.problem.cache.misses,
            },
        }


def summarize_solution(p: Problem, sol: Solution, objective: str) -> Plan:
    """Per-site rows and totals of a solution."""
    by_site: dict[str, SiteRow] = {}
    total_usd = total_w = 0.0
    carbon: float | None = 0.0
    tokens = 0.0
    for j, n in sol.replicas.items():
        o = p.options[j]
        site = p.sites[o.site]
        rates = {q: sol.rates.get((q, j), 0.0) for q in o.caps}
        load = sum(r / o.caps[q].rate_rps for q, r in rates.items())
        device_w = o.replica_w(rates, n)  # each replica's measured draw at its load
        watts = device_w * site.pue
        usd = o.usd_per_h * n + o.usd_per_j * 3600.0 * device_w
        tok = sum(sol.rates.get((q, j), 0.0) * p.flows[q].output_tokens for q in o.caps)
        row = by_site.setdefault(
            o.site, SiteRow(o.site, {}, 0.0, site.power_cap_w, 0.0, 0.0, 0.0, 0.0, 0.0)
        )
        row.devices[o.name] = n
        row.details[o.name] = (o.peak_w * n, usd, load / n)
        row.peak_w += o.peak_w * n
        row.usd_per_h += usd
        row.avg_w += watts
        row.output_tokens_per_s += tok
        row.utilisation += load  # replica-loads; divided by replicas below
        g = _grams_per_h(site, watts)
        row.carbon_g_per_h = (
            None if g is None or row.carbon_g_per_h is None else row.carbon_g_per_h + g
        )
        carbon = None if g is None or carbon is None else carbon + g
        total_usd += usd
        total_w += watts
        tokens += tok
    for row in by_site.values():
        n = sum(row.devices.values())
        row.utilisation = row.utilisation / n if n else 0.0
    device_tokens = tokens
    hosted: dict[str, float] = defaultdict(float)
    for (q, k), rate in sol.hosted_rates.items():
        h = p.hosted[k]
        hosted[h.name] += rate
        total_usd += 3600.0 * rate * h.usd_per_request[q]
        tokens += rate * p.flows[q].output_tokens
    return Plan(
        objective,
        p,
        sol,
        sorted(by_site.values(), key=lambda r: r.site),
        dict(hosted),
        total_usd,
        total_w,
        carbon,
        tokens,
        device_tokens_per_s=device_tokens,
    )


def _grams_per_h(site: Site, watts_at_meter: float) -> float | None:
    if site.carbon_g_per_kwh is None:
        return None
    return watts_at_meter * 3600.0 / J_PER_KWH * site.carbon_g_per_kwh


def restricted(p: Problem, keep: list[int], hosted: bool) -> Problem:
    """The same problem with only options `keep` (and the hosted APIs if `hosted`)."""
    return replace(p, options=[p.options[j] for j in keep], hosted=p.hosted if hosted else [])


def full_load(o: Option, p: Problem) -> tuple[float, float]:
    """$ and J per output token of one replica serving flat out, averaged over the flows it
    can serve: rent (or the amortised price) plus electricity; J at the device."""
    usd, joules = [], []
    for q, c in o.caps.items():
        tokens_per_s = c.rate_rps * p.flows[q].output_tokens
        usd.append((o.usd_per_h / 3600.0 + o.usd_per_j * c.avg_power_w) / tokens_per_s)
        joules.append(c.avg_power_w / tokens_per_s)
    return sum(usd) / len(usd), sum(joules) / len(joules)


def compare(p: Problem, best: Plan, objective: str, time_limit_s: float) -> dict[str, Any]:
    """The best single-device-type plan and the lowest-$/token-device plan beside the mix."""
    out: dict[str, Any] = {}
    by_hw: dict[str, list[int]] = defaultdict(list)
    for j, o in enumerate(p.options):
        by_hw[o.hardware.id].append(j)
    singles: list[tuple[float, str, Plan]] = []
    for hw_id, js in by_hw.items():
        sol = solve(restricted(p, js, hosted=False), objective, time_limit_s)
        if objective == "throughput" and sol.share <= 1e-9:
            continue  # serving none of the workload is no plan (as solve_or_explain says)
        if sol.status in ("optimal", "time-limit", "heuristic"):
            plan = summarize_solution(restricted(p, js, hosted=False), sol, objective)
            singles.append((_score(plan, objective), hw_id, plan))
    mix = _score(best, objective)

    def entry(name: str, plan: Plan | None, hw_id: str | None) -> dict[str, Any]:
        if plan is None:
            return {"hardware": hw_id, "feasible": False}
        s = _score(plan, objective)
        saves = (s - mix) / s if s and objective != "throughput" else None
        if objective == "throughput":
            saves = (mix - s) / s if s else None
        return {
            "hardware": hw_id,
            "feasible": True,
            "usd_per_h": plan.usd_per_h,
            "avg_power_w": plan.avg_w,
            "carbon_g_per_h": plan.carbon_g_per_h,
            "output_tokens_per_s": plan.output_tokens_per_s,
            "replicas": plan.replicas,
            "served_share": plan.solution.share,
            "mix_saves": saves,
        }

    if singles:
        singles.sort(key=lambda t: t[0] if objective != "throughput" else -t[0])
        _, hw_id, plan = singles[0]
        out["best_single_type"] = entry("best_single_type", plan, hw_id)
    else:
        out["best_single_type"] = {"hardware": None, "feasible": False}
    if p.options:
        cheapest = min(by_hw, key=lambda h: min(full_load(p.options[j], p)[0] for j in by_hw[h]))
        found = next((t for t in singles if t[1] == cheapest), None)
        out["lowest_usd_per_token_device"] = entry("lowest", found[2] if found else None, cheapest)
    return out


def _score(plan: Plan, objective: str) -> float:
    if objective == "cost":
        return plan.usd_per_h
    if objective == "energy":
        return plan.avg_w
    if objective == "carbon":
        return plan.carbon_g_per_h or 0.0
    return plan.output_tokens_per_s


def solve_or_explain(p: Problem, objective: str, time_limit_s: float) -> Plan:
    """Solve; when infeasible raise PlanInfeasibleError with the binding constraints."""
    if not p.flows:
        raise PlanInfeasibleError(["the workload has no traffic"])
    if objective == "carbon":
        missing = sorted(
            s.name for s in p.sites.values() if s.carbon_g_per_kwh is None and s.kind != "cloud"
        )
        if missing:
            raise ConfigError(
                f"the carbon objective needs carbon_g_per_kwh for every site; missing at "
                f"{', '.join(missing)}",
                field="--objective",
            )
    sol = solve(p, objective, time_limit_s)
    if objective == "throughput" and (
        # serving nothing (a = 0) is always feasible, so HiGHS's "unbounded or infeasible" is
        # unbounded (a hosted API that publishes no rate limit, with no budget), as is a
        # multiple of the workload past any real fleet
        "unbounded" in sol.message.lower() or sol.share > 1e5
    ):
        sol.unbounded = True
    if sol.unbounded:
        raise ConfigError(
            "the throughput objective is unbounded: give site power caps, a budget "
            "(--budget-usd-per-h) or availability limits (and hosted APIs their rate limits)",
            field="--objective",
        )
    if sol.status == "infeasible" or (
        sol.status != "optimal" and not sol.replicas and not sol.hosted_rates
    ):
        if sol.status == "infeasible":
            raise PlanInfeasibleError([b.message for b in diagnose(p, time_limit_s)])
        stopped = f"the solver stopped without a plan: {sol.message}"
        if "time limit" in sol.message.lower():
            stopped += f" (--time-limit {time_limit_s:g} s: give it longer)"
        raise PlanInfeasibleError([stopped], status="stopped")
    if objective == "throughput" and sol.share <= 1e-9:
        # the limits leave room for no replica at all: say which bind, as the cost objective
        # does, rather than report a feasible plan that serves nothing
        raise PlanInfeasibleError(
            ["no fleet serves any of the workload inside the limits"]
            + [b.message for b in diagnose(p, time_limit_s)]
        )
    return _within_budget(p, summarize_solution(p, sol, objective), objective, time_limit_s)


BUDGET_TRIES = 3


def _within_budget(p: Problem, plan: Plan, objective: str, time_limit_s: float) -> Plan:
    """`plan`, or one solved again within the budget. The program charges an owned replica's
    electricity by two lines under its concave draw, which the plan's figures interpolate
    through the half-load point too: its $/h came up to 2% over the budget (an RTX 4090 at
    $2/kWh: $1.0989/h against $1.0785). The program's budget is cut by the excess and solved
    again, a few times."""
    budget = p.limits.budget_usd_per_h
    tighter = p
    for _ in range(BUDGET_TRIES):
        if budget is None or plan.usd_per_h <= budget * (1 + 1e-9):
            return plan
        room = (tighter.limits.budget_usd_per_h or 0.0) - (plan.usd_per_h - budget)
        tighter = replace(tighter, limits=replace(tighter.limits, budget_usd_per_h=room))
        sol = solve(tighter, objective, time_limit_s)
        if sol.status != "optimal" and not sol.replicas and not sol.hosted_rates:
            break
        plan = summarize_solution(p, sol, objective)
    if budget is not None and plan.usd_per_h > budget * (1 + 1e-9):
        need = math.ceil(plan.usd_per_h * 100 - 1e-9) / 100
        raise PlanInfeasibleError(
            [
                f"the budget binds: the cheapest plan found costs ${plan.usd_per_h:.4g}/h at "
                f"its devices' modelled draw, over ${budget:.4g}/h; it needs at least "
                f"${need:.2f}/h"
            ]
        )
    return plan


def plan(
    workload: str | Path | Workload,
    *,
    sites: str | Path | Fleet | None = None,
    hardware: list[str] | None = None,
    objective: str = "cost",
    power_cap_w: float | None = None,
    budget_usd_per_h: float | None = None,
    headroom: float = 0.1,
    available: dict[str, int] | None = None,
    require_software: str | None = None,
    min_maturity: str | None = None,
    model: str = "llama-3.1-8b",
    dtypes: tuple[Dtype, ...] | None = ("bf16",),
    capacity: CapacityMethod = "simulated",
    cache: CapacityCache | None = None,
    calibration: Calibration | None = None,
    catalog: Catalog | None = None,
    compare_with_single: bool = True,
    verify: bool = False,
    max_rounds: int = DEFAULT_ROUNDS,
    time_limit_s: float = 60.0,
    seed: int = 0,
) -> Plan:
    """The cheapest (or least-energy, least-carbon, highest-throughput) fleet for `workload`.

    `workload` is a workload file (or a loaded Workload); `sites` a sites file (a fleet file
    whose deployments are optional) or a Fleet; `hardware` the catalog ids to consider (None:
    every device); `dtypes` the weight formats to plan (None: every format each device has a
    peak for, as rank's auto). Raises PlanInfeasibleError naming the binding constraints when
    no fleet meets the SLOs within the limits.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"use one of {', '.join(OBJECTIVES)}", field="--objective")
    if isinstance(headroom, bool) or not isinstance(headroom, int | float) or not 0 <= headroom < 1:
        raise ConfigError(f"must be in [0, 1), got {headroom!r:.40}", field="--headroom")
    if (
        isinstance(time_limit_s, bool)
        or not isinstance(time_limit_s, int | float)
        or not (0 < time_limit_s < math.inf)
    ):
        raise ConfigError(
            f"must be a positive finite number of seconds, got {time_limit_s!r:.40}",
            field="--time-limit",
        )
    if (
        isinstance(max_rounds, bool)
        or not isinstance(max_rounds, int)
        or not 0 <= max_rounds <= MAX_ROUNDS
    ):  # each round is a simulation of the workload: a bound, not a budget run out
        raise ConfigError(
            f"must be a whole number from 0 to {MAX_ROUNDS}, got {max_rounds!r:.40}",
            field="--max-rounds",
        )
    if capacity not in ("simulated", "analytic"):
        raise ConfigError("use simulated or analytic", field="--capacity")
    # a limit is a positive finite number: no limit is the flag left out (NaN fails both)
    for value, flag in ((budget_usd_per_h, "--budget-usd-per-h"), (power_cap_w, "--power-cap")):
        if value is not None and not 0 < value < math.inf:
            raise ConfigError(
                f"must be a positive finite number, got {value}; leave it out for no limit",
                field=flag,
            )
    if power_cap_w is not None and power_cap_w > MAX_POWER_W:
        raise ConfigError(
            f"must be at most {MAX_POWER_W:g} W, got {power_cap_w:g}; leave it out for no cap",
            field="--power-cap",
        )
    for least, flag, order in (
        (require_software, "--require-software", SOFTWARE_ORDER),
        (min_maturity, "--min-maturity", MATURITY_ORDER),
    ):
        if least is not None and least not in order:  # one name, the least that passes
            raise ConfigError(f"{least!r:.80} is not one of {' < '.join(order)}", field=flag)
    fleet, hw_files = _sites(sites, power_cap_w)
    cat = (catalog or load_catalog()).extended(hw_files)
    ids = hardware if hardware is not None else list(cat.devices)
    if not ids:
        raise ConfigError("names no device id", field="--hardware")
    try:  # an unknown id (or a provider's) is an error naming the closest; any case is the id
        resolved = [cat.device(hw_id).id for hw_id in ids]
    except ConfigError as exc:
        raise ConfigError(exc.detail, field="--hardware") from None
    for i, hw_id in enumerate(resolved):  # twice: its candidates twice, one counted (a bug)
        if hw_id in resolved[:i]:
            twice = [str(h) for h, r in zip(ids, resolved, strict=True) if r == hw_id]
            raise ConfigError(f"names {hw_id} twice ({', '.join(twice)})", field="--hardware")
    ids = resolved
    counts: dict[str, int] = {}
    for hw_id, n in (available or {}).items():
        known = cat.known_id(hw_id)
        if known is None or known not in cat.devices:
            raise ConfigError(
                f"unknown hardware {hw_id[:200]!r}{_closest(hw_id, cat)}", field="--available"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(
                f"{hw_id}: a count is a whole number >= 0, got {n!r:.40}", field="--available"
            )
        if known in counts:
            raise ConfigError(f"{hw_id[:80]!r} is given twice", field="--available")
        counts[known] = n
    available = counts if available is not None else None
    # The requests are streamed into the flows, not held (a generator may make 20M), unless
    # --verify must replay them.
    requests: Iterable[Request]
    if isinstance(workload, Workload):
        wl, requests = workload, workload.requests
    elif verify:
        wl = load_workload(workload, default_model=model, seed=seed)
        requests = wl.requests
    else:
        wl, requests = stream_workload(workload, default_model=model, seed=seed)
    if verify and wl.policy is not None:  # only --verify routes by it: made before the work
        try:
            make_policy(wl.policy)
        except ConfigError as exc:  # it named no file, after the capacities were measured
            raise ConfigError(exc.detail, path=wl.source or None, field="policy") from None
    limits = Limits(
        headroom,
        budget_usd_per_h,
        tuple(sorted((available or {}).items())),
        require_software,
        min_maturity,
    )
    problem = build_problem(
        wl,
        fleet,
        cat,
        ids,
        default_model=model,
        limits=limits,
        calibration=calibration,
        dtypes=dtypes,
        method=capacity,
        cache=cache,
        requests=requests,
        ignore_origins=sites is None,  # one site: every request comes from it
    )
    if objective in ("energy", "carbon") and problem.hosted:
        # A hosted API publishes no joules: counted as none, these objectives sent it all the
        # traffic its rate limit allows and reported the devices' share as the whole.
        why = (
            f"a hosted API publishes no energy figures, so the {objective} objective cannot "
            "weigh it; the cost objective uses it"
        )
        problem = replace(
            problem,
            hosted=[],
            excluded={**problem.excluded, **{h.name: why for h in problem.hosted}},
        )
    result = solve_or_explain(problem, objective, time_limit_s)
    result.hardware_files = [str(Path(f).resolve()) for f in hw_files]
    if compare_with_single:
        result.comparisons = compare(problem, result, objective, time_limit_s)
    if verify:
        from wattserve.plan.verify import verify_plan  # simulate-heavy: only when asked

        if sites is None:  # one site: every request comes from it, whatever its origin says
            wl = replace(wl, requests=[replace(r, origin=None) for r in wl.requests])
        result = verify_plan(
            result, wl, max_rounds=max_rounds, seed=seed, time_limit_s=time_limit_s
        )
    return result


def _closest(name: str, cat: Catalog) -> str:
    near = closest(name, cat.devices)
    return f"; did you mean {', '.join(near)}?" if near else "; see `wattserve catalog`"


def _sites(sites: str | Path | Fleet | None, power_cap_w: float | None) -> tuple[Fleet, list[Path]]:
    """The sites to plan over, and the sites file's extra hardware files."""
    if isinstance(sites, Fleet):
        fleet, files = sites, []
    elif sites is None:
        site = Site("default", "datacenter", power_cap_w, 0.08, 1.5)
        return Fleet("plan", {"default": site}, (), 0.0, (), ()), []
    else:
        fleet = load_sites(sites)
        raw = load_yaml_file(sites)  # a mapping, its hardware_files checked: load_sites read it
        top = Fields(raw, str(sites), "fleet")
        # as load_sites reads them (`~/hw.yaml` is in the home folder, not beside the file)
        files = [
            file_named(Path(sites).parent, top, "hardware_files", f)
            for f in raw.get("hardware_files") or []
        ]
    if power_cap_w is not None:  # a cap is a limit: it lowers a site's own cap, never raises it
        fleet = replace(
            fleet,
            sites={
                n: replace(s, power_cap_w=min(power_cap_w, s.power_cap_w or math.inf))
                for n, s in fleet.sites.items()
            },
            _link_index={},
        )
    return fleet, files
