"""Calibrate on few, predict the rest: the analysis of a benchmarks/gpu_grid.py run (#12 items
3 and 4).

Fits wattserve's calibration (calibrate/fit.py, as `wattserve calibrate` does) on the run's
training points only (tier 0: at most six steps of the `large` model), then predicts every other
measured step (other batch sizes, contexts and prompt lengths, the other dense size, the tiny
model, the MoE) uncalibrated and calibrated, and prints per shape group the mean absolute error
of each, and of the energy per step against NVML where it was measured. As in
tests/test_accuracy_vidur.py, training points are not scored. Writes the table to DIR/report.md.

    python benchmarks/gpu_grid_report.py DIR
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
if (SRC / "wattserve").is_dir():  # this checkout's own code, installed or not (a bare GPU box)
    sys.path.insert(0, str(SRC))
try:
    from wattserve.calibrate.fit import fit_calibration
    from wattserve.calibrate.measurements import Measurement, read_measurements
    from wattserve.core.catalog import load_catalog
    from wattserve.core.deployment import Deployment
    from wattserve.core.hardware import Hardware
    from wattserve.core.modelspec import load_model
    from wattserve.core.params import EngineParams, default_params
    from wattserve.core.perf import PerfModel, StepCost
except ImportError as exc:
    sys.exit(f"MISSING: Python package {exc.name!r}, which wattserve needs")

TARGETS = {"calibrated": 10.0, "uncalibrated": 15.0, "energy": 15.0}  # % mean, issue #12 item 4


def step(m: Measurement, hw: Hardware, params: EngineParams) -> StepCost:
    dep = Deployment(load_model(m.model), hw, dtype=m.dtype, kv_dtype=m.kv_format)
    pm = PerfModel(dep, params)
    if m.phase == "prefill":
        return pm.prefill(m.batch, m.prompt_tokens)
    return pm.decode_step(m.batch, m.context_tokens)


def shape_group(role: str, m: Measurement) -> str:
    if m.phase == "decode":
        batch = "batch 1-4" if m.batch <= 4 else "batch 16+"
        return f"{role} decode, {batch}, context {'<=2k' if m.context_tokens <= 2048 else '>2k'}"
    batch = "batch 1" if m.batch == 1 else "batch 4+"
    return f"{role} prefill, {batch}, prompt {'<=512' if m.prompt_tokens <= 512 else '>512'}"


def _pct(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}%"


def report(folder: Path) -> tuple[str, dict[str, Any]]:
    doc = json.loads((folder / "grid.json").read_text())
    rows = read_measurements(folder / "measurements.csv")
    extra = [folder / doc["hardware_file"]] if doc.get("hardware_file") else []
    catalog = load_catalog(extra)
    hw = catalog.device(doc["hardware_id"])
    by_line = {c["result"]["csv_line"]: c for c in doc["cases"] if "csv_line" in c["result"]}
    train = [m for m in rows if by_line[m.line]["tier"] == 0]
    if len(train) < 2:
        raise SystemExit(f"{len(train)} training points in {folder}: too few to calibrate")
    calibration, (fit,) = fit_calibration(train, catalog, source=f"{len(train)} training points")
    calibrated, uncalibrated = calibration.params_for(hw), default_params(hw)
    errs: dict[str, list[tuple[float, float, float | None, float | None]]] = defaultdict(list)
    for m in rows:
        case = by_line[m.line]
        if case["tier"] == 0:
            continue
        unc, cal = step(m, hw, uncalibrated), step(m, hw, calibrated)
        energy = case["result"].get("energy_j_per_step")
        errs[shape_group(case["role"], m)].append(
            (
                _pct(unc.time_s, m.seconds),
                _pct(cal.time_s, m.seconds),
                None if energy is None else _pct(unc.energy_j, energy),
                None if energy is None else _pct(cal.energy_j, energy),
            )
        )
    lines = [
        f"# gpu_grid: calibrate on {len(train)}, predict the rest",
        "",
        f"Run {doc['started']} on {doc.get('device', {}).get('name', '?')} "
        f"({hw.id}); models: {', '.join(f'{k} {v}' for k, v in doc.get('models', {}).items())}.",
        f"Calibrated on the {len(train)} training points of `large` "
        f"({', '.join(f'{m.phase} b{m.batch} n{m.prompt_tokens}' for m in train)}): "
        f"fitted {', '.join(fit.fitted) or 'nothing (defaults kept)'}; in-sample "
        f"{fit.mean_abs_pct:.1f}% mean, leave-one-out {_fmt(fit.loo_mean_abs_pct)}, defaults "
        f"{fit.default_mean_abs_pct:.1f}%.",
    ]
    lines += [f"Fit warning: {w}" for w in fit.warnings]
    if doc.get("smoke"):
        lines += ["", "SMOKE RUN: tiny stand-in models on the CPU; the errors say nothing."]
    lines += [
        "",
        "Mean |error| of held-out steps (signed mean in brackets); energy: J per step against "
        "NVML.",
        "",
        "| shape group | points | uncalibrated | calibrated | energy uncal. | energy cal. |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    summary: dict[str, Any] = {"groups": {}, "worse_groups": []}
    for group, es in sorted(errs.items()):
        u = _mean([abs(e[0]) for e in es])
        c = _mean([abs(e[1]) for e in es])
        eu = _mean([abs(e[2]) for e in es if e[2] is not None])
        ec = _mean([abs(e[3]) for e in es if e[3] is not None])
        su, sc = _mean([e[0] for e in es]), _mean([e[1] for e in es])
        lines.append(
            f"| {group} | {len(es)} | {_fmt(u)} ({su:+.0f}) | {_fmt(c)} ({sc:+.0f}) | "
            f"{_fmt(eu)} | {_fmt(ec)} |"
        )
        summary["groups"][group] = {"points": len(es), "unc": u, "cal": c, "e_unc": eu, "e_cal": ec}
        if c is not None and u is not None and c > u:
            summary["worse_groups"].append(group)
    every = [e for es in errs.values() for e in es]
    overall = {
        "uncalibrated": _mean([abs(e[0]) for e in every]),
        "calibrated": _mean([abs(e[1]) for e in every]),
        "energy": _mean([abs(e[3]) for e in every if e[3] is not None]),
    }
    summary["overall"] = overall
    lines += ["", f"All {len(every)} held-out steps (issue #12 item 4's targets in brackets):"]
    for key, value in overall.items():
        lines.append(f"- {key}: {_fmt(value)} mean (target {TARGETS[key]:.0f}%)")
    lines.append(
        f"- shape groups where calibration is worse than none: {len(summary['worse_groups'])}"
        + (f" ({'; '.join(summary['worse_groups'])})" if summary["worse_groups"] else "")
        + " (target 0)"
    )
    if overall["energy"] is None:
        lines.append("- energy: not measured in this run (no NVML), so not scored")
    return "\n".join(lines), summary


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[0])
    text, summary = report(folder)
    print(text)
    (folder / "report.md").write_text(text + "\n")
    (folder / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
