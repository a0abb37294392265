"""The `rank --report` page: one self-contained HTML file (tables and two inline SVG scatter
plots with the Pareto fronts, no scripts or external assets).

All the HTML is made by `report_html`, so that it can move to the shared report module in one
step.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from wattserve.errors import ConfigError
from wattserve.rank.api import Ranking
from wattserve.rank.edge import EdgeRow
from wattserve.rank.rows import Row
from wattserve.rank.text import config_text, flags_text

W, H, PAD = 720, 360, 56


def _scatter(
    rows: Sequence[Row],
    title: str,
    x_of: Callable[[Row], float | None],
    y_of: Callable[[Row], float | None],
    on_front: Callable[[Row], bool],
    xlabel: str,
    ylabel: str,
) -> str:
    """A log-log scatter of rows with both values known; front points red and joined."""
    pts = [(x_of(r), y_of(r), r) for r in rows]
    known = [(x, y, r) for x, y, r in pts if x is not None and y is not None and x > 0 and y > 0]
    if not known:
        return f"<p>{html.escape(title)}: no row has both figures.</p>"
    lx = [math.log10(x) for x, _, _ in known]
    ly = [math.log10(y) for _, y, _ in known]
    x0, x1 = min(lx) - 0.1, max(lx) + 0.1
    y0, y1 = min(ly) - 0.1, max(ly) + 0.1

    def px(v: float) -> float:
        return PAD + (math.log10(v) - x0) / (x1 - x0) * (W - 2 * PAD)

    def py(v: float) -> float:
        return H - PAD - (math.log10(v) - y0) / (y1 - y0) * (H - 2 * PAD)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-weight="bold">'
        f"{html.escape(title)}</text>",
        f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" '
        'stroke="#999"/>',
        f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">{html.escape(xlabel)} (log)</text>',
        f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">'
        f"{html.escape(ylabel)} (log)</text>",
    ]
    for lo, hi, horizontal in ((x0, x1, True), (y0, y1, False)):
        ticks = [m * 10.0**k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
        for v in (t for t in ticks if lo <= math.log10(t) <= hi):
            if horizontal:
                out.append(
                    f'<text x="{px(v):.1f}" y="{H - PAD + 16}" text-anchor="middle" '
                    f'font-size="11">{v:g}</text>'
                )
            else:
                out.append(
                    f'<text x="{PAD - 6}" y="{py(v):.1f}" text-anchor="end" font-size="11">'
                    f"{v:g}</text>"
                )
    front = sorted((x, y) for x, y, r in known if on_front(r))
    if len(front) > 1:
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#d62728"/>')
    for x, y, r in known:
        color = "#d62728" if on_front(r) else "#1f77b4"
        out.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{color}">'
            f"<title>{html.escape(r.hardware)}: {x:.4g}, {y:.4g}</title></circle>"
            f'<text x="{px(x) + 6:.1f}" y="{py(y) - 4:.1f}" font-size="10">'
            f"{html.escape(r.hardware)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _cell(v: float | None, scale: float = 1.0) -> str:
    return "unknown" if v is None else f"{v * scale:.4g}"


def report_html(rk: Ranking | None, edge: Sequence[EdgeRow] | None) -> str:
    """The whole report page for a ranking and/or an edge view."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>wattserve rank</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>",
    ]
    if rk is not None:
        slo = f"TTFT &le; {rk.slo.ttft_s:g} s, TPOT &le; {rk.slo.tpot_s * 1e3:g} ms"
        parts += [
            f"<h1>wattserve rank: {html.escape(rk.model)}</h1>",
            f"<p>Prompt {rk.prompt_tokens}, output {rk.output_tokens} tokens; SLO {slo}; "
            f"dtype {html.escape(rk.dtype)}; sorted by {html.escape(rk.sort)}; "
            f"engine terms: {html.escape(rk.calibration)}.</p>",
        ]
        heads = [
            "device",
            "configuration",
            "TTFT ms",
            "TPOT ms",
            "tok/s/user",
            "tok/s",
            "$/1M tok",
            "J/tok",
            "tok/s/kW",
            "W",
            "BW use",
            "bound",
            "groups in envelope",
            "envelope tok/s",
            "envelope $/h",
            "days to training $",
            "software",
            "maturity",
            "year",
            "flags",
        ]
        parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
        for r in rk.shown:
            cells = [
                r.hardware,
                config_text(r),
                _cell(r.ttft_s, 1e3),
                _cell(r.tpot_s, 1e3),
                _cell(r.tokens_per_s_per_user),
                _cell(r.tokens_per_s),
                _cell(r.usd_per_mtok),
                _cell(r.j_per_token),
                _cell(r.tokens_per_s_per_kw),
                _cell(r.power_w),
                "unknown" if r.mem_bw_utilisation is None else f"{r.mem_bw_utilisation:.0%}",
                r.decode_bound or "unknown",
                "" if r.envelope_groups is None else str(r.envelope_groups),
                "" if r.envelope_tokens_per_s is None else _cell(r.envelope_tokens_per_s),
                "" if r.envelope_usd_per_hour is None else _cell(r.envelope_usd_per_hour),
                "" if r.crossover_days is None else _cell(r.crossover_days),
                r.software,
                r.maturity,
                "" if r.year is None else str(r.year),
                flags_text(r),
            ]
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        parts.append(
            "<p>Flags: P on the Pareto front of $/1M tokens vs J/token; S on the front of "
            "$/1M tokens vs tokens/s per user; * a figure behind the row is unverified; "
            "? an SLO term the hosted API does not publish.</p>"
        )
        parts.append(
            _scatter(
                rk.rows,
                "$ per 1M tokens vs J per token (red: Pareto front)",
                lambda r: r.usd_per_mtok,
                lambda r: r.j_per_token,
                lambda r: r.pareto_usd_j,
                "$ per 1M output tokens",
                "J per output token",
            )
        )
        parts.append(
            _scatter(
                rk.rows,
                "$ per 1M tokens vs tokens/s per user (red: Pareto front)",
                lambda r: r.usd_per_mtok,
                lambda r: r.tokens_per_s_per_user,
                lambda r: r.pareto_usd_speed,
                "$ per 1M output tokens",
                "tokens/s per user",
            )
        )
        unknown = [(r.hardware, u) for r in rk.shown for u in r.unknown]
        if unknown:
            parts.append("<h2>Unknown figures</h2><ul>")
            parts += [f"<li>{html.escape(hw)}: {html.escape(u)}</li>" for hw, u in unknown]
            parts.append("</ul>")
        if rk.excluded:
            parts.append("<h2>Excluded</h2><ul>")
            parts += [
                f"<li><b>{html.escape(x.hardware)}</b> ({x.why}): {html.escape(x.reason)}</li>"
                for x in rk.excluded
            ]
            parts.append("</ul>")
    if edge is not None:
        parts.append("<h2>Edge: the largest catalog model each part holds</h2><table><tr>")
        parts.append(
            "".join(
                f"<th>{h}</th>"
                for h in ("device", "model", "params B", "dtype", "tok/s", "W", "tok/s/W", "note")
            )
            + "</tr>"
        )
        for e in edge:
            cells = [
                e.hardware,
                e.model or "none",
                _cell(e.params_b),
                e.dtype or "",
                _cell(e.tokens_per_s),
                _cell(e.power_w),
                _cell(e.tokens_per_s_per_w),
                e.reason,
            ]
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: Path, rk: Ranking | None, edge: Sequence[EdgeRow] | None) -> None:
    try:
        path.write_text(report_html(rk, edge), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report: {exc.strerror}", field="--report") from None
