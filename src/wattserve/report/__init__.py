"""Self-contained HTML reports with charts, shared by every verb (`simulate --report`,
`bench --report`, and rank/plan) and by the gateway's dashboard.

Charts are drawn in the browser by uPlot (MIT, https://github.com/leeoniya/uPlot, shipped in
`wattserve/data/report/` with its licence) from small JSON specs, with unit-aware ticks (250 ms,
1.5 s, 2.4 kW, $0.12, 1:30) and values on hover. A page inlines the library, so it opens
offline and can be mailed as one file.

    page("title", [Section("Latency", [cdf("TTFT", {"cost": ttfts}, unit="s")])])
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from wattserve.core.pareto import pareto_front

__all__ = [
    "Chart",
    "Html",
    "Section",
    "asset",
    "bars",
    "cdf",
    "note",
    "page",
    "pre",
    "scatter",
    "table",
    "timeseries",
]

MAX_POINTS = 2000  # per series: enough for a smooth line, small enough for a mailed file
CDF_POINTS = 400

Number = float | int


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: a JSON spec that `charts.js` draws."""

    spec: dict[str, Any]

    def html(self) -> str:
        data = json.dumps(self.spec, allow_nan=False, separators=(",", ":"))
        return f'<div class="ws-chart" data-spec="{html.escape(data)}"></div>'


