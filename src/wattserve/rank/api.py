"""The `rank` verb as a Python function: every device and hosted API for one model, each at its
best configuration that meets the SLO, with what was left out and why."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from wattserve.core.catalog import Catalog, load_catalog
from wattserve.core.configs import (
    SEARCH_DTYPES,
    Candidate,
    DeviceConfigs,
    SearchSpace,
    check_slo,
    search_configs,
    tpot_counts,
)
from wattserve.core.cost import CostAssumptions, check_pue
from wattserve.core.deployment import Deployment, check_batched_tokens
from wattserve.core.dtypes import parse_dtype
from wattserve.core.hardware import (
    CATEGORIES,
    MATURITY,
    SOFTWARE,
    Hardware,
    Provider,
    stack_excluded,
)
from wattserve.core.modelspec import ModelSpec, check_context, load_model
from wattserve.core.params import Calibration, check_memory_share, load_calibration
from wattserve.core.pareto import pareto_front
from wattserve.core.perf import perf_model
from wattserve.core.plausible import implausible_step
from wattserve.core.sites import MAX_POWER_W
from wattserve.core.workload import DEFAULT_TPOT_S, DEFAULT_TTFT_S, SLO
from wattserve.errors import ConfigError, UnknownNameError
from wattserve.estimate.api import estimate
from wattserve.rank.envelope import with_envelope
from wattserve.rank.rows import HOSTED, SORT_KEYS, Row, device_row, hosted_row

# Median prompt and output lengths of the Azure LLM inference trace 2023, conversation
# (19,366 requests; shared/traces/azure_llm_2023_conv.csv, CC-BY 4.0).
DEFAULT_PROMPT_TOKENS = 1020
DEFAULT_OUTPUT_TOKENS = 129

# Least to most mature: a filter keeps its level and every level after it.
# The weight formats rank searches: auto (every format the device has a peak for), or one,
# weight-only ones included (w4a16: 4-bit weights in 16-bit math, on any device; docs/model.md).
DTYPE_CHOICES = ("auto", *SEARCH_DTYPES)
# Facility power over IT power: never below 1 (the facility includes the IT), and 5 is past the
# worst site surveyed (Uptime Institute 2023: average 1.58, few above 2.5).


@dataclass(frozen=True, slots=True)
class Excluded:
    """A device or hosted API left out of the ranking. `why` is does-not-fit, misses-slo,
    missing-figure, filtered or not-served; `closest_miss` is the configuration nearest to the
    SLO when it misses."""

    hardware: str
    kind: str
    why: str
    reason: str
    closest_miss: Row | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "hardware": self.hardware,
            "kind": self.kind,
            "why": self.why,
            "reason": self.reason,
            "closest_miss": None if self.closest_miss is None else self.closest_miss.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Ranking:
    """The ranking: `rows` best first on `sort` (all of them; `shown` honours --top)."""

    model: str
    prompt_tokens: int
    output_tokens: int
    slo: SLO
    sort: str
    dtype: str
    pue: float
    power_envelope_w: float | None
    training_cost_usd: float | None
    daily_tokens: float | None
    rows: tuple[Row, ...]
    excluded: tuple[Excluded, ...]
    top: int | None = None
    calibration: str = ""
    notes: tuple[str, ...] = field(default=())
    gpu_memory_utilization: float | None = None
    max_batched_tokens: int | None = None  # the flag's; None: the engine's default, 8,192

    @property
    def shown(self) -> tuple[Row, ...]:
        return self.rows if self.top is None else self.rows[: self.top]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by `wattserve rank --json`."""
        return {
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "slo": {"ttft_s": self.slo.ttft_s, "tpot_s": self.slo.tpot_s},
            "sort": self.sort,
            "dtype": self.dtype,
            "pue": self.pue,
            "power_envelope_w": self.power_envelope_w,
            "training_cost_usd": self.training_cost_usd,
            "daily_tokens": self.daily_tokens,
            "calibration": self.calibration,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_batched_tokens": self.max_batched_tokens,
            "rows": [r.to_dict() for r in self.shown],
            "excluded": [x.to_dict() for x in self.excluded],
            "notes": list(self.notes),
        }


def positive(
    flag: str, value: Any, integer: bool = False, at_least: float = 0.0, at_most: float = math.inf
) -> Any:
    """`value` if it is a positive finite number (an integer when asked), within
    [at_least, at_most] when given, else ConfigError naming `flag`."""
    ok = not isinstance(value, bool) and isinstance(value, int if integer else int | float)
    if not ok or not 0 < value < math.inf:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"must be {kind}, got {value!r}", field=flag)
    if not at_least <= value <= at_most:
        span = f"from {at_least:g} to {at_most:g}" if at_least else f"at most {at_most:g}"
        raise ConfigError(f"must be {span}, got {value!r}", field=flag)
    return value


