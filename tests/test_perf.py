"""The PerfModel against cases computed by hand from its formulas (docs/model.md)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from wattserve import Deployment, EngineParams, ModelSpec, PerfModel, load_catalog, load_model
from wattserve.core.params import DATASHEET_PEAKS

TINY = ModelSpec(
    id="tiny",
    hidden_size=1024,
    num_layers=2,
    num_heads=8,
    num_kv_heads=8,
    head_dim=128,
    intermediate_size=4096,
    vocab_size=1000,
)
# per layer: attention 4 * 1024^2 = 4,194,304; MLP 3 * 1024 * 4096 = 12,582,912; norms 2,048
TOTAL_PARAMS = 2 * (4_194_304 + 12_582_912 + 2_048) + 2 * 1000 * 1024 + 1024
FLOPS_PER_TOKEN = 2 * (2 * (4_194_304 + 12_582_912) + 1000 * 1024)
KV_BYTES_PER_TOKEN = 2 * 2 * 8 * 128 * 2  # K and V, 2 layers, 8 heads x 128, bf16
ATTN_FLOPS_PER_CONTEXT = 4 * 2 * 8 * 128

IDEAL = DATASHEET_PEAKS.with_updates(power_k_compute=1.0, power_k_memory=0.5)
HEAD_FLOPS = 2 * 1000 * 1024  # the LM head, once per sequence of a step

HW_YAML = """devices:
  round:
    name: Round numbers
    vendor: test
    category: gpu
    software: pytorch-native
    maturity: production
    source: test fixture
    memory_gb: 80
    mem_bw_gbps: 1000
    peak_tflops: {bf16: 100}
    tdp_w: 500
    idle_w: 100
    interconnect_gbps: 200  # both directions together: 100 GB/s each way
  nopeak:
    name: No fp8 peak
    vendor: test
    category: gpu
    software: pytorch-native
    maturity: production
    source: test fixture
    memory_gb: 80
    mem_bw_gbps: 1000
    peak_tflops: {bf16: 100}
"""


@pytest.fixture
def hw(tmp_path: Path):  # type: ignore[no-untyped-def]
    f = tmp_path / "hw.yaml"
    f.write_text(HW_YAML)
    return load_catalog([f]).device("round")


def test_sizes_of_the_tiny_model() -> None:
    assert TINY.total_params == TOTAL_PARAMS
    assert TINY.flops_per_token == FLOPS_PER_TOKEN
    assert TINY.kv_bytes_per_token("bf16") == KV_BYTES_PER_TOKEN


def test_decode_step_is_memory_bound(hw) -> None:  # type: ignore[no-untyped-def]
    pm = PerfModel(Deployment(TINY, hw), IDEAL)
    c = pm.decode_step(batch=1, context_tokens=100)
    bytes_moved = TOTAL_PARAMS * 2 + 101 * KV_BYTES_PER_TOKEN
    flops = FLOPS_PER_TOKEN + ATTN_FLOPS_PER_CONTEXT * 101
    assert c.bytes == pytest.approx(bytes_moved)
    assert c.flops == pytest.approx(flops)
    assert c.time_s == pytest.approx(bytes_moved / 1e12, rel=1e-9)
    assert c.bound == "memory"
    # power: idle + (tdp - idle) * (1.0 * compute share + 0.5 * memory share)
    load = (flops / 1e14 + 0.5 * bytes_moved / 1e12) / c.time_s
    assert c.power_w == pytest.approx(100 + 400 * load)
    assert c.energy_j == pytest.approx(c.power_w * c.time_s)


def test_prefill_is_compute_bound_with_causal_attention(hw) -> None:  # type: ignore[no-untyped-def]
    pm = PerfModel(Deployment(TINY, hw), IDEAL)
    c = pm.prefill(batch=4, prompt_tokens=1000)
    # the LM head runs for each sequence's last token only, as vLLM and llama.cpp do
    flops = (
        4000 * (FLOPS_PER_TOKEN - HEAD_FLOPS)
        + 4 * HEAD_FLOPS
        + ATTN_FLOPS_PER_CONTEXT * 4 * (1000 * 1001 / 2)
    )
    assert c.flops == pytest.approx(flops)
    assert c.time_s == pytest.approx(flops / 1e14, rel=1e-9)
    assert c.bound == "compute"


def test_an_engine_with_logits_all_runs_the_head_on_every_token(hw) -> None:  # type: ignore[no-untyped-def]
    """llama-cpp-python's server computes every evaluated token's logits (its logits_all, which
    `profile` times): the head's FLOPs count per token there, and a decode step is the same."""
    every = IDEAL.with_updates(logits_all=1.0)
    c = PerfModel(Deployment(TINY, hw), every).prefill(batch=4, prompt_tokens=1000)
    assert c.flops == pytest.approx(
        4000 * FLOPS_PER_TOKEN + ATTN_FLOPS_PER_CONTEXT * 4 * (1000 * 1001 / 2)
    )
    d0 = PerfModel(Deployment(TINY, hw), IDEAL).decode_step(8, 100)
    d1 = PerfModel(Deployment(TINY, hw), every).decode_step(8, 100)
    assert d1.flops == pytest.approx(d0.flops) and d1.time_s == pytest.approx(d0.time_s)


