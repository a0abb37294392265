"""The plan as text: a table per site, the comparisons, verify rounds."""

from __future__ import annotations

import math
from typing import Any

from wattserve.core.cells import cell
from wattserve.plan.api import Plan, falls_short


def clean(v: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x) for x in v]
    return v


def plan_text(plan: Plan) -> str:
    s = plan.solution
    tok = plan.output_tokens_per_s
    lines = [
        f"plan ({plan.objective}): ${plan.usd_per_h:.2f}/h, {plan.avg_w:.0f} W average at the "
        f"meter, {tok:.0f} output tokens/s, "
        f"${cell(plan.usd_per_h / (tok * 3600) * 1e6 if tok else None, '.3f')}/1M tokens "
        f"[{s.status}, solved in {s.solve_s:.2f} s" + (f", gap {s.gap:.2%}" if s.gap else "") + "]",
    ]
    if plan.objective == "throughput":
        lines.append(f"  serves {s.share:.2f}x the workload's rate inside the limits")
    head = (
        f"  {'deployment':50} {'replicas':>8} {'peak W':>8} {'cap W':>8} {'$/h':>8} "
        f"{'util':>5} {'$/1M tok':>9} {'J/tok':>7} {'gCO2/1M':>8}"
    )
    for row in plan.sites:
        lines.append(f"site {row.site}:")
        lines.append(head)
        for name, n in sorted(row.devices.items()):
            peak, usd, util = row.details.get(name, (math.nan, math.nan, math.nan))
            lines.append(
                f"  {name:50} {n:>8} {cell(peak, '8.0f')} {'':>8} {cell(usd, '8.2f')} "
                f"{cell(None if math.isnan(util) else 100 * util, '4.0f')}%"
            )
        lines.append(
            f"  {'total':50} {sum(row.devices.values()):>8} {row.peak_w:8.0f} "
            f"{cell(row.cap_w, '8.0f')} {row.usd_per_h:8.2f} {row.utilisation:5.0%} "
            f"{cell(row.usd_per_mtok, '9.3f')} {cell(row.j_per_token, '7.3f')} "
            f"{cell(row.carbon_g_per_mtok, '8.1f')}"
        )
    for name, rps in sorted(plan.hosted.items()):
        lines.append(f"hosted {name}: {rps:.2f} req/s")
    comp = plan.comparisons
    for key, label in (
        ("best_single_type", "best single device type"),
        ("lowest_usd_per_token_device", "lowest-$/token device only"),
    ):
        c = comp.get(key)
        if c is None:
            continue
        if not c.get("feasible"):
            lines.append(f"{label} ({c.get('hardware') or 'none'}): infeasible")
            continue
        saves = c.get("mix_saves")
        verb = "gains" if plan.objective == "throughput" else "saves"
        served = f"serves {c['served_share']:.2f}x, " if plan.objective == "throughput" else ""
        lines.append(
            f"{label} ({c['hardware']}): {served}${c['usd_per_h']:.2f}/h, "
            f"{c['avg_power_w']:.0f} W; the mix {verb} "
            # + 0.0: a share within the solver's tolerance of nothing was printed "-0.0%"
            f"{cell(None if saves is None else round(100 * saves, 1) + 0.0, '.1f')}%"
        )
    for r in plan.rounds:
        parts = ", ".join(
            f"{cls} {share(v['attainment'], v['target'])} (target {v['target']:.0%})"
            + ("" if v["met"] else " MISSED" + (f" ({w})" if (w := missed_on(v)) else ""))
            for cls, v in r["classes"].items()
        )
        if r.get("replay_of") is not None:  # older plans' JSON has no such key
            parts = (
                f"the fleet and split of round {r['replay_of']}, derated further: not "
                "simulated again"
            )
        lines.append(f"verify round {r['round']} (${r['usd_per_h']:.2f}/h, {r['policy']}): {parts}")
    unmet = plan.unmet
    if unmet == {}:
        last = len(plan.rounds) - 1
        lines.append(f"verified: every class met its SLO in simulation (round {last})")
    elif unmet:
        derated = len(plan.rounds) - 1
        after = f"after {derated} round{'' if derated == 1 else 's'} of derating, "
        lines.append(
            "NOT VERIFIED: "
            + (after if derated else "")
            + ", ".join(
                f"{c} {'still ' if derated else ''}misses its SLO "
                f"({share(v['attainment'], v['target'])}, target {v['target']:.0%})"
                for c, v in unmet.items()
            )
            + (
                f"; no round can add capacity: {plan.verify_stop}"
                if plan.verify_stop
                else "; more rounds (--max-rounds) may meet it"
            )
        )
    lines += [f"left out: {note}" for note in plan.problem.left_out]
    if plan.problem.excluded:
        shown = sorted(plan.problem.excluded.items())[:8]
        more = len(plan.problem.excluded) - len(shown)
        lines.append(
            "not candidates: "
            + "; ".join(f"{k} ({v})" for k, v in shown)
            + (f"; and {more} more (--json lists every one)" if more else "")
        )
    return "\n".join(lines)


def missed_on(v: dict[str, Any]) -> str:
    """Where a class that missed missed: each deployment or hosted API whose share of it fell
    short, with its requests, and the requests refused before any was chosen (older plans'
    JSON has no `served`); nothing for a class that met."""
    if v["met"] or "served" not in v:
        return ""
    served = v["served"]
    short = [
        f"{name} {share(s['attainment'], v['target'])} of {s['requests']:,}"
        for name, s in served.items()
        if falls_short(s["attainment"], v["target"])
    ]
    parts = [f"on {', '.join(short)}"] if short else []
    unplaced = v["requests"] - sum(s["requests"] for s in served.values())
    if unplaced:
        parts.append(f"{unplaced:,} refused before any target was chosen")
    return "; ".join(parts)


def share(x: float, target: float) -> str:
    """`x` as a percentage with the digits that keep it on its side of `target`: 98.96% of
    a 99% target was printed "99.0%" beside MISSED."""
    for digits in range(1, 10):
        text = f"{x:.{digits}%}"
        if (x < target) == (round(100 * x, digits) < 100 * target):
            break
    return text
