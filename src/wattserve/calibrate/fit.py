"""Fit EngineParams per hardware to measured step times and power, never worse than defaults.

Times: non-linear least squares on log(predicted / measured), in log space, with a
log-normal prior per term centred on its default (widths in PRIOR_SIGMA: efficiencies are known
to within tens of percent, overheads to within a factor of a few) and physical bounds
(no device reaches its datasheet bandwidth or peak: efficiencies stay <= 0.95).

Which terms to fit is chosen by leave-one-out error, not by in-sample fit: starting from the
defaults (no term fitted), terms are added one at a time (forward selection: at each stage the
term whose addition predicts held-out rows best; the search stops PATIENCE terms past the best
set),
and the set with the lowest leave-one-out error wins; ties go to the smaller set. The
defaults' own error on the rows is the bar: when no fitted set predicts held-out rows better
than the defaults do, the defaults are kept and the report says so. With k terms a fit needs
at least k + 1 rows (so that every leave-one-out fit still has k). Above LOO_MAX_ROWS rows,
ten-fold cross-validation stands in for leave-one-out.

Power: the idle share (when the catalog has no idle_w) and the two utilisation weights, chosen
the same way on the rows that carry watts (at least three): forward selection by held-out
error, a log-normal prior per term (POWER_PRIOR_SIGMA), the defaults kept unless a set predicts
held-out rows at least 3% better.

A term set whose fit ends a term at its upper bound is never selected (`at_ceiling`): the rows
ask more of that term than it can physically give, so it stands in for something the model does
not describe, which held-out rows of the same shapes cannot reveal. A selected term at its lower
bound, or more than three prior widths from its centre, is reported with a warning: the fit is
not to be trusted outside the measured shapes (docs/calibration.md).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from wattserve.calibrate.measurements import Measurement
from wattserve.calibrate.output import MAX_PATH_SHOWN, listed, printable
from wattserve.calibrate.rows import (
    StepRow,
    disagreeing_repeats,
    outliers,
    predict_seconds,
    step_row,
)
from wattserve.calibrate.terms import (
    BOUNDS,
    COMM_PARAMS,
    IMPLAUSIBLE_SIGMA,
    LOG_START,
    MOE_PARAMS,
    POWER_BOUNDS,
    POWER_PRIOR_SIGMA,
    POWER_TERMS,
    PRIOR_SIGMA,
    PRIOR_WEIGHT,
    TIME_PARAMS,
)
from wattserve.core.catalog import Catalog
from wattserve.core.coverage import Coverage
from wattserve.core.deployment import Deployment
from wattserve.core.hardware import Hardware
from wattserve.core.modelspec import ModelSpec
from wattserve.core.params import (
    HELD_OUT_WARN_PCT,
    MAX_ENTRIES,
    Calibration,
    EngineParams,
    default_params,
)
from wattserve.core.perf import PerfModel
from wattserve.core.stepbasis import StepBasis
from wattserve.errors import ConfigError, WattserveError

LOO_MAX_ROWS = 40
LOO_WARN_PCT = HELD_OUT_WARN_PCT  # a warning above it, here and where the terms are used
MIN_GAIN = 0.97  # a larger term set must cut the held-out error by at least 3%


@dataclass(frozen=True, slots=True)
class RowResidual:
    """One measurement against the calibrated model: seconds measured and predicted, and the
    prediction of a fit made without this row (None when cross-validation was not possible)."""

    line: int
    phase: str
    measured_s: float
    predicted_s: float
    held_out_s: float | None

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_s - self.measured_s) / self.measured_s

    @property
    def held_out_error_pct(self) -> float | None:
        if self.held_out_s is None:
            return None
        return 100.0 * (self.held_out_s - self.measured_s) / self.measured_s


@dataclass(frozen=True, slots=True)
class FitReport:
    """How well the calibrated terms reproduce one hardware's measurements (errors in %).

    `fitted`: the terms moved from their defaults (time terms, then power terms); `kept`: those
    left at the defaults.
    `default_mean_abs_pct`: the defaults' own error on the rows, the bar a fit must beat."""

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
    residuals: tuple[RowResidual, ...] = field(default=(), repr=False)
    kept: tuple[str, ...] = ()
    default_mean_abs_pct: float = 0.0
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, float]:
        out = {
            "rows": self.rows,
            "mean_abs_pct": self.mean_abs_pct,
            "max_abs_pct": self.max_abs_pct,
            "default_mean_abs_pct": self.default_mean_abs_pct,
        }
        if self.loo_mean_abs_pct is not None and self.loo_max_abs_pct is not None:
            out["loo_mean_abs_pct"] = self.loo_mean_abs_pct
            out["loo_max_abs_pct"] = self.loo_max_abs_pct
        if self.power_mean_abs_pct is not None:
            out["power_mean_abs_pct"] = self.power_mean_abs_pct
        return out


