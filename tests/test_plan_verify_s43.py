"""`plan --verify` judges every request of one run against its own SLO (session 43). Each
class had been judged in a run of its own with the other classes' SLOs lifted, its share
taken as (met - completed others) / its requests: where another class's requests were
refused, a class that met every SLO was reported short (and cut). And a class that missed was
cut on every deployment serving it, where one of them had missed; two groups with one label
(a class named "chat (tight)" beside chat's tight part) were merged, one's figures lost. Each
test of the change fails on the code before it."""

from __future__ import annotations

import json
import random
from pathlib import Path

from test_probe_s42 import BURSTY, SITES

from wattserve.core.workload import SLO, load_workload
from wattserve.plan import plan
from wattserve.plan.routing import PlanSplit
from wattserve.plan.table import missed_on, plan_text, share
from wattserve.plan.verify import _cuts, _factor, _served_by, class_attainment, verify_plan

# the bursty chat class (which the hosted API's token bucket partly refuses) and a class of
# another model, which only the site's L4s serve, with a loose SLO they meet
TWO_CLASSES = (
    BURSTY.replace("slos:\n", "slos:\n  bulk: {ttft_s: 10.0, tpot_s: 0.5, percentile: 90}\n")
    + """  - name: bulk
    model: llama-3.2-1b
    rate_rps: 1
    slo: bulk
    origins: {dc: 1.0}
    prompt_tokens: {dist: uniform, min: 100, max: 300}
    output_tokens: {dist: uniform, min: 20, max: 60}
"""
)


def _two_classes(tmp_path: Path) -> tuple[Path, Path]:
    wl, sites = tmp_path / "wl.yaml", tmp_path / "sites.yaml"
    wl.write_text(TWO_CLASSES)
    sites.write_text(SITES.replace("CAP", "6000"))
    return wl, sites


def test_a_class_is_not_charged_with_another_classs_refusals(tmp_path: Path) -> None:
    """The hosted API refuses some of chat's bursts; every bulk request meets its SLO. Judged
    with chat's SLO lifted, bulk's share came to (bulk met + chat completed - chat's requests)
    / bulk's requests: 85.9%, under its 90%."""
    wl, sites = _two_classes(tmp_path)
    p = plan(
        wl, sites=sites, hardware=["l4"], capacity="analytic", verify=True, max_rounds=0,
        compare_with_single=False,
    )  # fmt: skip
    classes = p.rounds[0]["classes"]
    assert p.rounds[0]["policy"] == "plan"
    assert classes["bulk"]["attainment"] == 1.0 and classes["bulk"]["met"], classes
    assert set(classes["bulk"]["served"]) == {n for n in p.replicas}  # the L4s alone
    chat = classes["chat"]
    assert not chat["met"] and set(chat["served"]) == {"groq-8b"}
    # the bucket's refusals name no target: the API's share is of what it served
    assert chat["served"]["groq-8b"]["requests"] < chat["requests"]


def test_one_class_attainment_is_the_runs_own(tmp_path: Path) -> None:
    """With one class, the class's share is the simulator's overall attainment exactly."""
    wl, sites = tmp_path / "wl.yaml", tmp_path / "sites.yaml"
    wl.write_text(BURSTY)
    sites.write_text(SITES.replace("CAP", "6000"))
    p = plan(wl, sites=sites, hardware=["l4"], capacity="analytic", compare_with_single=False)
    sim = class_attainment(p, load_workload(wl, default_model=None))
    assert sim["classes"]["chat"]["attainment"] == sim["attainment"]


def test_a_round_cuts_only_where_the_class_missed(tmp_path: Path) -> None:
    """A class served by two deployments, one of which missed: only that one is cut, by its
    own share. Where the misses cannot be laid on the plan's servers of the class (refused
    before any target was chosen, more than the class may miss; or only where the plan did
    not send it), every one the plan serves it from is cut, by the class's share."""
    wl, sites = _two_classes(tmp_path)
    p = plan(wl, sites=sites, hardware=["l4"], capacity="analytic", compare_with_single=False)
    prob = p.problem
    bulk = next(f for f in prob.flows if f.cls == "bulk")
    key = (bulk.cls, bulk.slo_name)
    serving = sorted({prob.options[j].name for (q, j) in p.solution.rates if prob.flows[q] is bulk})
    assert serving
    first = serving[0]
    served = {name: {"requests": 100, "attainment": 1.0} for name in serving}
    served[first] = {"requests": 100, "attainment": 0.6}
    short = {key: {"target": 0.9, "attainment": 0.85, "requests": 100 * len(serving),
                   "served": served}}  # fmt: skip
    assert _cuts(prob, p, short) == {(first, key): _factor(0.6, 0.9)}
    everywhere = {(name, key): _factor(0.6, 0.9) for name in serving}
    # more refused before any target was chosen than the class may miss
    short[key] |= {"attainment": 0.6, "requests": 100 * len(serving) + 60}
    assert _cuts(prob, p, short) == everywhere
    # misses only where the plan did not send the class (a policy of the workload's own)
    served = {name: {"requests": 100, "attainment": 1.0} for name in serving}
    served["elsewhere"] = {"requests": 50, "attainment": 0.3}
    n = 100 * len(serving) + 50
    short = {key: {"target": 0.9, "attainment": 0.6, "requests": n, "served": served}}
    assert _cuts(prob, p, short) == everywhere | {("elsewhere", key): _factor(0.3, 0.9)}
    # nothing placed missed: the same
    short = {key: {"target": 0.9, "attainment": 0.85, "requests": 100, "served": {}}}
    assert _cuts(prob, p, short) == {(name, key): _factor(0.85, 0.9) for name in serving}


