"""Plan defects a session-41 probe confirmed: a hosted API planned at its whole rate limit (its
token bucket then refused a quarter of the class), an unbounded throughput plan printed as a
fleet of two million L4s, one device counted twice in a site's `available:`, and malformed
trace rows skipped without a word. Each test fails on the code before the fix."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from wattserve.core.ratelimit import TokenBucket, poisson_rate_within, refused_share
from wattserve.errors import ConfigError
from wattserve.plan import plan

WORKLOAD = """generator:
  kind: poisson
  duration_s: 120
slos:
  chat: {ttft_s: 1.0, tpot_s: 0.1, percentile: 99}
classes:
  - name: chat
    model: llama-3.1-8b
    rate_rps: RATE
    slo: chat
    origins: {dc: 1.0}
    prompt_tokens: {dist: uniform, min: 200, max: 600}
    output_tokens: {dist: uniform, min: 50, max: 150}
"""
SITES = """sites:
  dc:
    kind: datacenter
    power_cap_w: 6000
  groq:
    kind: cloud
links:
  - {between: [dc, groq], rtt_ms: 20}
providers:
  groq-8b:
    site: groq
    provider: groq-cloud
    model: llama-3.1-8b
    ttft_s: 0.25
    rate_limit_rps: 2
"""


def _bucket_refusals(arrivals_per_s: float, rate_per_s: float, n: int = 200_000) -> float:
    """The share of `n` Poisson arrivals the bucket simulate and serve hold refuses."""
    rng = random.Random(1)
    bucket = TokenBucket(rate_per_s)
    t, refused = 0.0, 0
    for _ in range(n):
        t += rng.expovariate(arrivals_per_s)
        refused += not bucket.try_take(t)
    return refused / n


@pytest.mark.parametrize(
    ("arrivals", "rate"), [(0.5, 1.0), (1.0, 2.0), (1.88, 2.0), (2.2, 2.5), (4.0, 5.0), (9.0, 10.0)]
)
def test_the_refused_share_is_the_token_buckets_own(arrivals: float, rate: float) -> None:
    got, seen = refused_share(arrivals, rate), _bucket_refusals(arrivals, rate)
    assert got == pytest.approx(seen, rel=0.05, abs=0.002)


def test_a_one_token_bucket_is_erlangs_loss() -> None:
    for arrivals, rate in ((0.5, 1.0), (0.3, 0.5), (2.0, 0.25)):
        a = arrivals / rate
        assert refused_share(arrivals, rate) == pytest.approx(a / (1 + a), rel=0.01)


def test_the_planned_rate_keeps_refusals_within_the_slo() -> None:
    planned = poisson_rate_within(2.0, 0.01)
    assert 0.2 < planned < 0.4  # a bucket of two tokens refuses 1% already at 0.29 req/s
    assert _bucket_refusals(planned, 2.0) <= 0.012
    assert poisson_rate_within(100.0, 0.01) == 100.0  # a deep bucket: the whole limit


def _files(tmp_path: Path, rate: float) -> tuple[Path, Path]:
    wl, sites = tmp_path / "wl.yaml", tmp_path / "sites.yaml"
    wl.write_text(WORKLOAD.replace("RATE", str(rate)))
    sites.write_text(SITES)
    return wl, sites


def test_a_hosted_api_is_planned_within_its_rate_limits_refusals(tmp_path: Path) -> None:
    """2 req/s of a 99th-percentile class and a 2 req/s hosted API: the plan had sent it 1.88
    req/s ($0.19/h), which simulation met for 75% of the class, and no --verify round could
    change it. Now L4s take what the bucket would refuse, and the plan verifies."""
    wl, sites = _files(tmp_path, 2)
    p = plan(
        wl, sites=sites, hardware=["l4", "h100-sxm"], capacity="analytic", verify=True,
        max_rounds=2, compare_with_single=False,
    )  # fmt: skip
    sent = sum(p.solution.hosted_rates.values())
    assert sent <= poisson_rate_within(2.0, 0.01) + 1e-9
    assert p.replicas and all(r["met"] for r in p.rounds[-1]["classes"].values())


def test_an_unbounded_throughput_plan_is_an_error(tmp_path: Path) -> None:
    wl = tmp_path / "wl.yaml"
    wl.write_text(WORKLOAD.replace("RATE", "200").replace("    origins: {dc: 1.0}\n", ""))
    with pytest.raises(ConfigError) as info:
        plan(wl, hardware=["l4"], capacity="analytic", objective="throughput")
    assert info.value.field == "--objective" and "unbounded" in str(info.value)


def test_a_device_given_twice_in_a_sites_available_is_refused(tmp_path: Path) -> None:
    wl, sites = _files(tmp_path, 1)
    sites.write_text(
        SITES.replace(
            "    power_cap_w: 6000\n", "    power_cap_w: 6000\n    available: {l4: 0, L4: 4}\n"
        )
    )
    with pytest.raises(ConfigError) as info:
        plan(wl, sites=sites, hardware=["l4"], capacity="analytic")
    assert info.value.field == "sites.dc.available"
    assert "'L4' is given twice (as 'l4' too)" in str(info.value)


def test_malformed_trace_rows_are_named_in_the_plan(tmp_path: Path) -> None:
    rng = random.Random(3)
    rows = [
        {"arrival_s": round(i * 0.4, 3), "prompt_tokens": rng.randint(200, 600),
         "output_tokens": rng.randint(50, 150)}
        for i in range(300)
    ]  # fmt: skip
    lines = [json.dumps(r) for r in rows]
    lines[100:100] = [
        '{"arrival_s": 5, "prompt_tokens": "abc", "output_tokens": 10}',
        '{"arrival_s": -5, "prompt_tokens": 10, "output_tokens": 10}',
        "not json",
        '{"arrival_s": 1e308, "prompt_tokens": 10, "output_tokens": 10}',
    ]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    p = plan(trace, hardware=["l4"], capacity="analytic", compare_with_single=False)
    notes = [n for n in p.problem.left_out if "malformed" in n]
    assert len(notes) == 1 and notes[0].startswith("4 malformed trace row(s), skipped (line 101:")


TIERS = """generator:
  kind: poisson
  duration_s: 120
