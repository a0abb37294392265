"""`wattserve rank`: evidence that each row is `estimate` at a configuration within the SLO,
that exclusions say why, and that the envelope and Pareto marks are what they claim."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pages import assert_self_contained, specs
from typer.testing import CliRunner

from wattserve import CostAssumptions, Estimate, estimate, load_catalog
from wattserve.cli.app import app
from wattserve.core.configs import SearchSpace
from wattserve.core.modelspec import load_model
from wattserve.core.pareto import pareto_front
from wattserve.errors import ConfigError, UnknownNameError
from wattserve.rank import Ranking, Row, rank
from wattserve.rank.edge import edge_view
from wattserve.rank.envelope import groups_within


@pytest.fixture(scope="module")
def r8() -> Ranking:
    return rank("llama-3.1-8b", power_envelope_w=1e6, training_cost_usd=1e6, daily_tokens=1e9)


@pytest.fixture(scope="module")
def r70() -> Ranking:
    return rank("llama-3.1-70b", slo_ttft_s=1.0, slo_tpot_s=0.05, power_envelope_w=2.5e5, pue=1.3)


def _estimate_of(rk: Ranking, row: Row) -> Estimate:
    return estimate(
        rk.model,
        row.hardware,
        tp=row.tp,
        pp=row.pp,
        dtype=row.dtype,
        batch=row.batch,
        prompt_tokens=rk.prompt_tokens,
        output_tokens=rk.output_tokens,
        costs=CostAssumptions(pue=rk.pue),
    )


def test_every_row_is_estimate_for_the_configuration_it_reports(r8: Ranking, r70: Ranking) -> None:
    for rk in (r8, r70):
        devices = [r for r in rk.rows if r.kind == "device"]
        assert len(devices) > 20
        for row in devices:
            e = _estimate_of(rk, row)
            assert e.fits
            assert (row.devices, row.kv_dtype) == (e.devices, e.kv_dtype)
            assert row.ttft_s == e.ttft_s and row.tpot_s == e.tpot_s
            assert row.tokens_per_s == e.output_tokens_per_s
            assert row.usd_per_mtok == e.usd_per_mtok
            assert row.j_per_token == e.energy_j_per_token
            assert row.power_w == e.power_w


def test_the_slo_holds_for_every_ranked_row(r8: Ranking, r70: Ranking) -> None:
    for rk in (r8, r70):
        for row in rk.rows:
            for name, limit in (("ttft_s", rk.slo.ttft_s), ("tpot_s", rk.slo.tpot_s)):
                value = getattr(row, name)
                if value is None:  # only a hosted API may leave a term unpublished, and says so
                    assert row.kind == "hosted" and name in row.slo_unchecked
                else:
                    assert value <= limit


def test_each_device_is_at_its_best_configuration_on_the_sort_key() -> None:
    """Brute force: no batch of the chosen layout beats the chosen row on $/1M tokens."""
    rk = rank("llama-3.1-8b", hardware=["h100-sxm", "l4"], sort="usd_per_mtok")
    for row in rk.rows:
        for batch in range(1, row.batch + 40):
            e = estimate(
                rk.model,
                row.hardware,
                tp=row.tp,
                pp=row.pp,
                dtype=row.dtype,
                batch=batch,
                prompt_tokens=rk.prompt_tokens,
                output_tokens=rk.output_tokens,
            )
            within = e.fits and e.ttft_s is not None and e.ttft_s <= rk.slo.ttft_s
            within = within and e.tpot_s is not None and e.tpot_s <= rk.slo.tpot_s
            if within:
                assert e.usd_per_mtok is not None and row.usd_per_mtok is not None
                assert e.usd_per_mtok >= row.usd_per_mtok - 1e-12


def test_latency_sorts_pick_batch_one_and_order_the_rows() -> None:
    rk = rank("llama-3.1-8b", categories=["gpu"], sort="tpot_s")
    assert all(r.batch == 1 for r in rk.rows)
    tpots = [r.tpot_s for r in rk.rows]
    assert tpots == sorted(tpots)  # type: ignore[type-var]


def test_a_device_that_cannot_fit_is_excluded_with_the_reason(r70: Ranking) -> None:
    x = {e.hardware: e for e in r70.excluded}
    nano = x["jetson-orin-nano-8gb"]
    assert nano.why == "does-not-fit"
    assert "70.6 GB in int8" in nano.reason and "at least 10 device(s)" in nano.reason
    assert x["mythic-m1076"].why == "does-not-fit" and "882 chips" in x["mythic-m1076"].reason
    assert x["hailo-8"].why == "missing-figure" and "memory capacity" in x["hailo-8"].reason
    assert "jetson-orin-nano-8gb" not in {r.hardware for r in r70.rows}


def test_an_impossible_slo_gives_an_empty_ranking_and_the_closest_miss() -> None:
    rk = rank("llama-3.1-8b", slo_ttft_s=1e-4, slo_tpot_s=1e-4)
    assert rk.rows == ()
    misses = [x for x in rk.excluded if x.why == "misses-slo"]
    assert len(misses) > 25
    for x in misses:
        miss = x.closest_miss
        assert (miss is not None and "closest" in x.reason) or x.kind == "hosted"
        assert miss is not None
        assert max(miss.ttft_s or 0, miss.tpot_s or 0) > 1e-4
    h100 = next(x for x in misses if x.hardware == "h100-sxm")
    assert h100.closest_miss is not None and h100.closest_miss.batch == 1


def test_the_envelope_never_exceeds_and_holds_as_many_groups_as_fit(
    r8: Ranking, r70: Ranking
) -> None:
    for rk in (r8, r70):
        assert rk.power_envelope_w is not None
        counted = [r for r in rk.rows if r.envelope_groups is not None]
        assert len(counted) > 10
        for r in counted:
            assert r.peak_power_w is not None and r.tokens_per_s is not None
            n = r.envelope_groups
            assert n is not None
            assert n * r.peak_power_w * rk.pue <= rk.power_envelope_w
            assert (n + 1) * r.peak_power_w * rk.pue > rk.power_envelope_w
            assert r.envelope_tokens_per_s == n * r.tokens_per_s
    sorted_env = rank("llama-3.1-8b", power_envelope_w=1e6, sort="envelope_tokens_per_s")
    tps = [r.envelope_tokens_per_s for r in sorted_env.rows if r.envelope_tokens_per_s]
    assert tps == sorted(tps, reverse=True)


@given(
    envelope=st.floats(1.0, 1e9, allow_nan=False),
    power=st.floats(1e-3, 1e6, allow_nan=False),
    pue=st.floats(1.0, 3.0, allow_nan=False),
)
def test_groups_within_never_overshoots(envelope: float, power: float, pue: float) -> None:
    n = groups_within(envelope, power, pue)
    assert n * power * pue <= envelope
    assert (n + 1) * power * pue > envelope * (1 - 1e-12)


def _brute_front(points: list[tuple[float, float]]) -> set[int]:
    return {
        i
        for i, (a, b) in enumerate(points)
        if not any(
            (c <= a and d <= b) and (c < a or d < b) for j, (c, d) in enumerate(points) if j != i
        )
    }


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=30))
def test_pareto_front_is_exactly_the_non_dominated_set(pts: list[tuple[int, int]]) -> None:
    points = [(float(a), float(b)) for a, b in pts]  # small integers: many ties
    assert pareto_front(points) == _brute_front(points)


def test_rows_are_marked_on_both_fronts_exactly(r8: Ranking) -> None:
    both = [r for r in r8.rows if r.usd_per_mtok is not None and r.j_per_token is not None]
    front = _brute_front([(r.usd_per_mtok, r.j_per_token) for r in both])  # type: ignore[misc]
    assert {i for i, r in enumerate(both) if r.pareto_usd_j} == front
    assert front and not any(
        r.pareto_usd_j for r in r8.rows if r.usd_per_mtok is None or r.j_per_token is None
    )
    sp = [r for r in r8.rows if r.usd_per_mtok is not None and r.tokens_per_s_per_user]
    front_s = _brute_front([(r.usd_per_mtok, -r.tokens_per_s_per_user) for r in sp])  # type: ignore[misc, operator]
    assert {i for i, r in enumerate(sp) if r.pareto_usd_speed} == front_s


def test_hosted_apis_are_in_the_table_with_energy_unknown(r8: Ranking) -> None:
    hosted = {r.hardware: r for r in r8.rows if r.kind == "hosted"}
    assert set(hosted) == {"groq-cloud", "cerebras-cloud"}
    together = next(x for x in r8.excluded if x.hardware == "together")
    assert together.why == "missing-figure" and "output speed" in together.reason
    groq = hosted["groq-cloud"]
    assert groq.usd_per_mtok == pytest.approx((1020 * 0.05 + 129 * 0.08) / 129)
    assert groq.j_per_token is None and any("energy" in u for u in groq.unknown)
    assert "ttft_s" in groq.slo_unchecked
    assert "output_tokens_per_s" in groq.unverified


def test_a_device_without_a_price_is_ranked_with_dollars_unknown_and_why(r8: Ranking) -> None:
    nvl = next(r for r in r8.rows if r.hardware == "h100-nvl")
    assert nvl.usd_per_mtok is None and nvl.crossover_days is None
    assert any("usd_per_hour or list_price_usd" in u for u in nvl.unknown)
    assert nvl.j_per_token is not None and nvl.tokens_per_s_per_kw is not None


def test_a_rented_device_without_power_figures_keeps_its_dollars(r8: Ranking) -> None:
    tpu = next(r for r in r8.rows if r.hardware == "tpu-v6e")
    assert tpu.cost_basis == "rent" and tpu.usd_per_mtok is not None and tpu.usd_per_mtok > 0
    assert tpu.j_per_token is None and any("tdp_w" in u for u in tpu.unknown)


def test_training_crossover_days(r8: Ranking) -> None:
    for r in r8.rows:
        if r.usd_per_mtok is not None:
            assert r.crossover_days == pytest.approx(1e6 / (1e9 / 1e6 * r.usd_per_mtok))


def test_software_and_maturity_filters_list_what_they_drop() -> None:
    rk = rank("llama-3.1-8b", require_software="plugin", min_maturity="production")
    kept = {r.hardware: r for r in rk.rows}
    assert all(r.software in ("plugin", "pytorch-native", "hosted API") for r in kept.values())
    filtered = {x.hardware: x.reason for x in rk.excluded if x.why == "filtered"}
    assert "groq-lpu" in filtered and "vendor-sdk" in filtered["groq-lpu"]
    assert "tpu7x" in filtered and "pilot" in filtered["tpu7x"]


def test_unknown_names_give_the_closest_matches() -> None:
    with pytest.raises(UnknownNameError, match=r"llama-3\.1-8b"):
        rank("llama-3.1-8")
    with pytest.raises(UnknownNameError, match="h100-sxm"):
        rank("llama-3.1-8b", hardware=["h100"])


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"slo_ttft_s": 0.0}, "--slo-ttft"),
        ({"slo_tpot_s": -0.1}, "--slo-tpot"),
        ({"slo_tpot_s": math.nan}, "--slo-tpot"),
        ({"power_envelope_w": 0.0}, "--power-envelope"),
        ({"power_envelope_w": -5.0}, "--power-envelope"),
        ({"power_envelope_w": 1e30}, "--power-envelope"),  # counting its groups never ended
        ({"gpu_memory_utilization": 1e-320}, "--gpu-memory-utilization"),  # capacities overflow
        ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization"),
        ({"prompt_tokens": 0}, "--prompt-tokens"),
        ({"output_tokens": -3}, "--output-tokens"),
        ({"pue": 0.0}, "--pue"),
        ({"top": 0}, "--top"),
        ({"training_cost_usd": 1e6}, "--daily-tokens"),
        ({"training_cost_usd": -1.0, "daily_tokens": 1e9}, "--training-cost-usd"),
        ({"training_cost_usd": 1.0, "daily_tokens": 0}, "--daily-tokens"),
        ({"training_cost_usd": 1.0, "daily_tokens": 1e-320}, "--daily-tokens"),  # 1/0
        ({"training_cost_usd": 1e300, "daily_tokens": 1e9}, "--training-cost-usd"),  # inf days
        ({"sort": "speed"}, "--sort"),
        ({"sort": "envelope_tokens_per_s"}, "--sort"),
        ({"dtype": "fp4"}, "--dtype"),
        ({"categories": ["gpus"]}, "--category"),
        ({"require_software": "cuda"}, "--require-software"),
        ({"min_maturity": "beta"}, "--min-maturity"),
    ],
)
def test_bad_values_name_the_flag(kwargs: dict[str, object], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        rank("llama-3.1-8b", hardware=["l4"], **kwargs)  # type: ignore[arg-type]


def test_a_hardware_file_device_without_a_price_or_power_is_still_ranked(tmp_path: Path) -> None:
    f = tmp_path / "hw.yaml"
    f.write_text(
        "devices:\n  toy:\n    name: Toy\n    category: gpu\n    software: plugin\n"
        "    maturity: pilot\n    source: test\n    memory_gb: 48\n    mem_bw_gbps: 1000\n"
        "    peak_tflops: {bf16: 200}\n"
    )
    rk = rank("llama-3.1-8b", hardware=["toy"], catalog=load_catalog([f]))
    (row,) = rk.rows
    assert row.usd_per_mtok is None and row.j_per_token is None and row.tokens_per_s
    assert row.envelope_groups is None


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattserve", "rank", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_json_report_and_envelope(tmp_path: Path) -> None:
    out = tmp_path / "rank.html"
    p = run(
        "--model",
        "llama-3.1-70b",
        "--hardware",
        "h100-sxm,mi300x,groq-cloud,jetson-orin-nano-8gb",
        "--power-envelope",
        "1MW",
        "--pue",
        "1.2",
        "--json",
        "--report",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["power_envelope_w"] == 1e6 and d["pue"] == 1.2
    assert {r["hardware"] for r in d["rows"]} == {"h100-sxm", "mi300x", "groq-cloud"}
    assert [x["hardware"] for x in d["excluded"]] == ["jetson-orin-nano-8gb"]
    page = out.read_text()
    assert_self_contained(page)
    usd_j, usd_speed, usd, joules = specs(page)
    front = sorted(r["hardware"] for r in d["rows"] if r["pareto_usd_j"])
    assert sorted(usd_j["labels"]["Pareto front"]) == front and usd_j["log"]
    assert usd_speed["labels"]["hosted-api"] == ["groq-cloud"]  # a hosted API has no J/token
    by_device = dict(zip(usd["categories"], usd["series"]["$ per 1M output tokens"], strict=True))
    assert by_device == {r["hardware"]: r["usd_per_mtok"] for r in d["rows"]}
    assert "groq-cloud" in joules["title"]  # unknown, said so rather than drawn as 0
    assert "jetson-orin-nano-8gb" in page  # the excluded device and why


def test_cli_text_and_edge() -> None:
    p = run("--model", "llama-3.1-8b", "--category", "gpu,edge-module", "--top", "3")
    assert p.returncode == 0, p.stderr
    assert "more rows; drop --top" in p.stdout and "Excluded" in p.stdout
    p = run("--edge")
    assert p.returncode == 0, p.stderr
    assert "jetson-agx-orin-64gb" in p.stdout and "mythic-m1076" in p.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "llama-3.1-8b", "--slo-ttft", "0"], "--slo-ttft"),
        (["--model", "llama-3.1-8b", "--power-envelope", "lots"], "--power-envelope"),
        (["--model", "llama-3.1-8b", "--power-envelope", "-1MW"], "--power-envelope"),
        (["--model", "llama-3.1-8b", "--prompt-tokens", "-5"], "--prompt-tokens"),
        (["--model", "llama-3.1-8b", "--hardware", "h100"], "h100-sxm"),
        (["--model", "llama-3.18b"], "llama-3.1-8b"),
        ([], "--model"),
        (
            ["--model", "llama-3.1-8b", "--hardware", "l4", "--report", "/no/such/dir/r.html"],
            "--report",
        ),
        (["--model", "llama-3.1-8b", "--top", "-1"], "--top"),
        (["--model", "llama-2-70b", "--prompt-tokens", "4000", "--output-tokens", "200"], "4096"),
        (["--model", "llama-3.1-8b", "--pue", "0"], "--pue"),
        (["--model", "llama-3.1-8b", "--daily-tokens", "1e9"], "--training-cost-usd"),
        (["--edge", "--hardware", "jetson"], "jetson-"),
        (["--model", "llama-3.1-8b", "--hardware", ",,"], "--hardware"),  # was: no filter
        (["--model", "llama-3.1-8b", "--category", ",,"], "--category"),  # was: no filter
    ],
)
def test_cli_bad_input_is_one_line_naming_the_flag(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["rank", *args])
    assert result.exit_code == 2 and needle in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_request_past_the_context_window_is_refused_and_the_edge_view_skips_such_models() -> None:
    with pytest.raises(ConfigError, match="context window of 4096") as err:
        rank("llama-2-70b", prompt_tokens=4000, output_tokens=200)
    assert err.value.field == "--prompt-tokens"
    rows = edge_view(load_catalog(), prompt_tokens=5000, output_tokens=200)
    held = {r.model for r in rows if r.model}
    assert held and all((load_model(m).max_context or 0) >= 5200 for m in held)


def test_a_comma_separated_string_is_a_list_in_the_python_api() -> None:
    rk = rank("llama-3.1-8b", hardware="h100-sxm, l4", categories="gpu")
    assert {r.hardware for r in rk.rows} == {"h100-sxm", "l4"}


def test_hand_checked_largest_batch_and_envelope(tmp_path: Path) -> None:
    """A toy device with round figures, engine terms pinned: the batch the search reports is the
    one the roofline arithmetic gives by hand, and so is the envelope count."""
    from wattserve import Calibration, EngineParams, load_model
    from wattserve.core.stepbasis import elementwise_bytes_per_token

    f = tmp_path / "toy.yaml"
    f.write_text(
        "devices:\n  toy:\n    name: Toy\n    category: gpu\n    software: plugin\n"
        "    maturity: pilot\n    source: test\n    memory_gb: 1000\n    mem_bw_gbps: 2000\n"
        "    peak_tflops: {bf16: 10000}\n    tdp_w: 1000\n    idle_w: 100\n"
        "    usd_per_hour: 2.0\n"
    )
    params = EngineParams(source="pinned for this test")
    calib = Calibration(params={"toy": params})
    rk = rank(
        "llama-3.1-8b",
        hardware=["toy"],
        dtype="bf16",
        slo_ttft_s=1000.0,
        slo_tpot_s=0.02,
        power_envelope_w=1e5,
        pue=1.25,
        space=SearchSpace(max_tp=1, max_devices=1),
        calibration=calib,
        catalog=load_catalog([f]),
    )
    (row,) = rk.rows
    m = load_model("llama-3.1-8b")
    rate = 2000e9 * params.eff_memory  # bytes/s
    context = 1020 + 129 // 2  # estimate's decode context
    fixed = params.overhead_step_s + m.num_layers * params.overhead_layer_s
    per_seq = m.kv_bytes_per_token("bf16") * (context + 1) / rate + params.overhead_seq_s
    per_seq += elementwise_bytes_per_token(m, 1) * params.elementwise_factor / rate
    budget = 0.02 - m.weight_bytes("bf16") / rate - fixed
    assert row.decode_bound == "memory"
    assert row.batch == math.floor(budget / per_seq)  # 89 with these figures
    assert row.peak_power_w is not None
    assert row.envelope_groups == math.floor(1e5 / (row.peak_power_w * 1.25))


def test_rank_says_which_devices_its_calibration_covers(tmp_path: Path) -> None:
    """A calibration of other devices would leave every row at the defaults without a word."""
    f = tmp_path / "c.json"
    f.write_text('{"version": 1, "hardware": {"local-cpu": {}}}')
    r = rank("llama-3.1-8b", hardware=["h100-sxm", "a100-sxm-80gb"], calibration=f)
    assert any("terms for local-cpu only, none of the ranked devices" in n for n in r.notes)
    f.write_text('{"version": 1, "hardware": {"h100-sxm": {"eff_memory": 0.7}}}')
    r = rank("llama-3.1-8b", hardware=["h100-sxm", "a100-sxm-80gb"], calibration=f)
    assert any(n.startswith("engine terms calibrated for h100-sxm;") for n in r.notes)


def test_gpu_memory_utilization_is_every_devices_share_as_in_estimate() -> None:
    """Issue #12 item 10 names estimate, rank and the fleet file; rank had no such setting.
    At a fifth of each H100's memory, the 70B's fp8 weights need eight devices, not four."""
    default = rank("llama-3.1-70b", hardware="h100-sxm")
    tight = rank("llama-3.1-70b", hardware="h100-sxm", gpu_memory_utilization=0.2)
    assert default.rows[0].devices < tight.rows[0].devices == 8
    assert tight.to_dict()["gpu_memory_utilization"] == 0.2
    row = tight.rows[0]
    e = estimate(
        "llama-3.1-70b", "h100-sxm", tp=row.tp, pp=row.pp, dtype=row.dtype, batch=row.batch,
        gpu_memory_utilization=0.2,
    )  # fmt: skip
    assert e.max_batch is not None and row.batch <= e.max_batch


def test_numbers_that_round_up_to_the_next_power_of_ten_print_whole() -> None:
    """999.6 in three figures is 1e+03 under Python's `g` format: a table prints it as 1,000."""
    from wattserve.rank.text import _num

    assert _num(999.6) == "1,000"
    assert _num(999.4) == "999" and _num(1234.5) == "1,234" and _num(0.00012) == "0.00012"


