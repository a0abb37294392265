"""`plan`: the program against brute force, its guarantees, and bad input."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from pages import assert_self_contained, specs
from scipy.optimize import linprog
from typer.testing import CliRunner

from wattserve import PlanInfeasibleError, plan
from wattserve.cli.app import app
from wattserve.core.catalog import load_catalog
from wattserve.core.cost import CostAssumptions, cost_rate
from wattserve.core.deployment import Deployment
from wattserve.core.fleet import DeploymentSpec, Fleet, kv_block_count, load_fleet
from wattserve.core.modelspec import load_model
from wattserve.core.params import Calibration
from wattserve.core.perf import PerfModel
from wattserve.core.sites import Site
from wattserve.core.workload import SLO, Request, Workload, load_workload
from wattserve.errors import ConfigError
from wattserve.plan.api import Plan
from wattserve.plan.capacity import Capacity, CapacityCache, Shape, replica_capacity
from wattserve.plan.fleetfile import write_fleet
from wattserve.plan.milp import solve
from wattserve.plan.problem import Flow, Limits, Option, Problem
from wattserve.plan.report import plan_html
from wattserve.plan.table import plan_text
from wattserve.simulate import simulate

EXAMPLES = Path(__file__).parent.parent / "examples"


def _cap(rate: float) -> Capacity:
    return Capacity(rate, 100.0, 100.0, 100.0, 0.0)


def _toy(caps: list[dict[int, float]], prices: list[float], rates: list[float]) -> Problem:
    """Options on one site with given capacities per flow and $/h; no energy costs."""
    cat = load_catalog()
    model = load_model("llama-3.1-8b")
    hws = ["h100-sxm", "a100-sxm-80gb", "l40s", "mi300x"]
    opts = [
        Option(
            f"o{j}",
            "s",
            Deployment(model, cat.device(hws[j])),
            Calibration().params_for(cat.device(hws[j])),
            prices[j],
            0.0,
            100.0,
            100.0,
            {q: _cap(r) for q, r in c.items()},
        )
        for j, c in enumerate(caps)
    ]
    flows = [Flow(f"c{q}", None, False, model.id, r, 100, 100, SLO()) for q, r in enumerate(rates)]
    site = Site("s", "datacenter", None, 0.0, 1.0)
    fleet = Fleet("t", {"s": site}, (), 0.0, (), ())
    return Problem(flows, {"s": site}, fleet, opts, [], Limits(), {}, CapacityCache())


def _brute(caps: list[dict[int, float]], prices: list[float], rates: list[float]) -> float:
    """The cheapest count vector for which some split of the flows fits (an LP per vector)."""
    best = float("inf")
    for counts in itertools.product(range(6), repeat=len(caps)):
        cost = sum(n * p for n, p in zip(counts, prices, strict=True))
        if cost >= best:
            continue
        pairs = [(q, j) for j, c in enumerate(caps) for q in c]
        a_eq = [[1.0 if q == qq else 0.0 for qq, _ in pairs] for q in range(len(rates))]
        a_ub = [[1.0 / caps[j][q] if jj == j else 0.0 for q, jj in pairs] for j in range(len(caps))]
        res = linprog(
            [0.0] * len(pairs), A_ub=a_ub, b_ub=list(counts), A_eq=a_eq, b_eq=rates, method="highs"
        )
        if res.status == 0:
            best = cost
    return best


@pytest.mark.parametrize(
    ("caps", "prices", "rates"),
    [
        ([{0: 3.0}, {0: 1.0}], [2.5, 1.0], [4.0]),
        ([{0: 3.0, 1: 1.0}, {0: 1.0, 1: 2.0}, {1: 4.0}], [3.0, 1.5, 4.5], [5.0, 6.0]),
        ([{0: 2.0, 1: 2.0}, {0: 5.0}, {1: 1.5}], [2.0, 4.1, 1.2], [7.0, 3.5]),
    ],
)
def test_program_matches_brute_force(
    caps: list[dict[int, float]], prices: list[float], rates: list[float]
) -> None:
    sol = solve(_toy(caps, prices, rates))
    assert sol.status == "optimal"
    assert sol.objective == pytest.approx(_brute(caps, prices, rates), rel=1e-6)


def test_heuristic_lies_between_its_bound_and_the_exact_optimum_it_cannot_beat() -> None:
    caps = [{0: 2.0, 1: 2.0}, {0: 5.0}, {1: 1.5}, {0: 1.0, 1: 3.0}]
    p = _toy(caps, [2.0, 4.1, 1.2, 2.2], [7.0, 3.5])
    exact = solve(p)
    rough = solve(p, heuristic_options=1)
    assert rough.status == "heuristic" and rough.gap is not None
    assert rough.bound <= exact.objective + 1e-9 <= rough.objective + 2e-9


def test_power_cap_respected_and_diagnosed() -> None:
    p = _toy([{0: 3.0}, {0: 1.0}], [2.5, 1.0], [4.0])
    site = Site("s", "datacenter", 250.0, 0.0, 1.0)
    p.sites = {"s": site}
    p.limits = Limits(headroom=0.1)
    sol = solve(p)
    peak = sum(p.options[j].peak_w * n for j, n in sol.replicas.items())
    assert peak <= 250.0 * 0.9 + 1e-9
    p.sites = {"s": Site("s", "datacenter", 150.0, 0.0, 1.0)}
    assert solve(p).status == "infeasible"


def _small_plan(**kw: object) -> object:
    return plan(
        EXAMPLES / "workload-multisite.yaml",
        sites=EXAMPLES / "sites-two-dc-edge.yaml",
        hardware=["h100-sxm", "a100-sxm-80gb", "l4", "jetson-agx-orin-64gb"],
        capacity="analytic",
        **kw,  # type: ignore[arg-type]
    )


def test_mix_never_costs_more_than_best_single_type_and_caps_hold() -> None:
    result = _small_plan()
    best = result.comparisons["best_single_type"]  # type: ignore[attr-defined]
    if best["feasible"]:
        assert result.usd_per_h <= best["usd_per_h"] + 1e-9  # type: ignore[attr-defined]
    for row in result.sites:  # type: ignore[attr-defined]
        if row.cap_w is not None:
            assert row.peak_w <= row.cap_w * 0.9 + 1e-6


def test_report_draws_sites_against_caps_candidates_and_the_comparison() -> None:
    result = cast(Plan, _small_plan())
    page = plan_html(result)
    assert_self_contained(page)
    peak, *_ = charts = specs(page)
    sites = {row.site: row for row in result.sites}
    assert peak["categories"] == list(sites)
    assert peak["series"]["power cap"] == [sites[s].cap_w for s in peak["categories"]]
    (candidates,) = [c for c in charts if c["kind"] == "scatter"]
    assert sorted(candidates["labels"]["in the plan"]) == sorted(result.replicas)
    assert candidates["labels"]["Pareto front"]
    (usd,) = [c for c in charts if "the mix" in c.get("categories", []) and "$" in c["series"]]
    assert usd["categories"][0] == "the mix" and usd["series"]["$"][0] == result.usd_per_h
    assert "infeasible" in usd["title"]  # the lowest-$/token device alone cannot serve it


def test_residency_never_violated() -> None:
    result = _small_plan()
    p = result.problem  # type: ignore[attr-defined]
    sol = result.solution  # type: ignore[attr-defined]
    assert any(f.local_only for f in p.flows)
    for (q, j), rate in sol.rates.items():
        f = p.flows[q]
        if f.local_only and rate > 0:
            assert p.options[j].site == f.origin
    for (q, k), rate in sol.hosted_rates.items():
        f = p.flows[q]
        assert not (f.local_only and rate > 0 and p.hosted[k].spec.site != f.origin)


def test_infeasible_power_names_the_site_and_the_change() -> None:
    with pytest.raises(PlanInfeasibleError) as exc:
        _small_plan(power_cap_w=100.0)
    assert "power cap binds" in str(exc.value) and "raise it from 100 W" in str(exc.value)
    # the throughput objective, where no replica fits under the caps, says the same (it
    # reported an "optimal" plan serving 0.00x the workload)
    with pytest.raises(PlanInfeasibleError) as exc:
        _small_plan(power_cap_w=100.0, objective="throughput")
    assert "serves any of the workload" in str(exc.value) and "raise it from 100 W" in str(
        exc.value
    )


def test_class_no_candidate_can_serve_is_infeasible_with_reason(tmp_path: Path) -> None:
    w = tmp_path / "w.yaml"
    w.write_text(
        "slos:\n  tight: {ttft_s: 0.001, tpot_s: 0.0001}\n"
        "classes:\n  - {name: impossible, rate_rps: 1, slo: tight, model: llama-3.1-8b}\n"
    )
    with pytest.raises(PlanInfeasibleError) as exc:
        plan(w, hardware=["h100-sxm"], capacity="analytic")
    assert "class impossible" in str(exc.value) and "on no candidate" in str(exc.value)


def test_devices_of_unknown_power_are_named_not_candidates(tmp_path: Path) -> None:
    """TPUs and Inferentia publish no TDP, the L40S no price: a plan lists why they are left
    out (the TPUs were a traceback from the solver, the L40S silently skipped)."""
    w = tmp_path / "w.yaml"
    w.write_text(
        "slos:\n  easy: {ttft_s: 5, tpot_s: 0.2}\n"
        "classes:\n  - {name: chat, rate_rps: 2, slo: easy, model: llama-3.1-8b}\n"
    )
    with pytest.raises(PlanInfeasibleError) as exc:
        plan(w, hardware=["tpu-v5e"], capacity="analytic")
    assert "power unknown: no tdp_w" in str(exc.value)
    p = plan(w, hardware=["tpu-v5e", "inferentia2", "l40s", "l4"], capacity="analytic")
    assert set(p.problem.excluded) == {"tpu-v5e", "inferentia2", "l40s"}
    assert "no tdp_w" in p.problem.excluded["tpu-v5e"] and "no price" in p.problem.excluded["l40s"]
    assert p.problem.options and all(o.deployment.hardware.id == "l4" for o in p.problem.options)


def test_malformed_workload_and_sites_rows_name_file_line_field(tmp_path: Path) -> None:
    w = tmp_path / "w.yaml"
    w.write_text("classes:\n  - name: a\n    rate_rps: -2\n")
    with pytest.raises(ConfigError) as exc:
        load_workload(w, default_model="llama-3.1-8b")
    assert f"{w}:3" in str(exc.value) and "classes[0].rate_rps" in str(exc.value)
    s = tmp_path / "s.yaml"
    s.write_text("sites:\n  dc:\n    power_cap_w: 100\n    carbon_g_per_kwh: lots\n")
    with pytest.raises(ConfigError) as exc2:
        plan(EXAMPLES / "workload-multisite.yaml", sites=s, hardware=["h100-sxm"])
    assert f"{s}:4" in str(exc2.value) and "sites.dc.carbon_g_per_kwh" in str(exc2.value)
    s.write_text("sites:\n  dc:\n    available: {h100-sxm: -1}\n")
    with pytest.raises(ConfigError, match=r"sites\.dc\.available"):
        plan(EXAMPLES / "workload-multisite.yaml", sites=s, hardware=["h100-sxm"])


def test_nan_limits_are_refused_not_silently_ignored() -> None:
    w = EXAMPLES / "workload-multisite.yaml"
    with pytest.raises(ConfigError, match="--budget-usd-per-h"):
        plan(w, hardware=["h100-sxm"], budget_usd_per_h=float("nan"), capacity="analytic")
    with pytest.raises(ConfigError, match="--power-cap"):
        plan(w, hardware=["h100-sxm"], power_cap_w=float("nan"), capacity="analytic")
    # --time-limit nan used to hang the solver instead of answering.
    bad = subprocess.run(
        [sys.executable, "-m", "wattserve", "plan", "--workload", str(w), "--time-limit", "nan"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--time-limit" in bad.stderr and "Traceback" not in bad.stderr


def test_simulated_capacity_holds_the_slo_and_is_cached() -> None:
    cat = load_catalog()
    hw = cat.device("h100-sxm")
    dep = Deployment(load_model("llama-3.1-8b"), hw)
    cache = CapacityCache()
    shape = Shape("llama-3.1-8b", 500, 100, 1.0, 0.05, 0.9)
    cap = replica_capacity(dep, Calibration().params_for(hw), shape, "simulated", cache)
    assert cap.rate_rps > 0
    again = replica_capacity(dep, Calibration().params_for(hw), shape, "simulated", cache)
    assert again == cap and cache.hits == 1


def test_simulated_capacity_of_short_requests_is_bounded_by_a_full_batch() -> None:
    """A replica emits no more tokens a second than its largest batch does, whatever the probe.
    The probe used to be 300 requests: a burst that one A100's 256-sequence batch absorbs at any
    rate, so short requests' capacity came out at the search's ceiling (64x the analytic bound,
    4,872 req/s of Llama-2-7B on one A100: 487,000 tokens/s)."""
    cat = load_catalog()
    for hw_id in ("a100-sxm-80gb", "h100-sxm"):
        hw = cat.device(hw_id)
        dep = Deployment(load_model("llama-2-7b"), hw)
        params = Calibration().params_for(hw)
        shape = Shape("llama-2-7b", 100, 100, 5.0, 0.12, 0.9)
        cap = replica_capacity(dep, params, shape, "simulated")
        full = PerfModel(dep, params).decode_step(dep.max_num_seqs, 150).time_s
        most = dep.max_num_seqs / full / shape.output_tokens  # req/s at a full batch, no prefill
        assert 0 < cap.rate_rps <= most, (hw_id, cap.rate_rps, most)


def test_a_simulated_capacity_holds_for_the_long_run() -> None:
    """The plan's capacity is a rate one replica sustains, not one a short probe survives: at
    13.0 req/s (the capacity a 3-residence probe found) one H100 serving Llama-2-7B 1000/250
    met its SLO for 150 s, then preempted and recomputed until no request met it."""
    hw = load_catalog().device("h100-sxm")
    dep = Deployment(load_model("llama-2-7b"), hw)
    params = Calibration().params_for(hw)
    shape = Shape("llama-2-7b", 1000, 250, 5.0, 0.04, 0.9)
    cap = replica_capacity(dep, params, shape, "simulated")
    assert 8.0 < cap.rate_rps < 12.0
    blocks, _ = kv_block_count(dep, params)
    fleet = Fleet(
        "one", {"s": Site("s", "datacenter", None, 0.0, 1.0)}, (), 0.0,
        (DeploymentSpec("d", "s", dep, 1, params, blocks, cost_rate(hw, 1, CostAssumptions())),),
        (),
    )  # fmt: skip
    rng = random.Random(5)
    t, reqs = 0.0, []
    for i in range(6000):  # about 9 minutes of arrivals
        t += rng.expovariate(cap.rate_rps)
        reqs.append(Request(i, t, 1000, 250, "llama-2-7b"))
    report, _ = simulate(fleet, Workload(reqs, {"default": SLO(5.0, 0.04, 0.9)}), "round_robin")
    assert report["completed"] == 6000 and report["slo_attainment"] >= 0.9


def test_two_models_on_one_layout_at_one_site_are_two_deployments(tmp_path: Path) -> None:
    """Option names left the model out: a plan of Llama-3.1-8B and Llama-2-7B on A100s wrote
    one deployment of Llama-2-7B with both models' replicas, and --verify derated the
    starved class from $5.37/h to $914.69/h."""
    w = tmp_path / "two.yaml"
    w.write_text(
        "generator: {kind: poisson, duration_s: 60}\n"
        "slos:\n  default: {ttft_s: 2.0, tpot_s: 0.1, percentile: 90}\n"
        "classes:\n"
        "  - {name: a, model: llama-3.1-8b, rate_rps: 8, prompt_tokens: 1000, output_tokens: 200}\n"
        "  - {name: b, model: llama-2-7b, rate_rps: 8, prompt_tokens: 1000, output_tokens: 200}\n"
    )
    result = plan(w, hardware=["a100-sxm-80gb"], capacity="analytic", verify=True)
    out = tmp_path / "plan.yaml"
    write_fleet(result, out, result.hardware_files)
    models = sorted(d.model.id for d in (s.deployment for s in load_fleet(out).deployments))
    assert models == ["llama-2-7b", "llama-3.1-8b"]
    assert sum(result.replicas.values()) == sum(result.solution.replicas.values())
    assert result.unmet == {}


def test_an_infeasible_round_ends_verification_with_the_last_plan(tmp_path: Path) -> None:
    """A budget the plan meets but a derated round would break: the last plan is printed and
    written, NOT VERIFIED says why no round could add capacity, exit status 4 (it was exit 3,
    'infeasible', and no plan). The power cap the explanation asks for is rounded up."""
    base = [
        sys.executable, "-m", "wattserve", "plan",
        "--workload", str(EXAMPLES / "workload-multisite.yaml"),
        "--sites", str(EXAMPLES / "sites-two-dc-edge.yaml"),
        "--hardware", "h100-sxm,a100-sxm-80gb,l4,jetson-agx-orin-64gb",
    ]  # fmt: skip
    # the first plan's own cost as the budget: every derated round needs more (without an
    # H100 the first plan misses two classes in simulation, so rounds are needed)
    missing = "a100-sxm-80gb,l4,jetson-agx-orin-64gb"
    first = plan(
        EXAMPLES / "workload-multisite.yaml",
        sites=EXAMPLES / "sites-two-dc-edge.yaml",
        hardware=missing.split(","),
        compare_with_single=False,
    )
    out = tmp_path / "p.yaml"
    r = subprocess.run(
        [*base[:-1], missing, "--verify", "--budget-usd-per-h", f"{first.usd_per_h + 5e-4:.4f}",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 4, r.stderr
    # the hosted API's share is planned within its rate limit's refusals (session 41), so the
    # derated round needs power at edge-sf as well; the budget is among what binds
    stop = r.stdout.split("no round can add capacity: ", 1)[1]
    assert "the budget binds" in stop and load_fleet(out)
    short = subprocess.run([*base, "--available", "l4=1"], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert short.returncode == 3 and "to at least 445 W" in short.stderr  # 444.4 W needed
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        (EXAMPLES / "sites-two-dc-edge.yaml")
        .read_text()
        .replace("power_cap_w: 300", "power_cap_w: 445")
    )
    ok = subprocess.run([*base[:-4], "--sites", str(sites), *base[-2:], "--available", "l4=1"],
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_written_plan_loads_in_simulate_and_meets_its_slo(tmp_path: Path) -> None:
    w = tmp_path / "w.yaml"
    w.write_text(
        "generator: {kind: poisson, duration_s: 60}\npolicy: slo\n"
        "slos:\n  chat: {ttft_s: 2.0, tpot_s: 0.1, percentile: 90}\n"
        "classes:\n  - name: chat\n    model: llama-3.1-8b\n    rate_rps: 6\n    slo: chat\n"
        "    prompt_tokens: {dist: fixed, value: 500}\n"
        "    output_tokens: {dist: fixed, value: 100}\n"
    )
    result = plan(w, hardware=["h100-sxm", "a100-sxm-80gb"], power_cap_w=5000, verify=True)
    out = tmp_path / "plan.yaml"
    write_fleet(result, out, result.hardware_files)
    fleet = load_fleet(out)
    wl = load_workload(w, default_model="llama-3.1-8b")
    report, _ = simulate(fleet, wl, "slo")
    assert report["rejected"] == 0
    assert report["slo_attainment"] >= 0.9
    for site in report["sites"].values():
        assert site["peak_power_w"] <= 5000
    assert result.unmet == {} and result.as_dict()["verified"] is True
    assert "verified: every class met its SLO" in plan_text(result)


def test_a_plan_that_verification_leaves_short_says_so_and_exits_4(tmp_path: Path) -> None:
    """--verify's rounds end with a class still under its SLO: the plan is written, its text
    and JSON say which class misses by how much, and the exit status (4) tells a script."""
    args = [
        sys.executable, "-m", "wattserve", "plan",
        "--workload", str(EXAMPLES / "workload-multisite.yaml"),
        "--sites", str(EXAMPLES / "sites-two-dc-edge.yaml"),
        # without an H100 the first plan misses two classes in simulation (with one, it meets
        # them at round 0 since the all-reduce's rate of 2026-12-05)
        "--hardware", "a100-sxm-80gb,l4,jetson-agx-orin-64gb", "--verify",
    ]  # fmt: skip
    out = tmp_path / "plan.yaml"
    p = subprocess.run(
        [*args, "--max-rounds", "0", "--out", str(out)], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert p.returncode == 4, p.stderr
    assert "NOT VERIFIED: " in p.stdout and "rounds of derating" not in p.stdout  # none ran
    assert " misses its SLO" in p.stdout and load_fleet(out).deployments
    j = subprocess.run([*args, "--max-rounds", "0", "--json"], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    d = json.loads(j.stdout)
    assert j.returncode == 4 and d["verified"] is False and len(d["verify_rounds"]) == 1
    for bad in ("-1", "51", "x", "1.5"):
        r = subprocess.run([*args, "--max-rounds", bad], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
        assert r.returncode == 2 and "--max-rounds" in r.stderr and "Traceback" not in r.stderr


def test_cli_plan_writes_a_fleet_and_json(tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    p = subprocess.run(
        [
            sys.executable, "-m", "wattserve", "plan",
            "--workload", str(EXAMPLES / "workload-multisite.yaml"),
            "--sites", str(EXAMPLES / "sites-two-dc-edge.yaml"),
            "--hardware", "h100-sxm,l4,jetson-agx-orin-64gb",
            "--capacity", "analytic", "--out", str(out), "--json",
            "--report", str(tmp_path / "plan.html"),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert (
        d["status"] == "optimal" and d["usd_per_h"] > 0 and "best_single_type" in d["comparisons"]
    )
    assert load_fleet(out).deployments
    assert specs((tmp_path / "plan.html").read_text())
    args = [a for a in p.args if a != "--json"]  # as rank, simulate and bench say it
    text = subprocess.run(args, capture_output=True, text=True, timeout=300).stdout
    assert f"fleet file written: {out}\nreport: {tmp_path / 'plan.html'}\n" in text
    bad = subprocess.run(
        [sys.executable, "-m", "wattserve", "plan", "--workload", "nope.yaml", "--headroom", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--headroom" in bad.stderr


def test_cli_plan_json_of_an_infeasible_plan_is_json_alone() -> None:
    # HiGHS printed an internal line from C to stdout during the elastic re-solve, before the
    # JSON (scipy 1.17); a real process, so that output at the file-descriptor level counts
    p = subprocess.run(
        [
            sys.executable, "-m", "wattserve", "plan",
            "--workload", str(EXAMPLES / "workload-multisite.yaml"),
            "--sites", str(EXAMPLES / "sites-two-dc-edge.yaml"),
            "--hardware", "h100-sxm,l4", "--capacity", "analytic", "--power-cap", "50", "--json",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 3, p.stderr
    d = json.loads(p.stdout)
    assert d["status"] == "infeasible" and any("power cap" in r for r in d["reasons"])
    assert "Highs" not in p.stdout + p.stderr


def test_cli_plan_out_that_cannot_be_written_names_the_flag(tmp_path: Path) -> None:
    p = subprocess.run(
        [
            sys.executable, "-m", "wattserve", "plan",
            "--workload", str(EXAMPLES / "workload-multisite.yaml"),
            "--sites", str(EXAMPLES / "sites-two-dc-edge.yaml"),
            "--hardware", "h100-sxm,l4,jetson-agx-orin-64gb",
            "--capacity", "analytic", "--out", str(tmp_path / "missing" / "plan.yaml"),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # was a FileNotFoundError traceback after solving
    assert p.returncode == 2 and "--out" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "text", ['{"model": "llama-3.1-8b", "notes": "mine"}', "[1, 2]", "not json at all\n"]
)
def test_cache_refuses_a_file_that_is_not_a_cache_and_leaves_it_alone(
    tmp_path: Path, text: str
) -> None:
    """`--cache` once overwrote any JSON file it was given (and rebuilt anything unreadable)."""
    mine = tmp_path / "mine.json"
    mine.write_text(text)
    args = ["plan", "--workload", str(EXAMPLES / "workload-multisite.yaml"), "--hardware", "l4"]
    result = CliRunner().invoke(app, [*args, "--capacity", "analytic", "--cache", str(mine)])
    assert result.exit_code == 2 and "'--cache'" in result.stderr and str(mine) in result.stderr
    assert mine.read_text() == text
    fresh = tmp_path / "caches" / "capacity.json"
    for hits in (0, 1):  # a new file is written, then read: the second plan hits it
        result = CliRunner().invoke(
            app, [*args, "--capacity", "analytic", "--cache", str(fresh), "--json"]
        )
        assert result.exit_code == 0, result.stderr
        assert (json.loads(result.stdout)["capacity_cache"]["hits"] > 0) == bool(hits)


def test_plan_split_follows_the_planned_shares() -> None:
    from wattserve.core.policy import Decision
    from wattserve.core.workload import Request
    from wattserve.plan.routing import PlanSplit

    class T:
        def __init__(self, name: str) -> None:
            self.name, self.site, self.load = name, "s", 0.0

    class V:
        def candidates(self, req: Request) -> list[T]:
            return [T("a"), T("b"), T("c")]

    split = PlanSplit({("chat", None, False, "default"): {"a": 3.0, "b": 1.0}})
    picks = [
        split.choose(Request(i, 0.0, 10, 10, "m", cls="chat"), V()).target  # type: ignore[arg-type]
        for i in range(400)
    ]
    assert picks.count("a") == 300 and picks.count("b") == 100
    other = split.choose(Request(0, 0.0, 10, 10, "m", cls="batch"), V())  # type: ignore[arg-type]
    assert isinstance(other, Decision) and other.target == "a"  # unplanned: least loaded


def test_workload_classes_carry_rates_lengths_and_percentile(tmp_path: Path) -> None:
    wl = load_workload(EXAMPLES / "workload-multisite.yaml", default_model="llama-3.1-8b")
    assert wl.duration_s == 120 and {r.cls for r in wl.requests} == {"chat", "summarise", "assist"}
    n = {c: sum(r.cls == c for r in wl.requests) / 120 for c in ("chat", "summarise", "assist")}
    assert n["chat"] == pytest.approx(6, rel=0.15) and n["assist"] == pytest.approx(1, rel=0.4)
    assert wl.slos["batch"].percentile == 0.9
    w = tmp_path / "w.yaml"
    w.write_text("classes:\n  - {name: a, rate_rps: 1}\n  - {name: b, weight: 2}\n")
    with pytest.raises(ConfigError, match="rate_rps to every class"):
        load_workload(w, default_model="llama-3.1-8b")


def test_simulate_reports_carbon_per_request_and_per_mtok(tmp_path: Path) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text(
        "sites:\n  dc: {power_cap_w: 5000, pue: 1.5, carbon_g_per_kwh: 400}\n"
        "deployments:\n  h: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}\n"
    )
    fleet = load_fleet(f)
    wl = load_workload(EXAMPLES / "workload-synthetic.yaml", default_model="llama-3.1-8b")
    wl.requests = [r for r in wl.requests[:50]]
    for r in wl.requests:
        r.origin = None
    report, _ = simulate(fleet, wl)
    grams = report["sites"]["dc"]["energy_j"] * 1.5 * 400 / 3.6e6
    assert report["carbon_g"] == pytest.approx(grams)
    assert report["carbon_g_per_request"] == pytest.approx(grams / report["completed"])
    assert report["carbon_g_per_mtok"] == pytest.approx(grams / report["output_tokens"] * 1e6)


def test_availability_per_site_and_overall_is_respected_and_diagnosed() -> None:
    p = _toy([{0: 3.0}, {0: 1.0}], [1.0, 2.0], [8.0])  # o0 (h100-sxm) is the cheap one
    p.sites = {"s": Site("s", "datacenter", None, 0.0, 1.0, None, (("h100-sxm", 1),))}
    sol = solve(p)
    assert sol.replicas.get(0, 0) <= 1 and sol.status == "optimal"
    p.limits = Limits(available=(("a100-sxm-80gb", 2),))
    assert solve(p).status == "infeasible"
    from wattserve.plan.milp import diagnose

    kinds = {b.kind for b in diagnose(p)}
    assert "available" in kinds


def test_throughput_fills_the_power_envelope_and_needs_a_bound(tmp_path: Path) -> None:
    p = _toy([{0: 3.0}, {0: 1.0}], [2.5, 1.0], [4.0])
    p.sites = {"s": Site("s", "datacenter", 1000.0, 0.0, 1.0)}
    p.limits = Limits(headroom=0.0)
    sol = solve(p, "throughput")
    # 10 replicas of 100 W fit; the best serves 3 req/s each: 30 req/s = 7.5x the workload
    assert sum(sol.replicas.values()) == 10 and sol.share == pytest.approx(7.5)
    with pytest.raises(ConfigError, match="unbounded"):
        plan(
            EXAMPLES / "workload-multisite.yaml",
            hardware=["h100-sxm"],
            objective="throughput",
            capacity="analytic",
        )


def test_energy_objective_draws_no_more_than_the_cost_plan() -> None:
    cheap = _small_plan()
    lean = _small_plan(objective="energy")
    assert lean.avg_w <= cheap.avg_w + 1e-6  # type: ignore[attr-defined]
    assert lean.usd_per_h >= cheap.usd_per_h - 1e-6  # type: ignore[attr-defined]


def test_software_and_maturity_filters_exclude_with_the_reason(tmp_path: Path) -> None:
    w = tmp_path / "w.yaml"
    w.write_text("classes:\n  - {name: a, rate_rps: 1, model: llama-3.1-8b}\n")
    # at least this mature a stack, as in rank: pytorch-native passes "plugin"
    with pytest.raises(PlanInfeasibleError, match="software vendor-sdk is less mature"):
        plan(w, hardware=["tenstorrent-p150"], require_software="pytorch-native")
    result = plan(w, hardware=["h100-sxm"], require_software="plugin", capacity="analytic")
    assert result.replicas
    for bad in ("cuda", "plugin,pytorch-native"):
        with pytest.raises(ConfigError, match="vendor-sdk < plugin < pytorch-native") as err:
            plan(w, hardware=["h100-sxm"], require_software=bad)
        assert err.value.field == "--require-software"
    result = plan(
        w,
        hardware=["h100-sxm", "tenstorrent-p150"],
        min_maturity="production",
        capacity="analytic",
        compare_with_single=False,
    )
    assert all(o.hardware.maturity == "production" for o in result.problem.options)
    assert "below --min-maturity" in result.problem.excluded["tenstorrent-p150"]


def test_a_single_type_that_serves_none_of_the_workload_is_no_comparison() -> None:
    """Under the throughput objective a plan of one device type that cannot serve every flow
    (an H100 alone at a 300 W edge site) serves 0x the workload; it was reported feasible,
    at $0.00/h and 0 W ('the mix gains -%'), and drawn as empty bars in the report."""
    from wattserve.plan.table import plan_text

    result = plan(
        EXAMPLES / "workload-multisite.yaml",
        sites=EXAMPLES / "sites-two-dc-edge.yaml",
        hardware=["h100-sxm", "a100-sxm-80gb", "l4", "jetson-agx-orin-64gb"],
        objective="throughput",
        capacity="analytic",
    )
    for c in result.comparisons.values():  # type: ignore[attr-defined]
        assert not c["feasible"] or c["served_share"] > 0, c
    text = plan_text(result)  # type: ignore[arg-type]
    assert "$0.00/h" not in text and "gains -%" not in text, text


def test_energy_and_carbon_plans_leave_hosted_apis_out_and_j_per_token_is_the_devices() -> None:
    """A hosted API publishes no joules or grams. Counted as none, the energy and carbon
    objectives filled it to its rate limit (2 req/s against the cost plan's 1.26) and the
    plan's J/token divided the devices' watts by the hosted tokens too."""
    kw: dict[str, object] = {
        "sites": EXAMPLES / "sites-two-dc-edge.yaml",
        # without an H100, the cost plan sends some traffic to GroqCloud
        "hardware": ["a100-sxm-80gb", "l4", "jetson-agx-orin-64gb"],
        "compare_with_single": False,
        "cache": CapacityCache(),  # the capacities simulated once, for the three plans
    }
    cost = plan(EXAMPLES / "workload-multisite.yaml", **kw)  # type: ignore[arg-type]
    assert cost.hosted  # the cost plan uses the hosted API: the checks below mean something
    d = cost.as_dict()
    assert d["j_per_token"] == pytest.approx(cost.avg_w / cost.device_tokens_per_s)
    assert cost.device_tokens_per_s < cost.output_tokens_per_s
    for objective in ("energy", "carbon"):
        lean = plan(EXAMPLES / "workload-multisite.yaml", objective=objective, **kw)  # type: ignore[arg-type]
        assert not lean.hosted, objective
        assert "publishes no energy" in lean.problem.excluded["groq-8b"]


def test_the_power_cap_flag_lowers_a_site_s_cap_and_never_raises_it() -> None:
    """`--power-cap 500` set the 300 W edge cabinet to 500 W, and the plan put a 400 W A100
    in it; it also took no units (`1kW` was refused where rank takes them)."""
    loose = plan(
        EXAMPLES / "workload-multisite.yaml",
        sites=EXAMPLES / "sites-two-dc-edge.yaml",
        hardware=["h100-sxm", "a100-sxm-80gb", "l4", "jetson-agx-orin-64gb"],
        power_cap_w=500.0,
        capacity="analytic",
        compare_with_single=False,
    )
    caps = {s.name: s.power_cap_w for s in loose.problem.sites.values()}
    assert caps["edge-sf"] == 300 and caps["dc-east"] == 500, caps
    assert all(row.peak_w <= (row.cap_w or 0) for row in loose.sites)
    r = CliRunner().invoke(
        app,
        ["plan", "--workload", str(EXAMPLES / "workload-multisite.yaml"), "--hardware",
         "h100-sxm", "--power-cap", "0.5kW", "--capacity", "analytic", "--json"],
    )  # fmt: skip
    assert r.exit_code in (0, 3), r.output  # 3: infeasible under 500 W, said so
    r = CliRunner().invoke(app, ["plan", "--workload", "w.yaml", "--power-cap", "1mW"])
    assert r.exit_code == 2 and "m is milli" in r.output, r.output


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"power_cap_w": 1e-3}, "power cap binds"),
        ({"budget_usd_per_h": 1e-300}, "the budget binds"),
        ({"power_cap_w": 500.0, "headroom": 0.999999}, "--headroom 0.999999"),
    ],
)
def test_a_tiny_limit_is_named_as_what_binds(
    tmp_path: Path, limits: dict[str, float], says: str
) -> None:
    """The elastic program weighed each relaxation relative to its limit: against a 1 mW cap
    or a 1e-300 $/h budget, leaving the class unserved was cheaper, and the plan blamed
    'residency, links or SLO'."""
    w = tmp_path / "w.yaml"
    w.write_text("classes:\n  - {name: c, rate_rps: 1.7, model: llama-3.1-8b}\n")
    with pytest.raises(PlanInfeasibleError) as err:
        plan(w, hardware=["h100-sxm", "l4"], capacity="analytic", **limits)  # type: ignore[arg-type]
    text = str(err.value)
    assert says in text and "residency, links or SLO" not in text, text


def test_a_budget_short_by_under_a_cent_says_by_how_much(tmp_path: Path) -> None:
    w = tmp_path / "w.yaml"
    w.write_text("classes:\n  - {name: c, rate_rps: 1.7, model: llama-3.1-8b}\n")
    cost = plan(w, hardware=["h100-sxm", "l4"], capacity="analytic").usd_per_h
    budget = cost - 0.001  # short by a tenth of a cent
    with pytest.raises(PlanInfeasibleError) as err:
        plan(w, hardware=["h100-sxm", "l4"], capacity="analytic", budget_usd_per_h=budget)
    assert "the budget binds" in str(err.value) and "(+$0.001/h)" in str(err.value), err.value


def test_the_command_line_plans_other_weight_formats() -> None:
    """The command line could plan bf16 only, where rank picks fp8 or int8 for the same
    devices: `--dtype` takes a list or auto, as the Python API's `dtypes`."""
    args = [
        "plan", "--workload", str(EXAMPLES / "workload-multisite.yaml"),
        "--sites", str(EXAMPLES / "sites-two-dc-edge.yaml"),
        "--hardware", "h100-sxm,l4,jetson-agx-orin-64gb", "--capacity", "analytic",
    ]  # fmt: skip
    for dtype, shown in (("fp8", "-fp8-"), ("bf16,w4a16", "-w4a16-"), ("auto", "-int8-")):
        r = CliRunner().invoke(app, [*args, "--dtype", dtype])
        assert r.exit_code == 0 and shown in r.output, (dtype, r.output)
    for bad in (",", "fp32", "bf17"):
        r = CliRunner().invoke(app, [*args, "--dtype", bad])
        assert r.exit_code == 2 and "--dtype" in r.output, (bad, r.output)


def test_carbon_per_request_is_over_what_the_sites_with_an_intensity_served(
    tmp_path: Path,
) -> None:
    """A site without carbon_g_per_kwh is left out of the grams, so its requests are left
    out of the per-request and per-token figures too (they were counted: understated)."""
    f = tmp_path / "fleet.yaml"
    f.write_text(
        "sites:\n  dc: {pue: 1.5, carbon_g_per_kwh: 400}\n  other: {pue: 1.2}\n"
        "deployments:\n  h: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}\n"
        "  o: {site: other, model: llama-3.1-8b, hardware: h100-sxm}\n"
    )
    wl = load_workload(EXAMPLES / "workload-synthetic.yaml", default_model="llama-3.1-8b")
    wl.requests = [r for r in wl.requests[:60]]
    for r in wl.requests:
        r.origin = None
    report, _ = simulate(load_fleet(f), wl, "round_robin")
    served = report["deployments"]
    assert served["h"]["requests"] > 0 and served["o"]["requests"] > 0
    grams = report["sites"]["dc"]["energy_j"] * 1.5 * 400 / 3.6e6
    assert report["carbon_g"] == pytest.approx(grams)
    assert report["carbon_g_per_request"] == pytest.approx(grams / served["h"]["requests"])
    tokens = served["h"]["output_tokens"]
    assert report["carbon_g_per_mtok"] == pytest.approx(grams / tokens * 1e6)
