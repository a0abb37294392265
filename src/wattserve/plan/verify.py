"""`--verify`: simulate the plan on the workload's traffic with the workload's policy
(default: the plan's own split, `plan.routing.PlanSplit`); where a class misses its SLO, add
capacity where it is served and solve again, reporting each round.

The simulator reports SLO attainment over all requests, not per class. So each round runs the
workload once as it is (overall attainment, rejections, peak power per site) and once per class
with the other classes' SLOs lifted: their requests still arrive and load the fleet, but count
as met, so the class's own attainment is (met - completed others) / its requests, exact when no
other request is rejected (else a lower bound). With an SLO-aware policy the lifted classes are
routed as if they had no SLO: their load may fall elsewhere than in the real run (the plan's
own split reads no SLO, so with it the per-class figures are exact).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from wattserve.core.policy import Policy
from wattserve.core.workload import SLO, Request, Workload
from wattserve.errors import PlanInfeasibleError
from wattserve.plan.api import DEFAULT_ROUNDS, Plan, compare, solve_or_explain
from wattserve.plan.fleetfile import plan_fleet
from wattserve.plan.problem import ContextWindows, Option, Problem
from wattserve.plan.routing import PlanSplit
from wattserve.simulate import simulate


def _copy(wl: Workload, slo_of: dict[str, str] | None = None) -> list[Request]:
    """Fresh requests (a run may shorten one it aborts), optionally renaming SLOs by class."""
    return [
        Request(
            r.id,
            r.arrival_s,
            r.prompt_tokens,
            r.output_tokens,
            r.model,
            r.origin,
            r.slo if slo_of is None else slo_of.get(r.cls, r.slo),
            r.local_only,
            r.row,
            r.cls,
        )
        for r in wl.requests
    ]


LIFTED = SLO(1e9, 1e9, 0.0)


def class_attainment(plan: Plan, wl: Workload, seed: int = 0) -> dict[str, Any]:
    """Simulate `plan` on `wl` (see the module docstring): per class, the share meeting its
    SLO against its target; overall attainment; per site, the peak power against the cap."""
    fleet = plan_fleet(plan, plan.hardware_files)
    policy: str | Policy = wl.policy or PlanSplit.from_plan(plan)
    counts = Counter(r.cls for r in wl.requests)
    report, _ = simulate(fleet, Workload(_copy(wl), wl.slos, source=wl.source), policy, seed=seed)
    result: dict[str, Any] = {
        "policy": policy if isinstance(policy, str) else policy.name,
        "attainment": report["slo_attainment"],
        "rejected": report["rejected"],
        "classes": {},
        "sites": {
            name: {"peak_power_w": s["peak_power_w"], "power_cap_w": s["power_cap_w"]}
            for name, s in report["sites"].items()
        },
    }
    for cls, n in sorted(counts.items()):
        slo = wl.slos.get(_slo_of(wl, cls), wl.slos["default"])
        if len(counts) == 1:
            one = report
        else:
            names = {c: ("__judged" if c == cls else "__lifted") for c in counts}
            slos = {"default": wl.slos["default"], "__judged": slo, "__lifted": LIFTED}
            fresh = policy if isinstance(policy, str) else PlanSplit.from_plan(plan)
            one, _ = simulate(
                fleet, Workload(_copy(wl, names), slos, source=wl.source), fresh, seed=seed
            )
        met = (one["slo_attainment"] or 0.0) * one["requests"]
        # completed others are at most all others: exact when none is rejected
        others = min(one["completed"], one["requests"] - n)
        share = max(0.0, min(1.0, (met - others) / n))
        result["classes"][cls or "default"] = {
            "requests": n,
            "attainment": share,
            "target": slo.percentile,
            "met": share >= slo.percentile - 1e-12,
        }
    return result


def _slo_of(wl: Workload, cls: str) -> str:
    return next((r.slo for r in wl.requests if r.cls == cls), "default")


DERATE_TRIES = 4


def verify_plan(
    plan: Plan,
    wl: Workload,
    *,
    max_rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
    time_limit_s: float = 60.0,
) -> Plan:
    """Simulate, and while a class misses its SLO, derate the capacities it was planned with
    (by its shortfall) on the options serving it, then solve again."""
    windows = ContextWindows()  # what the plan left out is not replayed: no replica takes it
    kept = [r for r in wl.requests if windows.fits(r, r.model) and not r.unplaceable]
    wl = replace(wl, requests=kept)
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
        serving = {
            j for (q, j) in current.solution.rates if (p.flows[q].cls or "default") in missed
        }
        try:
            nxt = _derate_and_solve(current, p, serving, missed, time_limit_s)
        except PlanInfeasibleError as exc:  # e.g. the budget: keep the last plan, say why
            current.verify_stop = "; ".join(exc.reasons)
            break
        nxt.comparisons = current.comparisons
        nxt.hardware_files = current.hardware_files
        current = nxt
    current.rounds = rounds
    if len(rounds) > 1 and current.comparisons:
        # the mix's capacities were derated: the single-type plans beside it are solved again
        # on the same derated capacities, or the savings would weigh unlike against like
        current.comparisons = compare(current.problem, current, current.objective, time_limit_s)
    return current


def _derate_and_solve(
    current: Plan,
    p: Problem,
    serving: set[int],
    missed: dict[str, dict[str, Any]],
    time_limit_s: float,
) -> Plan:
    """Derate the options serving the classes that `missed` until the plan changes: spare
    capacity from rounding up to whole replicas can absorb one cut, and the same plan would
    fail the same way again."""
    nxt = current
    for _ in range(DERATE_TRIES):
        options = [
            _derated(o, p.flows, missed) if j in serving else o for j, o in enumerate(p.options)
        ]
        p = replace(p, options=options)
        nxt = solve_or_explain(p, current.objective, time_limit_s)
        if nxt.replicas != current.replicas or nxt.hosted != current.hosted:
            break
    return nxt


def _derated(o: Option, flows: list[Any], missed: dict[str, dict[str, Any]]) -> Option:
    caps = {}
    for q, c in o.caps.items():
        v = missed.get(flows[q].cls or "default")
        if v is None:
            caps[q] = c
            continue
        # the shortfall in attainment, at least 20% a round (a replica's worth of rounding
        # would otherwise absorb it): capacity in proportion to what was met, at most halved
        factor = min(0.8, max(0.5, v["attainment"] / max(v["target"], 1e-9)))
        caps[q] = replace(c, rate_rps=c.rate_rps * factor)
    return replace(o, caps=caps)
