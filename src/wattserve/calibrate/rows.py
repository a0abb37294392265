"""A measurement row resolved for the fit: its deployment and the work of its step (tokens,
attention work, KV tokens, sequences), checked against what an engine could have run (and its
seconds and watts against what its devices could have taken and drawn), and the seconds the
PerfModel predicts for such rows under a set of terms (calibrate/fit.py)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wattserve.calibrate.measurements import Measurement
from wattserve.core.deployment import Deployment
from wattserve.core.hardware import Hardware
from wattserve.core.memory import layout_fit, memory_layout
from wattserve.core.modelspec import ModelSpec, fits_context, load_model
from wattserve.core.params import DATASHEET_PEAKS, EngineParams, default_params
from wattserve.core.perf import PerfModel, perf_model
from wattserve.core.stepbasis import StepBasis
from wattserve.errors import CalibrationError, ConfigError, WattserveError


@dataclass(frozen=True, slots=True)
class StepRow:
    m: Measurement
    basis: StepBasis  # the row's deployment and its figures, shared by its deployment's rows
    work: tuple[float, float, float, float]  # tokens, attention work, KV tokens, sequences

    @property
    def dep(self) -> Deployment:
        return self.basis.deployment

    @property
    def seconds(self) -> float:
        return self.m.seconds

    @property
    def held_tokens(self) -> int:
        return held_tokens(self.m)

    @property
    def past_window(self) -> bool:
        """The step held more tokens than the model's context window: a harness with random
        weights or an engine with RoPE scaling runs it, and its seconds are as real (until
        2026-12-06 such a row stopped the run, and the project's own H200 grid with it)."""
        return not fits_context(self.dep.model.max_context, self.held_tokens, 0)

    @property
    def shape(self) -> tuple[Deployment, tuple[float, float, float, float]]:
        """Rows of one shape (a repeated measurement) are held out together."""
        return self.dep, self.work


def held_tokens(m: Measurement) -> int:
    """The tokens a row's sequences hold at its step's end: the prompt and its context, and
    the token a decode step adds."""
    return max(m.prompt_tokens, m.context_tokens) + (m.phase == "decode")


def step_row(
    m: Measurement,
    hw: Hardware,
    path: str,
    models: dict[str, ModelSpec] | None = None,
    deployments: dict[Deployment, StepBasis] | None = None,
) -> StepRow:
    """`m` resolved and checked; `models`: the specs read so far, by the rows' model field,
    filled as rows name new ones (a config of 60 MB named by 2,000 rows was read 2,000 times:
    ten minutes before the fit began); `deployments`: those made so far, so that rows of one
    deployment share one object and its figures (`predict_seconds` finds its PerfModel by
    identity, and builds it from the figures)."""
    spec = None if models is None else models.get(m.model)
    if spec is None:
        try:
            spec = load_model(m.model)
        except WattserveError as exc:
            raise ConfigError(str(exc), path=path, line=m.line, field="model") from None
        if models is not None:
            models[m.model] = spec
    try:
        dep = Deployment(
            spec,
            hw,
            tp=m.tensor_parallel,
            pp=m.pipeline_parallel,
            dtype=m.dtype,
            kv_dtype=m.kv_format,
        )
    except ConfigError as exc:  # the stages come from the row's count over its tp
        field = "count" if exc.field == "pp" else "tensor_parallel"
        raise ConfigError(exc.detail, path=path, line=m.line, field=field) from None
    basis = None if deployments is None else deployments.get(dep)
    if basis is None:
        basis = StepBasis(dep)
        if deployments is not None:
            deployments[dep] = basis
    dep = basis.deployment
    defaults = perf_model(dep, default_params(hw))
    missing = defaults.missing  # figures the step needs, not terms
    if missing:
        raise ConfigError(
            f"cannot model this row: {'; '.join(missing)}", path=path, line=m.line, field="hardware"
        )
    if m.pipeline_parallel > spec.num_layers:
        raise ConfigError(
            f"{m.pipeline_parallel} pipeline stages for {spec.num_layers} layers: a stage "
            "needs at least one layer",
            path=path,
            line=m.line,
            field="count",
        )
    # what the step held, at the whole capacity (a run measured at a higher
    # --gpu-memory-utilization than the default is real): the weights, then the KV cache of
    # the row's batch at its context; SRAM-only and compute-in-memory parts too
    whole = default_params(hw).with_updates(memory_utilization=1.0)
    longest = held_tokens(m)
    lay = memory_layout(dep, whole)
    fit = layout_fit(lay, dep, m.batch, longest, 0)
    if not fit.fits and lay.capacity is not None:
        weights = lay.kind == "cim" or lay.weights > lay.usable
        hint = (
            ""
            if weights or m.kv_dtype is not None or m.kv_format == "fp8"
            else f" (the KV cache taken as {m.kv_format}; give an engine's smaller cache "
            "format in a kv_dtype column)"
        )
        raise ConfigError(
            f"{fit.reason}: no engine ran this step{hint}",
            path=path,
            line=m.line,
            field="count" if weights else "batch",
        )
    b = float(m.batch)
    if m.phase == "prefill":
        p = float(m.prompt_tokens)
        c = float(max(0, m.context_tokens - m.prompt_tokens))
        work = (b * p, b * (p * c + p * (p + 1) / 2), b * (c + p), b)
    else:
        c = float(m.context_tokens)
        work = (b, b * (c + 1), b * (c + 1), b)
    row = StepRow(m, basis, work)
    _check_seconds(row, float(predict_seconds([row], defaults.params)[0]), path)
    _check_watts(m, defaults, path)
    return row


# A row's seconds against what the uncalibrated model predicts for its step. On every measured
# file in tests/data and examples/ (H200 grid runs, ML.ENERGY's vLLM on H100 and B200,
# llama.cpp on 2 vCPUs) a row took 0.69 to 19 times its prediction: a fit moves the terms by
# that much, not by a hundred. A factor of 1,000 or 1,000,000 is a unit slip (milliseconds or
# microseconds written as seconds), or a whole request's time written as one step's.
TIME_RATIO = 100.0


def _check_seconds(row: StepRow, predicted_s: float, path: str) -> None:
    m, hw = row.m, row.dep.hardware
    ratio = m.seconds / predicted_s
    k = max(1, round(abs(math.log10(ratio)) / 3))  # the nearest power of 1,000: the likely slip
    faster = (
        f"1/{1 / ratio:.3g} of the {predicted_s:.3g} s the uncalibrated model predicts for "
        f"this step: seconds divided by {1000**k:,} once too often, or a time per token "
        "rather than per step?"
    )
    # the step's FLOPs and bytes at the datasheet peaks, nothing else: a row ten times faster
    # than that (a unit slip, 1 ns for a 14B model's step) is not a measurement
    floor = perf_model(row.dep, DATASHEET_PEAKS).step_time(*row.work)
    if m.seconds < floor / 10.0:
        why = (
            f"under a tenth of the {floor:.3g} s this step's FLOPs and bytes take at "
            f"{hw.id}'s datasheet peaks: no engine ran this step"
        ) + (f" ({faster})" if ratio < 1.0 / TIME_RATIO else "")
    elif ratio < 1.0 / TIME_RATIO:
        why = faster
    elif ratio > TIME_RATIO:
        unit = ("milliseconds", "microseconds", "nanoseconds")[min(k, 3) - 1]
        why = (
            f"{ratio:.3g} times the {predicted_s:.3g} s the uncalibrated model predicts for "
            f"this step: {unit} written as seconds, or the time of many steps (a whole "
            "request) rather than one?"
        )
    else:
        return
    raise ConfigError(
        f"{m.seconds:g} s is {why} (docs/calibration.md: rows past {TIME_RATIO:g} times the "
        "prediction either way are refused)",
        path=path,
        line=m.line,
        field="seconds",
    )


# A row's watts (the mean per device during its steps) against what its devices can draw: a
# device running steps draws at least its idle power, and a board's power limiter holds its
# draw at TDP over anything longer than milliseconds (a short window can read the power of
# what ran before it: an H200's 8B steps read 905 W against 700, profile/power.py). Past
# half the idle draw or 1.5 times TDP the watts are not the step's: a unit slip (mW, kW),
# a node's or server's power, or a meter read outside the steps. A CPU's tdp_w is its
# sustained limit (RAPL's PL1), which turbo exceeds for tens of seconds by up to about four
# times on laptop parts (PL2): 4 there. Between these bounds and the catalog's own figures,
# fit.py fits the row and warns.
WATTS_UNDER_IDLE = 0.5
WATTS_OVER_TDP = 1.5
WATTS_OVER_TDP_CPU = 4.0


def _check_watts(m: Measurement, pm: PerfModel, path: str) -> None:
    tdp = pm.deployment.hardware.value("tdp_w")
    if m.watts is None or tdp is None or pm.power_missing:
        return
    hw = pm.deployment.hardware
    total = m.watts * pm.devices  # watts are per device: the deployment's draw
    idle = pm.idle_power_w  # the catalog's idle_w, else idle_fraction of TDP
    if total < WATTS_UNDER_IDLE * idle:
        whose = (
            "the catalog's"
            if hw.value("idle_w") is not None
            else (
                f"assumed {pm.params.idle_fraction:.0%} of its TDP; give idle_w in a hardware "
                "file if it idles lower"
            )
        )
        raise ConfigError(
            f"{m.watts:g} W per device is under half of {hw.id}'s idle draw "
            f"({pm.idle_w:.3g} W, {whose}): a device running steps draws at least that, so "
            "these are not the step's watts (a unit slip, or read outside the steps); "
            "leave the field empty if the power is unknown",
            path=path,
            line=m.line,
            field="watts",
        )
    over = WATTS_OVER_TDP_CPU if hw.category == "cpu" else WATTS_OVER_TDP
    if total > over * tdp * pm.devices:
        raise ConfigError(
            f"{m.watts:g} W per device is over {over:g} times {hw.id}'s TDP ({tdp:g} W): "
            "watts are the mean per device during the steps, not a node's or server's "
            "total (a unit slip?); leave the field empty if the power is unknown",
            path=path,
            line=m.line,
            field="watts",
        )


def predict_seconds(rows: Sequence[StepRow], params: EngineParams) -> np.ndarray:
    """Each row's seconds under `params`: one PerfModel per deployment object, built from the
    row's StepBasis (the deployment's figures, resolved once for the whole fit: resolving
    them for every evaluation had been 80% of a fit's time on a file of many deployments).
    Found by the object's identity, not its value: hashing a Deployment (its model and
    hardware, field by field) for every row of every evaluation was half of a 300-row fit's
    time. Rows of one deployment share one object (step_row's `deployments`); rows that do
    not still get the same figures, from a PerfModel each."""
    cache: dict[int, PerfModel] = {}  # by id(): every row, so its basis, outlives the call
    times = []
    basis: StepBasis | None = None
    pm: PerfModel | None = None
    for r in rows:
        if r.basis is not basis:  # rows of one deployment mostly come together
            basis, pm = r.basis, cache.get(id(r.basis))
            if pm is None:
                pm = cache[id(basis)] = PerfModel(basis.deployment, params, basis)
                if pm.missing:
                    raise CalibrationError(
                        f"line {r.m.line}: cannot model this row: {'; '.join(pm.missing)}"
                    )
        assert pm is not None
        times.append(pm.step_time(*r.work))
    return np.array(times, dtype=float)


# rows of one shape measured more than this far apart are named: one of them is disturbed
REPEAT_SPREAD = 1.5
# a row the calibrated model misses by more than OUTLIER_RATIO, where the median row is missed
# by under 1/OUTLIER_SPREAD of that (in log terms), is named as an outlier: the fit leans on it
OUTLIER_RATIO, OUTLIER_SPREAD = 2.0, 5.0


def disagreeing_repeats(rows: Sequence[StepRow]) -> list[str]:
    """A warning for each shape measured more than once whose times disagree by more than
    REPEAT_SPREAD (a probe's three rows of one shape at 5, 9 and 18 ms got the generic
    held-out warning only)."""
    groups: dict[object, list[StepRow]] = defaultdict(list)
    for r in rows:
        groups[(id(r.dep), r.m.phase, r.work)].append(r)
    out = []
    for same in groups.values():
        times = [r.m.seconds for r in same]
        if len(same) > 1 and max(times) > REPEAT_SPREAD * min(times):
            out.append(
                f"lines {', '.join(str(r.m.line) for r in same[:10])} measure one shape but "
                f"differ by {max(times) / min(times):.1f}x: at most one of them is the engine's "
                "own speed (another process on the machine, a cold start?); the fit takes them "
                "all"
            )
    return out[:10]


def outliers(rows: Sequence[StepRow], predicted: np.ndarray, measured: np.ndarray) -> list[str]:
    """A warning naming the rows the calibrated model misses by far more than the others
    (a probe's row 75x its neighbours' speed, under calibrate's 100x refusal, moved
    eff_compute from 0.6 to 0.2 with only the generic held-out warning)."""
    if len(rows) < 3:
        return []
    miss = np.abs(np.log(predicted / measured))
    typical = float(np.median(miss))
    far = [
        r for r, m in zip(rows, miss, strict=True)
        if m > math.log(OUTLIER_RATIO) and m > OUTLIER_SPREAD * typical
    ]  # fmt: skip
    if not far or len(far) * 2 > len(rows):
        return []
    worst = math.exp(float(np.max(miss)))
    median_pct = 100 * math.expm1(typical)
    return [
        f"line(s) {', '.join(str(r.m.line) for r in far[:10])} lie far from the model that "
        f"fits the other rows (up to {worst:.3g}x off, the median row {median_pct:.1f}%): "
        "a unit slip, a disturbed measurement, or an engine unlike the model there? The fit "
        "leans toward them; check them, or "
        "leave them out"
    ]
