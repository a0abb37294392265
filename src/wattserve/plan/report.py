"""The `plan --report` page, drawn with the shared report module: per site peak power against
its cap, $ and J; the deployments; every candidate at full load with the $-against-J Pareto
front; the mix beside single device types; traffic and verification rounds."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from wattserve.plan.api import Plan, full_load
from wattserve.plan.table import missed_on, plan_text
from wattserve.report import Point, Section, bars, note, page, pre, scatter, table

COMPARED = {"best_single_type": "best single type", "lowest_usd_per_token_device": "lowest $/tok"}


def _sites(plan: Plan) -> Section:
    sites = plan.sites
    return Section(
        "Sites",
        [
            bars(
                "Peak power per site against its cap",
                {s.site: s.peak_w for s in sites},
                unit="W",
                label="planned peak",
                marks={"power cap": {s.site: s.cap_w for s in sites}},
            ),
            note(
                f"The planned peak stays under (1 - headroom) x the cap; headroom "
                f"{plan.problem.limits.headroom:.0%}."
            ),
            bars("$ per hour per site", {s.site: s.usd_per_h for s in sites}, unit="$"),
            bars("$ per 1M output tokens", {s.site: s.usd_per_mtok for s in sites}, unit="$"),
            bars(
                "J per output token (at the meter)",
                {s.site: s.j_per_token for s in sites},
                unit="J",
            ),
        ],
    )


def _deployments(plan: Plan) -> Section:
    rows: list[dict[str, Any]] = []
    for s in plan.sites:
        for name, n in sorted(s.devices.items()):
            peak_w, usd_per_h, util = s.details.get(name, (None, None, None))
            rows.append(
                {
                    "site": s.site,
                    "deployment": name,
                    "replicas": n,
                    "peak W": peak_w,
                    "$/h": usd_per_h,
                    "utilisation %": None if util is None else 100 * util,
                }
            )
    hosted = [{"hosted API": k, "req/s": v} for k, v in sorted(plan.hosted.items())]
    return Section("Deployments", [table(rows), table(hosted)])


def _candidates(plan: Plan) -> Section:
    """Every option at full load; the chosen ones apart, so the eye finds them."""
    p = plan.problem
    chosen = set(plan.replicas)
    groups: dict[str, list[Point]] = defaultdict(list)
    for o in p.options:
        usd_per_tok, j_per_tok = full_load(o, p)
        group = "in the plan" if o.name in chosen else "not chosen"
        groups[group].append((j_per_tok, usd_per_tok * 1e6, o.name))
    return Section(
        "Candidates at full load",
        [
            scatter(
                "$ per 1M tokens against J per token, one replica flat out",
                groups,
                x_unit="J",
                y_unit="$",
                x_label="J per output token (device)",
                y_label="$ per 1M output tokens",
                pareto=True,
                log=True,
            ),
            note(
                "A replica's $ is its rent or amortised price plus electricity; figures average "
                "the traffic classes it can serve. The plan weighs more than these two: SLO "
                "tiers, power caps, sites and integer replicas."
            ),
        ],
    )


def _comparisons(plan: Plan) -> Section:
    usd: dict[str, float | None] = {"the mix": plan.usd_per_h}
    watts: dict[str, float | None] = {"the mix": plan.avg_w}
    for key, label in COMPARED.items():
        c = plan.comparisons.get(key)
        if c is None:
            continue
        ok = bool(c.get("feasible"))
        name = f"{label}: {c.get('hardware') or 'none'}{'' if ok else ' infeasible'}"
        usd[name] = c.get("usd_per_h") if ok else None
        watts[name] = c.get("avg_power_w") if ok else None
    return Section(
        "The mix beside one device type",
        [
            bars("$ per hour", usd, unit="$", label="$"),
            bars("Average power at the meter", watts, unit="W", label="W"),
        ],
    )


def _verify(plan: Plan) -> list[Section]:
    rows = [
        {
            "round": r["round"],
            "policy": r["policy"],
            "simulated": "yes" if r.get("replay_of") is None else f"as round {r['replay_of']}",
            "$/h": r["usd_per_h"],
            "class": cls,
            "attainment %": 100 * v["attainment"],
            "target %": 100 * v["target"],
            "met": "yes" if v["met"] else "MISSED",
            "missed on": missed_on(v),
        }
        for r in plan.rounds
        for cls, v in r["classes"].items()
    ]
    return [Section("Verification by simulation", [table(rows)])] if rows else []


def plan_html(plan: Plan) -> str:
    """The whole page."""
    flows = [
        {
            "class": f.label,
            "model": f.model,
            "req/s": f.rate_rps,
            "prompt tokens": f.prompt_tokens,
            "output tokens": f.output_tokens,
            "TTFT SLO s": f.slo.ttft_s,
            "TPOT SLO ms": f.slo.tpot_s * 1e3,
        }
        for f in plan.problem.flows
    ]
    excluded = [{"hardware": k, "why": v} for k, v in sorted(plan.problem.excluded.items())]
    sections = [
        Section("Summary", [pre(plan_text(plan))]),
        _sites(plan),
        _deployments(plan),
        _candidates(plan),
        _comparisons(plan),
        *_verify(plan),
        Section("Traffic", [table(flows)]),
        *([Section("Not candidates", [table(excluded)])] if excluded else []),
    ]
    return page(f"wattserve plan: {plan.objective}", sections)
