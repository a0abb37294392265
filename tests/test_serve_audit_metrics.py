"""`/metrics` as the Prometheus text format wants it (found by an audit of `serve`): values
printed exactly, not to 6 significant digits, and each metric's samples in one group under
its HELP and TYPE lines."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from serving import FAST_FLEET, gateway

from wattserve.serve.metrics import Metrics

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def families(text: str) -> list[tuple[str, str, list[str]]]:
    """(name, type, sample lines) per metric family in the order written. Fails where the
    text breaks the format's grouping rule: a family's samples apart from each other or from
    its TYPE line, a family declared twice, or a sample without a TYPE line before it."""
    out: list[tuple[str, str, list[str]]] = []
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name not in declared, f"{name} declared twice"
            declared.add(name)
            out.append((name, kind, []))
            continue
        m = SAMPLE.match(line)
        assert m is not None, line
        name = m.group(1)
        assert out, f"{line!r} comes before any TYPE line"
        family, kind, samples = out[-1]
        suffixes = ("_bucket", "_count", "_sum") if kind == "histogram" else ("",)
        assert any(name == family + s for s in suffixes), (
            f"{line!r} is written in the group of {family}"
        )
        float(m.group(3))  # a number Prometheus reads
        samples.append(line)
    return out


def test_counters_are_printed_exactly() -> None:
    m = Metrics()
    m.inc("wattserve_tokens_total", 1234567, direction="output")
    m.inc("wattserve_tokens_total", 3, direction="output")
    m.inc("wattserve_cost_usd_total", 0.1)
    m.inc("wattserve_cost_usd_total", 0.2)
    m.inc("wattserve_energy_joules_total", 123456789.125)
    m.gauges.append(lambda: [("wattserve_site_power_watts", "Power.", {"site": "a"}, 1234.5678)])
    text = m.render()
    assert 'wattserve_tokens_total{direction="output"} 1234570\n' in text  # integers as integers
    assert f"wattserve_cost_usd_total {0.1 + 0.2!r}\n" in text  # floats to repr's precision
    assert "wattserve_energy_joules_total 123456789.125\n" in text
    assert 'wattserve_site_power_watts{site="a"} 1234.5678\n' in text
    for value in (2.0**53 + 2, 1e300):  # past what a float holds as an integer: still exact
        m.inc("wattserve_requests_total", value, status=str(value))
        line = next(x for x in m.render().splitlines() if f'status="{value}"' in x)
        assert float(line.rsplit(" ", 1)[1]) == value


def test_histogram_counts_stay_exact_past_a_million() -> None:
    m = Metrics()
    for _ in range(1_000_001):
        m.observe("wattserve_ttft_seconds", 0.5, model="x")
    text = m.render()
    assert 'wattserve_ttft_seconds_count{model="x"} 1000001\n' in text
    assert 'wattserve_ttft_seconds_bucket{model="x",le="+Inf"} 1000001\n' in text
    assert 'wattserve_ttft_seconds_sum{model="x"} 500000.5\n' in text


def test_special_values_are_written_as_prometheus_reads_them() -> None:
    m = Metrics()
    m.gauges.append(
        lambda: [
            ("g_inf", "x", {}, float("inf")),
            ("g_ninf", "x", {}, float("-inf")),
            ("g_nan", "x", {}, float("nan")),
        ]
    )
    text = m.render()
    assert "g_inf +Inf\n" in text and "g_ninf -Inf\n" in text and "g_nan NaN\n" in text


def test_each_gauge_is_one_group_whatever_order_its_samples_come_in() -> None:
    m = Metrics()
    m.gauges.append(
        lambda: [
            ("wattserve_site_power_watts", "Site power now.", {"site": "dc"}, 1.0),
            ("wattserve_site_power_cap_watts", "Site power cap.", {"site": "dc"}, 5.0),
            ("wattserve_site_power_watts", "Site power now.", {"site": "edge"}, 2.0),
        ]
    )
    m.gauges.append(lambda: [("wattserve_site_power_watts", "Site power now.", {"site": "x"}, 3.0)])
    groups = {name: samples for name, _, samples in families(m.render())}
    assert len(groups["wattserve_site_power_watts"]) == 3
    assert len(groups["wattserve_site_power_cap_watts"]) == 1


def _chat_both_ways(url: str) -> None:
    """One chat answered whole and one streamed, so that every counter has samples."""
    for stream in (False, True):
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "llama-3.2-1b",
                "max_tokens": 3,
                "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=30,
        )
        assert r.status_code == 200


def test_a_live_scrape_keeps_every_metric_in_one_group(tmp_path: Path) -> None:
    # one capped site and one not, two replicas: the gauges the audit saw interleaved
    with gateway(tmp_path, FAST_FLEET) as s:
        _chat_both_ways(s.url)
        text = httpx.get(f"{s.url}/metrics", timeout=10).text
    groups = {name: (kind, samples) for name, kind, samples in families(text)}
    for name, count in (
        ("wattserve_site_power_watts", 2),
        ("wattserve_site_power_cap_watts", 1),
        ("wattserve_backend_up", 3),
        ("wattserve_engine_device_seconds", 3),
        ("wattserve_engine_power_stretch", 3),
    ):
        kind, samples = groups[name]
        assert kind == "gauge" and len(samples) == count, (name, samples)
    assert groups["wattserve_requests_total"][0] == "counter"
    assert groups["wattserve_ttft_seconds"][0] == "histogram"


HELP = re.compile(r"^# HELP (\S+) (.*)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


def unnamed_labels(text: str) -> dict[str, set[str]]:
    """By metric family: the labels its samples carry that its HELP text does not name
    (histograms' `le` aside)."""
    helps = {m.group(1): m.group(2) for m in map(HELP.match, text.splitlines()) if m}
    missing: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        name = m.group(1)
        family = next(f for f in (name, *(name.rsplit("_", 1)[:1])) if f in helps)
        for label in set(LABEL.findall(m.group(2) or "")) - {"le"}:
            if not re.search(rf"\b{label}\b", helps[family]):
                missing.setdefault(family, set()).add(label)
    return missing


def test_every_metric_s_help_names_its_labels(tmp_path: Path) -> None:
    """`wattserve_tokens_total` is labelled by site too, which its HELP text left out."""
    fleet = FAST_FLEET.replace(
        "dc: {kind: datacenter, power_cap_w: 5000}",
        "dc: {kind: datacenter, power_cap_w: 5000, carbon_g_per_kwh: 380}",
    )
    with gateway(tmp_path, fleet) as s:
        _chat_both_ways(s.url)
        assert httpx.post(f"{s.url}/v1/chat/completions", json={}).status_code == 400
        text = httpx.get(f"{s.url}/metrics", timeout=10).text
    for name in (
        "wattserve_requests_total",
        "wattserve_tokens_total",
        "wattserve_energy_joules_total",
        "wattserve_carbon_grams_total",
        "wattserve_rejected_total",
        "wattserve_ttft_seconds",
        "wattserve_site_power_watts",
        "wattserve_backend_up",
    ):
        assert f"\n{name}" in text, name  # the scrape holds what is checked
    # a budget overrun needs a key and an answer dearer than its worst case: written directly
    m = Metrics()
    m.inc("wattserve_budget_overruns_total", key="k1")
    assert unnamed_labels(text) == {} and unnamed_labels(m.render()) == {}
