"""The `simulate --report` page, drawn with the shared report module: latency CDFs, power over
time against each site's cap, cost and energy per policy, and the $-against-J Pareto front."""

from __future__ import annotations

from typing import Any

from wattserve.report import Chart, Section, bars, cdf, page, pre, scatter, timeseries
from wattserve.simulate.outcome import Outcome


def _power(outcomes: list[Outcome]) -> list[Chart]:
    if not outcomes or outcomes[0].governor is None:
        return []
    charts = []
    for site, acct in outcomes[0].governor.sites.items():
        series: dict[str, tuple[list[float], list[float | None]]] = {}
        for o in outcomes:
            if o.governor is None:
                continue
            s = o.governor.sites[site]
            keys = sorted(s.bins)
            series[o.policy] = ([b * s.bin_s for b in keys], [s.bins[b] for b in keys])
        if any(xs for xs, _ in series.values()):
            charts.append(
                timeseries(
                    f"Power at {site} (peak per {acct.bin_s:.3g} s)",
                    series,
                    y_unit="W",
                    y_label="power",
                    hlines={"cap": acct.cap_w} if acct.cap_w is not None else None,
                    step=True,
                )
            )
    return charts


def render(title: str, summaries: list[dict[str, Any]], outcomes: list[Outcome], table: str) -> str:
    """The whole page."""
    by = {s["policy"]: s for s in summaries}
    costs = Section(
        "Cost and energy per policy",
        [
            bars("$ per 1M output tokens", {p: s["usd_per_mtok"] for p, s in by.items()}, unit="$"),
            bars(
                "J per output token (devices)",
                {p: s["energy_j_per_token"] for p, s in by.items()},
                unit="J",
            ),
            bars("SLO attainment", {p: s["slo_attainment"] for p, s in by.items()}, unit="%"),
            scatter(
                "$ against J per output token, per policy",
                {
                    p: [(s["energy_j_per_token"], s["usd_per_mtok"], p)]
                    for p, s in by.items()
                    if s["energy_j_per_token"] is not None and s["usd_per_mtok"] is not None
                },
                x_unit="J",
                y_unit="$",
                x_label="J per output token",
                y_label="$ per 1M output tokens",
                pareto=True,
            ),
            pre(
                "Energy counts the devices wattserve models (idle time included); hosted APIs "
                "publish no energy. Dollars: rented devices for the whole span, owned devices "
                "amortised plus electricity, hosted APIs per token."
            ),
        ],
    )
    sections = [
        Section("Summary", [pre(table)]),
        Section(
            "Latency",
            [
                cdf("Time to first token", {o.policy: o.ttft for o in outcomes}),
                cdf("Time per output token", {o.policy: o.tpot for o in outcomes}),
                cdf("End-to-end latency", {o.policy: o.e2e for o in outcomes}),
            ],
        ),
        Section("Power against each site's cap", _power(outcomes)),
        costs,
    ]
    return page(title, sections)
