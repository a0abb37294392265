"""The text tables `wattserve rank` prints."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from wattserve.rank.api import Ranking
from wattserve.rank.edge import EdgeRow
from wattserve.rank.rows import Row


def _num(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "?"
    v = value * scale
    text = f"{v:.{digits}g}"
    if abs(v) >= 10**digits or "e+" in text:  # 999.6 rounds to 1e+03 in `digits` figures
        return f"{v:,.0f}"
    return text


def config_text(r: Row) -> str:
    """A row's configuration in a few characters: devices, layout, dtype, batch."""
    if r.kind == "hosted":
        return "hosted API"
    return f"{r.devices}x tp{r.tp} pp{r.pp} {r.dtype} b{r.batch}"


def flags_text(r: Row) -> str:
    out = ""
    if r.pareto_usd_j:
        out += "P"
    if r.pareto_usd_speed:
        out += "S"
    if r.unverified:
        out += "*"
    if r.slo_unchecked:
        out += "?"
    return out


Column = tuple[str, int, Callable[[Row], str]]


def _columns(rk: Ranking) -> list[Column]:
    cols: list[Column] = [
        ("device", 20, lambda r: r.hardware),
        ("configuration", 24, config_text),
        ("TTFT ms", 8, lambda r: _num(r.ttft_s, 1e3)),
        ("TPOT ms", 8, lambda r: _num(r.tpot_s, 1e3)),
        ("tok/s/user", 10, lambda r: _num(r.tokens_per_s_per_user)),
        ("tok/s", 8, lambda r: _num(r.tokens_per_s)),
        ("$/1M tok", 8, lambda r: _num(r.usd_per_mtok)),
        (
            "basis",
            5,
            lambda r: {"per-token": "token", "unknown": "?"}.get(r.cost_basis, r.cost_basis),
        ),
        ("J/tok", 7, lambda r: _num(r.j_per_token)),
        ("tok/s/kW", 8, lambda r: _num(r.tokens_per_s_per_kw)),
        ("W", 7, lambda r: _num(r.power_w)),
        (
            "BW use",
            6,
            lambda r: "?" if r.mem_bw_utilisation is None else f"{r.mem_bw_utilisation:.0%}",
        ),
        ("bound", 8, lambda r: (r.decode_bound or "?")[:8]),
    ]
    if rk.power_envelope_w is not None:
        cols += [
            ("groups", 7, lambda r: _num(r.envelope_groups, digits=6)),
            ("env tok/s", 10, lambda r: _num(r.envelope_tokens_per_s)),
        ]
    if rk.training_cost_usd is not None:
        cols.append(("days>train", 10, lambda r: _num(r.crossover_days)))
    cols += [
        ("software", 14, lambda r: r.software),
        ("maturity", 10, lambda r: r.maturity),
        ("year", 4, lambda r: "" if r.year is None else str(r.year)),
        ("flags", 5, flags_text),
    ]
    return cols


def _table(rows: Sequence[Row], cols: list[Column]) -> list[str]:
    def line(cells: list[str]) -> str:
        parts = []
        for (_, width, _), cell in zip(cols, cells, strict=True):
            parts.append(cell.ljust(width) if width >= 14 else cell.rjust(width))
        return " ".join(parts).rstrip()

    out = ["   # " + line([name for name, _, _ in cols])]
    for i, r in enumerate(rows, 1):
        out.append(f"{i:4d} " + line([fmt(r) for _, _, fmt in cols]))
    return out


def _envelope(rk: Ranking) -> list[str]:
    assert rk.power_envelope_w is not None
    rows = sorted(
        (r for r in rk.rows if r.envelope_groups is not None),
        key=lambda r: -(r.envelope_tokens_per_s or 0.0),
    )
    out = [
        "",
        f"Inside a {_num(rk.power_envelope_w / 1e3, digits=6)} kW envelope at PUE {rk.pue:g} "
        "(each group provisioned at its peak step power x PUE):",
        f"  {'device':20} {'groups':>7} {'devices':>8} {'kW/group':>9} {'tok/s':>12} {'$/h':>10}",
    ]
    for r in rows:
        assert r.peak_power_w is not None and r.devices is not None  # a device's row
        out.append(
            f"  {r.hardware:20} {r.envelope_groups:>7} {(r.envelope_groups or 0) * r.devices:>8} "
            f"{_num(r.peak_power_w * rk.pue / 1e3):>9} {_num(r.envelope_tokens_per_s):>12} "
            f"{_num(r.envelope_usd_per_hour):>10}"
        )
    return out


def ranking_text(rk: Ranking) -> str:
    """The ranking table, the envelope, the unknowns and the excluded, as the CLI prints them."""
    slo = f"TTFT <= {rk.slo.ttft_s:g} s, TPOT <= {rk.slo.tpot_s * 1e3:g} ms"
    out = [
        f"{rk.model}: prompt {rk.prompt_tokens}, output {rk.output_tokens} tokens; SLO {slo}; "
        f"dtype {rk.dtype}; sorted by {rk.sort}",
        "",
    ]
    shown = rk.shown
    if shown:
        out += _table(shown, _columns(rk))
        out += [
            "basis: rent (cloud $/h), own (list price amortised + electricity x PUE) or token "
            "(a hosted API's prices); ? in a cell: unknown (see below)",
            "flags: P on the Pareto front of $/1M tok vs J/tok, S on that of $/1M tok vs "
            "tok/s/user; * a figure behind the row is unverified; ? an SLO term the API does "
            "not publish",
        ]
    elif not rk.excluded:  # the filters chose none: nothing was weighed against the SLO
        out.append("No device or hosted API was selected: --hardware and --category leave none.")
    elif all(x.why == "misses-slo" for x in rk.excluded):
        out.append("No device or hosted API meets the SLO (closest misses below).")
    else:
        out.append("No device or hosted API is ranked: why each was left out is below.")
    if len(rk.rows) > len(shown):
        out.append(f"({len(rk.rows) - len(shown)} more rows; drop --top to see them)")
    if rk.power_envelope_w is not None:
        out += _envelope(rk)
    unknown = [f"  {r.hardware}: {'; '.join(r.unknown)}" for r in shown if r.unknown]
    if unknown:
        out += ["", "Unknown figures:", *unknown]
    if rk.excluded:
        out += ["", f"Excluded ({len(rk.excluded)}):"]
        out += [f"  {x.hardware:20} {x.why:15} {x.reason}" for x in rk.excluded]
    out += ["", *(f"Note: {n}" for n in rk.notes)]
    return "\n".join(out)


def edge_text(rows: Sequence[EdgeRow]) -> str:
    out = [
        "Largest catalog model each edge / compute-in-memory part holds (one device, batch 1):",
        f"  {'device':22} {'model':16} {'params B':>8} {'dtype':6} {'tok/s':>8} {'W':>6} "
        f"{'tok/s/W':>8}",
    ]
    if not rows:
        out.append("  (no edge module or compute-in-memory part selected)")
    for r in rows:
        if r.model is None:
            out.append(f"  {r.hardware:22} none: {r.reason}")
            continue
        out.append(
            f"  {r.hardware:22} {r.model:16} {_num(r.params_b):>8} {r.dtype or '':6} "
            f"{_num(r.tokens_per_s):>8} {_num(r.power_w):>6} {_num(r.tokens_per_s_per_w):>8}"
        )
    unknown = [(r.hardware, u) for r in rows for u in r.unknown]
    if unknown:
        out += ["", "Unknown figures:"]
        out += [f"  {hw}: {u}" for hw, u in unknown]
    return "\n".join(out)
