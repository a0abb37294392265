from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve import ConfigError, UnknownNameError, estimate, load_model
from wattserve.cli.app import app

JSON_KEYS = {
    "prefill_s",
    "prefill_j",
    "decode_step_s",
    "decode_step_j",
    "ttft_s",
    "tpot_s",
    "output_tokens_per_s",
    "power_w",
    "energy_j_per_token",
    "usd_per_mtok",
    "fits",
    "max_batch",
    "devices",
    "memory_gb",
}


def test_json_form_has_every_documented_key() -> None:
    d = estimate("llama-3.1-8b", "h100-sxm", batch=8).to_dict()
    assert set(d) >= JSON_KEYS
    assert set(d["memory_gb"]) >= {"weights", "kv_cache", "activations", "total", "capacity"}
    assert d["fits"] is True and d["devices"] == 1


def test_derived_figures_are_consistent() -> None:
    e = estimate("llama-3.1-8b", "h100-sxm", batch=8, prompt_tokens=1000, output_tokens=200)
    assert e.ttft_s == e.prefill_s and e.tpot_s == e.decode_step_s
    assert e.context_tokens == 1100
    # the prefill samples each sequence's first token; 199 decode steps make the other 199
    total_s = e.prefill_s + 199 * e.decode_step_s  # type: ignore[operator]
    total_j = e.prefill_j + 199 * e.decode_step_j  # type: ignore[operator]
    assert e.output_tokens_per_s == pytest.approx(8 * 200 / total_s)
    assert e.energy_j_per_token == pytest.approx(total_j / 1600)
    assert e.power_w == pytest.approx(total_j / total_s)
    # rented at $2.99/h: dollars are time x price
    assert e.usd_per_mtok == pytest.approx(total_s * 2.99 / 3600 / 1600 * 1e6)
    assert e.cost_basis == "rent"
    one = estimate("llama-3.1-8b", "h100-sxm", batch=8, prompt_tokens=1000, output_tokens=1)
    assert one.output_tokens_per_s == pytest.approx(8 / one.prefill_s)  # the prefill alone


def test_larger_batch_raises_throughput_and_lowers_energy_per_token() -> None:
    small = estimate("llama-3.1-8b", "h100-sxm", batch=1)
    big = estimate("llama-3.1-8b", "h100-sxm", batch=64)
    assert big.output_tokens_per_s > 10 * small.output_tokens_per_s  # type: ignore[operator]
    assert big.energy_j_per_token < small.energy_j_per_token / 5  # type: ignore[operator]


def test_owned_hardware_costs_capex_plus_electricity() -> None:
    from wattserve import CostAssumptions

    e = estimate("llama-3.1-8b", "rtx-4090", batch=4, costs=CostAssumptions("own", 0.10, 1.2, 3))
    total_s = e.prefill_s + 127 * e.decode_step_s  # type: ignore[operator]
    total_j = e.prefill_j + 127 * e.decode_step_j  # type: ignore[operator]
    usd = total_s * 1599 / (3 * 365.25 * 86400) + total_j * 1.2 * 0.10 / 3.6e6
    assert e.cost_basis == "own"
    assert e.usd_per_mtok == pytest.approx(usd / (4 * 128) * 1e6)


def test_does_not_fit_says_why_and_makes_up_no_numbers() -> None:
    e = estimate("llama-3.1-405b", "l4")
    assert e.fits is False
    assert "weights" in e.reason and "tensor or pipeline parallel" in e.reason
    assert e.tpot_s is None and e.energy_j_per_token is None and e.usd_per_mtok is None


def test_batch_over_max_batch_does_not_fit() -> None:
    e = estimate("llama-3.1-70b", "h100-sxm", tp=2, prompt_tokens=4000, output_tokens=1000)
    assert e.fits and e.max_batch is not None
    over = estimate(
        "llama-3.1-70b",
        "h100-sxm",
        tp=2,
        batch=e.max_batch + 1,
        prompt_tokens=4000,
        output_tokens=1000,
    )
    assert not over.fits and str(e.max_batch) in over.reason