def test_elementwise_kernels_stream_each_tokens_activations(hw) -> None:  # type: ignore[no-untyped-def]
    """Norms, residual adds, rotary and the gated activation run as kernels of their own
    between the GEMMs: per token and layer 10.5 passes over the hidden state (on every tensor-
    parallel device) and 3 over the FFN's width (split), in 16-bit, added to the step's time
    even where it is compute-bound, drawn as memory load."""
    base = PerfModel(Deployment(TINY, hw), IDEAL).prefill(4, 1000)
    on = PerfModel(Deployment(TINY, hw), IDEAL.with_updates(elementwise_factor=2.0))
    c = on.prefill(4, 1000)
    per_token = 2 * 2 * (10.5 * 1024 + 3 * 4096)  # bytes: 2 layers, 16-bit
    assert c.elementwise_s == pytest.approx(2.0 * 4000 * per_token / 1e12)
    assert c.time_s == pytest.approx(base.time_s + c.elementwise_s)
    assert c.bytes == pytest.approx(base.bytes + 2.0 * 4000 * per_token)
    assert c.power_w > base.power_w * (base.time_s / c.time_s)  # its bytes draw power
    two = PerfModel(Deployment(TINY, hw, tp=2), IDEAL).prefill(4, 1000)
    two_on = PerfModel(Deployment(TINY, hw, tp=2), IDEAL.with_updates(elementwise_factor=1.0))
    both = 2 * 2 * (10.5 * 1024 * 2 + 3 * 4096)  # each device normalises the whole state
    assert two_on.prefill(4, 1000).time_s - two.time_s == pytest.approx(4000 * both / 2e12)


def test_overheads_add_per_step_layer_and_sequence(hw) -> None:  # type: ignore[no-untyped-def]
    p = IDEAL.with_updates(overhead_step_s=1e-3, overhead_layer_s=1e-4, overhead_seq_s=1e-5)
    base = PerfModel(Deployment(TINY, hw), IDEAL).decode_step(8, 100).time_s
    c = PerfModel(Deployment(TINY, hw), p).decode_step(8, 100)
    assert c.time_s - base == pytest.approx(1e-3 + 2 * 1e-4 + 8 * 1e-5)
    assert c.overhead_s == pytest.approx(1e-3 + 2 * 1e-4 + 8 * 1e-5)


def test_tensor_parallel_splits_work_and_pays_all_reduces(hw) -> None:  # type: ignore[no-untyped-def]
    p = IDEAL.with_updates(overhead_collective_s=5e-6)
    one = PerfModel(Deployment(TINY, hw, tp=1), p).prefill(4, 1000)
    two = PerfModel(Deployment(TINY, hw, tp=2), p).prefill(4, 1000)
    # two all-reduces per layer of 4000 tokens x 1024 x 2 bytes; ring factor 2(n-1)/n = 1; a
    # ring sends one way on each link: 100 of the 200 GB/s
    comm = 2 * 2 * (5e-6 + 4000 * 1024 * 2 / 100e9)
    assert two.comm_s == pytest.approx(comm)
    assert two.time_s == pytest.approx(one.time_s / 2 + comm)
    assert two.power_w == pytest.approx(2 * one.power_w, rel=0.2)


