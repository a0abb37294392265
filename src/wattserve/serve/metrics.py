"""Prometheus metrics (`/metrics`, text format 0.0.4), all named wattserve_*."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
            ("wattserve_requests_total", "counter", "Requests by model, backend, site, status."),
            ("wattserve_tokens_total", "counter", "Tokens by model, backend and direction."),
            ("wattserve_energy_joules_total", "counter", "Energy attributed to requests."),
            (
                "wattserve_carbon_grams_total",
                "counter",
                "CO2 of that energy (site PUE, grid intensity).",
            ),
            ("wattserve_cost_usd_total", "counter", "Dollars attributed to requests."),
            (
                "wattserve_rejected_total",
                "counter",
                "Errors the gateway answered, by status and reason.",
            ),
            (
                "wattserve_budget_overruns_total",
                "counter",
                "Requests that cost more than the worst case held for them (billed at the hold).",
            ),
            ("wattserve_ttft_seconds", "histogram", "Time to first token."),
            ("wattserve_tpot_seconds", "histogram", "Time per output token."),
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
            out += [f"{name}{_labels(k)} {v:g}" for k, v in series.items()]
        for name, hseries in self.hist.items():
            kind, text = self.help.get(name, ("histogram", name))
            out += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
            for key, b in hseries.items():
                below = 0.0
                for i, edge in enumerate(LATENCY_BUCKETS):
                    below += b[i]
                    out.append(f"{name}_bucket{_labels((*key, ('le', f'{edge:g}')))} {below:g}")
                out.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {b[-2]:g}")
                out.append(f"{name}_count{_labels(key)} {b[-2]:g}")
                out.append(f"{name}_sum{_labels(key)} {b[-1]:g}")
        seen: set[str] = set()
        for gauge in self.gauges:
            for name, text, labels, value in gauge():
                if name not in seen:
                    out += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
                    seen.add(name)
                out.append(f"{name}{_labels(tuple(sorted(labels.items())))} {value:g}")
        return "\n".join(out) + "\n"
