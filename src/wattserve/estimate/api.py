"""The `estimate` verb as a Python function: one configuration in, one Estimate out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from wattserve.core.catalog import Catalog, load_catalog
from wattserve.core.cost import CostAssumptions, CostRate, cost_rate, token_usd
from wattserve.core.deployment import (
    DEFAULT_BATCHED_TOKENS,
    Deployment,
    budget_below_seqs,
    check_batched_tokens,
    default_kv_dtype,
    sram_stages,
)
from wattserve.core.dtypes import PEAK_DTYPES, Dtype, parse_dtype
from wattserve.core.energy import batch_run
from wattserve.core.hardware import Hardware, Provider
from wattserve.core.memory import (
    MAX_STEP_BATCH,
    MemoryFit,
    MemoryLayout,
    kv_tokens_held,
    layout_fit,
    memory_layout,
)
from wattserve.core.modelspec import ModelSpec, check_context, fits_context, load_model
from wattserve.core.params import (
    Calibration,
    EngineParams,
    check_memory_share,
    load_calibration,
)
from wattserve.core.perf import PerfModel, StepCost, perf_model
from wattserve.core.plausible import implausible_step
from wattserve.errors import ConfigError

_DEFAULT_COSTS = CostAssumptions()
_NO_CALIBRATION = Calibration()


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


@dataclass(frozen=True, slots=True)
class Estimate:
    """What one configuration costs in time, power, energy and dollars.

    `prefill_*` is the prefill of `prompt_tokens` for each of `batch` sequences arriving
    together, in the steps of at most `max_batched_tokens` the engine cuts it into;
    `decode_step_*` is one decode step for `batch` sequences at `context_tokens` each.
    `prefill_bound`/`decode_bound` name each step's largest term (`StepCost.bound`: rank's
    `bound` too). `max_batch` is the largest batch that fits, whatever `batch` is, and that the
    token budget per step admits (one token a sequence, as vLLM; `memory.max_batch`: the memory's
    alone).
    Per-token figures are per output token, the prefill share included. A value that cannot
    be computed is None, and `missing` says why.
    """

    model: str
    hardware: str
    devices: int | None  # None: a hosted API's (its hardware is not published)
    tp: int | None
    pp: int | None
    dtype: str | None
    kv_dtype: str | None
    batch: int
    prompt_tokens: int
    output_tokens: int
    context_tokens: int
    fits: bool
    max_batch: int | None
    reason: str
    prefill_s: float | None
    prefill_j: float | None
    decode_step_s: float | None
    decode_step_j: float | None
    ttft_s: float | None
    tpot_s: float | None
    output_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    power_w: float | None
    energy_j_per_token: float | None
    usd_per_mtok: float | None
    cost_basis: str
    memory: MemoryFit | None
    prefill_bound: str | None
    decode_bound: str | None
    calibration: str
    missing: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    perf: PerfModel | None = field(default=None, repr=False, compare=False)
    prefill_cost: StepCost | None = field(default=None, repr=False, compare=False)
    decode_cost: StepCost | None = field(default=None, repr=False, compare=False)
    provider: Provider | None = field(default=None, repr=False, compare=False)
    expert_parallel: bool = False
    # the share of each device's memory the engine takes (the flag's, the calibration's or
    # vLLM's 0.9); None for a hosted API
    gpu_memory_utilization: float | None = None
    # the engine's token budget per step (vLLM's max_num_batched_tokens), whose activations
    # the memory fit reserves; None for a hosted API
    max_batched_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by `wattserve estimate --json`."""
        skip = {"memory", "perf", "prefill_cost", "decode_cost", "provider"}
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name in skip:
                continue
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        out["memory_gb"] = None if self.memory is None else self.memory.as_dict()
        return out


