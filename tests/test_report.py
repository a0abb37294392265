"""The shared report module: self-contained pages, thinned series, escaped text."""

from __future__ import annotations

import math

from pages import assert_self_contained, specs

from wattserve.report import Section, bars, cdf, note, page, pre, scatter, table, timeseries


def test_a_page_is_self_contained_and_escaped() -> None:
    evil = '<script>alert("x")</script>'
    text = page(
        f"report {evil}",
        [
            Section(evil, [pre(evil), note(evil), table([{"name": evil, "usd": 1.5}])]),
            Section("charts", [bars(evil, {evil: 1.0, "b": None}, unit="$")]),
        ],
    )
    assert evil not in text  # every user string escaped, in HTML and in the chart specs
    assert_self_contained(text)
    (spec,) = specs(text)
    assert spec["categories"] == [evil] and "unknown: b" in str(spec["title"])


def test_cdf_is_thinned_and_drops_non_finite_values() -> None:
    values = [i / 10_000 for i in range(10_000)] + [math.nan, math.inf]
    (spec,) = specs(cdf("TTFT", {"a": values, "empty": []}).html())
    xs, ys = spec["series"]["a"]  # type: ignore[index]
    assert len(xs) <= 400 and ys[-1] == 1.0 and xs == sorted(xs)
    assert "empty" not in spec["series"]  # type: ignore[operator]


def test_timeseries_caps_and_pareto_front() -> None:
    t = list(range(5000))
    (spec,) = specs(
        timeseries(
            "power", {"p": (t, [float(x) for x in t])}, y_unit="W", hlines={"cap": 9.0}
        ).html()
    )
    assert len(spec["series"]["p"][0]) == 2000  # type: ignore[index]
    assert spec["hlines"] == [{"label": "cap", "value": 9.0}]
    pts = {"gpu": [(1.0, 5.0, "a"), (2.0, 3.0, "b"), (3.0, 4.0, "c")], "asic": [(4.0, 1.0, "d")]}
    (s2,) = specs(scatter("$ vs J", pts, x_unit="J", y_unit="$", pareto=True).html())
    assert s2["labels"]["Pareto front"] == ["a", "b", "d"]  # type: ignore[index]


def test_a_given_front_log_scales_and_marks() -> None:
    pts = {"gpu": [(1.0, 5.0, "a"), (0.0, 3.0, "zero"), (2.0, math.nan, "nan")]}
    (s,) = specs(
        scatter(
            "$ vs speed", pts, x_unit="$", y_unit="tok/s", front=pts["gpu"][:1], log=True
        ).html()
    )
    assert s["log"] is True and s["labels"] == {
        "gpu": ["a"],
        "Pareto front": ["a"],
    }  # 0: not on a log axis
    (b,) = specs(
        bars(
            "peak", {"dc": 900.0, "edge": 0.0}, unit="W", marks={"cap": {"dc": 1000.0}}, log=True
        ).html()
    )
    assert b["categories"] == ["dc"] and "unknown: edge" in b["title"]
    assert b["series"] == {"peak": [900.0], "cap": [1000.0]} and b["marks"] == ["cap"]
