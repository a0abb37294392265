"""Physical invariants of the step, energy and memory model over the whole catalog: values
positive and finite or unknown with a reason, step times monotone in batch, context and
prompt, power between idle and TDP, the JSON's figures agreeing with each other and with the
text, `max_batch` fitting and one more not, and `rank` sorted by what it says it sorts by.

The last tests are the violations this probe found on 2026-12-05, each fixed that day."""

from __future__ import annotations

import json
import math
import random
import re
from functools import cache
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from wattserve.cli.app import app
from wattserve.core.catalog import Catalog, load_catalog
from wattserve.core.deployment import DEFAULT_BATCHED_TOKENS, Deployment
from wattserve.core.dtypes import BYTES_PER_ELEMENT, DTYPES
from wattserve.core.energy import request_energy_j
from wattserve.core.memory import MAX_STEP_BATCH
from wattserve.core.modelspec import ModelSpec, load_model
from wattserve.core.params import Calibration, EngineParams
from wattserve.core.perf import PerfModel
from wattserve.errors import ConfigError, WattserveError
from wattserve.estimate.api import Estimate, estimate
from wattserve.estimate.explain import summary
from wattserve.rank.api import rank
from wattserve.rank.rows import SORT_KEYS

MODELS = (
    "llama-2-13b",
    "llama-2-70b",
    "llama-2-7b",
    "llama-3.1-405b",
    "llama-3.1-70b",
    "llama-3.1-8b",
    "llama-3.2-1b",
    "mistral-7b",
    "mixtral-8x22b",
    "mixtral-8x7b",
    "qwen1.5-moe-a2.7b",
    "qwen2.5-0.5b",
    "qwen2.5-7b",
    "qwen3-14b",
    "qwen3-235b-a22b",
    "qwen3-30b-a3b",
    "qwen3-32b",
    "qwen3-8b",
    "smollm2-135m",
)
MOE = ("qwen3-30b-a3b", "mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen3-235b-a22b")
FIGURES = (
    "prefill_s",
    "prefill_j",
    "decode_step_s",
    "decode_step_j",
    "ttft_s",
    "tpot_s",
    "output_tokens_per_s",
    "decode_tokens_per_s",
    "power_w",
    "energy_j_per_token",
    "usd_per_mtok",
)


@cache
def _catalog() -> Catalog:
    return load_catalog()


@cache
def _model(name: str) -> ModelSpec:
    return load_model(name)


def _devices(kind: str | None = None) -> list[str]:
    return [h for h, hw in _catalog().devices.items() if kind is None or hw.memory_kind == kind]


def _try(model: str, hardware: str, **kw: object) -> Estimate | None:
    try:
        return estimate(model, hardware, **kw)  # type: ignore[arg-type]
    except WattserveError:  # an invalid combination (tp not dividing the heads, ...)
        return None


def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _check_figures(e: Estimate) -> None:
    """Every figure positive and finite, or None with a reason; the JSON figures agreeing."""
    where = f"{e.model} on {e.hardware} tp={e.tp} pp={e.pp} {e.dtype} b={e.batch}"
    for name in FIGURES:
        v = getattr(e, name)
        if v is None:
            assert e.missing or not e.fits, f"{where}: {name} None with no reason"
        else:
            assert math.isfinite(v) and v > 0, f"{where}: {name} = {v}"
    if not e.fits:
        assert e.reason and e.prefill_s is None, where
        return
    if e.prefill_s is None:
        return
    b, o = e.batch, e.output_tokens
    total_s = e.prefill_s + (o - 1) * e.decode_step_s  # type: ignore[operator]
    assert e.ttft_s == e.prefill_s and e.tpot_s == e.decode_step_s, where
    assert _close(e.output_tokens_per_s, b * o / total_s), where  # type: ignore[arg-type]
    assert _close(e.decode_tokens_per_s * e.tpot_s, b), where  # type: ignore[operator]
    if e.power_w is not None:
        total_j = e.prefill_j + (o - 1) * e.decode_step_j  # type: ignore[operator]
        assert _close(e.energy_j_per_token, total_j / (b * o)), where  # type: ignore[arg-type]
        assert _close(e.power_w, total_j / total_s), where
        assert _close(e.energy_j_per_token, e.power_w / e.output_tokens_per_s), where  # type: ignore
        perf = e.perf
        assert perf is not None and e.prefill_cost is not None and e.decode_cost is not None
        assert e.devices is not None  # a device's estimate
        idle = perf.idle_w * e.devices
        tdp = (perf.idle_w + perf.dynamic_w) * e.devices
        for p in (e.power_w, e.prefill_cost.power_w, e.decode_cost.power_w):
            assert idle * (1 - 1e-12) <= p <= tdp * (1 + 1e-12), (where, p, idle, tdp)
    mem = e.memory
    assert mem is not None
    if mem.capacity_gb is not None and e.perf is not None:
        usable = mem.capacity_gb * e.perf.params.memory_utilization
        assert mem.total_gb <= usable * (1 + 1e-12), where


