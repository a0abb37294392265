"""`--max-batched-tokens` in estimate and rank: the engine's token budget per step, whose
activations the memory fit reserves, set as a fleet file's deployment sets it (vLLM's
--max-num-batched-tokens). Before, estimate and rank always reserved 8,192 tokens' worth, so a
run measured at another budget could not be modelled."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from wattserve import estimate, rank
from wattserve.core.deployment import MAX_BATCHED_TOKENS
from wattserve.errors import ConfigError

SEVENTY = dict(
    tp=2, batch=3, prompt_tokens=1000, output_tokens=100, gpu_memory_utilization=0.84
)  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattserve", *args], capture_output=True, text=True, timeout=120
    )


def test_a_smaller_budget_leaves_room_for_the_kv_cache() -> None:
    default = estimate("llama-3.1-70b", "h100-sxm", **SEVENTY)  # type: ignore[arg-type]
    assert not default.fits and "a step of 8192 tokens" in default.reason
    assert default.max_batched_tokens == 8192
    small = estimate("llama-3.1-70b", "h100-sxm", max_batched_tokens=512, **SEVENTY)  # type: ignore[arg-type]
    assert small.fits and small.max_batch == 6 and small.max_batched_tokens == 512
    large = estimate("llama-3.1-70b", "h100-sxm", max_batched_tokens=65536, **SEVENTY)  # type: ignore[arg-type]
    assert not large.fits and large.memory is not None
    assert large.memory.activations_gb > default.memory.activations_gb  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [0, -5, True, 2.5, "512", MAX_BATCHED_TOKENS + 1, 10**30])
def test_a_budget_that_is_no_token_count_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        estimate("llama-3.1-8b", "h100-sxm", max_batched_tokens=bad)  # type: ignore[arg-type]
    assert info.value.field == "max_batched_tokens"


def test_the_flags_name_themselves_and_a_hosted_api_refuses_one() -> None:
    for args, field in (
        (("estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
          "--max-batched-tokens", "0"), "--max-batched-tokens"),
        (("estimate", "--model", "llama-3.1-8b", "--hardware", "groq-cloud",
          "--max-batched-tokens", "512"), "--max-batched-tokens"),
        (("rank", "--model", "llama-3.1-8b", "--max-batched-tokens", "99999999"),
         "--max-batched-tokens"),
        (("rank", "--edge", "--max-batched-tokens", "512"), "--max-batched-tokens"),
    ):  # fmt: skip
        r = _cli(*args)
        assert r.returncode == 2 and f"field '{field}'" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_rank_applies_it_to_every_device_and_reports_it() -> None:
    hw = ["h100-sxm", "a100-sxm-80gb"]
    # a TTFT limit memory reaches first: a smaller budget also cuts the prefill into more
    # steps, each reading the weights again (TTFT as the engine runs it, since 2026-12-07)
    default = rank("llama-3.1-70b", hardware=hw, slo_ttft_s=600)
    small = rank("llama-3.1-70b", hardware=hw, max_batched_tokens=512, slo_ttft_s=600)
    assert small.max_batched_tokens == 512 and default.max_batched_tokens is None
    by_hw = {r.hardware: r for r in default.rows}
    for row in small.rows:  # more memory for the KV cache: never a smaller batch at one layout
        if row.devices == by_hw[row.hardware].devices:
            assert row.batch >= by_hw[row.hardware].batch
    r = _cli("rank", "--model", "llama-3.1-70b", "--hardware", ",".join(hw), "--json",
             "--max-batched-tokens", "512")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["max_batched_tokens"] == 512
    e = _cli("estimate", "--model", "llama-3.1-70b", "--hardware", "h100-sxm", "--tp", "2",
             "--batch", "3", "--prompt-tokens", "1000", "--output-tokens", "100", "--json",
             "--gpu-memory-utilization", "0.84", "--max-batched-tokens", "512")  # fmt: skip
    assert e.returncode == 0, e.stderr
    out = json.loads(e.stdout)
    assert out["fits"] is True and out["max_batched_tokens"] == 512 and out["max_batch"] == 6
