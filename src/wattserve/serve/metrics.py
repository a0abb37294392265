"""Prometheus metrics (`/metrics`, text format 0.0.4), all named wattserve_*.

Values are written exactly (an integral value as an integer, any other float to `repr`'s
precision: `{:g}` would print 1,234,567 tokens as 1.23457e+06 and freeze a counter's line), and
each metric's samples form one group under its HELP and TYPE lines, as the format requires."""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _value(v: float) -> str:
    """A sample's value, exactly: integers as integers, floats as `repr` writes them (the
    shortest text that reads back as the same float), and Prometheus's +Inf, -Inf and NaN."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**63:
        return str(int(v))
    return repr(float(v))


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self.help: dict[str, tuple[str, str]] = {}
        self.hist: dict[str, dict[tuple[tuple[str, str], ...], list[float]]] = defaultdict(dict)
        self.gauges: list[Callable[[], list[tuple[str, str, dict[str, str], float]]]] = []
        for name, kind, text in (
            ("wattserve_requests_total", "counter", "Requests by model, backend, site and status."),
            (
                "wattserve_tokens_total",
                "counter",
                "Tokens by model, backend, site and direction (input, output).",
            ),
            (
                "wattserve_estimated_tokens_total",
                "counter",
                "Of wattserve_tokens_total, the tokens no tokenizer counted (a prompt at about 4 "
                "characters a token, an output in a server's chunks), by model, backend, site "
                "and direction.",
            ),
            (
                "wattserve_energy_joules_total",
                "counter",
                "Joules attributed to requests, by model, backend and site.",
            ),
            (
                "wattserve_carbon_grams_total",
                "counter",
                "Grams of CO2 of that energy (the site's PUE and grid intensity), by model, "
                "backend and site.",
            ),
            (
                "wattserve_cost_usd_total",
                "counter",
                "Dollars attributed to requests, by model, backend and site.",
            ),
            (
                "wattserve_rejected_total",
                "counter",
                "Errors the gateway answered, by status and reason.",
            ),
            (
                "wattserve_budget_overruns_total",
                "counter",
                "Requests that cost more than the worst case held for them (billed at the hold), "
                "by key (its id).",
            ),
            (
                "wattserve_request_seconds",
                "histogram",
                "Time from a request's arrival to its answer's end (requests served in full), by "
                "model.",
            ),
            (
                "wattserve_ttft_seconds",
                "histogram",
                "Time to first token, where it is seen (streams, emulated engines), by model.",
            ),
            (
                "wattserve_tpot_seconds",
                "histogram",
                "Time per output token, where the first token is seen, by model.",
            ),
        ):
            self.help[name] = (kind, text)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.counters[name]
        series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        # per bucket (not cumulative: `render` sums them), then +Inf, count, sum
        buckets = self.hist[name].setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))
        i = bisect.bisect_left(LATENCY_BUCKETS, value)  # the first edge >= value
        if i < len(LATENCY_BUCKETS):
            buckets[i] += 1
        buckets[-2] += 1  # count
        buckets[-1] += value  # sum

    def render(self) -> str:
        out: list[str] = []
        for name, series in self.counters.items():
            kind, text = self.help.get(name, ("counter", name))
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            out += [f"{name}{_labels(k)} {_value(v)}" for k, v in series.items()]
        for name, hseries in self.hist.items():
            kind, text = self.help.get(name, ("histogram", name))
            out += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
            for key, b in hseries.items():
                below = 0.0
                for i, edge in enumerate(LATENCY_BUCKETS):
                    below += b[i]
                    le = ("le", f"{edge:g}")
                    out.append(f"{name}_bucket{_labels((*key, le))} {_value(below)}")
                out.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {_value(b[-2])}")
                out.append(f"{name}_count{_labels(key)} {_value(b[-2])}")
                out.append(f"{name}_sum{_labels(key)} {_value(b[-1])}")
        # gauges come entity by entity (a site's power, then its cap): grouped here by name,
        # in the order each name first appears
        gauges: dict[str, tuple[str, list[str]]] = {}
        for gauge in self.gauges:
            for name, text, labels, value in gauge():
                lines = gauges.setdefault(name, (text, []))[1]
                lines.append(f"{name}{_labels(tuple(sorted(labels.items())))} {_value(value)}")
        for name, (text, lines) in gauges.items():
            out += [f"# HELP {name} {text}", f"# TYPE {name} gauge", *lines]
        return "\n".join(out) + "\n"
