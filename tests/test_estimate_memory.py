"""`estimate`'s memory fit, max batch and bound label: each agrees with what the step itself
does and with what `rank` uses."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from wattserve import ConfigError, estimate, load_model, rank
from wattserve.cli.app import app
from wattserve.core.catalog import load_catalog
from wattserve.core.deployment import Deployment
from wattserve.core.memory import memory_fit
from wattserve.core.params import EngineParams

A100 = {"prompt_tokens": 512, "output_tokens": 128}


def test_a_decode_context_longer_than_the_request_is_held_in_memory() -> None:
    """A step at 100,000 tokens of context reads 256 x 100,000 tokens of KV (3,372 GB moved)
    while the fit held 256 x 256 tokens (8.59 GB) and said it fits."""
    e = estimate(
        "llama-3.1-8b", "h100-sxm", batch=256, prompt_tokens=128, output_tokens=128,
        context=100_000,
    )  # fmt: skip
    kv_token = load_model("llama-3.1-8b").kv_bytes_per_token("bf16")
    assert e.memory is not None
    assert e.memory.kv_cache_gb == pytest.approx(256 * 100_000 * kv_token / 1e9)
    assert not e.fits and e.decode_step_s is None
    assert e.max_batch is not None and 0 < e.max_batch < 256
    assert f"largest batch that fits is {e.max_batch}" in e.reason
    kw = {"prompt_tokens": 128, "output_tokens": 128, "context": 100_000}
    assert estimate("llama-3.1-8b", "h100-sxm", batch=e.max_batch, **kw).fits
    assert not estimate("llama-3.1-8b", "h100-sxm", batch=e.max_batch + 1, **kw).fits
    # a context within the request holds no more than the request itself
    short = estimate("llama-3.1-8b", "h100-sxm", batch=8, prompt_tokens=128, output_tokens=128)
    within = estimate(
        "llama-3.1-8b", "h100-sxm", batch=8, prompt_tokens=128, output_tokens=128, context=200
    )
    assert within.memory == short.memory and within.max_batch == short.max_batch


def test_a_decode_context_shorter_than_the_prompt_is_refused() -> None:
    with pytest.raises(ConfigError, match="shorter than the 8000-token prompt") as err:
        estimate("llama-3.1-8b", "h100-sxm", prompt_tokens=8000, context=10)
    assert err.value.field == "context"
    assert estimate("llama-3.1-8b", "h100-sxm", prompt_tokens=512, context=512).fits  # the first
    result = CliRunner().invoke(
        app,
        ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
         "--prompt-tokens", "8000", "--context", "10"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "field '--context'" in result.stderr and "Traceback" not in result.output


def test_max_batch_does_not_depend_on_the_batch_asked_for() -> None:
    """At --batch 1 it said 666 (batch 1's activations), and --batch 666 did not fit (655)."""
    first = estimate("llama-3.1-8b", "a100-sxm-80gb", batch=1, **A100)
    most = first.max_batch
    assert most is not None and most > 100
    for batch in (7, 64, most, most + 1, 2 * most):
        e = estimate("llama-3.1-8b", "a100-sxm-80gb", batch=batch, **A100)
        assert e.max_batch == most and e.fits == (batch <= most), batch
    over = estimate("llama-3.1-8b", "a100-sxm-80gb", batch=most + 1, **A100)
    assert over.reason.endswith(f"the largest batch that fits is {most}")


@pytest.mark.parametrize(
    ("hardware", "prompt", "output", "utilisation"),
    [("a100-sxm-80gb", 512, 128, 0.9), ("h100-sxm", 137, 187, 0.9), ("l4", 4000, 100, 0.95)],
)
def test_max_batch_is_the_largest_batch_that_passes_the_fit_rank_uses(
    hardware: str, prompt: int, output: int, utilisation: float
) -> None:
    """`rank` checks a batch with memory_fit(dep, params, B, P + O, max_batched_tokens): the
    max batch is the last B it passes, from any batch's fit."""
    dep = Deployment(load_model("llama-3.1-8b"), load_catalog().device(hardware))
    params = EngineParams(memory_utilization=utilisation)

    def fit(b: int):  # type: ignore[no-untyped-def]
        return memory_fit(dep, params, b, prompt + output, dep.max_batched_tokens)

    most = fit(1).max_batch
    assert most > 0
    assert fit(most).fits and not fit(most + 1).fits
    assert {fit(b).max_batch for b in (1, 2, most // 3, most, most + 1, 10 * most)} == {most}


def test_estimate_and_rank_label_the_decode_bound_alike() -> None:
    """Overhead (0.56 ms) over compute (0.277 ms): estimate said compute, rank overhead."""
    e = estimate(
        "llama-3.1-8b", "groq-lpu", dtype="int8", batch=8, prompt_tokens=1020, output_tokens=129
    )
    d = e.decode_cost
    assert d is not None
    assert d.overhead_s > max(d.compute_s, d.memory_s + d.elementwise_s, d.comm_s)
    assert e.decode_bound == "overhead" == e.to_dict()["decode_bound"] == d.bound
    (row,) = rank("llama-3.1-8b", hardware="groq-lpu", dtype="int8").rows
    same = estimate(
        "llama-3.1-8b", "groq-lpu", tp=row.tp, pp=row.pp, dtype=row.dtype, batch=row.batch,
        prompt_tokens=1020, output_tokens=129,
    )  # fmt: skip
    assert row.decode_bound == same.decode_bound


def test_explain_names_the_same_bound() -> None:
    from wattserve.estimate.explain import explain

    e = estimate(
        "llama-3.1-8b", "groq-lpu", dtype="int8", batch=8, prompt_tokens=1020, output_tokens=129
    )
    decode_line = explain(e).split("decode step (")[1].splitlines()[0]
    assert decode_line.endswith("bound by overhead") and e.decode_bound == "overhead"


@pytest.mark.parametrize(
    ("model", "hardware", "tp", "share"),
    [
        ("llama-3.1-70b", "h100-sxm", 2, 0.84),  # no room: estimate said max batch 3
        ("llama-3.1-70b", "h100-sxm", 2, 0.86),
        ("llama-3.1-8b", "h100-sxm", 1, 0.2),  # estimate said 4; a replica holds none
        ("llama-3.1-8b", "h100-sxm", 1, 0.22),
        ("llama-3.1-8b", "l4", 1, 0.9),
    ],
)
def test_estimate_holds_the_sequences_a_fleets_replica_holds(
    model: str, hardware: str, tp: int, share: float
) -> None:
    """estimate and rank reserve the activations of a step of max_batched_tokens, as a fleet's
    replica does (vLLM's profile run): they had reserved only a step of the batch's own
    prompts, and said a model fitted whose requests simulate and serve refused (a probe,
    2026-12-06)."""
    from wattserve.core.fleet import kv_block_count
    from wattserve.core.memory import KV_BLOCK_TOKENS

    prompt, output = 1000, 100
    e = estimate(
        model,
        hardware,
        tp=tp,
        gpu_memory_utilization=share,
        prompt_tokens=prompt,
        output_tokens=output,
    )
    dep = Deployment(load_model(model), load_catalog().device(hardware), tp=tp)
    blocks, _ = kv_block_count(dep, EngineParams(memory_utilization=share))
    per_sequence = -(-(prompt + output - 1) // KV_BLOCK_TOKENS)
    assert e.max_batch == blocks // per_sequence, (e.max_batch, blocks, per_sequence)
    assert e.fits == (blocks >= per_sequence)
