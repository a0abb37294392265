"""Hold two result files side by side: `simulate --json`, `bench --json` and `vllm bench
serve`'s result file, each read into the same metrics (seconds, per second, $ and J), and the
error of the second against the first."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from wattserve.errors import ConfigError

# (metric, unit) in the order they are shown
METRICS: tuple[tuple[str, str], ...] = (
    ("requests", ""),
    ("completed", ""),
    ("failed", ""),
    ("ttft_mean_s", "s"),
    ("ttft_p50_s", "s"),
    ("ttft_p90_s", "s"),
    ("ttft_p99_s", "s"),
    ("tpot_mean_s", "s"),
    ("tpot_p50_s", "s"),
    ("tpot_p90_s", "s"),
    ("tpot_p99_s", "s"),
    ("itl_mean_s", "s"),
    ("itl_p50_s", "s"),
    ("itl_p99_s", "s"),
    ("e2e_mean_s", "s"),
    ("e2e_p50_s", "s"),
    ("e2e_p90_s", "s"),
    ("e2e_p99_s", "s"),
    ("request_throughput", "req/s"),
    ("output_throughput", "tok/s"),
    ("output_tokens", "tok"),
    ("slo_attainment", ""),
    ("energy_j_per_token", "J"),
    ("usd_per_mtok", "$"),
)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _ms(raw: dict[str, Any], key: str) -> float | None:
    v = _num(raw.get(key))
    return None if v is None else v / 1e3


def kind_of(raw: Any) -> str:
    """simulate, bench or vllm; '' for none of them."""
    if not isinstance(raw, dict):
        return ""
    if raw.get("tool") == "wattserve bench":
        return "bench"
    if "policy" in raw and isinstance(raw.get("ttft_s"), dict):
        return "simulate"
    if "mean_ttft_ms" in raw or "request_throughput" in raw:
        return "vllm"
    return ""


def metrics(raw: dict[str, Any]) -> dict[str, float | None]:
    """The shared metrics of one result object (None where the file has no figure)."""
    out: dict[str, float | None] = dict.fromkeys(m for m, _ in METRICS)
    if "mean_ttft_ms" in raw:  # vLLM's names (bench writes them too)
        for name, ours in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2el", "e2e")):
            out[f"{ours}_mean_s"] = _ms(raw, f"mean_{name}_ms")
            out[f"{ours}_p50_s"] = _ms(raw, f"median_{name}_ms")
            for p in (90, 99):
                if f"{ours}_p{p}_s" in out:
                    out[f"{ours}_p{p}_s"] = _ms(raw, f"p{p}_{name}_ms")
        out["request_throughput"] = _num(raw.get("request_throughput"))
        out["output_throughput"] = _num(raw.get("output_throughput"))
        out["output_tokens"] = _num(raw.get("total_output_tokens"))
        out["completed"] = _num(raw.get("completed"))
        out["failed"] = _num(raw.get("failed"))
        if out["completed"] is not None:
            out["requests"] = out["completed"] + (out["failed"] or 0.0)
    for ours in ("ttft", "tpot", "e2e"):  # simulate's names fill what is still missing
        pct = raw.get(f"{ours}_s")
        if isinstance(pct, dict):
            for p in (50, 90, 99):
                key = f"{ours}_p{p}_s"
                if out.get(key) is None:
                    out[key] = _num(pct.get(f"p{p}"))
    for key, src in (
        ("requests", "requests"),
        ("completed", "completed"),
        ("failed", "rejected"),
        ("output_tokens", "output_tokens"),
        ("output_throughput", "output_tokens_per_s"),
        ("slo_attainment", "slo_attainment"),
        ("energy_j_per_token", "energy_j_per_token"),
        ("usd_per_mtok", "usd_per_mtok"),
    ):
        if out[key] is None:
            out[key] = _num(raw.get(src))
    span = _num(raw.get("span_s"))
    if out["request_throughput"] is None and span and out["completed"] is not None:
        out["request_throughput"] = out["completed"] / span
    return out


def per_request(raw: dict[str, Any]) -> dict[int, tuple[float | None, float | None]]:
    """(TTFT s, E2E s) per request, keyed by trace row when the file has them (bench), else by
    position (vLLM's `ttfts`); failed requests are left out."""
    ttfts, errors = raw.get("ttfts"), raw.get("errors")
    if not isinstance(ttfts, list):
        return {}
    rows = raw.get("trace_rows")
    keys = rows if isinstance(rows, list) and len(rows) == len(ttfts) else range(len(ttfts))
    e2es = raw.get("e2els")
    e2es = e2es if isinstance(e2es, list) and len(e2es) == len(ttfts) else [None] * len(ttfts)
    errs = errors if isinstance(errors, list) and len(errors) == len(ttfts) else [""] * len(ttfts)
    out = {}
    for k, t, e, err in zip(keys, ttfts, e2es, errs, strict=True):
        if not err and isinstance(k, int):
            out[k] = (_num(t) or None, _num(e) or None)
    return out


def paired(
    a: dict[int, tuple[float | None, float | None]], b: dict[int, tuple[float | None, float | None]]
) -> list[dict[str, Any]]:
    """Request by request (the same trace row in both files): the spread of B - A."""
    rows = []
    for i, name in ((0, "ttft_s"), (1, "e2e_s")):
        pairs = [(a[k][i], b[k][i]) for k in a.keys() & b.keys()]
        diffs = [y - x for x, y in pairs if x is not None and y is not None]
        rels = [(y - x) / x for x, y in pairs if x and y is not None]
        if not diffs:
            continue
        absd = sorted(abs(d) for d in diffs)
        rows.append(
            {
                "metric": name,
                "pairs": len(diffs),
                "median_abs_diff_s": absd[len(absd) // 2],
                "p90_abs_diff_s": absd[min(len(absd) - 1, int(0.9 * len(absd)))],
                "median_error": sorted(rels)[len(rels) // 2] if rels else None,
            }
        )
    return rows


def load(path: Path, pick: str | None = None) -> tuple[str, str, dict[str, float | None]]:
    """(kind, label, metrics) of a result file; `pick` names a policy in a simulate list."""
    kind, label, raw = load_raw(path, pick)
    return kind, label, metrics(raw)


def load_raw(path: Path, pick: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """(kind, label, the result object) of a result file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not JSON: {exc}", path=str(path)) from None
    if isinstance(raw, list):  # simulate --compare: one object per policy
        names = [r.get("policy") for r in raw if isinstance(r, dict)]
        chosen = [
            r for r in raw if isinstance(r, dict) and (pick is None or r.get("policy") == pick)
        ]
        if not names:
            raise ConfigError(
                "a list with no result of simulate --json --compare in it", path=str(path)
            )
        if not chosen:
            raise ConfigError(
                f"no policy '{pick}' in this file (it holds {', '.join(map(str, names))})",
                path=str(path),
            )
        raw = chosen[0]
    kind = kind_of(raw)
    if not kind:
        raise ConfigError(
            "not a result of simulate --json, bench --json or vllm bench serve",
            path=str(path),
        )
    label = f"{kind}:{raw['policy']}" if kind == "simulate" else kind
    return kind, label, raw


def compare(a: dict[str, float | None], b: dict[str, float | None]) -> list[dict[str, Any]]:
    """One row per metric both files have: A, B, B - A and (B - A) / A."""
    rows = []
    for name, unit in METRICS:
        x, y = a.get(name), b.get(name)
        if x is None and y is None:
            continue
        diff = None if x is None or y is None else y - x
        err = None if diff is None or not x else diff / abs(x)
        rows.append({"metric": name, "unit": unit, "a": x, "b": y, "diff": diff, "error": err})
    return rows


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1e3:.2f} ms" if abs(v) < 1 else f"{v:.3f} s"
    if unit == "" and float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.4g}" + (f" {unit}" if unit else "")


def table(rows: list[dict[str, Any]], label_a: str, label_b: str) -> str:
    head = f"{'metric':22} {label_a[:18]:>18} {label_b[:18]:>18} {'B - A':>14} {'error':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        err = "-" if r["error"] is None else f"{100 * r['error']:+.1f} %"
        lines.append(
            f"{r['metric']:22} {_fmt(r['a'], r['unit']):>18} {_fmt(r['b'], r['unit']):>18} "
            f"{_fmt(r['diff'], r['unit']):>14} {err:>9}"
        )
    return "\n".join(lines)


def paired_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'per request':14} {'pairs':>7} {'median |B-A|':>14} {'p90 |B-A|':>14} "
        f"{'median error':>13}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        err = "-" if r["median_error"] is None else f"{100 * r['median_error']:+.1f} %"
        lines.append(
            f"{r['metric']:14} {r['pairs']:>7} {_fmt(r['median_abs_diff_s'], 's'):>14} "
            f"{_fmt(r['p90_abs_diff_s'], 's'):>14} {err:>13}"
        )
    return "\n".join(lines)
