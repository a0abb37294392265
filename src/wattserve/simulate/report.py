"""Turn a simulation Outcome into the report: JSON, a comparison table, per-site power."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from wattserve.core.cells import cell
from wattserve.core.energy import carbon_g
from wattserve.core.fleet import Fleet
from wattserve.simulate.outcome import Outcome


def _pct(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    a = np.asarray(values)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def summarize(out: Outcome, fleet: Fleet) -> dict[str, Any]:
    """The `--json` object for one policy."""
    span = max(out.span_s, 1e-9)
    site_energy: dict[str, float] = defaultdict(float)
    usd = out.hosted_usd
    specs = {d.name: d for d in fleet.deployments}
    for e, where, pool in zip(out.engines, out.engine_site, out.engine_pool, strict=True):
        joules = e.energy_j(span)
        site_energy[where] += joules
        cost = specs[pool].cost
        if cost.basis != "unknown":
            usd += cost.usd(span, joules)
    unpriced = sorted({d.name for d in fleet.deployments if d.cost.basis == "unknown"})
    unpowered = sorted({d.name for d in fleet.deployments if d.perf.power_missing})
    powered_tokens = sum(
        n for name, n in out.tokens_by.items() if name in specs and name not in unpowered
    )
    # carbon per request and per token: over what the devices at sites with a known carbon
    # intensity served, as the grams are theirs (requests served at a site without one were
    # counted, which understated the figure)
    carbon_known = {
        name
        for name, d in specs.items()
        if name not in unpowered and fleet.sites[d.site].carbon_g_per_kwh is not None
    }
    carbon_requests = sum(n for name, n in out.served_by.items() if name in carbon_known)
    carbon_tokens = sum(n for name, n in out.tokens_by.items() if name in carbon_known)
    energy = sum(site_energy.values())
    # a cost is known for hosted APIs and priced deployments; the tokens of unpriced ones are
    # left out of $/1M tokens, and with nothing priced the cost is unknown, never $0
    priced = len(unpriced) < len(specs) or bool(fleet.hosted)
    priced_tokens = sum(n for name, n in out.tokens_by.items() if name not in unpriced)
    gov = out.governor
    sites: dict[str, Any] = {}
    here: dict[str, list[str]] = defaultdict(list)
    for d in fleet.deployments:
        here[d.site].append(d.name)
    for name, site in fleet.sites.items():
        acct = gov.sites[name] if gov is not None else None
        # a site whose devices all lack power figures: its watts are unknown, not 0
        dark = bool(here[name]) and all(n in unpowered for n in here[name])
        sites[name] = {
            "power_cap_w": site.power_cap_w,
            "peak_power_w": None if acct is None or dark else round(acct.peak_w, 3),
            "cap_exceeded_s": None if acct is None or dark else round(acct.exceeded_s, 6),
            "max_excess_w": None if acct is None or dark else round(acct.max_excess_w, 3),
            "energy_j": None if dark else round(site_energy.get(name, 0.0), 3),
        }
        if name in out.cap_blocks:
            sites[name]["cap_note"] = out.cap_blocks[name]
    carbon = _carbon_g(fleet, site_energy)
    for name, grams in carbon.items():
        sites[name]["carbon_g"] = grams
    known = [g for g in carbon.values() if g is not None]
    total_g = sum(known) if known else None
    rejected = sum(out.rejected.values())
    return {
        "policy": out.policy,
        "requests": out.requests,
        "completed": out.completed,
        "rejected": rejected,
        "rejected_by_reason": dict(out.rejected),
        "rejected_rows": out.rejected_rows[:20],
        "ttft_s": _pct(out.ttft),
        "tpot_s": _pct(out.tpot),
        "e2e_s": _pct(out.e2e),
        "slo_attainment": out.slo_met / out.requests if out.requests else None,
        "output_tokens": out.output_tokens,
        "output_tokens_per_s": out.output_tokens / span,
        "span_s": span,
        "energy_j": energy if len(unpowered) < len(specs) else None,
        "energy_j_per_token": energy / powered_tokens if powered_tokens else None,
        "energy_note": "devices modelled by wattserve, idle time included; hosted APIs publish "
        "no energy and are excluded (J/token is over device-served tokens)"
        + (f"; no power figures (TDP) for {', '.join(unpowered)}: excluded" if unpowered else ""),
        "carbon_g": total_g,
        "carbon_g_per_request": total_g / carbon_requests
        if total_g is not None and carbon_requests
        else None,
        "carbon_g_per_mtok": total_g / carbon_tokens * 1e6
        if total_g is not None and carbon_tokens
        else None,
        "carbon_note": "device energy x site PUE x site carbon_g_per_kwh, idle time included; "
        "sites without carbon_g_per_kwh and hosted APIs are left out (per request and per "
        "token: over what the devices at the other sites served)",
        "usd": usd if priced else None,
        "usd_per_mtok": usd / priced_tokens * 1e6 if priced and priced_tokens else None,
        "usd_note": "rented devices for the whole span, owned devices amortised plus "
        "electricity, hosted APIs per token"
        + (
            f"; no price for {', '.join(unpriced)}: excluded ($/1M tokens is over priced tokens)"
            if unpriced
            else ""
        ),
        "sites": sites,
        # every deployment and hosted API, 0 where it served nothing (that is worth seeing)
        "deployments": {
            name: {
                "share": out.served_by[name] / out.completed if out.completed else 0.0,
                "requests": out.served_by[name],
                "output_tokens": out.tokens_by[name],
            }
            for name in sorted({*specs, *(h.name for h in fleet.hosted), *out.served_by})
        },
        "outages": dict(out.outage),
        "power_waits": out.power_waits,
        "preemptions": sum(e.preemptions for e in out.engines),
        "engine_steps": sum(e.steps for e in out.engines),
        "wall_s": out.wall_s,
    }


def _carbon_g(fleet: Fleet, site_energy: dict[str, float]) -> dict[str, float | None]:
    """Grams of CO2 per site: device energy times PUE (the facility's overhead) times the
    grid's intensity; None where the site gives no intensity."""
    out: dict[str, float | None] = {}
    for name, site in fleet.sites.items():
        out[name] = carbon_g(site_energy.get(name, 0.0), site.pue, site.carbon_g_per_kwh)
    return out


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """One line per policy, the figures people compare at a glance (the policy column as wide
    as its longest name, so that a long `weighted:...` keeps the columns aligned)."""
    w = max([22, *(len(str(r["policy"])) for r in rows)])
    head = (
        f"{'policy':{w}} {'done':>7} {'rej':>5} {'SLO %':>6} {'TTFT p50':>9} {'TTFT p99':>9} "
        f"{'TPOT p50':>9} {'TPOT p99':>9} {'tok/s':>8} {'J/tok':>7} {'$/1M tok':>9} "
        f"{'peak W':>8} {'over cap s':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        peak = _known_cell([s["peak_power_w"] for s in r["sites"].values()], max, "8.0f")
        over = _known_cell([s["cap_exceeded_s"] for s in r["sites"].values()], sum, "10.2f")
        slo = r["slo_attainment"]
        lines.append(
            f"{r['policy']!s:{w}} {r['completed']:>7} {r['rejected']:>5} "
            f"{cell(None if slo is None else 100 * slo, '6.1f')} "
            f"{cell(r['ttft_s']['p50'], '9.3f')} {cell(r['ttft_s']['p99'], '9.3f')} "
            f"{cell(r['tpot_s']['p50'], '9.4f')} {cell(r['tpot_s']['p99'], '9.4f')} "
            f"{r['output_tokens_per_s']:8.1f} {cell(r['energy_j_per_token'], '7.3f')} "
            f"{cell(r['usd_per_mtok'], '9.3f')} {peak} {over}"
        )
    lines.append(UNITS)
    return "\n".join(lines)


def _known_cell(values: list[float | None], over: Any, fmt: str) -> str:
    """The sites' figures taken `over` (max, sum) as a cell: '-' where no site's is known (its
    devices have no power figures), the known part marked '+?' where some are not."""
    known = [v for v in values if v is not None]
    if not known:
        return cell(None, fmt)
    if len(known) == len(values):
        return format(over(known), fmt)
    width = int(fmt.split(".")[0])
    return (format(over(known), f".{fmt.split('.')[1]}") + "+?").rjust(width)


UNITS = (
    "(TTFT and TPOT in seconds; J/tok over the tokens devices served; peak W: the highest "
    "site's peak device draw, before PUE, as its cap counts it; over cap s: seconds any site "
    "spent over its cap; -: unknown, devices without power figures; +?: of the sites known)"
)
