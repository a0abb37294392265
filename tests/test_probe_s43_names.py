"""Names a probe of session 43 found two things could share: every test here fails on the code
before its fix. Deployments, replicas and hosted APIs are told apart by name in `simulate`,
`serve` and `plan --verify` (a replica is DEPLOYMENT/N), and plan names its candidates
HARDWARE-LAYOUT-SITE[@tpotNms]."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattserve.core.fleet import load_fleet
from wattserve.errors import ConfigError
from wattserve.plan import plan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

TWO_TIERS = """generator: {kind: poisson, duration_s: 60}
slos:
  fast: {ttft_s: 1.0, tpot_s: 0.05, percentile: 90}
  slow: {ttft_s: 2.0, tpot_s: 0.1, percentile: 90}
classes:
  - {name: a, model: llama-3.1-8b, rate_rps: 0.5, slo: fast, origins: {x: 1.0}, local_only: 1.0,
     prompt_tokens: {dist: fixed, value: 500}, output_tokens: {dist: fixed, value: 100}}
  - {name: b, model: llama-3.1-8b, rate_rps: 16, slo: slow, origins: {x: 1.0},
     prompt_tokens: {dist: fixed, value: 500}, output_tokens: {dist: fixed, value: 100}}
"""
SITE_NAMED_AS_A_TIER = """sites:
  x: {kind: datacenter, electricity_usd_per_kwh: 0.08, pue: 1.0, available: {l4: 4}}
  x@tpot100ms: {kind: datacenter, electricity_usd_per_kwh: 0.5, pue: 1.0}
links:
  - {between: [x, x@tpot100ms], rtt_ms: 5}
"""


def test_a_site_named_as_another_sites_tier_is_refused(tmp_path: Path) -> None:
    """Site x's 100 ms tier and site x@tpot100ms's only deployment were both named
    l4-tp2-bf16-x@tpot100ms: the text listed three deployments, --out and --json held two,
    and --verify sent a class's 966 requests to one replica (0.0% met)."""
    wl, sites = tmp_path / "w.yaml", tmp_path / "sites.yaml"
    wl.write_text(TWO_TIERS)
    sites.write_text(SITE_NAMED_AS_A_TIER)
    with pytest.raises(ConfigError) as info:
        plan(wl, sites=sites, hardware=["l4"], capacity="analytic", compare_with_single=False)
    text = str(info.value)
    assert "two candidates would both be named 'l4-tp2-bf16-x@tpot100ms'" in text
    assert "site x and site x@tpot100ms" in text and "sites.yaml" in text


def test_a_provider_named_as_a_deployment_or_its_replica_is_refused(tmp_path: Path) -> None:
    """fleet-hetero.yaml with its hosted API renamed h100, the name of a deployment: simulate
    merged the two in its report and routed differently; a provider named h100/0 was counted
    as the deployment's first replica by plan --verify."""
    text = (EXAMPLES / "fleet-hetero.yaml").read_text()
    assert "\n  groq-8b:" in text and "\n  h100:" in text
    for name in ("h100", "h100/0", '"h100/12"'):
        fleet = tmp_path / "f.yaml"
        fleet.write_text(text.replace("\n  groq-8b:", f"\n  {name}:"))
        with pytest.raises(ConfigError) as info:
            load_fleet(fleet)
        assert "a provider may not be named as deployment 'h100'" in str(info.value)
        assert f"field 'providers.{name.strip(chr(34))}'" in str(info.value)
    fleet.write_text(text.replace("\n  groq-8b:", "\n  h100/x:"))
    assert any(h.name == "h100/x" for h in load_fleet(fleet).hosted)  # not a replica's name


def test_a_provider_named_as_a_candidates_replica_is_refused(tmp_path: Path) -> None:
    sites = (EXAMPLES / "sites-two-dc-edge.yaml").read_text()
    assert "\n  groq-8b:" in sites
    wl, s = tmp_path / "w.yaml", tmp_path / "s.yaml"
    wl.write_text(
        "generator: {kind: poisson, duration_s: 60}\n"
        "slos:\n  chat: {ttft_s: 1.0, tpot_s: 0.1, percentile: 90}\nclasses:\n"
        "  - {name: c, model: llama-3.1-8b, rate_rps: 2, slo: chat, origins: {dc-east: 1.0},\n"
        "     prompt_tokens: {dist: fixed, value: 500}, output_tokens: {dist: fixed, value: 100}}\n"
    )
    for name, said in (
        ('"l4-tp1-bf16-dc-north/0"', "would be named as a replica of candidate"),
        ("l4-tp1-bf16-dc-north", "two candidates would both be named"),
    ):
        s.write_text(sites.replace("\n  groq-8b:", f"\n  {name}:"))
        with pytest.raises(ConfigError) as info:
            plan(wl, sites=s, hardware=["l4"], capacity="analytic", compare_with_single=False)
        assert said in str(info.value) and "l4-tp1-bf16-dc-north" in str(info.value)