def test_an_empty_ranking_says_why_not_that_the_slo_was_missed() -> None:
    """It said 'No device or hosted API meets the SLO' when the filters chose nothing and when
    the one device chosen could not hold the model (an audit, 2026-12-04)."""
    from wattserve.cli.app import app

    none = CliRunner().invoke(
        app, ["rank", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--category", "asic"]
    )
    assert "--hardware and --category leave none" in none.output and "SLO (" not in none.output
    small = CliRunner().invoke(
        app, ["rank", "--model", "llama-3.1-70b", "--hardware", "mythic-m1076"]
    )
    assert "why each was left out is below" in small.output and "does-not-fit" in small.output


def test_edge_refuses_flags_it_would_ignore_and_names_a_window_too_short() -> None:
    """--edge ignored --model, --category, --sort, --top and --power-envelope without a word,
    and at 100,000 + 100,000 tokens blamed every part's missing peaks, not the context windows
    (an audit, 2026-12-04)."""
    from wattserve.cli.app import app

    r = CliRunner().invoke(app, ["rank", "--edge", "--model", "llama-3.1-8b", "--top", "3"])
    assert r.exit_code == 2 and "--model, --top do not apply" in r.output
    long = CliRunner().invoke(
        app, ["rank", "--edge", "--prompt-tokens", "100000", "--output-tokens", "100000"]
    )
    assert "no catalog model's context window holds 100000 + 100000 tokens" in long.output


def test_four_bit_weights_on_a_device_without_an_int4_peak() -> None:
    """The Orin Nano (8 GB, no int4 peak) holds an 8B model only in 4-bit weights. `auto` tries
    the formats a device has a peak for and said only that it needed a second device; rank
    refused `--dtype w4a16` (issue #12 item 6: 4-bit weights in 16-bit math run on any device),
    and the edge view showed a 1B model as the largest it holds."""
    nano = "jetson-orin-nano-8gb"
    auto = rank("llama-3.1-8b", hardware=nano)
    (left,) = auto.excluded
    assert left.why == "does-not-fit" and left.reason.endswith("try --dtype w4a16"), left.reason
    (row,) = rank("llama-3.1-8b", hardware=nano, dtype="w4a16").rows
    assert row.dtype == "w4a16" and row.tpot_s is not None and row.tpot_s < 0.2
    # the weights move at 4.25 bits: 4.3 GB against 16.1 in bf16, read once a step
    assert "4.3 GB" in left.reason
    edge = {r.hardware: r for r in edge_view(load_catalog(), prompt_tokens=1020, output_tokens=129)}
    assert edge[nano].dtype == "w4a16" and (edge[nano].params_b or 0) > 7
    assert edge["hailo-10h"].dtype == "int4"  # it has an int4 peak: int4 math, not w4a16
    p = run("--model", "llama-3.1-8b", "--hardware", "l4", "--dtype", "w8a16")
    assert p.returncode == 0 and "w8a16" in p.stdout, p.stderr