def test_tensor_parallel_past_the_kv_heads_reads_each_heads_cache_on_every_copy() -> None:
    """Llama-3.1-8B has 8 KV heads: at tp 32 each head's cache is held and read on 4 devices
    (core/memory.py holds it so), so a long-context decode step is no faster per device than at
    tp 8. It was 2.7x faster: 5.6 ms where the KV alone needs 9.5 ms of an H100's bandwidth."""
    hw = load_catalog().device("h100-sxm")
    model = load_model("llama-3.1-8b")
    steps = {
        tp: PerfModel(Deployment(model, hw, tp=tp), IDEAL).decode_step(64, 30_500) for tp in (8, 32)
    }
    kv = 64 * 30_500 * model.kv_bytes_per_token("bf16")
    # three more copies (the elementwise bytes differ by some MB: the FFN is split 4x finer)
    assert steps[32].bytes == pytest.approx(steps[8].bytes + 3 * kv, rel=1e-4)
    per_device_kv = kv / model.num_kv_heads  # one head's cache, read by each of its devices
    assert steps[32].time_s >= per_device_kv / (hw.require("mem_bw_gbps", "t") * 1e9)


def test_power_is_capped_at_tdp(hw) -> None:  # type: ignore[no-untyped-def]
    hot = IDEAL.with_updates(power_k_compute=5.0)
    c = PerfModel(Deployment(TINY, hw), hot).prefill(4, 1000)
    assert c.power_w == pytest.approx(500.0)


def test_moe_reads_only_the_experts_its_tokens_pick(hw) -> None:  # type: ignore[no-untyped-def]
    moe = ModelSpec(
        id="moe",
        hidden_size=1024,
        num_layers=2,
        num_heads=8,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=1024,
        vocab_size=1000,
        num_experts=8,
        experts_per_token=2,
        expert_intermediate_size=1024,
    )
    pm = PerfModel(Deployment(moe, hw), IDEAL)
    expert_bytes = 2 * 3 * 1024 * 1024 * 2  # one expert, both layers, bf16
    all_bytes = moe.total_params * 2
    one = pm.step(1, 1, 1, 1)
    many = pm.step(10_000, 10_000, 10_000, 10_000)
    kv = KV_BYTES_PER_TOKEN
    # one token touches exactly 2 experts; 10,000 tokens touch all 8
    assert one.bytes == pytest.approx(all_bytes - 6 * expert_bytes + kv)
    assert many.bytes == pytest.approx(all_bytes + 10_000 * kv, rel=1e-9)


def test_missing_peak_makes_times_unknown_not_zero(tmp_path: Path) -> None:
    f = tmp_path / "hw.yaml"
    f.write_text(HW_YAML)
    hw = load_catalog([f]).device("nopeak")
    pm = PerfModel(Deployment(TINY, hw, dtype="fp8", kv_dtype="fp8"), IDEAL)
    assert math.isnan(pm.decode_step(1, 10).time_s)
    assert any("fp8 peak" in m and "bf16" in m for m in pm.missing)
    assert any("tdp_w" in m for m in pm.power_missing)


