"""A measurement row resolved for the fit: its deployment and the work of its step (tokens,
attention work, KV tokens, sequences), checked against what an engine could have run, and the
seconds the PerfModel predicts for such rows under a set of terms (calibrate/fit.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wattserve.calibrate.measurements import Measurement
from wattserve.core.deployment import Deployment
from wattserve.core.hardware import Hardware
from wattserve.core.memory import layout_fit, memory_layout
from wattserve.core.modelspec import fits_context, load_model
from wattserve.core.params import DATASHEET_PEAKS, EngineParams, default_params
from wattserve.core.perf import PerfModel, perf_model
from wattserve.errors import CalibrationError, ConfigError, WattserveError


@dataclass(frozen=True, slots=True)
class StepRow:
    m: Measurement
    dep: Deployment
    work: tuple[float, float, float, float]  # tokens, attention work, KV tokens, sequences

    @property
    def seconds(self) -> float:
        return self.m.seconds

    @property
    def shape(self) -> tuple[Deployment, tuple[float, float, float, float]]:
        """Rows of one shape (a repeated measurement) are held out together."""
        return self.dep, self.work


def step_row(m: Measurement, hw: Hardware, path: str) -> StepRow:
    try:
        spec = load_model(m.model)
    except WattserveError as exc:
        raise ConfigError(str(exc), path=path, line=m.line, field="model") from None
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
    missing = perf_model(dep, default_params(hw)).missing  # figures the step needs, not terms
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
    longest = max(m.prompt_tokens, m.context_tokens) + (m.phase == "decode")
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
    if not fits_context(spec.max_context, longest, 0):
        raise ConfigError(
            f"{longest} tokens exceed {spec.id}'s context window of {spec.max_context}: "
            "no engine ran this step",
            path=path,
            line=m.line,
            field="context_tokens" if m.phase == "decode" else "prompt_tokens",
        )
    b = float(m.batch)
    if m.phase == "prefill":
        p = float(m.prompt_tokens)
        c = float(max(0, m.context_tokens - m.prompt_tokens))
        work = (b * p, b * (p * c + p * (p + 1) / 2), b * (c + p), b)
    else:
        c = float(m.context_tokens)
        work = (b, b * (c + 1), b * (c + 1), b)
    # the step's FLOPs and bytes at the datasheet peaks, nothing else: a row ten times faster
    # than that (a unit slip, 1 ns for a 14B model's step) is not a measurement
    floor = perf_model(dep, DATASHEET_PEAKS).step_time(*work)
    if m.seconds < floor / 10.0:
        raise ConfigError(
            f"{m.seconds:g} s is under a tenth of the {floor:.3g} s this step's FLOPs and "
            f"bytes take at {hw.id}'s datasheet peaks: no engine ran this step",
            path=path,
            line=m.line,
            field="seconds",
        )
    return StepRow(m, dep, work)


def predict_seconds(rows: Sequence[StepRow], params: EngineParams) -> np.ndarray:
    out = np.empty(len(rows))
    cache: dict[Deployment, PerfModel] = {}
    for i, r in enumerate(rows):
        pm = cache.get(r.dep)
        if pm is None:
            pm = cache[r.dep] = PerfModel(r.dep, params)
            if pm.missing:
                raise CalibrationError(
                    f"line {r.m.line}: cannot model this row: {'; '.join(pm.missing)}"
                )
        out[i] = pm.step_time(*r.work)
    return out