def test_every_device_model_dtype_gives_positive_figures_or_a_reason() -> None:
    """The whole catalog, every model and dtype, tp 1, 2 and 8: nothing NaN, inf, zero or
    negative; an unknown is None with a reason; power within idle..TDP x devices; energy per
    token = power / throughput; `fits` is weights + KV + activations within the usable share;
    the JSON form has no NaN."""
    checked = 0
    for hw in _catalog().devices:
        for m in MODELS:
            for dt in DTYPES:
                for tp in (1, 2, 8):
                    e = _try(m, hw, tp=tp, dtype=dt, batch=4, prompt_tokens=256, output_tokens=64)
                    if e is None:
                        continue
                    checked += 1
                    _check_figures(e)
                    mem = e.memory
                    if mem is not None and mem.capacity_gb is not None and e.perf is not None:
                        usable = mem.capacity_gb * e.perf.params.memory_utilization
                        assert (mem.total_gb <= usable) == e.fits
                    json.dumps(e.to_dict(), allow_nan=False)
    assert checked > 10_000


def test_random_valid_configurations_keep_their_figures_consistent() -> None:
    """Random layouts, KV dtypes, expert parallelism, memory shares, contexts up to the
    model's window, prompts and outputs of one token."""
    rng = random.Random(31)
    timed = 0
    for _ in range(4000):
        hw = rng.choice(_devices())
        m = rng.choice(MODELS)
        spec = _model(m)
        kw: dict[str, object] = {
            "tp": rng.choice([1, 2, 4, 8, 16]),
            "pp": rng.choice([None, 1, 2, 3, 4]),
            "dtype": rng.choice(DTYPES),
            "kv_dtype": rng.choice([None, None, "fp8", "bf16", "int8", "int4", "fp32"]),
            "batch": rng.choice([1, 2, 7, 64, 500]),
            "prompt_tokens": rng.choice([1, 2, 100, 4096]),
            "output_tokens": rng.choice([1, 2, 50, 2000]),
            "expert_parallel": spec.is_moe and rng.random() < 0.5,
            "gpu_memory_utilization": rng.choice([None, 0.05, 0.9, 1.0]),
        }
        if rng.random() < 0.2:
            p, o = kw["prompt_tokens"], kw["output_tokens"]
            kw["context"] = rng.choice([p, spec.max_context, p + o + 5])  # type: ignore[operator]
        e = _try(m, hw, **kw)
        if e is None:
            continue
        _check_figures(e)
        timed += e.prefill_s is not None
    assert timed > 500


def test_step_times_are_monotone_across_the_catalog() -> None:
    """Decode step time and energy never fall with batch or context; prefill time and energy
    never fall with the prompt (default engine terms, every device with the figures)."""
    batches = [1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 64, 100, 128, 256, 512, 1024]
    contexts = [1, 2, 16, 100, 512, 2048, 4096, 8192, 32768]
    prompts = [1, 2, 3, 8, 16, 17, 64, 128, 512, 2048, 8192, 8193, 16384]
    for hw in _catalog().devices:
        for m in MODELS:
            for dt in ("bf16", "fp8", "w4a16", "int4"):
                for tp in (1, 8):
                    e = _try(m, hw, tp=tp, dtype=dt)
                    if e is None or e.perf is None or e.perf.missing:
                        continue
                    _monotone(e.perf, batches, contexts, prompts, f"{m} {hw} {dt} tp{tp}")


