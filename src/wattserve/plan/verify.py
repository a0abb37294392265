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
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from wattserve.core.policy import Policy
from wattserve.core.workload import SLO, Request, Workload
from wattserve.errors import PlanInfeasibleError
from wattserve.plan.api import DEFAULT_ROUNDS, Plan, compare, solve_or_explain
from wattserve.plan.fleetfile import plan_fleet
from wattserve.plan.problem import ContextWindows, Flow, HostedOption, Option, Problem
from wattserve.plan.routing import PlanSplit
from wattserve.simulate import simulate


def _copy(wl: Workload, slo_of: Callable[[Request], str] | None = None) -> list[Request]:
    """Fresh requests (a run may shorten one it aborts), optionally renaming their SLOs."""
    return [
        Request(
            r.id,
            r.arrival_s,
            r.prompt_tokens,
            r.output_tokens,
            r.model,
            r.origin,
            r.slo if slo_of is None else slo_of(r),
            r.local_only,
            r.row,
            r.cls,
        )
        for r in wl.requests
    ]


LIFTED = SLO(1e9, 1e9, 0.0)


def class_attainment(plan: Plan, wl: Workload, seed: int = 0) -> dict[str, Any]:
    """Simulate `plan` on `wl` (see the module docstring): per class, the share meeting its
    SLO against its target; overall attainment; per site, the peak power against the cap.
    A class whose rows name several SLOs (a trace's `slo` field) is judged per SLO, each part
    against its own (`CLASS (SLO)`): the whole class had been held to its first row's, so a
    p99 class whose first row was p50 passed at 98%. `groups` gives each entry's (class, SLO)."""
    fleet = plan_fleet(plan, plan.hardware_files)
    policy: str | Policy = wl.policy or PlanSplit.from_plan(plan)
    counts = Counter((r.cls, r.slo) for r in wl.requests)
    named = Counter(cls for cls, _ in counts)  # how many SLOs each class's rows name
    report, _ = simulate(fleet, Workload(_copy(wl), wl.slos, source=wl.source), policy, seed=seed)
    result: dict[str, Any] = {
        "policy": policy if isinstance(policy, str) else policy.name,
        "attainment": report["slo_attainment"],
        "rejected": report["rejected"],
        "classes": {},
        "groups": {},
        "sites": {
            name: {"peak_power_w": s["peak_power_w"], "power_cap_w": s["power_cap_w"]}
            for name, s in report["sites"].items()
        },
    }
    for (cls, slo_name), n in sorted(counts.items()):
        slo = wl.slos.get(slo_name, wl.slos["default"])
        label = (cls or "default") + (f" ({slo_name})" if named[cls] > 1 else "")
        if len(counts) == 1:
            one = report
        else:

            def judged(r: Request, group: tuple[str, str] = (cls, slo_name)) -> str:
                return "__judged" if (r.cls, r.slo) == group else "__lifted"

            slos = {"default": wl.slos["default"], "__judged": slo, "__lifted": LIFTED}
            fresh = policy if isinstance(policy, str) else PlanSplit.from_plan(plan)
            one, _ = simulate(
                fleet, Workload(_copy(wl, judged), slos, source=wl.source), fresh, seed=seed
            )
        met = (one["slo_attainment"] or 0.0) * one["requests"]
        # completed others are at most all others: exact when none is rejected
        others = min(one["completed"], one["requests"] - n)
        share = max(0.0, min(1.0, (met - others) / n))
        result["classes"][label] = {
            "requests": n,
            "attainment": share,
            "target": slo.percentile,
            "met": share >= slo.percentile - 1e-12,
        }
        result["groups"][label] = (cls, slo)
    return result


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
    (by its shortfall) on the options serving it, and its planned rate on the rate-limited
    hosted APIs serving it, then solve again; a round whose fleet and split are the last
    simulated round's is not simulated again (`replay_of`)."""
    windows = ContextWindows()  # what the plan left out is not replayed: no replica takes it
    kept = [r for r in wl.requests if windows.fits(r, r.model) and not r.unplaceable]
    wl = replace(wl, requests=kept)
    rounds: list[dict[str, Any]] = []
    current = plan
    sim, replay_of = class_attainment(current, wl, seed), None
    for i in range(max_rounds + 1):
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
                # a round whose fleet and split are an earlier round's is not simulated again
                # (its figures are that round's); its derated capacities carry on to the next
                "replay_of": replay_of,
            }
        )
        if not missed or i == max_rounds:
            break
        p = current.problem
        # by the (class, SLO) a flow's requests are judged in
        short = {sim["groups"][c]: v for c, v in missed.items()}
        serving = {j for (q, j) in current.solution.rates if _key(p.flows[q]) in short}
        hosted = {
            k
            for (q, k) in current.solution.hosted_rates
            if _key(p.flows[q]) in short and q in p.hosted[k].limits
        }
        if not serving and not hosted:  # hosted APIs with no rate limit: their latency is set
            current.verify_stop = (
                f"nothing serving {', '.join(sorted(missed))} can be cut (no device and no "
                "rate-limited hosted API of the plan serves it)"
            )
            break
        try:
            nxt = _derate_and_solve(current, p, serving, hosted, short, time_limit_s)
        except PlanInfeasibleError as exc:  # e.g. the budget: keep the last plan, say why
            current.verify_stop = "; ".join(exc.reasons)
            break
        nxt.comparisons = current.comparisons
        nxt.hardware_files = current.hardware_files
        if _same_run(nxt, current, wl):  # simulating it would replay the last run to the bit
            replay_of = i if replay_of is None else replay_of
        else:
            sim, replay_of = class_attainment(nxt, wl, seed), None
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
    hosted: set[int],
    short: dict[tuple[str, SLO], dict[str, Any]],
    time_limit_s: float,
) -> Plan:
    """Derate what serves the classes that missed (the options' capacities, the hosted APIs'
    planned rates) until the plan changes: spare capacity from rounding up to whole replicas
    can absorb one cut, and the same plan would fail the same way again."""
    nxt = current
    for _ in range(DERATE_TRIES):
        options = [
            _derated(o, p.flows, short) if j in serving else o for j, o in enumerate(p.options)
        ]
        apis = [
            _derated_api(h, p.flows, short) if k in hosted else h for k, h in enumerate(p.hosted)
        ]
        p = replace(p, options=options, hosted=apis)
        nxt = solve_or_explain(p, current.objective, time_limit_s)
        if nxt.replicas != current.replicas or nxt.hosted != current.hosted:
            break
    return nxt


