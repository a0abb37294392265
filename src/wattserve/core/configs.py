"""The configuration search: every way one kind of device can serve a model within an SLO.

A configuration is a layout (tensor parallel `tp`, pipeline stages `pp`, weight dtype) and a
batch. For each layout the search finds, by bisection, the largest batch that fits in memory
and meets both SLOs, then evaluates with `estimate` (the one formula for every figure) the
configurations worth reporting: batch 1 and that largest batch. Why only those two: TTFT and
TPOT never fall as the batch grows, while time, joules and dollars per output token never rise
(each step term divided by the batch is non-increasing; docs/rank.md), so the largest feasible
batch is best for $/token, J/token, tokens/s and tokens/s per kW, and batch 1 for latency.
One exception is small: where a batch's prompts spill into one more prefill step of the token
budget (a step that reads the weights for a few tokens), per-token figures rise by up to about
0.4% (the prefill in the budget's steps, since 2026-12-07), so the largest batch is within that
of the best.
SRAM-only parts are the exception: their chip count grows with the batch's KV cache, so joules
and dollars per token can rise with the batch; for them every power of two up to the largest
feasible batch is evaluated as well.

Which layouts a device allows:
- DRAM/HBM parts: tp in 1, 2, 4, 8 (dividing the attention heads; tp > 1 needs a published
  interconnect), pp in powers of two, up to `max_devices` per group. pp grows only while more
  memory raises the feasible batch (once the SLO limits the batch, more stages add nothing).
- SRAM-only parts (Groq, Cerebras): tp 1, as many pipelined chips as weights and KV cache fill
  (the same rule as `estimate`, so the chip count follows the batch).
- Edge modules and compute-in-memory parts: one device, judged as the stand-alone part it is.

Pure: it reads nothing; the caller passes the model, the catalog and the calibration.
`plan` builds its candidate deployments from `search_configs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from wattserve.core.catalog import Catalog
from wattserve.core.cost import CostAssumptions
from wattserve.core.deployment import DEFAULT_BATCHED_TOKENS, Deployment
from wattserve.core.dtypes import BYTES_PER_ELEMENT, COMPUTE_PEAK_ORDER, Dtype
from wattserve.core.hardware import PEAK_PREFIX, Hardware
from wattserve.core.memory import kv_tokens_held, memory_fit
from wattserve.core.modelspec import ModelSpec
from wattserve.core.params import Calibration, EngineParams, check_memory_share
from wattserve.core.perf import PerfModel
from wattserve.core.workload import SLO
from wattserve.errors import ConfigError
from wattserve.estimate.api import Estimate, estimate

# Weight dtypes `--dtype auto` tries, each where the device publishes a peak for it.
AUTO_DTYPES: tuple[Dtype, ...] = ("bf16", "fp8", "int8", "int4")
# the weight formats a search may be asked for by name (rank --dtype, plan --dtype): AUTO_DTYPES
# and the weight-only ones, 4- or 8-bit weights in 16-bit math (w8a8: int8 math), docs/model.md
SEARCH_DTYPES: tuple[Dtype, ...] = (*AUTO_DTYPES, "w4a16", "w8a16", "w8a8")
TP_DEGREES: tuple[int, ...] = (1, 2, 4, 8)
SINGLE_DEVICE_CATEGORIES: tuple[str, ...] = ("edge-module", "compute-in-memory")


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """What the search may try.

    `dtypes` None means every dtype of AUTO_DTYPES the device has a peak for. `max_devices`
    bounds tp * pp on DRAM parts (SRAM-only parts take the chips the model needs).
    `max_batch` bounds the batch: vLLM-like engines rarely run more sequences at once.
    """

    dtypes: tuple[Dtype, ...] | None = None
    max_tp: int = 8
    max_devices: int = 64
    max_batch: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_tp", "max_devices", "max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)


@dataclass(frozen=True, slots=True)
class Layout:
    """How the model is laid out on a group of devices. `pp` None: as many pipelined chips as
    the batch's weights and KV cache fill (SRAM-only parts)."""

    tp: int
    pp: int | None
    dtype: Dtype

    def describe(self) -> str:
        stages = "chips as needed" if self.pp is None else f"pp={self.pp}"
        return f"tp={self.tp}, {stages}, {self.dtype}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One evaluated configuration: its layout, its `estimate`, and how far from the SLO.

    `slo_excess` is the larger of TTFT / SLO TTFT and TPOT / SLO TPOT: at most 1 meets the SLO.
    `max_batch_slo` is the largest batch of this layout that fits and meets the SLO (0: none).
    """

    layout: Layout
    estimate: Estimate
    slo_excess: float
    max_batch_slo: int

    @property
    def meets_slo(self) -> bool:
        return self.slo_excess <= 1.0

    @property
    def batch(self) -> int:
        return self.estimate.batch

    @property
    def devices(self) -> int:
        devices = self.estimate.devices
        assert devices is not None  # a candidate is a device layout, never a hosted API
        return devices


@dataclass(frozen=True, slots=True)
class DeviceConfigs:
    """Everything the search learnt about one device for one model.

    `feasible`: configurations that fit and meet both SLOs (empty when none).
    `closest_miss`: when none is feasible, the fitting configuration nearest to the SLO.
    `no_fit`: why no layout fits, and what it would take. `missing`: figures the model needs
    that the catalog lacks (then nothing could be timed).
    """

    hardware: Hardware
    feasible: tuple[Candidate, ...]
    closest_miss: Candidate | None
    no_fit: str
    missing: tuple[str, ...]

    @property
    def status(self) -> str:
        """ok, misses-slo, does-not-fit or missing-figure."""
        if self.feasible:
            return "ok"
        if self.closest_miss is not None:
            return "misses-slo"
        if self.missing:
            return "missing-figure"
        return "does-not-fit"

    def best(self, key: Callable[[Candidate], float]) -> Candidate | None:
        """The feasible candidate with the smallest key (ties: fewer devices, smaller batch)."""
        if not self.feasible:
            return None
        return min(self.feasible, key=lambda c: (key(c), c.devices, c.batch))


def tpot_counts(output_tokens: int) -> bool:
    """Whether an answer of `output_tokens` has a time between tokens to hold to a TPOT
    limit: not one of a single token, which the prefill samples (simulate and serve judge
    such a request on TTFT alone; so do rank and plan, devices and hosted APIs alike)."""
    return output_tokens > 1


def slo_excess(e: Estimate, slo: SLO) -> float:
    """max(TTFT / SLO, TPOT / SLO); infinite when a time that counts is unknown. An answer of
    one token has no time between tokens (the prefill samples it), so TTFT alone counts, as
    simulate and serve judge such a request."""
    if e.ttft_s is None:
        return math.inf
    if not tpot_counts(e.output_tokens):
        return e.ttft_s / slo.ttft_s
    if e.tpot_s is None:
        return math.inf
    return max(e.ttft_s / slo.ttft_s, e.tpot_s / slo.tpot_s)


def check_slo(slo: SLO) -> SLO:
    """`slo` if both targets are positive and finite, else ConfigError naming the flag."""
    for name, value in (("--slo-ttft", slo.ttft_s), ("--slo-tpot", slo.tpot_s)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"must be a number of seconds, got {value!r}", field=name)
        if not 0 < value <= 86_400:  # a day: past it no latency target (1e308 printed inf ms)
            raise ConfigError(
                f"must be a positive number of seconds, at most 86400 (a day), got {value!r}",
                field=name,
            )
    return slo


def four_bit(hw: Hardware) -> Dtype:
    """How `hw` holds 4-bit weights: int4 math where it has an int4 peak, else weight-only
    (`w4a16`: dequantised into 16-bit math, as GPTQ, AWQ and GGUF Q4 run on any GPU or CPU)."""
    return "int4" if "int4" in hw.peaks() else "w4a16"


def candidate_dtypes(hw: Hardware, space: SearchSpace) -> tuple[Dtype, ...]:
    """The weight dtypes to try on `hw`: the space's, or every auto dtype it has a peak for
    (bf16 also where only fp16 is published: they run at one rate on every listed device;
    and where only fp32 is, as a CPU's: its 16-bit math runs at that peak, COMPUTE_PEAK_ORDER)."""
    if space.dtypes is not None:
        return space.dtypes
    peaks = hw.peaks()
    sixteen = any(p in peaks for p in COMPUTE_PEAK_ORDER["bf16"])
    return tuple(d for d in AUTO_DTYPES if d in peaks or (d == "bf16" and sixteen))


def _powers_of_two(limit: int) -> list[int]:
    out, n = [], 1
    while n <= limit:
        out.append(n)
        n *= 2
    return out


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """The largest b in [lo, hi] with ok(b), given ok(lo) and ok monotone (true then false)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True, slots=True)
class _Job:
    """The fixed inputs of one device's search, shared by its helpers."""

    model: ModelSpec
    hw: Hardware
    catalog: Catalog
    slo: SLO
    prompt_tokens: int
    output_tokens: int
    calibration: Calibration
    costs: CostAssumptions
    space: SearchSpace
    params: EngineParams
    memory_share: float | None  # --gpu-memory-utilization, over every calibration's
    batched_tokens: int | None  # --max-batched-tokens (None: the engine's default)

    @property
    def batch_limit(self) -> int:
        """The largest batch to search: the space's, and no more sequences than the engine's
        token budget per step has tokens (vLLM refuses more, as `estimate` does; until
        2026-12-07 rank picked batch 139 at a budget of one token)."""
        budget = DEFAULT_BATCHED_TOKENS if self.batched_tokens is None else self.batched_tokens
        return min(self.space.max_batch, budget)

    def evaluate(self, layout: Layout, batch: int, max_batch_slo: int) -> Candidate:
        e = estimate(
            self.model,
            self.hw.id,
            tp=layout.tp,
            pp=layout.pp,
            dtype=layout.dtype,
            batch=batch,
            prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens,
            calibration=self.calibration,
            catalog=self.catalog,
            costs=self.costs,
            gpu_memory_utilization=self.memory_share,
            max_batched_tokens=self.batched_tokens,
        )
        return Candidate(layout, e, slo_excess(e, self.slo), max_batch_slo)

    def fits(self, dep: Deployment, batch: int) -> bool:
        seq = kv_tokens_held(self.prompt_tokens, self.output_tokens, 0)  # as estimate holds
        return memory_fit(dep, self.params, batch, seq, dep.max_batched_tokens).fits

    def within_slo(self, perf: PerfModel, batch: int, *, context: int) -> bool:
        """Both SLOs met at `batch`: the PerfModel calls `estimate` makes for TTFT and TPOT."""
        return perf.batch_prefill_s(batch, self.prompt_tokens) <= self.slo.ttft_s and (
            not tpot_counts(self.output_tokens)  # no decode step (`slo_excess`)
            or perf.decode_step(batch, context).time_s <= self.slo.tpot_s
        )

    def feasible(self, layout: Layout, batch: int) -> bool:
        """Fits and meets the SLO, by `estimate` itself: for layouts whose device count
        follows the batch (SRAM-only parts), where `estimate` decides the chip count."""
        c = self.evaluate(layout, batch, 0)
        return c.estimate.fits and c.meets_slo


def _layouts(job: _Job, dtype: Dtype) -> list[list[Layout]]:
    """Layouts to try, grouped by tp: within a group pp grows (see the module docstring)."""
    hw, m, space = job.hw, job.model, job.space
    if hw.memory_kind == "sram":
        return [[Layout(1, None, dtype)]]
    if hw.category in SINGLE_DEVICE_CATEGORIES or hw.memory_kind != "dram":
        return [[Layout(1, 1, dtype)]]
    linked = hw.value("interconnect_gbps") is not None
    groups = []
    for tp in TP_DEGREES:
        if tp > space.max_tp or m.num_heads % tp or (tp > 1 and not linked):
            continue
        pps = [pp for pp in _powers_of_two(space.max_devices // tp) if pp <= m.num_layers]
        groups.append([Layout(tp, pp, dtype) for pp in pps])
    return groups


def _would_need(job: _Job, dtypes: tuple[Dtype, ...]) -> str:
    """What it would take for the model to fit, for a device where no layout does."""
    hw, m = job.hw, job.model
    if not dtypes:
        return ""
    small = min(dtypes, key=lambda d: BYTES_PER_ELEMENT[d])
    weights_gb = m.weight_bytes(small) / 1e9
    capacity = hw.value("memory_gb")
    if capacity is None or hw.memory_kind != "dram":
        return ""
    usable = capacity * job.params.memory_utilization
    need = math.ceil(weights_gb / usable)
    limit = 1 if hw.category in SINGLE_DEVICE_CATEGORIES else job.space.max_devices
    why = (
        f"; its weights alone need {weights_gb:.1f} GB in {small}, at least {need} device(s) of "
        f"{usable:.1f} GB usable, and the search allows {limit} per group"
    )
    four = four_bit(hw)
    four_gb = m.weight_bytes(four) / 1e9
    if job.space.dtypes is None and small != four and math.ceil(four_gb / usable) <= limit:
        # auto tries the formats the device has a peak for; 4-bit weights would fit
        why += f"; in 4-bit weights ({four_gb:.1f} GB) try --dtype {four}"
    return why


def search_configs(
    model: ModelSpec,
    hardware: Hardware,
    catalog: Catalog,
    *,
    slo: SLO,
    prompt_tokens: int,
    output_tokens: int,
    calibration: Calibration | None = None,
    costs: CostAssumptions | None = None,
    space: SearchSpace | None = None,
    gpu_memory_utilization: float | None = None,
    max_batched_tokens: int | None = None,
) -> DeviceConfigs:
    """Every configuration of `hardware` worth reporting for `model` at `slo`; the engine's
    memory share and token budget per step as `estimate` takes them.

    Each feasible candidate's `estimate` is exactly what `wattserve estimate` prints for its
    configuration (the same function computes it). `hardware` must be in `catalog`.
    """
    check_slo(slo)
    for name, value in (("prompt_tokens", prompt_tokens), ("output_tokens", output_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
    calib = calibration if calibration is not None else Calibration()
    share = None if gpu_memory_utilization is None else check_memory_share(gpu_memory_utilization)
    params = calib.params_for(hardware)
    job = _Job(
        model,
        hardware,
        catalog,
        slo,
        prompt_tokens,
        output_tokens,
        calib,
        costs if costs is not None else CostAssumptions(),
        space if space is not None else SearchSpace(),
        params if share is None else params.with_updates(memory_utilization=share),
        share,
        max_batched_tokens,
    )
    dtypes = candidate_dtypes(hardware, job.space)
    if not dtypes:
        have = ", ".join(sorted(hardware.peaks())) or "none"
        wanted = ", ".join(f"{PEAK_PREFIX}{d}" for d in AUTO_DTYPES)
        return DeviceConfigs(
            hardware, (), None, "", (f"{hardware.id} has none of {wanted} (it has: {have})",)
        )
    feasible: list[Candidate] = []
    misses: list[Candidate] = []
    missing: list[str] = []
    no_fit = ""
    for dtype in dtypes:
        for group in _layouts(job, dtype):
            found, reason = _search_group(job, group, feasible, misses, missing)
            if reason and not no_fit and not found:
                no_fit = reason
    closest = None
    if not feasible and misses:
        closest = min(misses, key=lambda c: (c.slo_excess, c.devices))
    if not feasible and closest is None and not missing:
        no_fit = (no_fit or f"{model.id} does not fit on {hardware.id}") + _would_need(job, dtypes)
    return DeviceConfigs(
        hardware,
        tuple(feasible),
        closest,
        no_fit,
        tuple(dict.fromkeys(missing)),
    )


def _search_group(
    job: _Job,
    group: list[Layout],
    feasible: list[Candidate],
    misses: list[Candidate],
    missing: list[str],
) -> tuple[bool, str]:
    """Search one tp's layouts as pp grows; returns (any layout fitted, why none fitted)."""
    reason = ""
    prev_best = 0
    for layout in group:
        first = job.evaluate(layout, 1, 0)
        e = first.estimate
        if job.hw.memory_kind == "unknown":
            missing.append(e.reason)
            return False, ""
        if e.fits and e.perf is not None and e.perf.missing:
            missing.extend(e.perf.missing)  # the same for every stage count
            return False, ""
        if not e.fits:
            reason = reason or e.reason
            continue
        if not first.meets_slo:
            misses.append(first)
            return True, ""  # more stages only add latency; batch 1 is the fastest
        limit = job.batch_limit
        cap = limit
        if layout.pp is None:
            best = _largest(1, cap, partial(job.feasible, layout))
        else:
            assert e.perf is not None  # it fits and nothing is missing
            dep = e.perf.deployment
            if e.max_batch is not None:  # None: no memory limit modelled (compute-in-memory)
                cap = min(cap, max(1, e.max_batch))
            if not job.fits(dep, cap):  # the activation workspace grows with the batch
                cap = _largest(1, cap, partial(job.fits, dep))
            best = _largest(1, cap, partial(job.within_slo, e.perf, context=e.context_tokens))
        feasible.append(Candidate(layout, e, first.slo_excess, best))
        more = [best] if layout.pp is not None else [*_powers_of_two(best), best]
        feasible.extend(job.evaluate(layout, b, best) for b in sorted(set(more)) if b > 1)
        # more stages help only while memory, not the SLO or the batch cap, limits the batch
        memory_bound = best == cap and cap < limit
        if not memory_bound or best <= prev_best:
            return True, ""
        prev_best = best
    return False, reason