def _monotone(
    p: PerfModel, batches: list[int], contexts: list[int], prompts: list[int], where: str
) -> None:
    for ctx in (10, 4000):
        steps = [p.decode_step(b, ctx) for b in batches]
        for a, b in pairwise(steps):
            assert b.time_s >= a.time_s * (1 - 1e-12), (where, "decode vs batch", ctx)
            if math.isfinite(a.energy_j):
                assert b.energy_j >= a.energy_j * (1 - 1e-12), (where, "decode J vs batch")
    for batch in (1, 16):
        steps = [p.decode_step(batch, c) for c in contexts]
        for a, b in pairwise(steps):
            assert b.time_s >= a.time_s * (1 - 1e-12), (where, "decode vs context")
            if math.isfinite(a.energy_j):
                assert b.energy_j >= a.energy_j * (1 - 1e-12), (where, "decode J vs context")
        steps = [p.prefill(batch, n) for n in prompts]
        for a, b in pairwise(steps):
            assert b.time_s >= a.time_s * (1 - 1e-12), (where, "prefill vs prompt")
            if math.isfinite(a.energy_j):
                assert b.energy_j >= a.energy_j * (1 - 1e-12), (where, "prefill J vs prompt")
    for n in prompts:
        assert p.prefill(1, n).time_s >= 0