def test_a_server_that_met_the_class_is_not_cut() -> None:
    """The multi-site example (analytic capacities): chat missed on the A100 and the L4 and
    met on GroqCloud (6 requests); the classes' counts add up to the simulator's own.
    GroqCloud's planned chat rate was cut as well (0.293 to 0.234 req/s); now only the two
    deployments are."""
    p = plan(
        "examples/workload-multisite.yaml", sites="examples/sites-two-dc-edge.yaml",
        hardware=["h100-sxm", "a100-sxm-80gb", "l4", "l40s", "jetson-agx-orin-64gb"],
        capacity="analytic", compare_with_single=False,
    )  # fmt: skip
    wl = load_workload("examples/workload-multisite.yaml", default_model=None)
    v = verify_plan(p, wl, max_rounds=1)
    first = v.rounds[0]
    # the records judged by SLO.meets count what the simulator's own rule counted
    classes = first["classes"].values()
    met = sum(round(c["attainment"] * c["requests"]) for c in classes)
    assert met == round(first["attainment"] * sum(c["requests"] for c in classes))
    chat = first["classes"]["chat"]
    assert not chat["met"] and chat["served"]["groq-8b"]["attainment"] == 1.0, chat
    before, after = p.problem, v.problem
    chat_flows = {q for q, f in enumerate(before.flows) if f.cls == "chat"}
    groq = next(k for k, h in enumerate(before.hosted) if h.name == "groq-8b")
    for q in chat_flows & set(before.hosted[groq].limits):
        assert after.hosted[groq].limits[q] == before.hosted[groq].limits[q]
    cut = {
        before.options[j].name
        for j, o in enumerate(before.options)
        for q in chat_flows & set(o.caps)
        if after.options[j].caps[q].rate_rps < o.caps[q].rate_rps
    }
    assert cut == {n for n, s in chat["served"].items() if s["attainment"] < 0.99}, cut


def test_the_table_names_where_a_class_missed(tmp_path: Path) -> None:
    wl, sites = _two_classes(tmp_path)
    p = plan(
        wl, sites=sites, hardware=["l4"], capacity="analytic", verify=True, max_rounds=0,
        compare_with_single=False,
    )  # fmt: skip
    chat = p.rounds[0]["classes"]["chat"]
    refused = chat["requests"] - chat["served"]["groq-8b"]["requests"]
    assert missed_on(chat) == f"{refused:,} refused before any target was chosen"
    assert f"MISSED ({refused:,} refused before any target was chosen)" in plan_text(p)
    served = {"a": {"requests": 400, "attainment": 0.912}, "b": {"requests": 50, "attainment": 1}}
    v = {"requests": 450, "target": 0.99, "attainment": 0.92, "met": False, "served": served}
    assert missed_on(v) == "on a 91.2% of 400"
    assert missed_on({"target": 0.99, "attainment": 0.5, "met": False}) == ""  # older JSON
    assert missed_on(v | {"met": True}) == ""  # a class that met missed nowhere


def test_meets_is_the_simulators_rule() -> None:
    slo = SLO(1.0, 0.1, 0.99)
    assert slo.meets(1.0, 0.1) and slo.meets(0.5, None)
    assert not slo.meets(1.0001, 0.05) and not slo.meets(0.5, 0.11) and not slo.meets(None, None)


def test_a_share_under_its_target_is_never_printed_at_it() -> None:
    """A deployment's 665 of 672 (98.96%) against 99% was printed "99.0%" beside MISSED."""
    assert share(665 / 672, 0.99) == "98.96%"
    assert share(0.98999, 0.99) == "98.999%"
    assert share(0.9029, 0.99) == "90.3%" and share(1.0, 0.99) == "100.0%"
    assert share(0.99, 0.99) == "99.0%"
    assert share(989_999 / 1_000_000, 0.99) == "98.9999%"


