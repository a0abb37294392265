"""`--verify`: simulate the plan on the workload's traffic with the workload's policy
(default: the plan's own split, `plan.routing.PlanSplit`); where a class misses its SLO, add
capacity where it is served and solve again, reporting each round.

Each round is one simulation of the workload as it is. Every request is judged from its own
record (`simulate`'s `on_request`) against its own SLO, by the rule the simulator's overall
attainment counts (`SLO.meets`), so each class's attainment is exact under any policy, and so
is each class's attainment on each deployment or hosted API that served it: a round cuts the
capacity of those that missed, not of every one serving the class.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from wattserve.core.fleet import target_of
from wattserve.core.policy import Policy
from wattserve.core.records import OK, RequestRecord
from wattserve.core.workload import Request, Workload
from wattserve.errors import PlanInfeasibleError
from wattserve.plan.api import DEFAULT_ROUNDS, Plan, compare, falls_short, solve_or_explain
from wattserve.plan.fleetfile import plan_fleet
from wattserve.plan.problem import (
    ContextWindows,
    Flow,
    HostedOption,
    Option,
    Problem,
    declared_origins,
)
from wattserve.plan.routing import PlanSplit
from wattserve.simulate import simulate

Group = tuple[str, str]  # (class, the SLO's name) a request is judged in


def _copy(wl: Workload) -> list[Request]:
    """Fresh requests (a run may shorten one it aborts)."""
    return [
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
        for r in wl.requests
    ]


def _served_by(target: str | None, deployments: set[str]) -> str | None:
    """The deployment (a plan option's name) or hosted API a record's target names: an
    engine is `deployment/replica`; a hosted API, its own name (which may hold a '/')."""
    if target is None:
        return None
    return target_of(target, deployments)


def class_attainment(plan: Plan, wl: Workload, seed: int = 0) -> dict[str, Any]:
    """Simulate `plan` on `wl` once (see the module docstring): per class, the share meeting
    its SLO against its target, and the same per deployment or hosted API that served it
    (`served`: requests refused before any was chosen count in the class only); overall
    attainment; per site, the peak power against the cap. A class whose rows name several
    SLOs (a trace's `slo` field) is judged per SLO, each part against its own (`CLASS (SLO)`):
    the whole class had been held to its first row's, so a p99 class whose first row was p50
    passed at 98%. `groups` gives each entry's (class, SLO name)."""
    fleet = plan_fleet(plan, plan.hardware_files)
    policy: str | Policy = wl.policy or PlanSplit.from_plan(plan)
    deployments = {d.name for d in fleet.deployments}
    requests = _copy(wl)
    if len({r.id for r in requests}) < len(requests):  # records are matched by id
        requests = [replace(r, id=i) for i, r in enumerate(requests)]
    group_of: dict[int, Group] = {r.id: (r.cls, r.slo) for r in requests}
    counts = Counter(group_of.values())
    named = Counter(cls for cls, _ in counts)  # how many SLOs each class's rows name
    slo_of = {g: wl.slos.get(g[1], wl.slos["default"]) for g in counts}
    met: Counter[Group] = Counter()
    placed: Counter[tuple[Group, str]] = Counter()
    placed_met: Counter[tuple[Group, str]] = Counter()

    def judge(rec: RequestRecord) -> None:
        g = group_of[rec.id]
        ok = rec.status == OK and slo_of[g].meets(rec.ttft_s, rec.tpot_s)
        met[g] += ok
        name = _served_by(rec.target, deployments)
        if name is not None:
            placed[(g, name)] += 1
            placed_met[(g, name)] += ok

    report, _ = simulate(
        fleet, Workload(requests, wl.slos, source=wl.source), policy, seed=seed, on_request=judge
    )
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
    labels = {g: (g[0] or "default") + (f" ({g[1]})" if named[g[0]] > 1 else "") for g in counts}
    taken = Counter(labels.values())
    for g, n in sorted(counts.items()):
        cls, slo_name = g
        slo = slo_of[g]
        # two groups one label would merge (a class named "chat (tight)" beside chat's tight
        # part; a class named "default" beside requests of none): each then says both names
        label = labels[g] if taken[labels[g]] == 1 else f"class {cls!r}, SLO {slo_name!r}"
        share = met[g] / n
        result["classes"][label] = {
            "requests": n,
            "attainment": share,
            "target": slo.percentile,
            "met": not falls_short(share, slo.percentile),
            "served": {
                name: {"requests": k, "attainment": placed_met[(g, name)] / k}
                for (h, name), k in sorted(placed.items())
                if h == g
            },
        }
        result["groups"][label] = g
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
    declared = declared_origins(wl)
    kept = [
        r
        for r in wl.requests
        if windows.fits(r, r.model)
        and not r.unplaceable
        and not plan.problem.left_out_origin(r, declared)
    ]
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
        cuts = _cuts(p, current, {sim["groups"][c]: v for c, v in missed.items()})
        serving = {
            j for (q, j) in current.solution.rates if (p.options[j].name, _key(p.flows[q])) in cuts
        }
        hosted = {
            k
            for (q, k) in current.solution.hosted_rates
            if (p.hosted[k].name, _key(p.flows[q])) in cuts and q in p.hosted[k].limits
        }
        if not serving and not hosted:  # hosted APIs with no rate limit: their latency is set
            current.verify_stop = (
                f"nothing serving {', '.join(sorted(missed))} can be cut (no device and no "
                "rate-limited hosted API of the plan serves it where it missed)"
            )
            break
        try:
            nxt = _derate_and_solve(current, p, serving, hosted, cuts, time_limit_s)
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
    cuts: Cuts,
    time_limit_s: float,
) -> Plan:
    """Derate where the classes missed (the options' capacities, the hosted APIs' planned
    rates) until the plan changes: spare capacity from rounding up to whole replicas can absorb
    one cut, and the same plan would fail the same way again."""
    nxt = current
    for _ in range(DERATE_TRIES):
        options = [
            _derated(o, p.flows, cuts) if j in serving else o for j, o in enumerate(p.options)
        ]
        apis = [
            _derated_api(h, p.flows, cuts) if k in hosted else h for k, h in enumerate(p.hosted)
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


def _key(f: Flow) -> Group:
    """The (class, SLO name) a flow's requests are judged in (two SLO names of equal limits
    are two groups)."""
    return f.cls, f.slo_name


# (a deployment's or hosted API's name, the (class, SLO) it missed) -> the factor its
# capacity or planned rate for that class is cut by
Cuts = dict[tuple[str, Group], float]


def _cuts(p: Problem, plan: Plan, short: dict[Group, dict[str, Any]]) -> Cuts:
    """Where each class that missed is cut: on each deployment or hosted API whose share of
    the class missed its target, by that share. Every one the plan serves the class from is
    cut too, by the class's share, where the misses cannot be laid on them: requests refused
    before any target was chosen (a rate limit with no token left, a power cap; they name
    none) that alone are more misses than the class may have, or misses only where the plan
    did not send the class (a policy of the workload's own routes off the plan)."""
    cuts: Cuts = {}
    sol = plan.solution
    for key, v in short.items():
        target, n = float(v["target"]), int(v["requests"])
        planned = {p.options[j].name for (q, j) in sol.rates if _key(p.flows[q]) == key}
        planned |= {p.hosted[k].name for (q, k) in sol.hosted_rates if _key(p.flows[q]) == key}
        for name, s in v["served"].items():
            if falls_short(s["attainment"], target):
                cuts[(name, key)] = _factor(s["attainment"], target)
        unplaced = n - sum(s["requests"] for s in v["served"].values())
        if unplaced > n * (1.0 - target) or not any((name, key) in cuts for name in planned):
            f = _factor(v["attainment"], target)
            for name in planned:
                cuts[(name, key)] = min(f, cuts.get((name, key), f))
    return cuts


def _factor(attainment: float, target: float) -> float:
    """The cut for what met `attainment` of its `target`: in proportion to what was met, at
    least 20% a round (a replica's worth of rounding would otherwise absorb it), at most
    halved."""
    return min(0.8, max(0.5, float(attainment) / max(target, 1e-9)))


def _derated(o: Option, flows: list[Flow], cuts: Cuts) -> Option:
    caps = {}
    for q, c in o.caps.items():
        f = cuts.get((o.name, _key(flows[q])))
        caps[q] = c if f is None else replace(c, rate_rps=c.rate_rps * f)
    return replace(o, caps=caps)


def _derated_api(h: HostedOption, flows: list[Flow], cuts: Cuts) -> HostedOption:
    """A hosted API whose rate limit refused more than the plan's Poisson figure allowed (a
    burstier trace): the rate planned for each class it missed is cut. An API without a rate
    limit has nothing to cut: its latency is its profile's."""
    limits = {}
    for q, rate in h.limits.items():
        f = cuts.get((h.name, _key(flows[q])))
        limits[q] = rate if f is None else rate * f
    return replace(h, limits=limits)