slos:
  tight: {ttft_s: 1.0, tpot_s: 0.02, percentile: 99}
  loose: {ttft_s: 10.0, tpot_s: 0.2, percentile: 90}
classes:
  - name: tight
    model: llama-3.1-8b
    rate_rps: 3
    slo: tight
    prompt_tokens: {dist: uniform, min: 200, max: 600}
    output_tokens: {dist: uniform, min: 50, max: 150}
  - name: loose
    model: llama-3.1-8b
    rate_rps: 12
    slo: loose
    prompt_tokens: {dist: lognormal, mean: 3000, sigma: 0.5, max: 8000}
    output_tokens: {dist: lognormal, mean: 300, sigma: 0.5, max: 1000}
"""


def test_tpot_tiers_are_deployments_of_their_own(tmp_path: Path) -> None:
    """A 20 ms class beside a 200 ms one of long prompts: the plan puts them on replicas of two
    TPOT tiers, but the fleet file had merged the tiers into one deployment, so in simulation
    the 20 ms class shared every replica with the long prompts and missed its SLO in every
    round (98.5%, three rounds of derating, NOT VERIFIED). Each tier is now a deployment, the
    plan's split routes each class to its own, and the plan verifies at the same $/h."""
    from wattserve.plan.fleetfile import fleet_mapping

    wl = tmp_path / "tiers.yaml"
    wl.write_text(TIERS)
    p = plan(
        wl, hardware=["h100-sxm"], capacity="analytic", verify=True, max_rounds=3,
        compare_with_single=False,
    )  # fmt: skip
    assert not p.unmet, p.rounds[-1]["classes"]
    deployments = fleet_mapping(p)["deployments"]
    assert {n: d["replicas"] for n, d in deployments.items()} == p.replicas
    assert len(p.replicas) == 2 and all("@tpot" in n for n in p.replicas)