@lru_cache(maxsize=4096)
def _prepared(
    spec: ModelSpec,
    hw: Hardware,
    tp: int,
    pp: int,
    wdtype: Dtype,
    kdtype: Dtype,
    params: EngineParams,
    costs: CostAssumptions,
    expert_parallel: bool = False,
    max_batched_tokens: int = DEFAULT_BATCHED_TOKENS,
) -> tuple[Deployment, PerfModel, CostRate, MemoryLayout, str]:
    """What every estimate of one layout shares, built once (a sweep asks for each many
    times, at other batches and lengths); last, why its figures are broken ("" if not)."""
    dep = Deployment(
        spec,
        hw,
        tp=tp,
        pp=pp,
        dtype=wdtype,
        kv_dtype=kdtype,
        expert_parallel=expert_parallel,
        max_batched_tokens=max_batched_tokens,
    )
    rate = cost_rate(hw, dep.devices, costs)
    pm = perf_model(dep, params)
    broken = "" if pm.missing else implausible_step(pm)
    return dep, pm, rate, memory_layout(dep, params), broken


def clear_caches() -> None:
    """Forget every layout built so far (benchmarks time a cold start with this)."""
    _prepared.cache_clear()
    perf_model.cache_clear()
    memory_layout.cache_clear()


def _positive(name: str, value: Any, allow_zero: bool = False) -> int:
    if type(value) is int and value > 0:  # the common case, first (bool is not int here)
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(f"must be {kind} integer, got {value!r}", field=name)
    return value


def _listed(names: list[str], most: int = 10) -> str:
    """Names for a message: at most `most`, each cut to 60 characters, escaped where not
    ASCII (a Cyrillic `һ100-sxm` printed as the h100-sxm it was said not to be)."""
    cut = (n if n.isascii() else ascii(n) for n in names[:most])
    shown = ", ".join(n if len(n) <= 60 else n[:60] + "..." for n in cut)
    more = f" and {len(names) - most:,} more" if len(names) > most else ""
    return (shown or "none") + more


def _unused_owned_costs(costs: CostAssumptions, rate: CostRate, hw_id: str) -> tuple[str, ...]:
    """The note where owned-cost assumptions were given for a device priced by its rent, which
    they do not enter (until 2026-12-07 they changed nothing without a word; a hosted API
    refuses them outright)."""
    if rate.basis != "rent" or costs == _DEFAULT_COSTS:
        return ()
    given = [
        text
        for text, differs in (
            (f"pue {costs.pue:g}", costs.pue != _DEFAULT_COSTS.pue),
            (
                f"electricity {costs.electricity_usd_per_kwh:g} $/kWh",
                costs.electricity_usd_per_kwh != _DEFAULT_COSTS.electricity_usd_per_kwh,
            ),
            (
                f"lifetime {costs.lifetime_years:g} years",
                costs.lifetime_years != _DEFAULT_COSTS.lifetime_years,
            ),
        )
        if differs
    ]
    if not given:
        return ()
    return (
        f"{', '.join(given)} not applied: {hw_id} is priced by its rent ($/h, power included); "
        "they apply to owned devices (cost basis own)",
    )