class TimedRow(Protocol):
    """What term selection needs of a row: its measured seconds (the prediction is the
    caller's `predict`)."""

    @property
    def seconds(self) -> float: ...


RowT = TypeVar("RowT", bound=TimedRow)
# Seconds predicted for each row under a set of terms.
Predict = Callable[[Sequence[RowT], EngineParams], np.ndarray]


def _fit_times(
    rows: Sequence[RowT],
    base: EngineParams,
    names: tuple[str, ...],
    predict: Predict[RowT],
    start: EngineParams | None = None,
) -> EngineParams:
    """Fit `names` (the rest stay at `base`) with the prior centred on `base`, from several
    starting points, the best fit winning; `start` (a fit on more rows) is tried too. A
    held-out fit started from the full fit alone had stopped where it started, its first
    steps refused, so the row it left out was predicted by terms fitted on it: a held-out
    error partly in sample (2.48% for 3.00% on the 70B file), and a term set chosen that
    predicts held-out rows worse than the defaults (a session-37 review)."""
    from scipy.optimize import least_squares  # imported here: scipy is slow to import

    if not names:
        return base
    measured = np.array([r.seconds for r in rows])
    base = base.with_updates(
        **{n: v for n, v in LOG_START.items() if n in names and not getattr(base, n)}
    )
    x0 = np.log([getattr(base, n) for n in names])
    sigma = np.array([PRIOR_SIGMA[n] for n in names])
    lo = np.log([BOUNDS[n][0] for n in names])
    hi = np.log([BOUNDS[n][1] for n in names])

    def params_of(x: np.ndarray) -> EngineParams:
        return base.with_updates(**{n: float(math.exp(v)) for n, v in zip(names, x, strict=True)})

    def residuals(x: np.ndarray) -> np.ndarray:
        fit = np.log(predict(rows, params_of(x)) / measured)
        return np.concatenate([fit, PRIOR_WEIGHT * (x - x0) / sigma])

    starts = [x0]
    for scale_eff, scale_ovh in ((0.5, 0.1), (1.3, 10.0), (0.3, 1.0)):
        s = x0.copy()
        for i, n in enumerate(names):
            s[i] += math.log(scale_eff if n.startswith("eff") else scale_ovh)
        starts.append(s)
    if start is not None:
        starts.append(np.log([getattr(start, n) for n in names]))
    best = None
    for s in starts:
        res = least_squares(
            residuals,
            np.clip(s, lo + 1e-9, hi - 1e-9),
            bounds=(lo, hi),
            diff_step=1e-3,
            x_scale=1.0,
            max_nfev=200,
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    return params_of(best.x)


def _folds(rows: Sequence[object]) -> list[list[int]]:
    """Held-out index sets: one shape each (leave-one-out), or ten folds of shapes past
    LOO_MAX_ROWS. Rows of one shape (a row's `shape`, else each row its own) go together: a
    repeated row held out alone is still in the fit, and its 'held-out' error is in-sample
    (six rows listed three times fitted 11 terms and claimed 0.2% held out, against 10.3%)."""
    groups: dict[object, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(getattr(r, "shape", i), []).append(i)
    sets = list(groups.values())
    if len(sets) <= LOO_MAX_ROWS:
        return sets
    return [[i for g in sets[k::10] for i in g] for k in range(10)]


def _held_out(
    rows: Sequence[RowT],
    base: EngineParams,
    names: tuple[str, ...],
    full: EngineParams,
    predict: Predict[RowT],
) -> np.ndarray:
    """Each row's seconds as predicted by a fit of `names` made without it."""
    out = np.empty(len(rows))
    for held in _folds(rows):
        skip = set(held)
        rest = [r for j, r in enumerate(rows) if j not in skip]
        p = _fit_times(rest, base, names, predict, start=full)
        out[held] = predict([rows[j] for j in held], p)
    return out


def _abs_pct(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    errors: np.ndarray = 100.0 * np.abs(predicted - measured) / measured
    return errors


def at_ceiling(
    params: EngineParams, names: Sequence[str], bounds: dict[str, tuple[float, float]]
) -> list[str]:
    """The fitted terms that ended within 1% of their upper bound: the rows ask more of them
    than they can physically give (an efficiency past 0.95 of the datasheet, an overhead or
    attention factor at the most its range allows), so they stand in for something the model
    does not describe, and a term set that needs that is never selected. (The bottom of a
    cost's range is the cost nearly off, and a low efficiency is slow software: both possible.)"""
    return [n for n in names if getattr(params, n) >= bounds[n][1] * 0.99]


@dataclass(frozen=True, slots=True)
class TermChoice:
    """The time terms selection kept: their names, the fitted terms, each row's seconds as
    predicted without it, and the mean absolute held-out error (%) that chose them."""

    names: tuple[str, ...]
    params: EngineParams
    held_out: np.ndarray | None  # seconds per row from fits without it; None: nothing fitted
    score: float  # mean absolute held-out error, %


# terms past the best set the search tries before it stops: two stopped an 8B and an MoE's six
# points at the defaults, one term short of the four that predict them (docs/calibration.md)
PATIENCE = 3


def select_terms(
    rows: Sequence[RowT],
    base: EngineParams,
    candidates: tuple[str, ...],
    predict: Predict[RowT],
) -> tuple[TermChoice, list[str]]:
    """Forward selection of time terms by held-out error (see the module docstring), for
    rows whose seconds `predict` models: calibrate's step times, or a caller's own view of
    the model (tests/test_accuracy_vidur.py compares kernel times of one layer). Returns the
    choice and the trail of held-out errors, stage by stage."""
    measured = np.array([r.seconds for r in rows])
    default_err = float(np.mean(_abs_pct(predict(rows, base), measured)))
    best = TermChoice((), base, None, default_err)
    current = best
    trail = [f"defaults: {default_err:.1f}% mean error"]
    excluded: set[str] = set()  # terms a candidate set's fit sent to their upper bound
    shapes = len({getattr(r, "shape", i) for i, r in enumerate(rows)})
    while len(current.names) + 1 < shapes:  # k terms need k + 1 distinct shapes
        stage: TermChoice | None = None
        for n in candidates:
            if n in current.names:
                continue
            names = (*current.names, n)
            full = _fit_times(rows, base, names, predict)
            strained = at_ceiling(full, names, BOUNDS)
            if strained:  # the rows want more of a term than it can physically give
                for t in strained:
                    if t not in excluded:
                        excluded.add(t)
                        trail.append(f"{t} excluded (fitted at its upper bound)")
                continue
            held = _held_out(rows, base, names, full, predict)
            score = float(np.mean(_abs_pct(held, measured)))
            if stage is None or score < stage.score:
                stage = TermChoice(names, full, held, score)
        if stage is None:
            break
        trail.append(f"+{stage.names[-1]}: {stage.score:.1f}% held out")
        if stage.score < best.score * MIN_GAIN:
            best = stage
        elif len(stage.names) >= len(best.names) + PATIENCE:
            break  # PATIENCE terms past the best helped none of those times: stop looking
        current = stage
    return best, trail


def _power_terms(hw: Hardware) -> tuple[str, ...]:
    """The power curve's terms a fit may move: the idle share only where the catalog has no
    idle_w (a published idle draw is not refitted)."""
    return POWER_TERMS if hw.value("idle_w") is None else POWER_TERMS[:2]


def _fit_power(
    rows: Sequence[StepRow], params: EngineParams, hw: Hardware
) -> tuple[EngineParams, float | None, str]:
    """The power curve's terms, chosen as the time terms are: forward selection by held-out
    error, each fitted term under a log-normal prior centred on its default (POWER_PRIOR_SIGMA),
    and the defaults kept unless a term set predicts held-out rows at least 3% better."""
    from scipy.optimize import least_squares

    powered = [r for r in rows if r.m.watts is not None]
    if not powered:
        return params, None, "no watts in the measurements: power curve left at its defaults"
    if hw.value("tdp_w") is None:
        return params, None, f"{hw.id} has no tdp_w, so the power curve cannot be fitted"
    candidates = _power_terms(hw)
    costs = []
    for r in powered:
        pm = PerfModel(r.dep, params, r.basis)
        c = pm.step(*r.work)
        costs.append((*pm.work_times(c, r.work[0]), c.time_s, r.m.watts or 0.0))
    if len(powered) < 3:
        return (
            params,
            None,
            f"{len(powered)} rows with watts: too few to fit a power term and check it on "
            "another row; power curve kept at its defaults",
        )

    def with_x(names: tuple[str, ...], x: np.ndarray) -> EngineParams:
        return params.with_updates(**{n: float(math.exp(v)) for n, v in zip(names, x, strict=True)})

    def errors(p: EngineParams, idx: Sequence[int]) -> np.ndarray:
        # each row's own deployment: its devices, and how many of them a step keeps busy (it
        # was the first row's for every row, so rows of other pp or tp fitted a wrong curve)
        pms: dict[int, PerfModel] = {}  # by the deployment's basis, as predict_seconds
        out = []
        for i in idx:
            basis = powered[i].basis
            pm = pms.get(id(basis))
            if pm is None:
                pm = pms[id(basis)] = PerfModel(basis.deployment, p, basis)
            out.append(pm.power_w(*costs[i][:3]) / pm.devices / costs[i][3] - 1.0)
        return np.array(out)

    def fit(names: tuple[str, ...], idx: Sequence[int]) -> EngineParams:
        x0 = np.log([getattr(params, n) for n in names])
        sigma = np.array([POWER_PRIOR_SIGMA[n] for n in names])
        lo = np.log([POWER_BOUNDS[n][0] for n in names])
        hi = np.log([POWER_BOUNDS[n][1] for n in names])

        def residuals(x: np.ndarray) -> np.ndarray:
            prior = PRIOR_WEIGHT * (x - x0) / sigma
            return np.concatenate([errors(with_x(names, x), idx), prior])

        x = least_squares(residuals, np.clip(x0, lo + 1e-9, hi - 1e-9), bounds=(lo, hi)).x
        return with_x(names, x)

    everything = list(range(len(costs)))

    def held_out(names: tuple[str, ...]) -> float:
        out = []
        for held in _folds(powered):
            skip = set(held)  # `j not in held`, a list, was n^2 / 10 steps a fold
            p = fit(names, [j for j in everything if j not in skip])
            out.extend(np.abs(errors(p, held)))
        return float(np.mean(out)) * 100.0

    default_err = float(np.mean(np.abs(errors(params, everything)))) * 100.0
    best: tuple[tuple[str, ...], float] = ((), default_err)
    current: tuple[str, ...] = ()
    full: dict[tuple[str, ...], EngineParams] = {}  # each set fitted on every row, once
    shapes = len({getattr(r, "shape", i) for i, r in enumerate(powered)})
    while len(current) < len(candidates) and len(current) + 2 <= shapes:
        grown = [(*current, n) for n in candidates if n not in current]
        stage_fits = {ns: fit(ns, everything) for ns in grown}
        full.update(stage_fits)
        sets = [ns for ns, p in stage_fits.items() if not at_ceiling(p, ns, POWER_BOUNDS)]
        if not sets:
            break
        score, stage = min((held_out(ns), ns) for ns in sets)
        if score < best[1] * MIN_GAIN:
            best = (stage, score)
        current = stage
    names, held_err = best
    if not names:
        return (
            params,
            default_err,
            f"power: no term set predicts held-out rows better than the defaults "
            f"({default_err:.1f}%): power curve kept at its defaults",
        )
    fitted = full[names]
    err = float(np.mean(np.abs(errors(fitted, everything)))) * 100.0
    kept = [n for n in candidates if n not in names]
    return (
        fitted,
        err,
        f"power: fitted {', '.join(names)} ({held_err:.1f}% held out)"
        + (f"; kept at defaults: {', '.join(kept)}" if kept else ""),
    )


def _implausible(
    params: EngineParams,
    base: EngineParams,
    names: Sequence[str],
    bounds: dict[str, tuple[float, float]],
    sigmas: dict[str, float],
) -> list[str]:
    """Warnings for fitted terms (those that differ from `base`) that ended within 1% of a
    bound or more than IMPLAUSIBLE_SIGMA prior widths from their prior's centre."""
    out = []
    for n in names:
        value, default = getattr(params, n), getattr(base, n)
        if value == default:
            continue
        centre = default or LOG_START[n]
        z = abs(math.log(value / centre)) / sigmas[n]
        at_floor = value <= bounds[n][0] * 1.01
        why = ["at its bound"] if at_floor or at_ceiling(params, (n,), bounds) else []
        if z > IMPLAUSIBLE_SIGMA:
            why.append(f"{z:.1f} prior widths from its default")
        if why:
            out.append(
                f"{n} fitted {' and '.join(why)} ({value:.3g}, default {centre:.3g}): the rows "
                "ask more of it than it can physically give, so something the model does not "
                "describe is at work; predictions for shapes unlike the measured ones are "
                "uncertain"
            )
    return out


def fit_hardware(
    rows: Sequence[StepRow], hw: Hardware, source: str, logits_all: bool = False
) -> FitReport:
    """Fit the terms one hardware's rows identify; report per-row and held-out errors.
    `logits_all`: the engine measured computes the LM head for every token (EngineParams)."""
    base = default_params(hw)
    if logits_all:
        base = base.with_updates(logits_all=1.0)
    multi = any(r.dep.devices > 1 for r in rows)
    moe = any(r.dep.model.is_moe for r in rows)
    candidates = TIME_PARAMS + (COMM_PARAMS if multi else ()) + (MOE_PARAMS if moe else ())
    measured = np.array([r.m.seconds for r in rows])
    notes: list[str] = []
    warnings: list[str] = []
    if not multi:
        notes.append("all rows use one device: communication terms kept at their defaults")
    shapes = {(r.dep, r.work) for r in rows}
    if len(rows) < 2 or len(shapes) < 2:
        why = "1 row" if len(rows) < 2 else f"{len(rows)} rows of one shape"
        warnings.append(
            f"{why}: too few to fit any term (a term needs two distinct shapes, and one more "
            "to check it on); defaults kept. Measure other batch sizes and prompt lengths"
        )
        choice = TermChoice(
            (), base, None, float(np.mean(_abs_pct(predict_seconds(rows, base), measured)))
        )
        trail: list[str] = []
    else:
        choice, trail = select_terms(rows, base, candidates, predict_seconds)
    default_err = float(np.mean(_abs_pct(predict_seconds(rows, base), measured)))
    if trail:
        notes.append("term selection (held-out error): " + "; ".join(trail))
    if not choice.names and trail:
        notes.append(
            "no fitted term set predicts held-out rows better than the defaults "
            f"({default_err:.1f}% mean error): defaults kept"
        )
    if len(shapes) < 2:
        params, power_err, power_note = (
            choice.params,
            None,
            "rows of one shape: power curve kept at its defaults"
            if any(r.m.watts is not None for r in rows)
            else "no watts in the measurements: power curve left at its defaults",
        )
    else:
        params, power_err, power_note = _fit_power(rows, choice.params, hw)
    tdp = hw.value("tdp_w")
    hot = [r.m.line for r in rows if tdp is not None and (r.m.watts or 0.0) > 1.05 * tdp]
    if hot:
        warnings.append(
            f"line(s) {', '.join(map(str, hot[:10]))} report more watts per device than "
            f"{hw.id}'s TDP ({tdp:g} W): watts are per device, not per node or server"
        )
    past = [r for r in rows if r.past_window]
    if past:
        spec = past[0].dep.model
        warnings.append(
            f"line(s) {', '.join(str(r.m.line) for r in past[:10])} held more tokens than "
            f"their model's context window ({spec.id}: {past[0].held_tokens} of "
            f"{spec.max_context}); fitted as measured (an engine serves them only with RoPE "
            "scaling): check the prompt_tokens and context_tokens columns"
        )
    idle = hw.value("idle_w") or (None if tdp is None else tdp * base.idle_fraction)
    cold = [r.m.line for r in rows if idle and r.m.watts is not None and r.m.watts < 0.95 * idle]
    if cold:
        warnings.append(
            f"line(s) {', '.join(map(str, cold[:10]))} report fewer watts per device than "
            f"{hw.id}'s idle draw ({idle:.3g} W, "
            + ("the catalog's" if hw.value("idle_w") else "assumed")
            + "): watts are the device's whole draw during the steps, idle included"
        )
    if power_err is not None and power_err > LOO_WARN_PCT:
        warnings.append(
            f"the power curve misses the measured watts by {power_err:.1f}% on average (above "
            f"{LOO_WARN_PCT:.0f}%): energy figures for {hw.id} are uncertain; check that the "
            "watts are per device and measured over the steps"
        )
    if power_note:
        notes.append(power_note)
    power_terms = _power_terms(hw)
    power_fitted = tuple(n for n in power_terms if getattr(params, n) != getattr(base, n))
    n_power = sum(r.m.watts is not None for r in rows)
    # the file's path as one line of printable text (a reader refuses any other `source`)
    shown = printable(source, MAX_PATH_SHOWN)
    if params != base:
        params = params.with_updates(source=f"calibrated from {shown} ({len(rows)} rows)")
    else:
        params = params.with_updates(
            source=f"{base.source}; kept: {shown} ({len(rows)} rows) could not improve them"
        )
    warnings += _implausible(
        params, base, TIME_PARAMS + COMM_PARAMS + MOE_PARAMS, BOUNDS, PRIOR_SIGMA
    )  # the MoE terms too: eff_expert fitted at its floor passed without a word
    warnings += _implausible(params, base, POWER_TERMS, POWER_BOUNDS, POWER_PRIOR_SIGMA)
    predicted = predict_seconds(rows, params)
    errs = _abs_pct(predicted, measured)
    warnings += disagreeing_repeats(rows) + outliers(rows, predicted, measured)
    held = choice.held_out
    loo = _abs_pct(held, measured) if held is not None else None
    if loo is not None and float(np.mean(loo)) > LOO_WARN_PCT:
        warnings.append(
            f"held-out error {float(np.mean(loo)):.1f}% is above {LOO_WARN_PCT:.0f}%: "
            "predictions for shapes you did not measure are uncertain; measure more shapes"
        )
    elif loo is None and float(np.mean(errs)) > LOO_WARN_PCT:  # nothing fitted: no held-out
        warnings.append(
            f"the defaults, kept, miss these rows by {float(np.mean(errs)):.1f}% on average "
            f"(above {LOO_WARN_PCT:.0f}%), and no term set fitted on them predicted held-out "
            "rows better: the model does not describe this engine's times well; measure more "
            "shapes, or read its predictions as uncertain"
        )
    return FitReport(
        hardware=hw.id,
        rows=len(rows),
        params=params,
        fitted=choice.names + power_fitted,
        mean_abs_pct=float(np.mean(errs)),
        max_abs_pct=float(np.max(errs)),
        loo_mean_abs_pct=float(np.mean(loo)) if loo is not None else None,
        loo_max_abs_pct=float(np.max(loo)) if loo is not None else None,
        power_rows=n_power,
        power_mean_abs_pct=power_err,
        notes=tuple(notes),
        residuals=tuple(
            RowResidual(
                r.m.line, r.m.phase, r.m.seconds, float(p), None if held is None else float(h)
            )
            for r, p, h in zip(
                rows, predicted, held if held is not None else [None] * len(rows), strict=True
            )
        ),
        kept=tuple(n for n in candidates + power_terms if n not in choice.names + power_fitted),
        default_mean_abs_pct=default_err,
        warnings=tuple(warnings),
    )


def fit_calibration(
    measurements: Sequence[Measurement],
    catalog: Catalog,
    source: str = "measurements",
    base: Calibration | None = None,
    logits_all: bool = False,
) -> tuple[Calibration, list[FitReport]]:
    """Fit every hardware in `measurements`; hardware not measured keeps `base`'s terms.
    `logits_all`: the engine measured computes the LM head for every token it processes
    (llama-cpp-python's server, as `profile` times it); the calibration records it."""
    groups: dict[str, list[Measurement]] = defaultdict(list)
    for m in measurements:  # one device's rows together, its id in any case (H100-SXM)
        try:
            groups[catalog.device(m.hardware).id].append(m)
        except WattserveError as exc:
            raise ConfigError(str(exc), path=source, line=m.line, field="hardware") from None
    entries = {h.lower() for h in groups} | {h.lower() for h in (base.params if base else ())}
    if len(entries) > MAX_ENTRIES:  # a file every reader would refuse, after the whole fit
        raise ConfigError(
            f"rows of {len(entries):,} hardware ids; a calibration holds at most "
            f"{MAX_ENTRIES:,}: calibrate the devices in several files",
            path=source,
            field="hardware",
        )
    params = dict(base.params) if base else {}
    errors = dict(base.fit_error) if base else {}
    terms = dict(base.terms) if base else {}
    measured = dict(base.measured) if base else {}
    reports = []
    # every device's rows resolved (and refused where impossible) before any fit, which may
    # take a minute: a bad row of the second device is not found after the first one's fit
    models: dict[str, ModelSpec] = {}  # each model file read once, however many rows name it
    deployments: dict[Deployment, StepBasis] = {}  # one object per deployment (predict_seconds)
    resolved = {
        hw_id: [step_row(m, catalog.device(hw_id), source, models, deployments) for m in ms]
        for hw_id, ms in groups.items()
    }
    for hw_id, rows in resolved.items():
        hw = catalog.device(hw_id)
        for old in [k for k in params if k.lower() == hw_id.lower() and k != hw_id]:
            del params[old]  # a base entry filed under another case is this one, refitted
            errors.pop(old, None)
            terms.pop(old, None)
            measured.pop(old, None)
        report = fit_hardware(rows, hw, source, logits_all)
        params[hw_id] = report.params
        errors[hw_id] = report.as_dict()
        terms[hw_id] = (report.fitted, report.kept)
        measured[hw_id] = listed(  # model ids as a calibration file holds them
            Coverage.of(
                (
                    r.dep.model.id,
                    r.dep.model.total_params,
                    r.m.phase,
                    r.m.batch,
                    r.m.prompt_tokens,
                    r.m.context_tokens,
                    r.dep.tp,
                    r.dep.dtype,
                )
                for r in rows
            )
        )
        reports.append(report)
    return Calibration(params=params, fit_error=errors, terms=terms, measured=measured), reports
