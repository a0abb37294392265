"""The `--report` page: one self-contained HTML file with inline SVG plots (no scripts,
no external assets): latency CDFs, power over time against each site's cap, and cost and
energy per policy."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from wattserve.simulate.simulator import Outcome

W, H, PAD = 760, 300, 48
RIGHT = 150  # room for the legend right of the plot
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _axes(title: str, xlabel: str, ylabel: str, xmax: float, ymax: float) -> list[str]:
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-weight="bold">'
        f"{html.escape(title)}</text>",
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - RIGHT}" y2="{H - PAD}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{PAD}" y2="24" stroke="#333"/>',
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">'
        f"{html.escape(ylabel)}</text>",
    ]
    for i in range(5):
        fx, fy = i / 4, i / 4
        x = PAD + fx * (W - RIGHT - PAD)
        y = H - PAD - fy * (H - PAD - 24)
        out.append(
            f'<text x="{x}" y="{H - PAD + 14}" text-anchor="middle" font-size="10">'
            f"{xmax * fx:.3g}</text>"
        )
        out.append(
            f'<text x="{PAD - 4}" y="{y + 3}" text-anchor="end" font-size="10">'
            f"{ymax * fy:.3g}</text>"
        )
    return out


def _xy(x: float, y: float, xmax: float, ymax: float) -> tuple[float, float]:
    return (PAD + x / xmax * (W - RIGHT - PAD), H - PAD - y / ymax * (H - PAD - 24))


def _legend(names: list[str]) -> list[str]:
    return [
        f'<text x="{W - RIGHT + 10}" y="{40 + 14 * i}" font-size="11" '
        f'fill="{COLORS[i % len(COLORS)]}">'
        f"■ {html.escape(n)}</text>"
        for i, n in enumerate(names)
    ]


def cdf_svg(title: str, series: dict[str, Sequence[float]]) -> str:
    values = [v for vs in series.values() for v in vs]
    if not values:
        return f"<p>{html.escape(title)}: no data</p>"
    xmax = float(np.percentile(values, 99.5)) or 1.0
    out = _axes(title, "seconds (to the 99.5th percentile)", "fraction of requests", xmax, 1.0)
    for i, vs in enumerate(series.values()):
        if not vs:
            continue
        a = np.sort(np.asarray(vs))
        idx = np.linspace(0, len(a) - 1, min(len(a), 200)).astype(int)
        pts = " ".join(
            "{:.1f},{:.1f}".format(*_xy(min(a[j], xmax), (j + 1) / len(a), xmax, 1.0)) for j in idx
        )
        out.append(f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" points="{pts}"/>')
    return "\n".join([*out, *_legend(list(series)), "</svg>"])


def power_svg(
    site: str, cap: float | None, series: dict[str, tuple[float, dict[int, float]]]
) -> str:
    peaks = [p for _, bins in series.values() for p in bins.values()]
    if not peaks:
        return ""
    ymax = max([*peaks, cap or 0.0]) * 1.1 or 1.0
    xmax = max((max(bins) + 1) * width for width, bins in series.values() if bins) or 1.0
    out = _axes(f"power at {site} (peak per interval)", "seconds", "watts", xmax, ymax)
    if cap is not None:
        x0, y = _xy(0, cap, xmax, ymax)
        x1, _ = _xy(xmax, cap, xmax, ymax)
        out.append(
            f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#000" stroke-dasharray="6,4"/>'
        )
        out.append(
            f'<text x="{x1 - 4}" y="{y - 4}" text-anchor="end" font-size="11">cap {cap:g} W</text>'
        )
    for i, (_, (width, bins)) in enumerate(series.items()):
        pts = " ".join(
            "{:.1f},{:.1f}".format(*_xy(b * width, bins[b], xmax, ymax)) for b in sorted(bins)
        )
        out.append(f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" points="{pts}"/>')
    return "\n".join([*out, *_legend(list(series)), "</svg>"])


def bars_svg(title: str, unit: str, values: dict[str, float | None]) -> str:
    known = {k: v for k, v in values.items() if v is not None}
    if not known:
        return ""
    ymax = max(known.values()) * 1.15 or 1.0
    out = _axes(title, "policy", unit, 1.0, ymax)[:6]
    n = len(values)
    bw = (W - RIGHT - PAD) / max(n, 1)
    for i, (name, v) in enumerate(values.items()):
        x = PAD + i * bw + bw * 0.15
        if v is None:
            continue
        _, y = _xy(0, v, 1.0, ymax)
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw * 0.7:.1f}" height="{H - PAD - y:.1f}" '
            f'fill="{COLORS[i % len(COLORS)]}"/>'
        )
        out.append(
            f'<text x="{x + bw * 0.35:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="10">'
            f"{v:.3g}</text>"
        )
        out.append(
            f'<text x="{x + bw * 0.35:.1f}" y="{H - PAD + 14}" text-anchor="middle" '
            f'font-size="10">{html.escape(name[:14])}</text>'
        )
    return "\n".join([*out, "</svg>"])


def render(title: str, summaries: list[dict[str, Any]], outcomes: list[Outcome], table: str) -> str:
    """The whole page."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:24px;max-width:1400px}"
        "pre{background:#f6f6f6;padding:12px;overflow-x:auto}svg{margin:8px;background:#fff;"
        "border:1px solid #ddd}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2>",
        f"<pre>{html.escape(table)}</pre>",
        "<h2>Latency</h2>",
        cdf_svg("TTFT CDF", {o.policy: o.ttft for o in outcomes}),
        cdf_svg("TPOT CDF", {o.policy: o.tpot for o in outcomes}),
        cdf_svg("End-to-end latency CDF", {o.policy: o.e2e for o in outcomes}),
        "<h2>Power against each site's cap</h2>",
    ]
    if outcomes and outcomes[0].governor is not None:
        for site, acct in outcomes[0].governor.sites.items():
            series = {
                o.policy: (o.governor.sites[site].bin_s, o.governor.sites[site].bins)
                for o in outcomes
                if o.governor is not None
            }
            parts.append(power_svg(site, acct.cap_w, series))
    parts += [
        "<h2>Cost and energy per policy</h2>",
        bars_svg(
            "$ per 1M output tokens", "$", {s["policy"]: s["usd_per_mtok"] for s in summaries}
        ),
        bars_svg(
            "J per output token (devices)",
            "J",
            {s["policy"]: s["energy_j_per_token"] for s in summaries},
        ),
        bars_svg(
            "SLO attainment", "fraction", {s["policy"]: s["slo_attainment"] for s in summaries}
        ),
        "<p>Energy counts the devices wattserve models (idle time included); hosted APIs publish "
        "no energy. Dollars: rented devices for the whole span, owned devices amortised plus "
        "electricity, hosted APIs per token.</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
