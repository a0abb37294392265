"""Names a probe of session 43 found two things could share: every test here fails on the code
before its fix. Deployments, replicas and hosted APIs are told apart by name in `simulate`,
`serve` and `plan --verify` (a replica is DEPLOYMENT/N), and plan names its candidates
HARDWARE-LAYOUT-SITE[@tpotNms]."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wattserve.core.fleet import load_fleet
from wattserve.core.workload import load_workload
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
        said = "deployment 'h100'" if name == "h100" else "a replica of deployment 'h100'"
        assert f"a provider may not be named as {said}" in str(info.value)
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


def test_a_trace_rows_unknown_origin_is_left_out_as_simulate_refuses_it(tmp_path: Path) -> None:
    """Rows naming an origin the sites file lacks: plan stopped with an error that blamed the
    class's `origins` field (which the rows did not come from), where simulate refuses such a
    row and goes on. Now plan leaves them out and says so, and --verify replays without them
    (it had replayed them, missed by their refusals in every round). A class's own `origins:`
    naming an unknown site is still the workload's error."""
    rows = [
        {"arrival_s": i * 0.5, "prompt_tokens": 300, "output_tokens": 50}
        | ({"origin": "nowhere"} if i % 10 == 0 else {})
        for i in range(300)
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    wl = tmp_path / "w.yaml"
    wl.write_text("trace: t.jsonl\n")
    sites = EXAMPLES / "sites-two-dc-edge.yaml"
    p = plan(
        wl, sites=sites, model="llama-3.1-8b", hardware=["l4"], capacity="analytic",
        verify=True, compare_with_single=False,
    )  # fmt: skip
    (note,) = [n for n in p.problem.left_out if "sites file lacks" in n]
    assert note.startswith("30 request(s) from sites the sites file lacks ('nowhere': 30; row 1,")
    assert p.rounds[0]["classes"]["default"]["requests"] == 270 and not p.unmet
    wl.write_text("trace: t.jsonl\nclasses:\n  - {name: c, weight: 1, origins: {nowhere: 1.0}}\n")
    with pytest.raises(ConfigError) as info:
        plan(wl, sites=sites, model="llama-3.1-8b", hardware=["l4"], capacity="analytic")
    assert "comes from site 'nowhere'" in str(info.value)


def test_a_device_named_twice_is_refused_and_providers_may_number_their_names(
    tmp_path: Path,
) -> None:
    """--hardware l4,L4 sized every L4 candidate twice and the plan counted one of each
    ($1.68/h where l4 alone gives $2.80/h); it is refused naming the flag. A provider named
    groq-8b/2 beside a provider groq-8b is no replica's name: hosted APIs have none."""
    wl = tmp_path / "w.yaml"
    wl.write_text(
        "generator: {kind: poisson, duration_s: 60}\n"
        "slos:\n  chat: {ttft_s: 1.0, tpot_s: 0.1, percentile: 90}\nclasses:\n"
        "  - {name: c, model: llama-3.1-8b, rate_rps: 2, slo: chat, origins: {dc-east: 1.0},\n"
        "     prompt_tokens: {dist: fixed, value: 500}, output_tokens: {dist: fixed, value: 100}}\n"
    )
    sites = EXAMPLES / "sites-two-dc-edge.yaml"
    with pytest.raises(ConfigError) as info:
        plan(wl, sites=sites, hardware=["l4", "h100-sxm", "L4"], capacity="analytic")
    assert "field '--hardware'" in str(info.value) and "names l4 twice (l4, L4)" in str(info.value)
    text = sites.read_text()
    head, sep, tail = text.partition("\n  groq-8b:")
    block = sep + tail
    two = tmp_path / "s.yaml"
    two.write_text(head + block + block.replace("\n  groq-8b:", '\n  "groq-8b/2":'))
    p = plan(wl, sites=two, hardware=["l4"], capacity="analytic", compare_with_single=False)
    assert {h.name for h in p.problem.hosted} == {"groq-8b", "groq-8b/2"}


def test_an_unnamed_class_takes_a_name_no_earlier_class_has(tmp_path: Path) -> None:
    """A nameless second class after one named class1 was refused as "another class is
    already named 'class1'" at `classes[1].name`, a field the file does not have."""
    wl = tmp_path / "w.yaml"
    wl.write_text(
        "generator: {kind: poisson, duration_s: 10}\nclasses:\n"
        "  - {name: class1, rate_rps: 1}\n  - {rate_rps: 1}\n  - {rate_rps: 1}\n"
    )
    w = load_workload(wl, default_model="llama-3.1-8b")
    assert [c.name for c in w.classes] == ["class1", "class2", "class3"]
    wl.write_text(wl.read_text() + "  - {name: class3, rate_rps: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_workload(wl, default_model="llama-3.1-8b")
    assert "classes[3].name" in str(info.value) and "already named 'class3'" in str(info.value)