def test_small_gemms_pad_and_latency_and_moe_per_expert() -> None:
    """Each GEMM pays 2*K*pad FLOPs and each GEMM kernel a fixed latency on the memory side;
    MoE's fused expert kernels pay one wave each and each touched expert's rows rounded up to
    vLLM's fused_moe block; the decode-run sums agree with one step at a time."""
    from wattserve.core.perf import decode_run, run_lines

    hw = load_catalog().device("h100-sxm")
    spec = load_model("llama-3.1-8b")
    dense = Deployment(spec, hw)
    flat = PerfModel(dense, EngineParams())
    small = PerfModel(dense, EngineParams(gemm_pad_elems=1e6, gemm_latency_s=4e-6))
    sum_k = (
        spec.num_layers
        * (2 * spec.hidden_size + spec.num_heads * spec.head_dim + spec.intermediate_size)
        + spec.hidden_size
    )
    pad_s = 2 * 1e6 * sum_k / (hw.figures["peak_tflops_bf16"].value * 1e12 * 0.6)
    kernels = spec.num_layers * 4 + 1
    for t in (1, 128, 4096):
        c0, c1 = flat.prefill(1, t), small.prefill(1, t)
        assert c1.compute_s == pytest.approx(c0.compute_s + pad_s)
        assert c1.memory_s == pytest.approx(c0.memory_s + kernels * 4e-6)
    # the pad weighs most where rows are few: a decode step of one sequence, not a prefill
    assert small.decode_step(1, 100).compute_s / flat.decode_step(1, 100).compute_s > 10
    assert small.prefill(1, 4096).compute_s / flat.prefill(1, 4096).compute_s < 1.1
    moe = Deployment(load_model("mixtral-8x7b"), hw, tp=2)
    pm = PerfModel(moe, EngineParams(gemm_pad_elems=1e6))
    base = PerfModel(moe, EngineParams())
    extra = {
        t: pm.decode_step(t, 1024).compute_s - base.decode_step(t, 1024).compute_s for t in (1, 16)
    }
    # one token touches its top-2 experts, one row each, padded to a block of 16 rows; 16
    # tokens touch 8 * (1 - 0.75^16) = 7.92 of the 8, 32 / 7.92 = 4.04 rows each, padded to 16
    assert extra[1] == pytest.approx(pm.pad_s + pm.expert_pad_s + 2 * 15 * pm.expert_flops_s)
    touched = 8 * (1 - 0.75**16)
    assert extra[16] == pytest.approx(
        pm.pad_s + pm.expert_pad_s + touched * (16 - 32 / touched) * pm.expert_flops_s
    )
    # the block follows the rows an expert gets (a power of two, 16 to 128): 40 rows each in
    # a block of 64 waste half of it; 1,024 rows each in blocks of 128, half a block
    for t, waste in ((160, 32), (4096, 64)):
        assert pm.gemm_pad_s(t) == pytest.approx(
            pm.pad_s + pm.expert_pad_s + 8 * waste * pm.expert_flops_s, rel=1e-6
        )
    lines = run_lines(pm, 16, 16 * 1025.0)
    stepped = sum(pm.decode_step(16, 1024 + j).time_s for j in range(20))
    assert decode_run(pm, lines, 20)[0] == pytest.approx(stepped, rel=1e-9)


def test_the_expert_kernels_pad_is_their_own() -> None:
    """An MoE's grouped expert kernels (vLLM's fused_moe) are not the dense GEMMs (cuBLAS):
    their pad is a term of its own, so that a calibration's MoE rows can set it without moving
    the dense GEMMs' (which turned an H200's 0.5B decode 28-36% too slow: docs/accuracy.md).
    Unset, it is the dense pad; it never touches a dense model."""
    hw = load_catalog().device("h100-sxm")
    moe = Deployment(load_model("mixtral-8x7b"), hw, tp=2)
    dense = Deployment(load_model("llama-3.1-8b"), hw)
    same = PerfModel(moe, EngineParams(gemm_pad_elems=1e6))
    split = PerfModel(moe, EngineParams(gemm_pad_elems=1e6, gemm_pad_expert_elems=1e6))
    assert (split.pad_s, split.expert_pad_s) == pytest.approx((same.pad_s, same.expert_pad_s))
    only = PerfModel(moe, EngineParams(gemm_pad_expert_elems=4e6))
    assert only.pad_s == 0.0 and only.expert_pad_s == pytest.approx(4 * same.expert_pad_s)
    base = PerfModel(moe, EngineParams())
    for t in (1, 16, 4096):  # the experts' row blocks come with either pad
        extra = only.prefill(1, t).compute_s - base.prefill(1, t).compute_s
        assert extra == pytest.approx(only.gemm_pad_s(t)) and extra > only.expert_pad_s
    flat = PerfModel(dense, EngineParams())
    for params in (EngineParams(gemm_pad_expert_elems=4e6),):
        pm = PerfModel(dense, params)
        assert pm.decode_step(8, 512).time_s == flat.decode_step(8, 512).time_s
        assert pm.prefill(1, 128).time_s == flat.prefill(1, 128).time_s


