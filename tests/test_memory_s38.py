"""The memory fit as engines allocate: whole KV blocks a sequence, the fullest pipeline stage
(the embedding on the first, the LM head on the last), and no elementwise traffic shown for
parts that keep activations in their compute arrays."""

from __future__ import annotations

import pytest

from wattserve import estimate, load_model
from wattserve.core.catalog import load_catalog
from wattserve.core.deployment import Deployment
from wattserve.core.fleet import kv_block_count
from wattserve.core.memory import KV_BLOCK_TOKENS, memory_fit, memory_layout, pipeline_layers
from wattserve.core.params import EngineParams
from wattserve.estimate.explain import explain


def test_a_sequence_holds_whole_kv_blocks() -> None:
    """vLLM allocates 16-token blocks, and the last output token is never fed back: 100 + 10
    tokens hold 109, in 7 blocks (112 tokens). The fit counted 110 tokens, so estimate's max
    batch for short sequences was 2-12% above what the engine (and `simulate`, which counts
    blocks) can hold."""
    kv_token = load_model("llama-3.1-8b").kv_bytes_per_token("bf16")
    e = estimate("llama-3.1-8b", "h100-sxm", batch=1, prompt_tokens=100, output_tokens=10)
    assert e.memory is not None
    assert e.memory.kv_cache_gb == pytest.approx(112 * kv_token / 1e9)
    at = {
        n: estimate("llama-3.1-8b", "h100-sxm", prompt_tokens=n - 10, output_tokens=10).max_batch
        for n in (97, 98, 110, 113, 114)
    }
    assert at[98] == at[110] == at[113]  # 97-112 tokens held: 7 blocks each
    assert at[97] is not None and at[98] is not None and at[97] > at[98]  # 96: 6 blocks
    assert at[114] is not None and at[114] < at[113]  # 113 held: 8 blocks
    # a prompt and one output token hold the prompt alone: 16 + 1 is one block, as the
    # engine holds it (the fit had said two, and half the batch)
    blocks, _ = kv_block_count(
        Deployment(load_model("llama-3.1-8b"), load_catalog().device("h100-sxm")), EngineParams()
    )
    one = estimate("llama-3.1-8b", "h100-sxm", prompt_tokens=16, output_tokens=1, batch=1)
    # the memory's own limit (estimate's max_batch is also held to the 8,192-token budget)
    assert one.memory is not None and one.memory.max_batch is not None
    assert one.memory.max_batch >= blocks


def test_the_engine_and_the_fit_agree_on_the_blocks_a_batch_needs() -> None:
    """`simulate`'s replica holds kv_block_count blocks; the largest batch `estimate` says fits
    (one-token prefills, so the activations are the engine's max_batched_tokens' or less) is
    what those blocks hold at the request's blocks a sequence."""
    dep = Deployment(load_model("llama-3.1-8b"), load_catalog().device("l4"))
    params = EngineParams()
    blocks, why = kv_block_count(dep, params)
    assert not why
    for tokens in (100, 1000, 4000):
        fit = memory_fit(dep, params, 1, tokens, dep.max_batched_tokens)
        per_seq = -(-tokens // KV_BLOCK_TOKENS)
        assert fit.max_batch is not None
        # the fit sizes the prefill's activations with the batch; the engine reserves them
        # at max_batched_tokens: the engine never holds more than the fit allows
        assert blocks // per_seq <= fit.max_batch


@pytest.mark.parametrize(
    ("layers", "stages", "expected"),
    [
        (80, 3, (27, 27, 26)),  # the remainder to the stages before the last
        (32, 4, (8, 8, 8, 8)),
        (126, 4, (31, 32, 32, 31)),
        (5, 4, (1, 1, 2, 1)),
    ],
)
def test_layers_are_split_over_stages_as_vllm_splits_them(
    layers: int, stages: int, expected: tuple[int, ...]
) -> None:
    """vLLM's get_pp_indices: an even share, one more each for the stages before the last."""
    assert pipeline_layers(layers, stages) == expected
    assert sum(expected) == layers


def test_the_fullest_pipeline_stage_sets_the_weights_per_device() -> None:
    """Llama 3.1 70B over three H100s: vLLM gives its 80 layers as 27, 27 and 26, and the
    first stage holds the embedding too (1.05B parameters): 48.3 GB a device where an even
    split said 47.0. A model that ties its embedding keeps a copy on the last stage (Llama
    3.2 1B over two: 1.50 GB a device, not 1.24). The fullest stage's KV cache is its layers'
    share."""
    m = load_model("llama-3.1-70b")
    h100 = load_catalog().device("h100-sxm")
    lay = memory_layout(Deployment(m, h100, pp=3), EngineParams())
    embed = m.vocab_size * m.hidden_size
    per_layer = (m.total_params - 2 * embed - m.hidden_size) / m.num_layers  # untied
    assert lay.weights == pytest.approx((embed + 27 * per_layer) * 2)  # bf16
    assert lay.weights / 1e9 == pytest.approx(48.31, abs=0.01)
    assert m.weight_bytes("bf16") / 3 / 1e9 == pytest.approx(47.04, abs=0.01)
    assert lay.kv_split == pytest.approx(80 / 27)
    # two stages of 40 layers, embedding on one and head on the other: the even split holds
    even = memory_layout(Deployment(m, h100, pp=2), EngineParams())
    assert even.weights == pytest.approx(m.weight_bytes("bf16") / 2)
    assert even.kv_split == pytest.approx(2.0)
    tied = load_model("llama-3.2-1b")
    assert tied.tied_embeddings
    two = memory_layout(Deployment(tied, load_catalog().device("l4"), pp=2), EngineParams())
    assert two.weights / 1e9 == pytest.approx(1.50, abs=0.01)
    assert tied.weight_bytes("bf16") / 2 / 1e9 == pytest.approx(1.24, abs=0.01)


def test_a_compute_in_memory_part_shows_no_elementwise_traffic() -> None:
    """On Mythic's analog arrays no memory traffic is modelled, but `--explain` put the
    elementwise kernels' bytes on the memory line as moved (and 0 GB on their own line)."""
    e = estimate("smollm2-135m", "mythic-m1076", dtype="int8", pp=2, batch=1)
    assert e.fits and e.prefill_cost is not None
    assert e.perf is not None
    kv_bytes = e.perf.kv_bytes_per_token * 512  # the prompt's cache: the weights stay put
    assert e.prefill_cost.bytes == pytest.approx(kv_bytes)  # was 29x that
    prefill = explain(e).split("prefill (")[1].split("decode step (")[0]
    assert f"({kv_bytes / 1e9:.4g} GB moved)" in prefill  # 0.0118, not 0.3391
    assert "(0 GB: norms" in prefill