def test_sram_only_parts_pipeline_across_as_many_chips_as_needed() -> None:
    e = estimate("llama-2-70b", "groq-lpu", dtype="fp16")
    m = load_model("llama-2-70b")
    need = m.weight_bytes("fp16") + (512 + 128) * m.kv_bytes_per_token("fp16")
    assert e.devices == math.ceil(need / (230e6 * 0.9))
    assert 600 <= e.devices <= 700
    assert e.fits and e.tpot_s is not None
    small = estimate("llama-3.1-8b", "cerebras-wse3")
    assert small.devices == 1
    assert estimate("llama-3.1-70b", "cerebras-wse3").devices == 4


def test_compute_in_memory_says_how_many_chips_and_gives_numbers_when_they_fit() -> None:
    big = estimate("llama-3.1-8b", "mythic-m1076", dtype="int8")
    assert not big.fits and "80M weights" in big.reason
    small = estimate("smollm2-135m", "mythic-m1076", dtype="int8", pp=2)
    assert small.fits and small.tpot_s is not None and small.power_w is not None
    assert small.power_w <= 2 * 3.0 + 1e-9  # two chips at 3 W


def test_missing_figures_are_reported_not_zeroed() -> None:
    e = estimate("llama-3.2-1b", "hailo-10h", dtype="int4")
    assert e.fits and e.tpot_s is None
    assert any("mem_bw_gbps" in m for m in e.missing)
    tpu = estimate("llama-3.1-8b", "tpu-v6e")
    assert tpu.tpot_s is not None and tpu.power_w is None
    assert any("tdp_w" in m for m in tpu.missing)
    no_fp8 = estimate("llama-3.1-8b", "a100-sxm-80gb", dtype="fp8")
    assert no_fp8.tpot_s is None and any("no fp8 peak" in m for m in no_fp8.missing)


def test_provider_estimate_uses_token_prices() -> None:
    e = estimate("llama-3.1-8b", "groq-cloud", prompt_tokens=1000, output_tokens=100)
    assert e.usd_per_mtok == pytest.approx((1000 * 0.05 + 100 * 0.08) / 100)
    assert e.tpot_s == pytest.approx(1 / 750)
    assert e.energy_j_per_token is None


def test_unknown_names_and_bad_numbers() -> None:
    with pytest.raises(UnknownNameError, match="h100-sxm"):
        estimate("llama-3.1-8b", "h100sxm")
    with pytest.raises(ConfigError, match="batch"):
        estimate("llama-3.1-8b", "h100-sxm", batch=0)
    with pytest.raises(ConfigError, match="dtype"):
        estimate("llama-3.1-8b", "h100-sxm", dtype="fp12")
    # wrong types from API callers were AttributeErrors ('NoneType' has no attribute 'lower')
    for kwargs, field in (
        ({"model": None}, "model"),
        ({"hardware": None}, "hardware"),
        ({"dtype": None}, "dtype"),
        ({"kv_dtype": 8}, "kv_dtype"),
        ({"catalog": 0}, "catalog"),
        ({"costs": 0}, "costs"),
    ):
        args = {"model": "llama-3.1-8b", "hardware": "h100-sxm", **kwargs}
        with pytest.raises(ConfigError) as err:
            estimate(**args)  # type: ignore[arg-type]
        assert err.value.field == field
    assert estimate("llama-3.1-8b", "GROQ-CLOUD").hardware == "groq-cloud"  # any case


