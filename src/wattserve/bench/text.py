"""The printed summary of a bench run, laid out like `vllm bench serve`'s."""

from __future__ import annotations

from typing import Any


def _row(label: str, value: Any, fmt: str = ".2f") -> str:
    shown = "-" if value is None else (format(value, fmt) if isinstance(value, float) else value)
    return f"{label:<40} {shown}"


def summary_text(s: dict[str, Any]) -> str:
    lines = [
        "{:=^60}".format(" wattserve bench result "),
        _row("Successful requests:", s["completed"]),
        _row("Failed requests:", s["failed"]),
        _row("Benchmark duration (s):", s["duration"]),
        _row("Total input tokens:", s["total_input_tokens"]),
        _row("Total generated tokens:", s["total_output_tokens"]),
        _row("Request throughput (req/s):", s["request_throughput"]),
        _row("Request goodput at the SLO (req/s):", s["request_goodput"]),
        _row("Output token throughput (tok/s):", s["output_throughput"]),
        _row("Total token throughput (tok/s):", s["total_token_throughput"]),
    ]
    for name, title in (
        ("ttft", "Time to first token"),
        ("tpot", "Time per output token (excl. 1st)"),
        ("itl", "Inter-token latency"),
        ("e2el", "End-to-end latency"),
    ):
        lines.append(f"{title:-^60}")
        for stat in ("mean", "median", "p90", "p99"):
            lines.append(_row(f"{stat.capitalize()} {name.upper()} (ms):", s[f"{stat}_{name}_ms"]))
    lines.append("{:-^60}".format("Cost and energy (usage.wattserve)"))
    lines += [
        _row("$ per 1M output tokens:", s["usd_per_mtok"], ".4f"),
        _row("J per output token:", s["energy_j_per_token"], ".4f"),
        _row("Energy (J):", s["energy_j"], ".1f"),
        _row("Emissions (gCO2):", s["gco2"], ".3f"),
    ]
    for site, v in s["sites"].items():
        lines.append(_row(f"  site {site} share:", f"{100 * v['share']:.1f} %"))
    for dep, v in s["deployments"].items():
        lines.append(_row(f"  backend {dep} share:", f"{100 * v['share']:.1f} %"))
    lines.append("=" * 60)
    return "\n".join(lines)