# Bounds past any real use, so that no figure behind them overflows or a count never ends:
# a power envelope as a site's cap (MAX_POWER_W); a day's tokens from one to a billion billion;
# a training run up to a quadrillion dollars.
MAX_ENVELOPE_W = MAX_POWER_W
DAILY_TOKENS = (1.0, 1e18)
MAX_TRAINING_USD = 1e15


def _choices(flag: str, values: Iterable[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """`values` as the `allowed` spell them, in any case (`GPU`, as catalog and estimate take
    it), or a ConfigError naming `flag`."""
    canonical = {a.lower(): a for a in allowed}
    out = []
    for v in values:
        found = canonical.get(v.strip().lower()) if isinstance(v, str) else None
        if found is None:
            raise ConfigError(f"'{v}' is not one of {', '.join(allowed)}", field=flag)
        out.append(found)
    return tuple(out)


def _broken_terms(spec: ModelSpec, hw: Hardware, calib: Calibration) -> tuple[str, ...]:
    """The note where a calibration's terms make the least step of `spec` on `hw` implausible
    (core.plausible.implausible_step: a fleet's replica refuses them; estimate says so)."""
    pm = perf_model(Deployment(spec, hw), calib.params_for(hw))
    broken = "" if pm.missing else implausible_step(pm)
    return (broken,) if broken else ()


def _describe(row: Row) -> str:
    def ms(v: float | None) -> str:
        if v is None:
            return "unknown"
        return f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"

    where = f"{row.devices} device(s), tp={row.tp}, pp={row.pp}, {row.dtype}, batch {row.batch}"
    return f"{where}: TTFT {ms(row.ttft_s)}, TPOT {ms(row.tpot_s)}"


def _device_entry(
    hw: Hardware, found: DeviceConfigs, slo: SLO, choose: str, envelope: tuple[float, float] | None
) -> Row | Excluded:
    def row_of(c: Candidate) -> Row:
        r = device_row(c.estimate, hw)
        return r if envelope is None else with_envelope(r, *envelope)

    status = found.status
    if status == "ok":
        return min((row_of(c) for c in found.feasible), key=lambda r: r.sort_key(choose))
    if status == "misses-slo" and found.closest_miss is not None:
        miss = row_of(found.closest_miss)
        reason = (
            f"misses the SLO (TTFT {slo.ttft_s:g} s, TPOT {slo.tpot_s * 1e3:g} ms) in every "
            f"configuration; closest: {_describe(miss)}"
        )
        return Excluded(hw.id, "device", status, reason, miss)
    if status == "missing-figure":
        return Excluded(hw.id, "device", status, "; ".join(found.missing))
    return Excluded(hw.id, "device", status, found.no_fit)


def _hosted_entry(
    p: Provider, spec: ModelSpec, prompt: int, output: int, slo: SLO, catalog: Catalog
) -> Row | Excluded:
    if spec.id not in p.offers:
        reason = f"{p.id} does not serve {spec.id}; it serves {', '.join(p.offers)}"
        return Excluded(p.id, "hosted", "not-served", reason)
    e = estimate(spec, p.id, prompt_tokens=prompt, output_tokens=output, catalog=catalog)
    row = hosted_row(e, p)
    tpot = tpot_counts(output)  # a one-token answer is held to TTFT alone, as a device's
    if row.tpot_s is None and tpot:
        reason = (
            f"{p.id} publishes no output speed for {spec.id}, so the TPOT SLO cannot be checked"
        )
        return Excluded(p.id, "hosted", "missing-figure", reason)
    late = [
        f"{name} {value * 1e3:.4g} ms > {limit * 1e3:g} ms"
        for name, value, limit in (
            ("TTFT", row.ttft_s, slo.ttft_s),
            ("TPOT", row.tpot_s if tpot else None, slo.tpot_s),
        )
        if value is not None and value > limit
    ]
    if late:
        return Excluded(p.id, "hosted", "misses-slo", "published " + ", ".join(late), row)
    return row


def _front(
    rows: Sequence[Row],
    first: Callable[[Row], float | None],
    second: Callable[[Row], float | None],
) -> set[int]:
    """Indices of `rows` on the Pareto front of two minimised metrics (rows lacking one are
    not on it)."""
    index, points = [], []
    for i, r in enumerate(rows):
        a, b = first(r), second(r)
        if a is not None and b is not None:
            index.append(i)
            points.append((a, b))
    return {index[k] for k in pareto_front(points)}


def _mark_pareto(rows: list[Row]) -> list[Row]:
    on_j = _front(rows, lambda r: r.usd_per_mtok, lambda r: r.j_per_token)
    on_speed = _front(
        rows,
        lambda r: r.usd_per_mtok,
        lambda r: None if r.tokens_per_s_per_user is None else -r.tokens_per_s_per_user,
    )
    return [
        replace(r, pareto_usd_j=i in on_j, pareto_usd_speed=i in on_speed)
        for i, r in enumerate(rows)
    ]


def _check_flags(
    prompt_tokens: int,
    output_tokens: int,
    sort: str,
    dtype: str,
    power_envelope_w: float | None,
    top: int | None,
    training_cost_usd: float | None,
    daily_tokens: float | None,
) -> None:
    """ConfigError naming the flag for the first value out of its range."""
    positive("--prompt-tokens", prompt_tokens, integer=True)
    positive("--output-tokens", output_tokens, integer=True)
    if sort not in SORT_KEYS:
        raise ConfigError(f"'{sort}' is not one of {', '.join(SORT_KEYS)}", field="--sort")
    if dtype not in DTYPE_CHOICES:
        raise ConfigError(f"'{dtype}' is not one of {', '.join(DTYPE_CHOICES)}", field="--dtype")
    if power_envelope_w is not None:
        positive("--power-envelope", power_envelope_w, at_most=MAX_ENVELOPE_W)
    if sort == "envelope_tokens_per_s" and power_envelope_w is None:
        raise ConfigError("sorting by envelope_tokens_per_s needs --power-envelope", field="--sort")
    if top is not None:
        positive("--top", top, integer=True)
    if (training_cost_usd is None) != (daily_tokens is None):
        raise ConfigError(
            "give both --training-cost-usd and --daily-tokens, or neither",
            field="--training-cost-usd" if training_cost_usd is None else "--daily-tokens",
        )
    if training_cost_usd is not None:
        positive("--training-cost-usd", training_cost_usd, at_most=MAX_TRAINING_USD)
        lo, hi = DAILY_TOKENS
        positive("--daily-tokens", daily_tokens, at_least=lo, at_most=hi)


def _crossover_days(usd_per_mtok: float | None, training_usd: float, daily: float) -> float | None:
    """Days until serving `daily` output tokens a day has cost `training_usd`."""
    return None if not usd_per_mtok else training_usd / (daily / 1e6 * usd_per_mtok)


def rank(
    model: str | ModelSpec,
    *,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    slo_ttft_s: float = DEFAULT_TTFT_S,
    slo_tpot_s: float = DEFAULT_TPOT_S,
    dtype: str = "auto",
    categories: Sequence[str] | str = (),
    hardware: Sequence[str] | str = (),
    require_software: str | None = None,
    min_maturity: str | None = None,
    sort: str = "usd_per_mtok",
    power_envelope_w: float | None = None,
    pue: float | None = None,
    top: int | None = None,
    training_cost_usd: float | None = None,
    daily_tokens: float | None = None,
    calibration: Calibration | str | Path | None = None,
    catalog: Catalog | None = None,
    costs: CostAssumptions | None = None,
    space: SearchSpace | None = None,
    gpu_memory_utilization: float | None = None,
    max_batched_tokens: int | None = None,
) -> Ranking:
    """Rank every catalog device (and hosted API serving `model`) at its best configuration.

    A device's configuration (device count, tp, pp, dtype, batch) is the one best on `sort`
    among those that fit and meet both SLOs (TTFT <= `slo_ttft_s`, TPOT <= `slo_tpot_s`).
    `categories`/`hardware` restrict which entries are considered; `require_software` and
    `min_maturity` drop less mature ones (listed in `excluded`). `pue` defaults to the cost
    assumptions' (1.5) and applies to owned hardware's electricity and to the envelope.
    `gpu_memory_utilization` (vLLM's name) is every device's share of memory for the engine,
    over the calibration's (default: its, else 0.9); `max_batched_tokens` (vLLM's
    `--max-num-batched-tokens`, default 8,192) every engine's token budget per step, whose
    activations the memory fit reserves.
    """
    slo = check_slo(SLO(slo_ttft_s, slo_tpot_s))
    if isinstance(dtype, str):  # any case, as estimate takes it (`FP8`)
        dtype = dtype.strip().lower()
    _check_flags(
        prompt_tokens,
        output_tokens,
        sort,
        dtype,
        power_envelope_w,
        top,
        training_cost_usd,
        daily_tokens,
    )
    share = (
        None
        if gpu_memory_utilization is None
        else check_memory_share(gpu_memory_utilization, "--gpu-memory-utilization")
    )
    if max_batched_tokens is not None:
        check_batched_tokens(max_batched_tokens, "--max-batched-tokens")
    # a single string is a comma-separated list, as on the command line
    if isinstance(categories, str):
        categories = [c.strip() for c in categories.split(",") if c.strip()]
    if isinstance(hardware, str):
        hardware = [h.strip() for h in hardware.split(",") if h.strip()]
    cats = _choices("--category", categories, (*CATEGORIES, HOSTED))
    if require_software is not None:
        (require_software,) = _choices("--require-software", [require_software], SOFTWARE)
    if min_maturity is not None:
        (min_maturity,) = _choices("--min-maturity", [min_maturity], MATURITY)
    base_costs = costs if costs is not None else CostAssumptions()
    if pue is not None:
        base_costs = replace(base_costs, pue=check_pue("--pue", pue))
    cat = catalog if catalog is not None else load_catalog()
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    check_context(spec, prompt_tokens, output_tokens, field="--prompt-tokens")
    if isinstance(calibration, Calibration):
        calib = calibration
    else:
        calib = Calibration() if calibration is None else load_calibration(calibration)
    wanted = set()
    for name in hardware:
        known = cat.known_id(name)  # `H100-SXM` is what a person types
        if known is None:
            raise UnknownNameError("hardware", name, [*cat.devices, *cat.providers])
        wanted.add(known)
    base_space = space if space is not None else SearchSpace()
    if dtype != "auto":
        base_space = replace(base_space, dtypes=(parse_dtype(dtype, "--dtype"),))
    envelope = None if power_envelope_w is None else (power_envelope_w, base_costs.pue)

    rows: list[Row] = []
    excluded: list[Excluded] = []
    for hw in cat.devices.values():
        if (wanted and hw.id not in wanted) or (cats and hw.category not in cats):
            continue
        why = stack_excluded(hw.software, hw.maturity, require_software, min_maturity)
        if why:
            excluded.append(Excluded(hw.id, "device", "filtered", why))
            continue
        found = search_configs(
            spec,
            hw,
            cat,
            slo=slo,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            calibration=calib,
            costs=base_costs,
            space=base_space,
            gpu_memory_utilization=share,
            max_batched_tokens=max_batched_tokens,
        )
        entry = _device_entry(hw, found, slo, sort, envelope)
        if isinstance(entry, Row):
            rows.append(entry)
        else:
            excluded.append(entry)
    for p in cat.providers.values():
        if (wanted and p.id not in wanted) or (cats and HOSTED not in cats):
            continue
        why = stack_excluded("hosted API", p.maturity, None, min_maturity)
        if why:
            excluded.append(Excluded(p.id, "hosted", "filtered", why))
            continue
        hosted = _hosted_entry(p, spec, prompt_tokens, output_tokens, slo, cat)
        if isinstance(hosted, Row):
            rows.append(hosted)
        else:
            excluded.append(hosted)

    if training_cost_usd is not None and daily_tokens is not None:
        days = partial(_crossover_days, training_usd=training_cost_usd, daily=daily_tokens)
        rows = [replace(r, crossover_days=days(r.usd_per_mtok)) for r in rows]
    rows = sorted(_mark_pareto(rows), key=lambda r: r.sort_key(sort))
    notes: tuple[str, ...] = (
        "TTFT is the prefill of the whole batch arriving at once (as `estimate` computes it), "
        "so a TTFT SLO also bounds the batch",
    )
    if calib.params:  # which devices it moved, so that none falls back without a word
        # those ranked, and those excluded after their figures were computed with it (a
        # closest miss is calibrated too)
        evaluated = {r.hardware for r in rows if r.kind == "device"} | {
            e.hardware for e in excluded if e.kind == "device" and e.why == "misses-slo"
        }
        covered = sorted(h for h in evaluated if calib.entry_id(h) is not None)
        notes += (
            (
                f"engine terms calibrated for {', '.join(covered)}; every other device uses "
                "wattserve's defaults (docs/model.md)"
            )
            if covered
            else (
                f"the calibration has terms for {', '.join(sorted(calib.params))} only, none "
                "of the ranked devices: every figure uses wattserve's defaults"
            ),
        )
        for h in covered:  # the model, not each shape: rank searches batches and layouts
            notes += calib.beyond(cat.device(h), spec.id, spec.total_params)
            notes += calib.caution(h) + _broken_terms(spec, cat.device(h), calib)
    return Ranking(
        model=spec.id,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        slo=slo,
        sort=sort,
        dtype=dtype,
        pue=base_costs.pue,
        power_envelope_w=power_envelope_w,
        training_cost_usd=training_cost_usd,
        daily_tokens=daily_tokens,
        rows=tuple(rows),
        excluded=tuple(excluded),
        top=top,
        calibration=(
            f"calibrated: {', '.join(sorted(calib.params))}"
            if calib.params
            else "wattserve defaults (docs/model.md)"
        ),
        notes=notes,
        gpu_memory_utilization=share,
        max_batched_tokens=max_batched_tokens,
    )
