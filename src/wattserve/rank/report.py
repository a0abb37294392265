"""The `rank --report` page, drawn with the shared report module: the ranking table, $ and J
per device, and the two Pareto fronts (log-log, hover for each device's figures)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from wattserve.rank.api import Ranking
from wattserve.rank.edge import EdgeRow
from wattserve.rank.rows import Row
from wattserve.rank.text import config_text, flags_text
from wattserve.report import Chart, Point, Section, bars, note, page, scatter, table

FLAGS = (
    "Flags: P on the Pareto front of $/1M tokens vs J/token; S on the front of $/1M tokens vs "
    "tokens/s per user; * a figure behind the row is unverified; ? an SLO term the hosted API "
    "does not publish. Unknown figures stay unknown (see below), never guessed."
)


def _v(value: float | None, scale: float = 1.0) -> float | str:
    return "unknown" if value is None else value * scale


def _row(r: Row) -> dict[str, Any]:
    return {
        "device": r.hardware,
        "configuration": config_text(r),
        "TTFT ms": _v(r.ttft_s, 1e3),
        "TPOT ms": _v(r.tpot_s, 1e3),
        "tok/s/user": _v(r.tokens_per_s_per_user),
        "tok/s": _v(r.tokens_per_s),
        "$/1M tok": _v(r.usd_per_mtok),
        "J/tok": _v(r.j_per_token),
        "tok/s/kW": _v(r.tokens_per_s_per_kw),
        "W": _v(r.power_w),
        "BW use %": _v(r.mem_bw_utilisation, 100),
        "bound": r.decode_bound or "unknown",
        "groups in envelope": r.envelope_groups,
        "envelope tok/s": r.envelope_tokens_per_s,
        "envelope $/h": r.envelope_usd_per_hour,
        "days to training $": r.crossover_days,
        "software": r.software,
        "maturity": r.maturity,
        "year": r.year,
        "flags": flags_text(r),
    }


def _front_chart(
    rows: Sequence[Row],
    title: str,
    y_of: Callable[[Row], float | None],
    on_front: Callable[[Row], bool],
    y_unit: str,
    y_label: str,
) -> Chart:
    """$ per 1M tokens against `y_of`, a group per category; the front as `rank` marked it."""
    groups: dict[str, list[Point]] = defaultdict(list)
    front: list[Point] = []
    for r in rows:
        x, y = r.usd_per_mtok, y_of(r)
        if x is None or y is None:
            continue
        groups[r.category].append((x, y, r.hardware))
        if on_front(r):
            front.append((x, y, r.hardware))
    return scatter(
        title,
        groups,
        front=front,
        log=True,
        x_unit="$",
        y_unit=y_unit,
        x_label="$ per 1M output tokens",
        y_label=y_label,
    )


# The two fronts `rank` marks (P, S): title, y, on the front, y unit and label.
FRONTS: tuple[tuple[str, Callable[[Row], float | None], Callable[[Row], bool], str, str], ...] = (
    (
        "$ per 1M tokens against J per token",
        lambda r: r.j_per_token,
        lambda r: r.pareto_usd_j,
        "J",
        "J per output token",
    ),
    (
        "$ per 1M tokens against tokens/s per user",
        lambda r: r.tokens_per_s_per_user,
        lambda r: r.pareto_usd_speed,
        "tok/s",
        "tokens/s per user",
    ),
)


def _ranking(rk: Ranking) -> list[Section]:
    unknown = [{"device": r.hardware, "why": u} for r in rk.shown for u in r.unknown]
    excluded = [{"device": x.hardware, "why": x.why, "reason": x.reason} for x in rk.excluded]
    return [
        Section(
            "Ranking",
            [table([_row(r) for r in rk.shown]), note(FLAGS), *(note(n) for n in rk.notes)],
        ),
        Section(
            "Pareto fronts (all rows, log scales)",
            [_front_chart(rk.rows, *front) for front in FRONTS],
        ),
        Section(
            "$ and J per device (log scales)",
            [
                bars(
                    "$ per 1M output tokens",
                    {r.hardware: r.usd_per_mtok for r in rk.shown},
                    unit="$",
                    log=True,
                ),
                bars(
                    "J per output token",
                    {r.hardware: r.j_per_token for r in rk.shown},
                    unit="J",
                    log=True,
                ),
            ],
        ),
        *([Section("Unknown figures", [table(unknown)])] if unknown else []),
        *([Section("Excluded", [table(excluded)])] if excluded else []),
    ]


def _edge(edge: Sequence[EdgeRow]) -> Section:
    rows = [
        {
            "device": e.hardware,
            "model": e.model or "none",
            "params B": e.params_b,
            "dtype": e.dtype or "",
            "tok/s": e.tokens_per_s,
            "W": e.power_w,
            "tok/s/W": e.tokens_per_s_per_w,
            "note": e.reason,
        }
        for e in edge
    ]
    return Section(
        "Edge: the largest catalog model each part holds",
        [
            table(rows),
            bars(
                "Tokens/s per watt",
                {e.hardware: e.tokens_per_s_per_w for e in edge},
                unit="tok/s/W",
            ),
        ],
    )


def report_html(rk: Ranking | None, edge: Sequence[EdgeRow] | None) -> str:
    """The whole report page for a ranking and/or an edge view."""
    sections = ([] if rk is None else _ranking(rk)) + ([] if edge is None else [_edge(edge)])
    if rk is None:
        return page("wattserve rank --edge", sections)
    intro = (
        f"Prompt {rk.prompt_tokens}, output {rk.output_tokens} tokens; SLO TTFT <= "
        f"{rk.slo.ttft_s:g} s, TPOT <= {rk.slo.tpot_s * 1e3:g} ms; dtype {rk.dtype}; sorted by "
        f"{rk.sort}; engine terms: {rk.calibration}."
    )
    return page(f"wattserve rank: {rk.model}", sections, intro=intro)
