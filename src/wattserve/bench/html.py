"""The `bench --report` page, drawn with the shared report module."""

from __future__ import annotations

from typing import Any

from wattserve.bench.metrics import UNKNOWN_REQUESTS
from wattserve.bench.text import summary_text
from wattserve.report import Chart, Section, bars, cdf, page, pre, timeseries


def _site_bars(title: str, sites: dict[str, Any], key: str, unit: str) -> Chart:
    """One bar per site: a site where no request reported the figure is named unknown (the
    chart leaves it out), and one where some did not is marked as its known part (`+?`, as
    the dashboard marks it)."""
    partial = sorted(
        name for name, v in sites.items() if v[key] is not None and v[UNKNOWN_REQUESTS[key]]
    )
    if partial:
        title += f" (+?: the known part at {', '.join(partial)})"
    return bars(title, {name: v[key] for name, v in sites.items()}, unit=unit)


def render(result: dict[str, Any]) -> str:
    ok = [e > 0 for e in result["e2els"]]
    ttfts = [t for t, good in zip(result["ttfts"], ok, strict=True) if good and t > 0]
    e2es = [e for e in result["e2els"] if e > 0]
    itls = [x for row in result["itls"] for x in row]
    tpots = [
        (e - t) / (n - 1)
        for t, e, n, good in zip(
            result["ttfts"], result["e2els"], result["output_lens"], ok, strict=True
        )
        if good and t > 0 and n > 1
    ]
    sent = [s for s, good in zip(result["send_times_s"], ok, strict=True) if good]
    sections = [
        Section("Summary", [pre(summary_text(result))]),
        Section(
            "Latency",
            [
                cdf("Time to first token", {"TTFT": ttfts}),
                cdf("Time per output token", {"TPOT": tpots}),
                cdf("Inter-token latency", {"ITL": itls}),
                cdf("End-to-end latency", {"E2E": e2es}),
                timeseries(
                    "Latency of each request by when it was sent",
                    {
                        "TTFT": (
                            sent,
                            [t for t, good in zip(result["ttfts"], ok, strict=True) if good],
                        ),
                        "E2E": (sent, e2es),
                    },
                    y_unit="s",
                    y_label="latency",
                ),
            ],
        ),
    ]
    if result["deployments"]:
        sections.append(
            Section(
                "Where wattserve sent the requests",
                [
                    bars(
                        "Share of requests per backend",
                        {k: v["share"] for k, v in result["deployments"].items()},
                        unit="%",
                    ),
                    _site_bars("$ per site", result["sites"], "usd", "$"),
                    _site_bars("Energy per site", result["sites"], "energy_j", "J"),
                ],
            )
        )
    title = f"wattserve bench: {result['model_id']} at {result['base_url']}"
    return page(title, sections, intro=f"trace {result['trace']}, {result['date']} (UTC)")
