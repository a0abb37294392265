"""A run's results as the `--json` object.

Field names follow `vllm bench serve`'s result file where the metric exists there
(`completed`, `failed`, `total_input_tokens`, `request_throughput`, `output_throughput`,
`mean_ttft_ms`, `median_ttft_ms`, `p99_ttft_ms`, ... `mean_e2el_ms`, `input_lens`, `ttfts`,
`itls`, `errors`), and `simulate --json`'s for the rest (`ttft_s`, `tpot_s`, `e2e_s` as
{p50, p90, p99}, `slo_attainment`, `energy_j_per_token`, `usd_per_mtok`, `sites`,
`deployments`), so `wattserve compare` reads all three.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from wattserve.bench.client import NOT_SENT, Result
from wattserve.core.workload import SLO

PERCENTILES = (50, 90, 99)
J_PER_KWH = 3.6e6
# a site's figure -> its count of requests that did not report it (the dashboard's names)
UNKNOWN_REQUESTS = {"energy_j": "energy_unknown_requests", "usd": "usd_unknown_requests"}


def latency_stats(name: str, values_s: Sequence[float]) -> dict[str, float | None]:
    """mean/median/std/p90/p99 in ms under vLLM's names."""
    keys = [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms"]
    keys += [f"p{p}_{name}_ms" for p in PERCENTILES if p != 50]
    if not values_s:
        return dict.fromkeys(keys)
    a = np.asarray(values_s) * 1e3
    pct = np.percentile(a, [p for p in PERCENTILES if p != 50])
    return dict(
        zip(
            keys,
            [float(a.mean()), float(np.median(a)), float(a.std()), *map(float, pct)],
            strict=True,
        )
    )


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """{p50, p90, p99} in seconds, as `simulate --json` writes them."""
    if not values:
        return {f"p{p}": None for p in PERCENTILES}
    got = np.percentile(np.asarray(values), PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, got, strict=True)}


def meets(r: Result, slo: SLO) -> bool:
    """Completed within its class's TTFT and TPOT limits (a TTFT-less answer cannot be judged)."""
    if not r.ok or r.ttft_s is None:
        return False
    tpot = r.tpot_s
    return r.ttft_s <= slo.ttft_s and (tpot is None or tpot <= slo.tpot_s)