_TERMS = st.fixed_dictionaries(
    {},
    optional={
        "eff_compute": st.sampled_from([0.001, 0.3, 0.6, 1.0]),
        "eff_memory": st.sampled_from([0.001, 0.5, 0.8, 1.0]),
        "overhead_step_s": st.sampled_from([0.0, 3e-4, 0.01]),
        "overhead_layer_s": st.sampled_from([0.0, 3e-5]),
        "overhead_seq_s": st.sampled_from([0.0, 5e-6, 1e-3]),
        "gemm_pad_elems": st.sampled_from([0.0, 1e5, 1e6, 1e8]),
        "gemm_pad_expert_elems": st.sampled_from([0.0, 1e6, 1.3e7, 1e9]),
        "gemm_latency_s": st.sampled_from([0.0, 4e-6, 1e-4]),
        "attn_factor": st.sampled_from([0.01, 1.0, 3.0, 100.0]),
        "eff_expert": st.sampled_from([0.001, 0.6, 1.0]),
        "overhead_moe_layer_s": st.sampled_from([0.0, 6.6e-5]),
        "elementwise_factor": st.sampled_from([0.0, 1.0, 3.8]),
        "logits_all": st.sampled_from([0.0, 1.0]),
        "power_k_compute": st.sampled_from([0.0, 1.7, 100.0]),
        "power_k_memory": st.sampled_from([0.0, 0.9, 100.0]),
        "idle_fraction": st.sampled_from([0.001, 0.15, 1.0]),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    terms=_TERMS,
    hw=st.sampled_from(
        [
            "h100-sxm",
            "b200",
            "mi300x",
            "l4",
            "epyc-9654",
            "groq-lpu",
            "cerebras-wse3",
            "mythic-m1076",
        ]
    ),
    model=st.sampled_from([*MOE, "llama-3.1-8b", "smollm2-135m"]),
    tp=st.sampled_from([1, 2, 4, 8]),
    ep=st.booleans(),
    dtype=st.sampled_from(["bf16", "fp16", "fp8", "int8", "int4", "w4a16"]),
)
def test_step_times_stay_monotone_under_any_calibration(
    terms: dict[str, float], hw: str, model: str, tp: int, ep: bool, dtype: str
) -> None:
    """Calibrated terms anywhere in the ranges a calibration file may hold (small-GEMM pads,
    the MoE row blocks, expert parallelism, attention and expert factors) keep step times
    positive and monotone and step power within idle..TDP."""
    spec = _model(model)
    try:
        dep = Deployment(
            spec,
            _catalog().devices[hw],
            tp=tp,
            dtype=dtype,  # type: ignore[arg-type]
            kv_dtype="fp8" if dtype == "fp8" else "bf16",
            expert_parallel=ep and spec.is_moe and tp > 1,
        )
    except WattserveError:
        return
    p = PerfModel(dep, EngineParams(**terms))  # type: ignore[arg-type]
    if p.missing:
        return
    batches = [1, 2, 3, 5, 8, 12, 16, 24, 32, 48, 64, 100, 128, 200, 256, 400, 512, 1024, 2048]
    prompts = [1, 2, 3, 4, 6, 8, 12, 16, 17, 24, 32, 64, 100, 128, 256, 512, 1000, 4096]
    _monotone(p, batches, [1, 100, 3000, 30000], prompts, f"{model} {hw} {terms}")
    for c in (p.decode_step(1, 100), p.prefill(4, 512)):
        assert c.time_s > 0 and math.isfinite(c.time_s)
        if math.isfinite(c.power_w):
            lo, hi = p.idle_power_w, (p.idle_w + p.dynamic_w) * p.devices
            assert lo * (1 - 1e-12) <= c.power_w <= hi * (1 + 1e-12)


def test_max_batch_fits_and_one_more_does_not() -> None:
    """On DRAM parts (and SRAM parts at a chip count given with --pp): estimate at max_batch
    fits, at max_batch + 1 does not, and both report the same max_batch."""
    rng = random.Random(5)
    checked = 0
    for _ in range(2500):
        hw = rng.choice(_devices("dram") + _devices("sram"))
        sram = _catalog().devices[hw].memory_kind == "sram"
        kw: dict[str, object] = {
            "tp": rng.choice([1, 1, 2, 4, 8]),
            "pp": rng.choice([1, 2, 4]) if not sram else rng.choice([8, 40, 300]),
            "dtype": rng.choice(DTYPES),
            "prompt_tokens": rng.choice([1, 2, 100, 512, 4000, 16000]),
            "output_tokens": rng.choice([1, 2, 64, 1000]),
            "gpu_memory_utilization": rng.choice([None, 0.01, 0.3, 0.9, 1.0]),
        }
        m = rng.choice(MODELS)
        e = _try(m, hw, batch=1, **kw)
        if e is None or e.max_batch is None:
            continue
        if e.max_batch == 0:
            assert not e.fits and e.reason
            continue
        if e.max_batch >= MAX_STEP_BATCH:
            continue
        if e.max_batch == DEFAULT_BATCHED_TOKENS:  # the token budget's limit, not the memory's
            with pytest.raises(ConfigError, match="vLLM refuses"):
                estimate(m, hw, batch=e.max_batch + 1, **kw)  # type: ignore[arg-type]
            continue
        at = estimate(m, hw, batch=e.max_batch, **kw)  # type: ignore[arg-type]
        over = estimate(m, hw, batch=e.max_batch + 1, **kw)  # type: ignore[arg-type]
        assert at.fits and not over.fits, (m, hw, kw, e.max_batch)
        assert at.max_batch == over.max_batch == e.max_batch
        checked += 1
    assert checked > 500


def test_memory_is_monotone_in_share_devices_lengths_and_dtype() -> None:
    """max_batch never falls with a larger memory share or more tensor-parallel devices (and
    total capacity never falls); never rises with a longer prompt or context; a smaller weight
    format never needs more weight memory nor (at one KV dtype) lowers max_batch."""
    dtypes = sorted(DTYPES, key=lambda d: -BYTES_PER_ELEMENT[d])
    for hw in _devices("dram"):
        for m in MODELS:
            seq = [_try(m, hw, gpu_memory_utilization=u) for u in (0.1, 0.5, 0.9, 1.0)]
            _non_decreasing([e.max_batch for e in seq if e is not None], (hw, m, "share"))
            seq = [_try(m, hw, tp=tp) for tp in (1, 2, 4, 8, 16)]
            ok = [e for e in seq if e is not None]
            _non_decreasing([e.max_batch for e in ok], (hw, m, "tp"))
            _non_decreasing([e.memory.capacity_gb * e.devices for e in ok], (hw, m, "cap"))  # type: ignore[union-attr,operator]
            seq = [_try(m, hw, prompt_tokens=p, output_tokens=64) for p in (1, 1000, 8193, 30000)]
            _non_decreasing([-e.max_batch for e in seq if e is not None], (hw, m, "prompt"))  # type: ignore[operator]
            seq = [_try(m, hw, prompt_tokens=512, context=c) for c in (600, 4000, 100000)]
            _non_decreasing([-e.max_batch for e in seq if e is not None], (hw, m, "context"))  # type: ignore[operator]
            seq = [_try(m, hw, dtype=d, kv_dtype="bf16") for d in dtypes]
            ok = [e for e in seq if e is not None]
            _non_decreasing([-e.memory.weights_gb for e in ok], (hw, m, "weights"))  # type: ignore[union-attr]
            _non_decreasing([e.max_batch for e in ok], (hw, m, "dtype"))


def _non_decreasing(values: list[int | float | None], where: object) -> None:
    known = [v for v in values if v is not None]
    assert all(b >= a for a, b in pairwise(known)), (where, known)


def test_per_token_time_energy_and_dollars_never_rise_with_the_batch() -> None:
    """What rank's search rests on (core/configs.py): TTFT and TPOT never fall as the batch
    grows, J and $ per output token never rise; at the defaults and with MoE pads calibrated."""
    batches = [1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    pads = EngineParams(
        gemm_pad_elems=1e6, gemm_pad_expert_elems=1e7, gemm_latency_s=4e-6, eff_expert=0.6
    )
    padded = Calibration(params={h: pads for h in _catalog().devices})
    cases: list[tuple[str, str, Calibration | None, int, int]] = [
        (hw, m, None, 512, 128) for hw in _devices("dram") for m in MODELS[::3]
    ]
    cases += [
        (hw, m, padded, p, o)
        for hw in ("h100-sxm", "b200", "mi300x")
        for m in MOE
        for p, o in ((512, 128), (16, 16), (1, 1))
    ]
    for hw, m, cal, p, o in cases:
        prev = None
        for b in batches:
            e = _try(m, hw, batch=b, prompt_tokens=p, output_tokens=o, calibration=cal)
            if e is None or not e.fits or e.tpot_s is None:
                break
            if prev is not None:
                assert e.tpot_s >= prev.tpot_s and e.ttft_s >= prev.ttft_s  # type: ignore[operator]
                for name in ("energy_j_per_token", "usd_per_mtok"):
                    a, z = getattr(prev, name), getattr(e, name)
                    assert a is None or z <= a * (1 + 1e-9), (hw, m, name, prev.batch, b)
            prev = e


_SUMMARY = {
    "TTFT (prefill)": ("ttft_s", 1e3),
    "TPOT (decode step)": ("tpot_s", 1e3),
    "output tokens/s": ("output_tokens_per_s", 1.0),
    "power": ("power_w", 1.0),
    "energy per token": ("energy_j_per_token", 1.0),
    "$ per 1M out tokens": ("usd_per_mtok", 1.0),
    "max batch": ("max_batch", 1.0),
}


@pytest.mark.parametrize(
    "args",
    [
        ["llama-3.1-8b", "h100-sxm", "--batch", "8"],
        ["llama-3.1-70b", "h100-sxm", "--tp", "4", "--dtype", "fp8", "--output-tokens", "1"],
        ["qwen3-30b-a3b", "mi300x", "--tp", "2", "--expert-parallel", "--prompt-tokens", "1"],
        ["mixtral-8x7b", "l4", "--dtype", "w4a16", "--tp", "4"],
        ["smollm2-135m", "epyc-9654", "--dtype", "fp32", "--batch", "700"],
        ["llama-3.1-8b", "groq-lpu", "--dtype", "int8"],
        ["llama-3.1-8b", "tpu-v5e", "--dtype", "int8", "--tp", "2"],
        ["smollm2-135m", "mythic-m1076", "--dtype", "int8", "--pp", "2"],
        ["llama-3.1-8b", "rtx-4090", "--cost-basis", "own", "--dtype", "w8a16"],
        ["llama-3.1-8b", "jetson-orin-nano-8gb"],
        ["llama-3.1-8b", "b200", "--dtype", "w8a8"],
        ["llama-3.1-8b", "a100-sxm-40gb", "--gpu-memory-utilization", "0.01"],
        ["llama-3.1-8b", "groq-cloud"],
    ],
)
def test_text_output_agrees_with_json(args: list[str]) -> None:
    runner = CliRunner()
    argv = ["estimate", "--model", args[0], "--hardware", args[1], *args[2:]]
    text, js = runner.invoke(app, argv), runner.invoke(app, [*argv, "--json"])
    assert text.exit_code == js.exit_code == 0, (text.output, js.output)
    d = json.loads(js.stdout)
    lines = dict(
        (m.group(1).strip(), m.group(2))
        for m in (re.match(r"\s+([^:]+):\s+(.*)$", ln) for ln in text.stdout.splitlines())
        if m
    )
    assert lines["fits"].startswith("yes" if d["fits"] else "NO")
    for label, (key, scale) in _SUMMARY.items():
        v = d[key]
        if label not in lines:
            assert v is None, label
            continue
        shown = lines[label]
        if v is None:
            assert shown.startswith("unknown"), (label, shown)
            continue
        num = float(shown.split()[0].replace(",", ""))
        assert num == pytest.approx(v * scale, rel=6e-3), (label, shown, v)
    if d["memory_gb"] is not None:
        for part in lines["memory per device"].split(", "):
            name, value, _ = part.split(" ")
            assert float(value) == pytest.approx(d["memory_gb"][name], rel=6e-3, abs=1e-9)
    for why in d["missing"]:
        assert f"unknown: {why}" in text.stdout


@pytest.mark.parametrize("sort", list(SORT_KEYS))
def test_rank_is_sorted_on_its_metric_and_its_rows_are_estimates(sort: str) -> None:
    envelope = 1e6 if sort == "envelope_tokens_per_s" else None
    for model, extra in (
        ("llama-3.1-8b", {}),
        ("qwen3-30b-a3b", {"dtype": "w4a16"}),
        ("smollm2-135m", {"prompt_tokens": 1, "output_tokens": 1}),
        ("llama-3.1-70b", {"gpu_memory_utilization": 0.5}),
    ):
        r = rank(model, sort=sort, power_envelope_w=envelope, **extra)
        values = [row.metric(sort) for row in r.rows]
        first_none = next((i for i, v in enumerate(values) if v is None), len(values))
        assert all(v is None for v in values[first_none:])  # unknowns last
        sign = 1.0 if SORT_KEYS[sort] else -1.0
        known = [sign * v for v in values[:first_none] if v is not None]
        assert known == sorted(known)
        keys = [row.sort_key(sort) for row in r.rows]
        assert keys == sorted(keys)  # and ties in catalog order: sorted() is stable
        for row in r.rows:
            assert row.ttft_s is None or row.ttft_s <= r.slo.ttft_s
            assert row.tpot_s is None or row.tpot_s <= r.slo.tpot_s
            if row.kind != "device":
                continue
            assert row.devices is not None and row.tp is not None and row.dtype is not None
            tdp = _catalog().devices[row.hardware].value("tdp_w")
            if row.peak_power_w is not None and tdp is not None:
                assert row.power_w <= row.peak_power_w * (1 + 1e-12)  # type: ignore[operator]
                assert row.peak_power_w <= tdp * row.devices * (1 + 1e-12)
            if sort == "usd_per_mtok":
                e = estimate(
                    model,
                    row.hardware,
                    tp=row.tp,
                    pp=row.pp,
                    dtype=row.dtype,
                    batch=row.batch,
                    prompt_tokens=r.prompt_tokens,
                    output_tokens=r.output_tokens,
                    gpu_memory_utilization=r.gpu_memory_utilization,
                )
                assert (row.ttft_s, row.tpot_s, row.usd_per_mtok, row.j_per_token) == (
                    e.ttft_s,
                    e.tpot_s,
                    e.usd_per_mtok,
                    e.energy_j_per_token,
                )


# -- found by this probe on 2026-12-05, fixed the same day ---------------------------------


def test_sram_parts_chips_as_needed_hold_the_model_past_the_kv_heads() -> None:
    # the chips were sized from (weights + KV) / tp while past the KV heads tensor parallelism
    # copies the KV cache (memory.layout_fit): 80 chips chosen, `fits: false`
    e = estimate("llama-3.1-8b", "groq-lpu", tp=16, dtype="fp16", prompt_tokens=1000,
                 output_tokens=1000)  # fmt: skip
    assert e.fits, (e.pp, e.reason)
    # and the fewest: one stage fewer does not hold it
    assert e.pp is not None and e.pp > 1
    assert not estimate("llama-3.1-8b", "groq-lpu", tp=16, pp=e.pp - 1, dtype="fp16",
                        prompt_tokens=1000, output_tokens=1000).fits  # fmt: skip


def test_compute_in_memory_max_batch_is_unknown_not_the_batch_asked() -> None:
    # it echoed the batch asked: 1 at --batch 1, 1000 at --batch 1000
    one = estimate("smollm2-135m", "mythic-m1076", dtype="int8", pp=2, batch=1)
    many = estimate("smollm2-135m", "mythic-m1076", dtype="int8", pp=2, batch=1000)
    assert one.fits and many.fits
    assert one.max_batch is None and many.max_batch is None
    assert "max batch" not in summary(one)


def test_sram_parts_max_batch_is_for_the_chips_chosen() -> None:
    # documented (docs/model.md): sized for the batch asked, a larger batch takes more chips;
    # on the chips chosen, one more than max_batch does not fit
    def groq(batch: int, pp: int | None = None) -> Estimate:
        return estimate(
            "llama-2-70b", "groq-lpu", dtype="int8", batch=batch, pp=pp, prompt_tokens=512,
            output_tokens=1000, gpu_memory_utilization=1.0,
        )  # fmt: skip

    e = groq(1)
    assert e.fits and e.max_batch == 1 and e.pp is not None
    assert not groq(2, pp=e.pp).fits
    more = groq(2)
    assert more.fits and more.pp is not None and more.pp > e.pp


@pytest.mark.parametrize("output_tokens", [1, 128])
def test_request_energy_matches_estimate_of_the_request_alone(output_tokens: int) -> None:
    # request_energy_j (serve's per-request joules) took one decode step more than estimate:
    # +30% at 512 + 1 tokens, 2x at 1 + 1
    e = estimate("llama-3.1-8b", "h100-sxm", batch=1, prompt_tokens=512,
                 output_tokens=output_tokens)  # fmt: skip
    assert e.perf is not None and e.energy_j_per_token and e.output_tokens_per_s
    total_j = e.energy_j_per_token * output_tokens
    total_s = output_tokens / e.output_tokens_per_s
    dynamic = total_j - e.perf.idle_power_w * total_s
    assert request_energy_j(e.perf, 512, output_tokens) == pytest.approx(dynamic, rel=1e-6)


def test_unknown_capacity_gives_no_max_batch() -> None:
    # a silent 0 before
    e = estimate("smollm2-135m", "hailo-8", dtype="int8")
    assert "no memory capacity" in e.reason
    assert e.max_batch is None


def test_hosted_api_layout_is_unknown_not_zero() -> None:
    # devices, tp and pp were 0 and the dtypes blank, in estimate's JSON and rank's rows
    d = estimate("llama-3.1-8b", "groq-cloud").to_dict()
    assert all(d[k] is None for k in ("devices", "tp", "pp", "dtype", "kv_dtype"))
    rows = [r for r in rank("llama-3.1-8b").rows if r.kind == "hosted"]
    assert rows and all(r.devices is None and r.tp is None and r.dtype is None for r in rows)