def test_weight_only_quantisation_moves_4_bit_weights_and_computes_at_16_bit() -> None:
    bf16 = estimate("llama-3.1-8b", "h100-sxm", batch=1, prompt_tokens=2048)
    w4 = estimate("llama-3.1-8b", "h100-sxm", dtype="w4a16", batch=1, prompt_tokens=2048)
    assert w4.kv_dtype == "bf16"
    # decode is memory-bound: weights move at 4.25 bits instead of 16
    assert w4.memory.weights_gb == pytest.approx(bf16.memory.weights_gb * 4.25 / 16)  # type: ignore[union-attr]
    assert w4.decode_cost.memory_s < 0.4 * bf16.decode_cost.memory_s  # type: ignore[union-attr]
    # the matrix math runs at the bf16 peak either way
    assert w4.prefill_cost.compute_s == pytest.approx(bf16.prefill_cost.compute_s)  # type: ignore[union-attr]
    assert w4.max_batch > bf16.max_batch  # freed memory goes to the KV cache
    w8a8 = estimate("llama-3.1-8b", "h100-sxm", dtype="w8a8", batch=1, prompt_tokens=2048)
    assert w8a8.prefill_cost.compute_s < 0.6 * bf16.prefill_cost.compute_s  # type: ignore[union-attr]


def test_4_bit_weights_run_on_a_device_with_only_an_fp32_peak(tmp_path: Path) -> None:
    from wattserve import load_catalog

    f = tmp_path / "hw.yaml"
    f.write_text(
        "devices:\n  box:\n    name: a CPU\n    vendor: local\n    category: cpu\n"
        "    software: pytorch-native\n    maturity: production\n    year: 2026\n"
        "    source: test\n    peak_tflops: {fp32: 0.2}\n    mem_bw_gbps: 20\n"
        "    memory_gb: 16\n    tdp_w: 65\n"
    )
    e = estimate("smollm2-135m", "box", dtype="w4a16", catalog=load_catalog([f]))
    assert e.fits and e.tpot_s is not None and e.tpot_s > 0
    assert any("fp32 peak" in a for a in e.assumptions)


def test_gpu_memory_utilization_sets_the_kv_room() -> None:
    low = estimate("llama-3.1-8b", "h100-sxm", gpu_memory_utilization=0.5)
    high = estimate("llama-3.1-8b", "h100-sxm", gpu_memory_utilization=0.95)
    default = estimate("llama-3.1-8b", "h100-sxm")
    assert low.max_batch < default.max_batch < high.max_batch
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ConfigError) as err:
            estimate("llama-3.1-8b", "h100-sxm", gpu_memory_utilization=bad)
        assert err.value.field == "gpu_memory_utilization"


@pytest.mark.parametrize("tp", [3, 1_000_000])
def test_tensor_parallelism_must_divide_the_attention_heads(tp: int) -> None:
    """vLLM refuses a TP degree that does not divide the heads; so does every deployment here
    (it once ran with 'weights 0 GB' at tp=1,000,000)."""
    with pytest.raises(ConfigError, match="32 do not divide by") as err:
        estimate("llama-3.1-8b", "h100-sxm", tp=tp)
    assert err.value.field == "tp"


@pytest.mark.parametrize(
    ("hardware", "prompt", "output"), [("h100-sxm", 4000, 200), ("groq-cloud", 512, 4096)]
)
def test_a_request_longer_than_the_context_window_is_refused(
    hardware: str, prompt: int, output: int
) -> None:
    """llama-2-7b's config.json says 4096 positions: an engine refuses a longer request, so a
    figure for one (the estimate once gave it) means nothing."""
    with pytest.raises(ConfigError, match="context window of 4096") as err:
        estimate("llama-2-7b", hardware, prompt_tokens=prompt, output_tokens=output)
    assert err.value.field == "prompt_tokens"
    with pytest.raises(ConfigError) as err:
        estimate("llama-2-7b", "h100-sxm", context=5000)
    assert err.value.field == "context"
    assert estimate("llama-2-7b", "h100-sxm", prompt_tokens=4000, output_tokens=96).fits


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--prompt-tokens", "4000", "--output-tokens", "200"], "--prompt-tokens"),
        (["--context", "5000"], "--context"),
        (["--batch", "0"], "--batch"),
    ],
)
def test_cli_errors_name_the_flag(args: list[str], flag: str) -> None:
    result = CliRunner().invoke(
        app, ["estimate", "--model", "llama-2-7b", "--hardware", "h100-sxm", *args]
    )
    assert result.exit_code == 2 and f"field '{flag}'" in result.stderr, result.stderr
