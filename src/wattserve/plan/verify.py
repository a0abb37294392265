"""`--verify`: simulate the plan on the workload's traffic with the workload's policy (default
`slo`); where a class misses its SLO, add capacity where it is served and solve again, reporting
each round.

The simulator reports SLO attainment over all requests, not per class, so a class's attainment
is bounded from below by assuming every missed request was its own:
1 - (all requests missed) / (requests of the class). The bound is exact with one class and
conservative with several (a class may be flagged that in fact met its SLO; never the reverse).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from wattserve.core.workload import Request, Workload
from wattserve.plan.api import Plan, solve_or_explain
from wattserve.plan.fleetfile import plan_fleet
from wattserve.plan.problem import Option
from wattserve.simulate import simulate

DEFAULT_POLICY = "slo"


def class_attainment(plan: Plan, wl: Workload, seed: int = 0) -> dict[str, Any]:
    """Simulate `plan` on `wl`: per class, a lower bound on the share meeting its SLO and its
    target; per site, the peak power against the cap."""
    fleet = plan_fleet(plan, plan.hardware_files)
    policy = wl.policy or DEFAULT_POLICY
    counts = Counter(r.cls for r in wl.requests)
    reqs = [
        Request(
            r.id,
            r.arrival_s,
            r.prompt_tokens,
            r.output_tokens,
            r.model,
            r.origin,
            r.slo,
            r.local_only,
            r.row,
            r.cls,
        )
        for r in wl.requests  # fresh copies: a run may shorten a request it aborts
    ]
    report, _ = simulate(fleet, Workload(reqs, wl.slos, source=wl.source), policy, seed=seed)
    n_all = report["requests"]
    missed = n_all - (report["slo_attainment"] or 0.0) * n_all
    result: dict[str, Any] = {
        "policy": policy,
        "attainment": report["slo_attainment"],
        "rejected": report["rejected"],
        "classes": {},
        "sites": {
            name: {"peak_power_w": s["peak_power_w"], "power_cap_w": s["power_cap_w"]}
            for name, s in report["sites"].items()
        },
    }
    for cls, n in sorted(counts.items()):
        target = wl.slos.get(_slo_of(wl, cls), wl.slos["default"]).percentile
        share = max(0.0, 1.0 - missed / n)
        result["classes"][cls or "default"] = {
            "requests": n,
            "attainment": share,
            "target": target,
            "met": share >= target - 1e-12,
        }
    return result


def _slo_of(wl: Workload, cls: str) -> str:
    return next((r.slo for r in wl.requests if r.cls == cls), "default")


def verify_plan(
    plan: Plan, wl: Workload, *, max_rounds: int = 3, seed: int = 0, time_limit_s: float = 60.0
) -> Plan:
    """Simulate, and while a class misses its SLO, derate the capacities it was planned with
    (by its shortfall) on the options serving it, then solve again."""
    rounds: list[dict[str, Any]] = []
    current = plan
    for i in range(max_rounds + 1):
        sim = class_attainment(current, wl, seed)
        missed = {c: v for c, v in sim["classes"].items() if not v["met"]}
        rounds.append(
            {
                "round": i,
                "usd_per_h": current.usd_per_h,
                "replicas": current.replicas,
                "attainment": sim["attainment"],
                "classes": sim["classes"],
                "sites": sim["sites"],
                "policy": sim["policy"],
            }
        )
        if not missed or i == max_rounds:
            break
        p = current.problem
        options = []
        for j, o in enumerate(p.options):
            serves_missed = any(
                (p.flows[q].cls or "default") in missed and (q, j) in current.solution.rates
                for q in o.caps
            )
            options.append(_derated(o, p.flows, missed) if serves_missed else o)
        problem = replace(p, options=options)
        nxt = solve_or_explain(problem, current.objective, time_limit_s)
        nxt.comparisons = current.comparisons
        nxt.hardware_files = current.hardware_files
        current = nxt
    current.rounds = rounds
    return current


def _derated(o: Option, flows: list[Any], missed: dict[str, dict[str, Any]]) -> Option:
    caps = {}
    for q, c in o.caps.items():
        v = missed.get(flows[q].cls or "default")
        if v is None:
            caps[q] = c
            continue
        # the shortfall in attainment, at least 10%: capacity in proportion to what was met
        factor = min(0.9, max(0.5, v["attainment"] / max(v["target"], 1e-9)))
        caps[q] = replace(c, rate_rps=c.rate_rps * factor)
    return replace(o, caps=caps)