def summarize(
    results: list[Result],
    duration_s: float,
    slos: dict[str, SLO],
    carbon_g_per_kwh: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The figures of a run. `carbon_g_per_kwh` maps sites (or "*" for all) to intensity."""
    span = max(duration_s, 1e-9)
    unsent = sum(r.error_kind == NOT_SENT for r in results)
    results = [r for r in results if r.error_kind != NOT_SENT]  # a stopped run's remainder
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    ttfts = [r.ttft_s for r in done if r.ttft_s is not None]
    tpots = [t for r in done if (t := r.tpot_s) is not None]
    itls = [x for r in done for x in r.itl_s]
    e2es = [r.e2e_s for r in done if r.e2e_s is not None]
    total_in = sum(r.input_len for r in done)
    total_out = sum(r.output_len for r in done)
    # a class the workload does not define is held to its default (as simulate holds it),
    # which --ttft-slo and --tpot-slo set too (the built-in limits had judged such rows)
    fallback = slos.get("default", SLO())
    good = [r for r in done if meets(r, slos.get(r.slo, fallback))]
    # whole answers (--no-stream) have no first token to judge: unknown, not 0
    judged = not done or any(r.ttft_s is not None for r in done)
    kinds = Counter(r.error_kind or "unknown" for r in failed)
    examples: dict[str, str] = {}
    for r in failed:
        examples.setdefault(r.error_kind or "unknown", f"request {r.index}: {r.error}")
    lags = [max(0.0, r.sent_s - r.scheduled_s) for r in results]
    out: dict[str, Any] = {
        "duration": duration_s,
        "completed": len(done),
        "failed": len(failed),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(done) / span,
        "request_goodput": len(good) / span if judged else None,
        "output_throughput": total_out / span,
        "total_token_throughput": (total_in + total_out) / span,
    }
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2es)):
        out.update(latency_stats(name, values))
    out.update(
        {
            "requests": len(results),
            "not_sent": unsent,
            "ttft_s": percentiles(ttfts),
            "tpot_s": percentiles(tpots),
            "e2e_s": percentiles(e2es),
            "slo_attainment": len(good) / len(results) if results and judged else None,
            "output_tokens": total_out,
            "output_tokens_per_s": total_out / span,
            "span_s": span,
            "errors_by_kind": dict(kinds.most_common()),
            "error_examples": examples,
            "send_lag_ms": {
                k: None if v is None else v * 1e3 for k, v in percentiles(lags).items()
            },
        }
    )
    out.update(_accounting(done, total_out, carbon_g_per_kwh or {}))
    out.update(
        {
            "input_lens": [r.input_len for r in results],
            "output_lens": [r.output_len if r.ok else 0 for r in results],
            "ttfts": [r.ttft_s if r.ttft_s is not None else 0.0 for r in results],
            "e2els": [r.e2e_s if r.ok and r.e2e_s is not None else 0.0 for r in results],
            "itls": [r.itl_s for r in results],
            "errors": [r.error or "" for r in results],
            "trace_rows": [r.row for r in results],
            "send_times_s": [r.sent_s for r in results],
            # where wattserve ran each request (usage.wattserve; null elsewhere or failed):
            # what `compare` holds against simulate --requests-out's target and site
            "request_backends": [r.backend for r in results],
            "request_sites": [r.site for r in results],
        }
    )
    return out


def _carbon_note(
    done: list[Result],
    carbon: dict[str, float],
    gco2: float | None,
    from_server: bool,
    reported: int,
) -> str:
    """What `gco2` rests on, or why it is unknown: a site given with --carbon-g-per-kwh that
    no answer came from is named (a misspelt site had left gco2 null with the advice to give
    the flag that was given)."""
    if from_server and gco2 is not None:
        return (
            f"as the server reported it (usage.wattserve.carbon_g, {reported} of "
            f"{len(done)} completed requests)"
        )
    if from_server:
        silent = sorted(
            {r.site or "-" for r in done if r.energy_j is not None and r.carbon_g is None}
        )
        return (
            f"unknown: answers from {', '.join(silent)[:300]} reported energy but no carbon_g "
            "(their sites give no carbon_g_per_kwh); give --carbon-g-per-kwh"
        )
    if gco2 is not None:
        return "device energy x the carbon intensity given with --carbon-g-per-kwh"
    if not carbon:
        return "unknown: the server reports none; give --carbon-g-per-kwh (SITE=G or G)"
    seen = {r.site or "-" for r in done if r.energy_j is not None}
    lacking = sorted(seen - set(carbon)) if "*" not in carbon else []
    unseen = sorted(set(carbon) - seen - {"*"})
    why = "unknown: "
    if lacking:
        why += f"--carbon-g-per-kwh gives no intensity for {', '.join(lacking)[:300]}"
    else:
        why += "no answer reported its energy"
    if unseen:
        why += f"; given for {', '.join(unseen)[:300]}, a site no answer came from (a typo?)"
    return why


def _site_totals() -> dict[str, Any]:
    """A site's figures before its first request: its J and $ unknown until one reports them."""
    site: dict[str, Any] = {"requests": 0, "output_tokens": 0}
    for key, unknown in UNKNOWN_REQUESTS.items():
        site |= {key: None, unknown: 0}
    return site


def _add_to_site(site: dict[str, Any], r: Result) -> None:
    """Count `r` at its site. A figure is the sum of those its requests reported, None where
    none did, and `*_unknown_requests` counts the requests that reported none, as the run's
    totals are the known part with the count in their notes, and as the gateway's dashboard
    gives them (until 2026-12-07 a site whose requests reported no energy read 0.0 J, and a
    partial sum read as the whole)."""
    site["requests"] += 1
    site["output_tokens"] += r.output_len
    for key, value in (("energy_j", r.energy_j), ("usd", r.usd)):
        if value is None:
            site[UNKNOWN_REQUESTS[key]] += 1
        else:
            site[key] = (site[key] or 0.0) + value


def _accounting(done: list[Result], total_out: int, carbon: dict[str, float]) -> dict[str, Any]:
    """$, J and gCO2 from `usage.wattserve`; None where the server reported none."""
    priced = [r for r in done if r.usd is not None]
    powered = [r for r in done if r.energy_j is not None]
    energy = sum(r.energy_j or 0.0 for r in powered)
    usd = sum(r.usd or 0.0 for r in priced)
    powered_tokens = sum(r.output_len for r in powered)
    priced_tokens = sum(r.output_len for r in priced)
    by_site: dict[str, dict[str, Any]] = defaultdict(_site_totals)
    by_dep: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "output_tokens": 0})
    gco2: float | None = 0.0 if powered and carbon else None
    for r in done:
        if r.backend is None:
            continue
        _add_to_site(by_site[r.site or "-"], r)
        dep = by_dep[r.target or r.backend]
        dep["requests"] += 1
        dep["output_tokens"] += r.output_len
        if gco2 is not None and r.energy_j is not None:
            g = carbon.get(r.site or "", carbon.get("*"))
            gco2 = None if g is None else gco2 + r.energy_j / J_PER_KWH * g
    reported = [r.carbon_g for r in done if r.carbon_g is not None]
    from_server = not carbon and bool(reported)
    if from_server:
        # every request that reported energy must have reported its grams: a site without
        # an intensity leaves the sum unknown, as with --carbon-g-per-kwh (a partial sum had
        # been given as the whole)
        whole = all(r.carbon_g is not None for r in powered)
        gco2 = sum(reported) if whole else None
    n = len(done) or 1
    for d in (*by_site.values(), *by_dep.values()):
        d["share"] = d["requests"] / n
    return {
        "energy_j": energy if powered else None,
        "energy_j_per_token": energy / powered_tokens if powered_tokens else None,
        "energy_note": "as the server reported it per request in usage.wattserve "
        f"({len(powered)} of {len(done)} completed requests); a gateway reports the energy "
        "of each request's share of its device, not idle time",
        "usd": usd if priced else None,
        "usd_per_mtok": usd / priced_tokens * 1e6 if priced_tokens else None,
        "gco2": gco2,
        "gco2_note": _carbon_note(done, carbon, gco2, from_server, len(reported)),
        "sites": dict(sorted(by_site.items())),
        "deployments": dict(sorted(by_dep.items())),
    }