@dataclass(frozen=True, slots=True)
class Html:
    """A piece of trusted HTML (build it with `pre` or `table`, which escape their text)."""

    text: str

    def html(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    items: Sequence[Chart | Html] = field(default_factory=tuple)


def asset(name: str) -> str:
    """A file of `wattserve/data/report/` as text (the library, its CSS, charts.js)."""
    return resources.files("wattserve").joinpath("data", "report", name).read_text("utf-8")


def _finite(values: Sequence[Number | None]) -> list[float | None]:
    return [None if v is None or not np.isfinite(v) else float(v) for v in values]


def _thin(xs: Sequence[Number], ys: Sequence[Number | None]) -> list[list[float | None]]:
    """At most MAX_POINTS points, evenly picked, the last one kept."""
    n = len(xs)
    if n > MAX_POINTS:
        idx = np.linspace(0, n - 1, MAX_POINTS).astype(int)
        xs, ys = [xs[i] for i in idx], [ys[i] for i in idx]
    return [_finite(xs), _finite(ys)]


def cdf(
    title: str, series: Mapping[str, Sequence[float]], *, unit: str = "s", label: str = ""
) -> Chart:
    """Cumulative distributions: for each series, the fraction of values at or below x."""
    out: dict[str, list[list[float | None]]] = {}
    for name, values in series.items():
        a = np.sort(np.asarray([v for v in values if v is not None and np.isfinite(v)], float))
        if not len(a):
            continue
        idx = np.unique(np.linspace(0, len(a) - 1, min(len(a), CDF_POINTS)).astype(int))
        xs = a[idx]
        ys = (idx + 1) / len(a)
        keep = np.append(xs[1:] != xs[:-1], True)  # one point per x: the highest fraction
        out[name] = [_finite(list(xs[keep])), _finite(list(ys[keep]))]
    return Chart(
        {
            "kind": "cdf",
            "title": title,
            "series": out,
            "x_unit": unit,
            "x_label": label or title,
            "y_unit": "%",
            "y_label": "share of requests",
            "y_min": 0,
            "y_max": 1,
        }
    )


def timeseries(
    title: str,
    series: Mapping[str, tuple[Sequence[Number], Sequence[Number | None]]],
    *,
    y_unit: str,
    y_label: str = "",
    x_unit: str = "clock",
    x_label: str = "time since start",
    hlines: dict[str, float | None] | None = None,
    step: bool = False,
) -> Chart:
    """Lines over time (x in seconds); `hlines` draws labelled limits such as a power cap."""
    return Chart(
        {
            "kind": "timeseries",
            "title": title,
            "series": {n: _thin(xs, ys) for n, (xs, ys) in series.items() if len(xs)},
            "x_unit": x_unit,
            "x_label": x_label,
            "y_unit": y_unit,
            "y_label": y_label,
            "hlines": [{"label": k, "value": v} for k, v in (hlines or {}).items()],
            "step": step,
        }
    )


def bars(
    title: str,
    values: Mapping[str, float | None],
    *,
    unit: str,
    label: str = "",
    marks: Mapping[str, Mapping[str, float | None]] | None = None,
    log: bool = False,
) -> Chart:
    """One bar per name (a policy, a device); unknown values are left out with their name.

    `marks` are per-name limits drawn as a marker on each bar (a site's power cap). With
    `log` the value axis is logarithmic (values spanning decades) and values that are not
    positive are left out as unknown."""
    known = {
        k: v for k, v in values.items() if v is not None and np.isfinite(v) and (not log or v > 0)
    }
    series: dict[str, list[float | None]] = {label or title: [float(v) for v in known.values()]}
    for name, per in (marks or {}).items():
        series[name] = _finite([per.get(k) for k in known])
    return Chart(
        {
            "kind": "bars",
            "title": title
            + (
                ""
                if len(known) == len(values)
                else f" (unknown: {', '.join(sorted(set(values) - set(known)))})"
            ),
            "categories": list(known),
            "series": series,
            "marks": list(marks or {}),
            "log": log,
            "y_unit": unit,
            "y_label": label,
        }
    )


Point = tuple[float, float, str]


def scatter(
    title: str,
    points: Mapping[str, Sequence[Point]],
    *,
    x_unit: str,
    y_unit: str,
    x_label: str = "",
    y_label: str = "",
    pareto: bool = False,
    front: Sequence[Point] | None = None,
    log: bool = False,
) -> Chart:
    """Labelled points per group (hover shows the label and both values).

    The Pareto front is drawn as a line: `front` as the caller computed it, or with `pareto`
    the points no other beats on both x and y (both minimised). With `log` both axes are
    logarithmic and points that are not positive are left out."""

    def ok(x: float, y: float) -> bool:
        return bool(np.isfinite(x) and np.isfinite(y) and (not log or (x > 0 and y > 0)))

    groups = {
        n: sorted((float(x), float(y), s) for x, y, s in pts if ok(x, y))
        for n, pts in points.items()
    }
    groups = {n: g for n, g in groups.items() if g}
    every = [p for g in groups.values() for p in g]
    if pareto and front is None:
        front = [every[i] for i in pareto_front([(x, y) for x, y, _ in every])]
    line = sorted(p for p in front or () if ok(p[0], p[1]))
    if line:
        groups["Pareto front"] = line
    return Chart(
        {
            "kind": "scatter",
            "title": title,
            "series": {n: [[p[0] for p in g], [p[1] for p in g]] for n, g in groups.items()},
            "labels": {n: [p[2] for p in g] for n, g in groups.items()},
            "front": ["Pareto front"] if line else [],
            "log": log,
            "x_unit": x_unit,
            "x_label": x_label,
            "y_unit": y_unit,
            "y_label": y_label,
        }
    )


def pre(text: str) -> Html:
    return Html(f"<pre>{html.escape(text)}</pre>")


def note(text: str) -> Html:
    """A paragraph of plain text."""
    return Html(f"<p>{html.escape(text)}</p>")


def table(rows: Sequence[dict[str, Any]], *, caption: str = "") -> Html:
    """An HTML table of dict rows (keys of the first row are the columns)."""
    if not rows:
        return Html("")
    cols = list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("-" if v is None else str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return Html(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}"
    "pre{background:#f6f6f6;padding:12px;overflow-x:auto}"
    ".ws-chart{margin:12px 0 28px;min-height:300px}"
    "table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ddd;padding:4px 8px;"
    "text-align:right}th{background:#f3f3f3}caption{text-align:left;font-weight:bold}"
    ".u-title{font-size:15px!important}"
)


def page(title: str, sections: Sequence[Section], *, intro: str = "") -> str:
    """A whole self-contained page: the library inlined, then each section's items."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        f"<style>{asset('uPlot.min.css')}{STYLE}</style>",
        f"<script>{asset('uPlot.iife.min.js')}</script>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [item.html() for item in s.items]
    parts += [
        "<p style='color:#777;font-size:12px'>Charts: uPlot (MIT licence, "
        "https://github.com/leeoniya/uPlot). Drag to zoom, double-click to reset; hover for "
        "values.</p>",
        f"<script>{asset('charts.js')}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)