def estimate(
    model: str | ModelSpec,
    hardware: str,
    *,
    tp: int = 1,
    pp: int | None = None,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    batch: int = 1,
    prompt_tokens: int = 512,
    output_tokens: int = 128,
    context: int | None = None,
    calibration: Calibration | str | Path | None = None,
    catalog: Catalog | None = None,
    costs: CostAssumptions = _DEFAULT_COSTS,
    gpu_memory_utilization: float | None = None,
    expert_parallel: bool = False,
    max_batched_tokens: int | None = None,
) -> Estimate:
    """Estimate `model` on `hardware` (a device id or a hosted provider id).

    `context` is the KV-cache length of the decode step (default prompt + output / 2), at
    least the prompt; the memory fit holds each sequence's prompt + output tokens of KV cache,
    or `context` tokens where that is more.
    `gpu_memory_utilization` (vLLM's name): the share of device memory the engine may use for
    weights, activations and KV cache (default: the calibration's, else 0.9).
    `expert_parallel` (vLLM's `--enable-expert-parallel`): an MoE's experts placed whole
    across the `tp` devices, the step waiting for the busiest one (docs/model.md).
    `max_batched_tokens` (vLLM's `--max-num-batched-tokens`, default 8,192): the engine's
    token budget per step, whose activations the memory fit reserves (as a fleet's replica).
    """
    for name, text in (("hardware", hardware), ("dtype", dtype), ("kv_dtype", kv_dtype or "")):
        if not isinstance(text, str):  # the API's callers: a None here was an AttributeError
            raise ConfigError(f"must be text, got {text!r:.40}", field=name)
    if not isinstance(model, str | ModelSpec):
        raise ConfigError(f"must be a model id, a config path or a ModelSpec, got {model!r:.40}",
                          field="model")  # fmt: skip
    if catalog is not None and not isinstance(catalog, Catalog):
        raise ConfigError(f"must be a Catalog, got {catalog!r:.40}", field="catalog")
    if not isinstance(costs, CostAssumptions):
        raise ConfigError(f"must be a CostAssumptions, got {costs!r:.40}", field="costs")
    tp = _positive("tp", tp)
    budget = (
        DEFAULT_BATCHED_TOKENS
        if max_batched_tokens is None
        else check_batched_tokens(max_batched_tokens)
    )
    if pp is not None:
        pp = _positive("pp", pp)
    batch = _positive("batch", batch)
    if batch > MAX_STEP_BATCH:  # 1e20 printed a KV cache of 8.39e+18 GB
        raise ConfigError(f"must be at most {MAX_STEP_BATCH:,}, got {batch:.3g}", field="batch")
    prompt_tokens = _positive("prompt_tokens", prompt_tokens)
    output_tokens = _positive("output_tokens", output_tokens)
    ctx = prompt_tokens + output_tokens // 2 if context is None else _positive("context", context)
    cat = catalog if catalog is not None else load_catalog()
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    check_context(spec, prompt_tokens, output_tokens, field="prompt_tokens")
    if context is not None and not fits_context(spec.max_context, ctx, 0):
        raise ConfigError(
            f"{ctx} tokens exceed {spec.id}'s context window of {spec.max_context} tokens",
            field="context",
        )
    if ctx < prompt_tokens:  # a decode step's context holds its prompt already
        raise ConfigError(
            f"a decode context of {ctx} tokens is shorter than the {prompt_tokens}-token prompt "
            "it follows; give at least the prompt's length, or leave it out for "
            "prompt + output/2",
            field="context",
        )
    known = cat.known_id(hardware) or hardware  # any case, as cat.device takes it
    if known not in cat.devices and known in cat.providers:
        # how a provider runs the model is its own: a layout asked of it was ignored silently
        for name, asked in (
            ("tp", tp != 1),
            ("pp", pp is not None),
            ("dtype", dtype.strip().lower() != "bf16"),
            ("kv_dtype", kv_dtype is not None),
            ("gpu_memory_utilization", gpu_memory_utilization is not None),
            ("expert_parallel", expert_parallel),
            ("max_batched_tokens", max_batched_tokens is not None),
            ("batch", batch != 1),  # its latency profile is per user, whatever else it batches
            # a decode step's KV context: the provider's profile has none (echoed and unused
            # until 2026-12-07)
            ("context", context is not None),
            ("calibration", calibration is not None),
            # it is priced per token: what owning or renting devices costs does not apply
            ("cost_basis", costs.basis != _DEFAULT_COSTS.basis),
            (
                "electricity_usd_per_kwh",
                costs.electricity_usd_per_kwh != _DEFAULT_COSTS.electricity_usd_per_kwh,
            ),
            ("pue", costs.pue != _DEFAULT_COSTS.pue),
            ("lifetime_years", costs.lifetime_years != _DEFAULT_COSTS.lifetime_years),
        ):
            if asked:
                raise ConfigError(
                    f"{known} is a hosted API, which runs the model its own way: {name} applies "
                    "to devices only",
                    field=name,
                )
        return _provider_estimate(
            cat.providers[known], spec, batch, prompt_tokens, output_tokens, ctx
        )
    # vLLM's rule, as a fleet file's: until 2026-12-07 a batch of 64 was timed at a budget of
    # one token a step, and rank searched batches the engine would refuse
    below = budget_below_seqs(
        budget,
        batch,
        budget_name=(
            "max_batched_tokens" if max_batched_tokens else "the default max_batched_tokens"
        ),
        seqs_name="batch",
    )
    if below:
        raise ConfigError(
            f"{below}; give max_batched_tokens of at least {batch}, or a smaller batch",
            field="batch" if max_batched_tokens is None else "max_batched_tokens",
        )
    hw = cat.device(hardware)
    wdtype = parse_dtype(dtype, "dtype")
    kdtype = (
        default_kv_dtype(wdtype)
        if kv_dtype is None
        else parse_dtype(kv_dtype, "kv_dtype", PEAK_DTYPES)
    )
    if calibration is None:
        calib = _NO_CALIBRATION
    elif isinstance(calibration, Calibration):
        calib = calibration
    else:
        calib = load_calibration(calibration)
    params = calib.params_for(hw)
    unmatched = (
        (
            f"the calibration has no entry for {hw.id} (it has {_listed(sorted(calib.params))}): "
            "uncalibrated terms used",
        )
        # a file the user named for this estimate; rank and plan pass one Calibration for
        # every device, most of which it does not cover
        if calibration is not None
        and not isinstance(calibration, Calibration)
        and calib.entry_id(hw.id) is None
        else ()
    )
    seen = None
    if spec.is_moe and calib.terms:
        entry = calib.entry_id(hw.id)
        seen = calib.terms.get(entry) if entry is not None else None
    unseen = (
        (
            f"the calibration of {hw.id} was fitted on no MoE rows: {spec.id}'s expert "
            "kernels and routing keep their default terms (docs/model.md)",
        )
        # calibrate records the terms it weighed; the MoE ones only where rows ran an MoE
        if seen and any(seen) and "eff_expert" not in seen[0] + seen[1]
        else ()
    )
    if gpu_memory_utilization is not None:
        share = check_memory_share(gpu_memory_utilization)
        params = params.with_updates(memory_utilization=share)
    seq_tokens = kv_tokens_held(prompt_tokens, output_tokens, ctx)  # what the steps hold
    if pp is None:
        stages = sram_stages(spec, hw, wdtype, kdtype, batch * seq_tokens, params, tp)
        pp = 1 if stages is None else stages
    if expert_parallel is not False and expert_parallel is not True:
        raise ConfigError(
            f"must be true or false, got {expert_parallel!r}", field="expert_parallel"
        )
    dep, perf, rate, lay, broken = _prepared(
        spec, hw, tp, pp, wdtype, kdtype, params, costs, expert_parallel, budget
    )
    fit = layout_fit(lay, dep, batch, seq_tokens, dep.max_batched_tokens)
    missing = list(perf.missing)
    computable = fit.fits and not perf.missing
    # in the steps the token budget cuts it into, as the engine runs it (simulate's TTFT)
    pre = perf.batch_prefill(batch, prompt_tokens) if computable else None
    dec = perf.decode_step(batch, ctx) if computable else None
    if pre is None or dec is None:
        times: dict[str, float | None] = dict.fromkeys(
            (
                "prefill_s",
                "prefill_j",
                "decode_step_s",
                "decode_step_j",
                "output_tokens_per_s",
                "decode_tokens_per_s",
                "power_w",
                "energy_j_per_token",
                "usd_per_mtok",
            )
        )
    else:
        missing += perf.power_missing
        if rate.basis == "unknown":
            missing.append(rate.reason)
        total_s, total_j = batch_run(pre, dec, output_tokens)
        out_tokens = batch * output_tokens
        times = {
            "prefill_s": pre.time_s,
            "prefill_j": _num(pre.energy_j),
            "decode_step_s": dec.time_s,
            "decode_step_j": _num(dec.energy_j),
            "output_tokens_per_s": out_tokens / total_s,
            "decode_tokens_per_s": batch / dec.time_s,
            "power_w": _num(total_j / total_s),
            "energy_j_per_token": _num(total_j / out_tokens),
            "usd_per_mtok": _num(rate.usd(total_s, total_j) / out_tokens * 1e6),
        }
    return Estimate(
        model=spec.id,
        hardware=hw.id,
        devices=dep.devices,
        tp=tp,
        pp=pp,
        dtype=wdtype,
        kv_dtype=kdtype,
        batch=batch,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        context_tokens=ctx,
        fits=fit.fits,
        # no more sequences than the budget has tokens (until 2026-12-07: 726 at a budget of 1)
        max_batch=None if fit.max_batch is None else min(fit.max_batch, budget),
        reason=fit.reason,
        ttft_s=times["prefill_s"],
        tpot_s=times["decode_step_s"],
        cost_basis=rate.basis,
        memory=fit,
        gpu_memory_utilization=params.memory_utilization,
        max_batched_tokens=dep.max_batched_tokens,
        prefill_bound=None if pre is None else pre.bound,
        decode_bound=None if dec is None else dec.bound,
        calibration=params.source,
        missing=tuple(missing),
        assumptions=unmatched
        + unseen
        + _unused_owned_costs(costs, rate, hw.id)
        + calib.caution(hw.id)
        + ((broken,) if broken else ())
        + (  # (total_params is computed: only where a calibration recorded its rows)
            calib.beyond(
                hw, spec.id, spec.total_params, batch * prompt_tokens, batch, ctx, dep.tp, dep.dtype
            )
            if calib.measured
            else ()
        )
        + tuple(perf.assumptions),
        perf=perf,
        prefill_cost=pre,
        decode_cost=dec,
        expert_parallel=expert_parallel,
        **times,  # type: ignore[arg-type]
    )


