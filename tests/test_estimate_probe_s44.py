"""A session-44 probe of estimate, rank, profile and catalog with hostile input. What it
confirmed, each now refused or fixed: a token budget per step below the batch taken by
estimate and rank (a fleet file refuses it, as vLLM does), and rank picking batches the budget
could not run. Each test fails on the code before the fix."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from wattserve import estimate, rank
from wattserve.cli.app import app
from wattserve.errors import ConfigError


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
    ranked = rank("llama-3.1-8b", hardware=["h100-sxm", "l4"], max_batched_tokens=1)
    assert ranked.rows and all(r.batch == 1 for r in ranked.rows)
    ranked = rank("llama-3.1-8b", hardware=["h100-sxm", "cerebras-wse3"], max_batched_tokens=16)
    assert ranked.rows and all(r.batch <= 16 for r in ranked.rows)
