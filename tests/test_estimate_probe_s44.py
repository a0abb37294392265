"""A session-44 probe of estimate, rank, profile and catalog with hostile input. What it
confirmed, each now refused or fixed: a token budget per step below the batch taken by
estimate and rank (a fleet file refuses it, as vLLM does), rank picking batches the budget
could not run, and estimate's TTFT timing a prefill as one step whatever the budget (16x below
simulate's at 16 tokens a step); a hosted API taking --context and ignoring it, owned-cost
flags changing nothing under a rent without a word, and --json dropping --explain; profile
--threads taken where no llama.cpp engine is timed; catalog --min-memory-gb reading no SRAM
and passing devices of unknown capacity. Each test fails on the code before the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve import estimate, rank
from wattserve.cli.app import app
from wattserve.core.cost import CostAssumptions
from wattserve.errors import ConfigError
from wattserve.profile.run import run_profile


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_estimate_refuses_a_budget_below_its_batch_by_the_fleet_files_rule() -> None:
    with pytest.raises(ConfigError) as info:
        estimate("llama-3.1-8b", "h100-sxm", batch=64, max_batched_tokens=16)
    assert info.value.field == "max_batched_tokens"
    assert "max_batched_tokens (16) is below batch (64)" in info.value.detail
    assert "vLLM refuses this too" in info.value.detail  # the fleet file's words: one rule
    code, out = _cli("estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
                     "--batch", "64", "--max-batched-tokens", "16")  # fmt: skip
    assert code == 2 and "--max-batched-tokens" in out and "vLLM refuses this too" in out
    # the engine's default budget holds a batch to 8,192 sequences too; the batch is named
    with pytest.raises(ConfigError) as info:
        estimate("llama-3.1-8b", "h100-sxm", batch=8193)
    assert info.value.field == "batch"
    assert estimate("llama-3.1-8b", "h100-sxm", batch=16, max_batched_tokens=16).fits


def test_estimates_max_batch_is_no_more_than_the_budget_admits() -> None:
    e = estimate("llama-3.1-8b", "h100-sxm", max_batched_tokens=4)
    assert e.max_batch == 4 and e.memory is not None and e.memory.max_batch is not None
    assert e.memory.max_batch > 4  # the memory alone would hold more


def test_rank_searches_only_batches_the_budget_admits() -> None:
    # a prompt of 1,020 tokens one a step: seconds of prefill, held to a TTFT SLO that allows it
    ranked = rank("llama-3.1-8b", hardware=["h100-sxm", "l4"], max_batched_tokens=1, slo_ttft_s=60)
    assert ranked.rows and all(r.batch == 1 for r in ranked.rows)
    ranked = rank("llama-3.1-8b", hardware=["h100-sxm", "cerebras-wse3"], max_batched_tokens=16)
    assert ranked.rows and all(r.batch <= 16 for r in ranked.rows)


@pytest.mark.parametrize(("budget", "prompt"), [(16, 512), (100, 1000), (8192, 300)])
def test_estimates_ttft_is_simulates_for_one_request_on_an_idle_replica(
    tmp_path: Path, budget: int, prompt: int
) -> None:
    """The prefill in the budget's chunks, as the engine runs it: at 16 tokens a step a
    512-token prompt read 14.5 ms here and 234 ms in `simulate` (one step of every token)."""
    fleet = tmp_path / "f.yaml"
    fleet.write_text(
        "name: one\nsites:\n  dc: {kind: datacenter}\ndeployments:\n  h100:\n    site: dc\n"
        "    model: llama-3.1-8b\n    hardware: h100-sxm\n"
        f"    max_batched_tokens: {budget}\n    max_num_seqs: 1\n"
    )
    trace = tmp_path / "t.jsonl"
    trace.write_text(f'{{"arrival_s": 0, "prompt_tokens": {prompt}, "output_tokens": 8}}\n')
    code, out = _cli("simulate", "--fleet", str(fleet), "--trace", str(trace), "--json")
    assert code == 0, out
    simulated = json.loads(out)["ttft_s"]["p50"]
    e = estimate("llama-3.1-8b", "h100-sxm", prompt_tokens=prompt, output_tokens=8,
                 max_batched_tokens=budget)  # fmt: skip
    assert e.ttft_s == pytest.approx(simulated, rel=0.02)


def test_a_hosted_api_refuses_a_decode_context_as_it_refuses_the_other_device_flags() -> None:
    with pytest.raises(ConfigError) as info:
        estimate("llama-3.1-8b", "groq-cloud", context=100_000)
    assert info.value.field == "context"
    code, out = _cli("estimate", "--model", "llama-3.1-8b", "--hardware", "groq-cloud",
                     "--context", "100000")  # fmt: skip
    assert code == 2 and "--context" in out and "hosted API" in out


def test_owned_cost_flags_under_a_rent_say_they_do_not_apply() -> None:
    owned_flags = ("--pue", "5", "--electricity-usd-per-kwh", "1000", "--lifetime-years", "0.1")
    code, out = _cli("estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", *owned_flags)
    assert code == 0 and "(rent)" in out
    assert "pue 5, electricity 1000 $/kWh, lifetime 0.1 years not applied" in out
    code, plain = _cli("estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm")
    assert code == 0 and "not applied" not in plain  # nothing given, nothing said
    # priced as owned, they apply and no note says otherwise
    owned = estimate("llama-3.1-8b", "rtx-4090", costs=CostAssumptions(pue=2.0))
    assert owned.cost_basis == "own" and not any("not applied" in a for a in owned.assumptions)


def test_json_with_explain_is_refused_rather_than_explain_dropped() -> None:
    code, out = _cli("estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
                     "--json", "--explain")  # fmt: skip
    assert code == 2 and "--explain" in out and "--json" in out


def _measures(line: str) -> None:
    raise AssertionError(f"measured before refusing: {line}")


@pytest.mark.parametrize(
    ("device", "engine", "llama", "timed"),
    [
        ("cpu", "numpy", True, "--engine numpy times the NumPy decoder"),
        ("gpu", "auto", True, "--device gpu times the GPU alone"),
        ("cpu", "auto", False, "--engine auto times the NumPy decoder"),
    ],
)
def test_profile_refuses_threads_where_no_llama_cpp_engine_is_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, engine: str, llama: bool,
    timed: str,
) -> None:  # fmt: skip
    # `--engine numpy --threads 8` measured for two minutes and never used the 8
    monkeypatch.setattr("wattserve.profile.llama.llama_available", lambda: llama)
    with pytest.raises(ConfigError) as info:
        run_profile(tmp_path / "pf", device, quick=True, log=_measures, engine=engine, threads=2)
    assert info.value.field == "--threads" and timed in info.value.detail
    assert not (tmp_path / "pf").exists()


def test_profile_threads_refusal_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["profile", "--quick", "--threads", "2", "-o", str(tmp_path / "pf"), "--device", "gpu"]
    )
    assert result.exit_code == 2 and result.stdout == ""  # refused before measuring
    assert result.stderr.startswith("error: field '--threads': ")


def _listed(*args: str) -> list[str]:
    code, out = _cli("catalog", *args, "--json")
    assert code == 0, out
    return [d["id"] for d in json.loads(out)]


def test_catalog_min_memory_counts_sram_as_estimate_does() -> None:
    e = estimate("llama-3.1-8b", "cerebras-wse3")
    assert e.memory is not None and e.memory.capacity_gb == pytest.approx(44.0)
    assert "cerebras-wse3" in _listed("--min-memory-gb", "40")  # it was left out as 0 GB
    assert "cerebras-wse3" not in _listed("--min-memory-gb", "45")
    code, out = _cli("catalog", "--category", "wafer-scale")
    assert code == 0 and re.search(r"cerebras-wse3\s+wafer-scale\s+44\s", out)


def test_catalog_min_memory_leaves_out_a_device_that_publishes_no_capacity() -> None:
    every = _listed()
    assert {"hailo-8", "mythic-m1076"} <= set(every)  # no memory_gb, no sram_mb
    at_zero = _listed("--min-memory-gb", "0")
    assert "hailo-8" not in at_zero and "mythic-m1076" not in at_zero
    assert "h100-sxm" in at_zero and "groq-lpu" in at_zero


@pytest.mark.parametrize("budget", [16, 512, 2048, 8192])
@pytest.mark.parametrize(("batch", "prompt"), [(1, 128), (3, 700), (8, 2048), (64, 2048), (5, 1)])
def test_the_prefills_fast_paths_agree_with_its_steps(batch: int, prompt: int, budget: int) -> None:
    """batch_prefill's one-step path and costing each shape of step once, and rank's time-only
    batch_prefill_s, give what costing every step of prefill_chunks gives."""
    import dataclasses
    import math

    from wattserve.core.catalog import load_catalog
    from wattserve.core.deployment import Deployment
    from wattserve.core.modelspec import load_model
    from wattserve.core.params import EngineParams
    from wattserve.core.perf import PerfModel, prefill_chunks

    dep = Deployment(load_model("llama-3.1-8b"), load_catalog().device("h100-sxm"))
    pm = PerfModel(dataclasses.replace(dep, max_batched_tokens=budget), EngineParams())
    steps = [pm.step(*s) for s in prefill_chunks(batch, prompt, budget)]
    whole = math.fsum(s.time_s for s in steps)
    assert pm.batch_prefill(batch, prompt).time_s == pytest.approx(whole, rel=1e-12)
    assert pm.batch_prefill(batch, prompt).energy_j == pytest.approx(
        math.fsum(s.energy_j for s in steps), rel=1e-12
    )
    assert pm.batch_prefill_s(batch, prompt) == pytest.approx(whole, rel=1e-12)