def _provider_estimate(
    provider: Provider, spec: ModelSpec, batch: int, prompt: int, output: int, ctx: int
) -> Estimate:
    """A hosted API: latency from its published profile, dollars from its token prices."""
    offer = provider.offers.get(spec.id)
    missing: list[str] = []
    if offer is None:
        reason = f"{provider.id} does not list {spec.id}; it serves: {', '.join(provider.offers)}"
        fits = False
    else:
        reason, fits = "", True
    ttft = tpot = usd = tps = None
    if offer is not None:
        ttft = None if offer.ttft_s is None else offer.ttft_s.value
        if offer.output_tokens_per_s is not None:
            tps = offer.output_tokens_per_s.value
            tpot = 1.0 / tps
        else:
            missing.append(f"{provider.id} publishes no output speed for {spec.id}")
        if ttft is None:
            missing.append(f"{provider.id} publishes no time to first token for {spec.id}")
        if offer.usd_per_mtok_input is not None and offer.usd_per_mtok_output is not None:
            per_request = token_usd(
                prompt, output, offer.usd_per_mtok_input.value, offer.usd_per_mtok_output.value
            )
            usd = per_request / output * 1e6  # $ per 1M output tokens
        else:
            missing.append(f"{provider.id} publishes no token prices for {spec.id}")
    missing.append(f"{provider.id} publishes no energy figures: power and J/token are unknown")
    return Estimate(
        model=spec.id,
        hardware=provider.id,
        devices=None,
        tp=None,
        pp=None,
        dtype=None,
        kv_dtype=None,
        batch=batch,
        prompt_tokens=prompt,
        output_tokens=output,
        context_tokens=ctx,
        fits=fits,
        max_batch=None,
        reason=reason,
        prefill_s=ttft,
        prefill_j=None,
        decode_step_s=tpot,
        decode_step_j=None,
        ttft_s=ttft,
        tpot_s=tpot,
        output_tokens_per_s=tps,
        decode_tokens_per_s=tps,
        power_w=None,
        energy_j_per_token=None,
        usd_per_mtok=usd,
        cost_basis="unknown" if usd is None else "per-token",  # a free API is $0, not unknown
        memory=None,
        prefill_bound=None,
        decode_bound=None,
        calibration="provider profile",
        missing=tuple(missing),
        provider=provider,
    )
