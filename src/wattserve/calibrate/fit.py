"""Fit EngineParams per hardware to measured step times and power.

Times: non-linear least squares on log(predicted / measured) over the efficiencies and
overheads, in log space, with a weak pull towards the defaults so that terms the data cannot
identify stay at sensible values. Several starts; the best fit wins. Power: the idle share (when
the catalog has no idle_w) and the two utilisation weights, fitted on the rows that carry watts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from wattserve.calibrate.measurements import Measurement
from wattserve.core.catalog import Catalog
from wattserve.core.deployment import Deployment, default_kv_dtype
from wattserve.core.hardware import Hardware
from wattserve.core.modelspec import load_model
from wattserve.core.params import Calibration, EngineParams, default_params
from wattserve.core.perf import PerfModel
from wattserve.errors import CalibrationError, ConfigError, WattserveError

TIME_PARAMS = ("eff_compute", "eff_memory", "overhead_step_s", "overhead_layer_s", "overhead_seq_s")
COMM_PARAMS = ("eff_comm", "overhead_collective_s")
BOUNDS: dict[str, tuple[float, float]] = {
    "eff_compute": (0.01, 1.0),
    "eff_memory": (0.01, 1.0),
    "eff_comm": (0.01, 1.0),
    "overhead_step_s": (1e-7, 2.0),
    "overhead_layer_s": (1e-9, 0.05),
    "overhead_seq_s": (1e-9, 0.05),
    "overhead_collective_s": (1e-8, 0.01),
}
PRIOR_WEIGHT = 0.02
LOO_MAX_ROWS = 60


@dataclass(frozen=True, slots=True)
class FitReport:
    """How well the fitted terms reproduce one hardware's measurements (errors in %)."""

    hardware: str
    rows: int
    params: EngineParams
    fitted: tuple[str, ...]
    mean_abs_pct: float
    max_abs_pct: float
    loo_mean_abs_pct: float | None
    loo_max_abs_pct: float | None
    power_rows: int = 0
    power_mean_abs_pct: float | None = None
    notes: tuple[str, ...] = ()
    residuals: tuple[tuple[int, str, float, float], ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, float]:
        out = {
            "rows": float(self.rows),
            "mean_abs_pct": self.mean_abs_pct,
            "max_abs_pct": self.max_abs_pct,
        }
        if self.loo_mean_abs_pct is not None and self.loo_max_abs_pct is not None:
            out["loo_mean_abs_pct"] = self.loo_mean_abs_pct
            out["loo_max_abs_pct"] = self.loo_max_abs_pct
        if self.power_mean_abs_pct is not None:
            out["power_mean_abs_pct"] = self.power_mean_abs_pct
        return out


@dataclass(frozen=True, slots=True)
class _Row:
    m: Measurement
    dep: Deployment
    work: tuple[float, float, float, float]  # tokens, attention work, KV tokens, sequences


def _row(m: Measurement, hw: Hardware, path: str) -> _Row:
    try:
        spec = load_model(m.model)
    except WattserveError as exc:
        raise ConfigError(str(exc), path=path, line=m.line, field="model") from None
    dep = Deployment(
        spec,
        hw,
        tp=m.tensor_parallel,
        pp=m.pipeline_parallel,
        dtype=m.dtype,
        kv_dtype=default_kv_dtype(m.dtype),
    )
    b = float(m.batch)
    if m.phase == "prefill":
        p = float(m.prompt_tokens)
        c = float(max(0, m.context_tokens - m.prompt_tokens))
        work = (b * p, b * (p * c + p * (p + 1) / 2), b * (c + p), b)
    else:
        c = float(m.context_tokens)
        work = (b, b * (c + 1), b * (c + 1), b)
    return _Row(m, dep, work)


def _predict(rows: Sequence[_Row], params: EngineParams) -> np.ndarray:
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