def test_a_record_names_its_deployment_or_api() -> None:
    deployments = {"l4-tp1-bf16-dc", "h100/x"}
    assert _served_by("l4-tp1-bf16-dc/3", deployments) == "l4-tp1-bf16-dc"
    assert _served_by("h100/x/0", deployments) == "h100/x"
    assert _served_by("groq/8", deployments) == "groq/8"  # a hosted API's own name
    assert _served_by(None, deployments) is None


def test_two_groups_one_label_are_not_merged(tmp_path: Path) -> None:
    """A class named "chat (tight)" beside the tight part of a class chat whose trace rows name
    two SLOs: both were labelled "chat (tight)", and one group's figures replaced the other's.
    Each now says both names."""
    rows = [
        {"arrival_s": i * 0.25, "prompt_tokens": 200, "output_tokens": 20}
        | ({"slo": "tight"} if i % 4 == 0 else {})
        for i in range(400)
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    wl = tmp_path / "wl.yaml"
    wl.write_text(
        "trace: t.jsonl\nslos:\n  loose: {ttft_s: 10.0, tpot_s: 0.5, percentile: 50}\n"
        "  tight: {ttft_s: 2.0, tpot_s: 0.2, percentile: 90}\n"
        "classes:\n  - {name: chat, weight: 1, slo: loose}\n"
        "  - {name: chat (tight), weight: 1, slo: tight}\n"
    )
    p = plan(
        wl, hardware=["h100-sxm"], model="llama-3.1-8b", capacity="analytic", verify=True,
        max_rounds=0, compare_with_single=False,
    )  # fmt: skip
    classes = p.rounds[0]["classes"]
    assert "chat (loose)" in classes and "chat (tight)" not in classes, classes
    assert {"class 'chat', SLO 'tight'", "class 'chat (tight)', SLO 'tight'"} <= set(classes)
    assert sum(v["requests"] for v in classes.values()) == 400


def test_the_plans_split_routes_each_slo_of_a_class_as_planned(tmp_path: Path) -> None:
    """A class whose trace rows name two SLOs is two flows, each planned on deployments of its
    own; the plan's split was keyed by class, origin and residency alone, so --verify sent
    rows of the 50 ms part to the 200 ms tier's L4s, where none met (found by a probe). Now
    the split is per SLO as well, and round 0 meets every part."""
    rng = random.Random(3)
    rows, t = [], 0.0
    for i in range(400):
        t += rng.expovariate(4.3)
        rows.append(
            {"arrival_s": round(t, 3), "prompt_tokens": 500, "output_tokens": 100}
            | ({"slo": "tight"} if i % 2 == 0 else {})
        )
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    wl = tmp_path / "wl.yaml"
    wl.write_text(
        "trace: t.jsonl\nslos:\n  chat: {ttft_s: 5.0, tpot_s: 0.2, percentile: 50}\n"
        "  tight: {ttft_s: 0.5, tpot_s: 0.05, percentile: 99}\nclasses:\n"
        "  - {name: chat, weight: 0.5, model: llama-3.1-8b, slo: chat, origins: {dc-east: 1.0},"
        " prompt_tokens: {dist: fixed, value: 7000}, output_tokens: {dist: fixed, value: 100}}\n"
        "  - {name: other, weight: 0.5, model: llama-3.1-8b, slo: tight, origins: {dc-east: 1.0},"
        " prompt_tokens: {dist: fixed, value: 100}, output_tokens: {dist: fixed, value: 50}}\n"
    )
    p = plan(
        wl, sites="examples/sites-two-dc-edge.yaml", hardware=["h100-sxm", "l4"],
        capacity="analytic", verify=True, max_rounds=0, compare_with_single=False,
    )  # fmt: skip
    split = PlanSplit.from_plan(p).split
    tight = split[("chat", "dc-east", False, "tight")]
    loose = split[("chat", "dc-east", False, "chat")]
    assert tight and loose and set(tight) != set(loose), split
    classes = p.rounds[0]["classes"]
    assert set(classes["chat (tight)"]["served"]) <= set(tight), classes["chat (tight)"]
    assert all(v["met"] for v in classes.values()), classes
    # --json's flows say which SLO and model each is (two flows of chat had looked alike)
    flows = {(f["class"], f["slo"], f["model"]) for f in p.as_dict()["flows"]}
    assert {("chat", "tight", "llama-3.1-8b"), ("chat", "chat", "llama-3.1-8b")} <= flows