def _same_run(a: Plan, b: Plan, wl: Workload) -> bool:
    """Whether simulating plan `a` on `wl` replays plan `b`'s run: the same fleet, and the
    same split where the plan's own split routes."""
    if a.replicas != b.replicas or a.hosted != b.hosted:
        return False
    return wl.policy is not None or PlanSplit.from_plan(a).split == PlanSplit.from_plan(b).split


def _key(f: Flow) -> tuple[str, SLO]:
    return f.cls, f.slo


def _factor(v: dict[str, Any]) -> float:
    """The cut for a class that met `v["attainment"]` of its target: in proportion to what
    was met, at least 20% a round (a replica's worth of rounding would otherwise absorb it),
    at most halved."""
    return min(0.8, max(0.5, float(v["attainment"]) / max(float(v["target"]), 1e-9)))


def _derated(o: Option, flows: list[Flow], short: dict[tuple[str, SLO], dict[str, Any]]) -> Option:
    caps = {}
    for q, c in o.caps.items():
        v = short.get(_key(flows[q]))
        caps[q] = c if v is None else replace(c, rate_rps=c.rate_rps * _factor(v))
    return replace(o, caps=caps)


def _derated_api(
    h: HostedOption, flows: list[Flow], short: dict[tuple[str, SLO], dict[str, Any]]
) -> HostedOption:
    """A hosted API whose rate limit refused more than the plan's Poisson figure allowed (a
    burstier trace): the rate planned for each class that missed is cut. An API without a rate
    limit has nothing to cut: its latency is its profile's."""
    limits = {}
    for q, rate in h.limits.items():
        v = short.get(_key(flows[q]))
        limits[q] = rate if v is None else rate * _factor(v)
    return replace(h, limits=limits)