def _fit_times(
    rows: Sequence[_Row], base: EngineParams, names: tuple[str, ...]
) -> tuple[EngineParams, float]:
    from scipy.optimize import least_squares  # imported here: scipy is slow to import

    measured = np.array([r.m.seconds for r in rows])
    x0 = np.log([getattr(base, n) for n in names])
    lo = np.log([BOUNDS[n][0] for n in names])
    hi = np.log([BOUNDS[n][1] for n in names])

    def params_of(x: np.ndarray) -> EngineParams:
        return base.with_updates(**{n: float(math.exp(v)) for n, v in zip(names, x, strict=True)})

    def residuals(x: np.ndarray) -> np.ndarray:
        fit = np.log(_predict(rows, params_of(x)) / measured)
        return np.concatenate([fit, PRIOR_WEIGHT * (x - x0)])

    starts = [x0]
    for scale_eff, scale_ovh in ((0.5, 0.1), (1.3, 10.0), (0.3, 1.0), (1.0, 0.01)):
        s = x0.copy()
        for i, n in enumerate(names):
            s[i] += math.log(scale_eff if n.startswith("eff") else scale_ovh)
        starts.append(np.clip(s, lo + 1e-9, hi - 1e-9))
    best = None
    for s in starts:
        res = least_squares(
            residuals,
            np.clip(s, lo + 1e-9, hi - 1e-9),
            bounds=(lo, hi),
            diff_step=1e-3,
            x_scale=1.0,
            max_nfev=400,
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    return params_of(best.x), float(best.cost)


def _errors_pct(rows: Sequence[_Row], params: EngineParams) -> np.ndarray:
    measured = np.array([r.m.seconds for r in rows])
    errors: np.ndarray = 100.0 * (_predict(rows, params) - measured) / measured
    return errors


def _fit_power(
    rows: Sequence[_Row], params: EngineParams, hw: Hardware
) -> tuple[EngineParams, float | None, str]:
    from scipy.optimize import least_squares

    powered = [r for r in rows if r.m.watts is not None]
    if not powered:
        return params, None, "no watts in the measurements: power curve left at its defaults"
    if hw.value("tdp_w") is None:
        return params, None, f"{hw.id} has no tdp_w, so the power curve cannot be fitted"
    fit_idle = hw.value("idle_w") is None
    names = ["power_k_compute", "power_k_memory"] + (["idle_fraction"] if fit_idle else [])
    costs = []
    for r in powered:
        pm = PerfModel(r.dep, params)
        c = pm.step(*r.work)
        costs.append((c.compute_s, c.memory_s, c.time_s, r.m.watts or 0.0))

    def with_x(x: np.ndarray) -> EngineParams:
        return params.with_updates(**{n: float(v) for n, v in zip(names, x, strict=True)})

    def residuals(x: np.ndarray) -> np.ndarray:
        pm = PerfModel(powered[0].dep, with_x(x))
        per_device = [pm.power_w(c, m, t) / pm.devices for c, m, t, _ in costs]
        return np.array([p / w - 1.0 for p, (_, _, _, w) in zip(per_device, costs, strict=True)])

    x0 = np.array([getattr(params, n) for n in names])
    lo = np.array([0.0, 0.0] + ([0.01] if fit_idle else []))
    hi = np.array([5.0, 5.0] + ([0.9] if fit_idle else []))
    res = least_squares(residuals, np.clip(x0, lo, hi), bounds=(lo, hi))
    fitted = with_x(res.x)
    err = float(np.mean(np.abs(residuals(res.x)))) * 100.0
    return fitted, err, ""


def fit_hardware(rows: Sequence[_Row], hw: Hardware, source: str) -> FitReport:
    """Fit one hardware's terms; report in-sample and leave-one-out errors."""
    base = default_params(hw)
    multi = any(r.dep.devices > 1 for r in rows)
    names = TIME_PARAMS + (COMM_PARAMS if multi else ())
    notes = []
    if not multi:
        notes.append("all rows use one device: communication terms kept at their defaults")
    if len(rows) < len(names):
        notes.append(
            f"{len(rows)} rows for {len(names)} terms: the fit leans on the defaults; "
            "measure more batch sizes and prompt lengths"
        )
    params, _ = _fit_times(rows, base, names)
    errs = _errors_pct(rows, params)
    loo: list[float] = []
    if 3 <= len(rows) <= LOO_MAX_ROWS:
        for i in range(len(rows)):
            rest = [r for j, r in enumerate(rows) if j != i]
            p_i, _ = _fit_times(rest, params, names)
            loo.append(float(abs(_errors_pct([rows[i]], p_i)[0])))
    params, power_err, power_note = _fit_power(rows, params, hw)
    if power_note:
        notes.append(power_note)
    n_power = sum(r.m.watts is not None for r in rows)
    params = params.with_updates(source=f"calibrated from {source} ({len(rows)} rows)")
    predicted = _predict(rows, params)
    return FitReport(
        hardware=hw.id,
        rows=len(rows),
        params=params,
        fitted=names,
        mean_abs_pct=float(np.mean(np.abs(errs))),
        max_abs_pct=float(np.max(np.abs(errs))),
        loo_mean_abs_pct=float(np.mean(loo)) if loo else None,
        loo_max_abs_pct=float(np.max(loo)) if loo else None,
        power_rows=n_power,
        power_mean_abs_pct=power_err,
        notes=tuple(notes),
        residuals=tuple(
            (r.m.line, r.m.phase, r.m.seconds, float(p))
            for r, p in zip(rows, predicted, strict=True)
        ),
    )


def fit_calibration(
    measurements: Sequence[Measurement],
    catalog: Catalog,
    source: str = "measurements",
    base: Calibration | None = None,
) -> tuple[Calibration, list[FitReport]]:
    """Fit every hardware in `measurements`; hardware not measured keeps `base`'s terms."""
    groups: dict[str, list[Measurement]] = defaultdict(list)
    for m in measurements:
        groups[m.hardware].append(m)
    params = dict(base.params) if base else {}
    errors = dict(base.fit_error) if base else {}
    reports = []
    for hw_id, ms in groups.items():
        try:
            hw = catalog.device(hw_id)
        except WattserveError as exc:
            raise ConfigError(str(exc), path=source, line=ms[0].line, field="hardware") from None
        report = fit_hardware([_row(m, hw, source) for m in ms], hw, source)
        params[hw_id] = report.params
        errors[hw_id] = report.as_dict()
        reports.append(report)
    return Calibration(params=params, fit_error=errors), reports