def test_a_steps_gaps_add_time_but_no_load() -> None:
    """A step's overheads and all-reduces are time the GPU waits through (an H200's launch-bound
    decodes of sub-1B models draw 160-230 W of its 700 W: docs/model.md): a step that is mostly
    overhead draws near idle, the same work without the overhead draws more for less time, the
    dynamic joules are the same, and the decode run's sums, in closed form, agree with the steps
    one by one."""
    from wattserve.core.perf import decode_run, run_lines

    hw = load_catalog().device("h100-sxm")
    dep = Deployment(load_model("llama-3.1-70b"), hw, tp=4)
    pm = PerfModel(dep, EngineParams(overhead_step_s=1.0))
    c = pm.decode_step(8, 500)
    work_c, work_m = pm.work_times(c, 8)  # the step's own FLOPs and bytes, elementwise too
    load = (pm.k_compute * work_c + pm.k_memory * work_m) / c.time_s
    assert c.power_w == pytest.approx(pm.devices * (pm.idle_w + pm.dynamic_w * load))
    assert c.power_w / pm.devices < pm.idle_w * 1.1
    quick = PerfModel(dep, EngineParams(overhead_step_s=0.0, overhead_layer_s=0.0))
    q = quick.decode_step(8, 500)
    assert q.memory_s > q.compute_s and q.power_w > c.power_w * 2
    dynamic = [s.energy_j - pm.devices * pm.idle_w * s.time_s for s in (c, q)]
    assert dynamic[0] == pytest.approx(dynamic[1], rel=1e-9)
    lines = run_lines(pm, 8, 8 * 501.0)
    steps = [pm.decode_step(8, 500 + j) for j in range(30)]
    _, energy, peak = decode_run(pm, lines, 30)
    assert energy == pytest.approx(sum(s.energy_j for s in steps), rel=1e-9)
    assert peak == pytest.approx(max(s.power_w for s in steps), rel=1e-9)


def test_attn_factor_charges_attention_and_kv_reads_only(hw) -> None:  # type: ignore[no-untyped-def]
    """attn_factor scales the time of attention's FLOPs and KV reads, nothing else; the step's
    reported FLOPs and bytes stay the true ones, and a decode run's sums stay exact."""
    from wattserve.core.perf import decode_run, run_lines

    dep = Deployment(TINY, hw)
    base = PerfModel(dep, IDEAL)
    slow = PerfModel(dep, IDEAL.with_updates(attn_factor=3.0))
    assert EngineParams().attn_factor == 1.0  # off by default: uncalibrated times unchanged
    for ctx in (0, 1000, 8000):
        a, b = base.decode_step(4, ctx), slow.decode_step(4, ctx)
        assert (b.flops, b.bytes) == (a.flops, a.bytes)
        kv = KV_BYTES_PER_TOKEN * 4 * (ctx + 1) / (hw.figures["mem_bw_gbps"].value * 1e9)
        assert b.memory_s == pytest.approx(a.memory_s + 2 * kv)
        attn = ATTN_FLOPS_PER_CONTEXT * 4 * (ctx + 1)
        assert b.compute_s == pytest.approx(a.compute_s + 2 * attn / base.flops_rate)
        assert slow.step_time(4, 4 * (ctx + 1), 4 * (ctx + 1), 4) == pytest.approx(b.time_s)
    lines = run_lines(slow, 8, 8 * 513.0)
    stepped = sum(slow.decode_step(8, 512 + j).time_s for j in range(30))
    assert decode_run(slow, lines, 30)[0] == pytest.approx(stepped, rel=1e-9)


@pytest.mark.parametrize("tp, ep", [(1, False), (4, True)])
def test_moe_terms_charge_the_expert_kernels_and_routing_only(tp: int, ep: bool) -> None:
    """eff_expert slows the grouped expert kernels' FLOPs and bytes, overhead_moe_layer_s adds
    each MoE layer's routing; the dense part, the reported FLOPs and bytes, and a decode run's
    sums stay exact; on a dense model both change nothing."""
    from wattserve.core.perf import decode_run, run_lines

    hw = load_catalog().device("h100-sxm")
    moe = load_model("qwen3-30b-a3b")
    dep = Deployment(moe, hw, tp=tp, expert_parallel=ep)
    assert (EngineParams().eff_expert, EngineParams().overhead_moe_layer_s) == (1.0, 0.0)
    base = PerfModel(dep, EngineParams())
    slow = PerfModel(dep, EngineParams(eff_expert=0.5, overhead_moe_layer_s=2e-5))
    for batch, ctx in ((1, 512), (64, 2048)):
        a, b = base.decode_step(batch, ctx), slow.decode_step(batch, ctx)
        assert (b.flops, b.bytes) == (a.flops, a.bytes)
        touched = base.experts_read(batch)
        assert b.memory_s == pytest.approx(
            a.memory_s + base.expert_bytes * touched / base.bytes_rate, rel=1e-9
        )
        assert b.overhead_s == pytest.approx(a.overhead_s + moe.num_layers * 2e-5)
        kv = batch * (ctx + 1)
        assert slow.step_time(batch, kv, kv, batch) == pytest.approx(b.time_s, rel=1e-12)
        # the kernels stay busy through their shortfall: it is load, so power holds up (on an
        # H200, counted as time alone, held-out MoE steps drew 20% more than predicted)
        assert slow.power_w(*slow.work_times(b, batch), b.time_s) == pytest.approx(b.power_w)
        assert slow.work_times(b, batch)[1] > base.work_times(a, batch)[1]
        assert b.power_w > base.power_w(*base.work_times(a, batch), b.time_s)
    a, b = base.prefill(4, 2048), slow.prefill(4, 2048)  # the experts' FLOPs take twice as long
    expert_flops = 2.0 * moe.num_layers * moe.experts_per_token * moe.expert_params * 4 * 2048
    # (and under expert parallelism the busiest device's excess expert work, as slow)
    excess = slow.expert_imbalance_s(8192) - base.expert_imbalance_s(8192) if ep else 0.0
    assert excess == pytest.approx(base.expert_imbalance_s(8192) if ep else 0.0)
    assert b.compute_s - a.compute_s == pytest.approx(
        expert_flops / base.flops_rate + excess, rel=1e-9
    )
    lines = run_lines(slow, 8, 8 * 513.0)
    steps = [slow.decode_step(8, 512 + j) for j in range(30)]
    run_time, run_energy, _ = decode_run(slow, lines, 30)
    assert run_time == pytest.approx(sum(x.time_s for x in steps), rel=1e-9)
    assert run_energy == pytest.approx(sum(x.energy_j for x in steps), rel=1e-9)
    dense = Deployment(load_model("llama-3.1-8b"), hw)
    d0 = PerfModel(dense, EngineParams()).decode_step(8, 1000)
    d1 = PerfModel(dense, EngineParams(eff_expert=0.5, overhead_moe_layer_s=2e-5))
    assert d1.decode_step(8, 1000) == d0


def test_pipeline_stages_take_turns_so_only_one_draws_dynamic_power() -> None:
    """A step's time is its work over one stage's tp devices (stages run one after another), so
    with pp stages the others wait at idle: the same work costs the same dynamic joules at pp 1
    and pp 4, and pp 4 adds three devices' idle draw, not three more busy ones (a Groq
    deployment of 80 chips once drew every chip's TDP in prefill)."""
    from wattserve.core.perf import decode_run, run_lines

    hw = load_catalog().device("h100-sxm")
    one = PerfModel(Deployment(load_model("llama-3.1-8b"), hw), EngineParams())
    four = PerfModel(Deployment(load_model("llama-3.1-8b"), hw, pp=4), EngineParams())
    for step in ("prefill", "decode"):
        a = one.prefill(4, 2048) if step == "prefill" else one.decode_step(4, 1000)
        b = four.prefill(4, 2048) if step == "prefill" else four.decode_step(4, 1000)
        dyn = [c.energy_j - pm.idle_power_w * c.time_s for pm, c in ((one, a), (four, b))]
        # (a compute-bound prefill saturates at TDP: pp 4's hops dilute it under the cap)
        assert dyn[1] == pytest.approx(dyn[0], rel=1e-9 if step == "decode" else 0.01), step
        assert b.power_w <= four.idle_power_w + four.dynamic_w + 1e-9
    lines = run_lines(four, 4, 4 * 1001.0)
    steps = [four.decode_step(4, 1000 + j) for j in range(20)]
    _, energy, peak = decode_run(four, lines, 20)
    assert energy == pytest.approx(sum(s.energy_j for s in steps), rel=1e-9)
    assert peak == pytest.approx(max(s.power_w for s in steps), rel=1e-9)


def test_a_step_of_unknown_time_has_unknown_power() -> None:
    """min(1.0, nan) is 1.0: a step whose time is unknown (no fp32 peak on an H100) had drawn
    its devices' TDP in PerfModel.step and decode_run, though its energy was unknown (a
    session-37 review)."""
    from wattserve.core.params import default_params
    from wattserve.core.perf import decode_run, run_lines

    hw = load_catalog().device("h100-sxm")
    pm = PerfModel(Deployment(load_model("llama-3.1-8b"), hw, dtype="fp32"), default_params(hw))
    assert pm.missing
    assert math.isnan(pm.decode_step(8, 1024).power_w)
    assert all(math.isnan(x) for x in decode_run(pm, run_lines(pm, 8, 8 * 1024.0), 16))
