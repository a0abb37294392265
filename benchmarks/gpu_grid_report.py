"""Calibrate on few, predict the rest: the analysis of a benchmarks/gpu_grid.py run (#12 items
3 and 4).

Fits wattserve's calibration (calibrate/fit.py, as `wattserve calibrate` does) on six
training points only, then predicts every other measured step (other batch sizes, contexts
and prompt lengths, the other dense size, the tiny model, the MoE) uncalibrated and
calibrated, and prints per shape group the mean absolute error of each, and of the energy per
step against NVML where it was measured. As in tests/test_accuracy_vidur.py, training points
are not scored. The training points (`--train`): `first`, the run's tier 0 (six steps of its
first model); `two-sizes`, three steps each of the 8B and the 1B; `large-moe`, three each of
the 8B and the MoE; `three-kinds`, two steps each of the 8B, the 1B and the MoE (the MoE terms,
docs/model.md, only MoE rows identify). With `--calibrate-on RUN`,
the calibration is fitted on another run's points (same device) and every step of DIR is held
out: held-out models. Writes the table to DIR/report[-TRAIN][-from-RUN].md and .json.

    python benchmarks/gpu_grid_report.py DIR
    python benchmarks/gpu_grid_report.py DIR --train two-sizes
    python benchmarks/gpu_grid_report.py HELDOUT_DIR --train two-sizes --calibrate-on DIR

`--defaults-outside` scores a calibration as a local correction: steps more than 2x outside
what the training points measured (core/coverage.py) are predicted uncalibrated
(docs/accuracy.md, "The defaults outside the measured span"; a report-...-defaults-outside file).
"""

from __future__ import annotations

import argparse
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
    from wattserve.errors import ConfigError
except ImportError as exc:
    sys.exit(f"MISSING: Python package {exc.name!r}, which wattserve needs")

TARGETS = {"calibrated": 10.0, "uncalibrated": 15.0, "energy": 15.0}  # % mean, issue #12 item 4
Key = tuple[str, str, int, int]  # role, phase, batch, prompt or context tokens
# training sets: None is the run's tier 0; else these steps (of gpu_grid's default models)
TRAIN_SETS: dict[str, frozenset[Key] | None] = {
    "first": None,
    "two-sizes": frozenset(
        (role, phase, batch, tokens)
        for role in ("large", "small")
        for phase, batch, tokens in (("decode", 1, 2048), ("decode", 64, 2048))
    )
    | {("large", "prefill", 1, 2048), ("small", "prefill", 1, 512)},
    # three steps each of the 8B and the MoE, as two-sizes is of the 8B and the 1B
    "large-moe": frozenset(
        (role, phase, batch, tokens)
        for role in ("large", "moe")
        for phase, batch, tokens in (
            ("decode", 1, 2048),
            ("decode", 64, 2048),
            ("prefill", 1, 2048),
        )
    ),
    # two steps each of the 8B, the 1B and the MoE: the MoE terms need MoE rows
    "three-kinds": frozenset(
        {
            ("large", "decode", 1, 2048),
            ("large", "decode", 64, 2048),
            ("small", "decode", 1, 2048),
            ("small", "prefill", 1, 512),
            ("moe", "decode", 1, 2048),
            ("moe", "decode", 64, 2048),
        }
    ),
}


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


class Run:
    """One gpu_grid folder: its grid.json, its measurements and each row's case."""

    def __init__(self, folder: Path) -> None:
        if not (folder / "grid.json").is_file() or not (folder / "measurements.csv").is_file():
            raise SystemExit(f"{folder}: no grid.json and measurements.csv (a gpu_grid run's)")
        self.folder = folder
        try:
            self.doc = json.loads((folder / "grid.json").read_text())
            self.rows = read_measurements(folder / "measurements.csv")
        except (ValueError, ConfigError) as exc:  # JSONDecodeError is a ValueError
            raise SystemExit(f"{folder}: not a readable gpu_grid run: {exc}") from None
        cases = self.doc["cases"]
        self.case = {c["result"]["csv_line"]: c for c in cases if "csv_line" in c["result"]}

    def key(self, m: Measurement) -> Key:
        c = self.case[m.line]
        return (c["role"], c["phase"], c["batch"], c["tokens"])

    def training(self, train: str) -> list[Measurement]:
        chosen = TRAIN_SETS[train]
        if chosen is None:
            return [m for m in self.rows if self.case[m.line]["tier"] == 0]
        return [m for m in self.rows if self.key(m) in chosen]


def beyond(calibration: Any, hw: Hardware, m: Measurement) -> bool:
    """Whether step `m` lies outside what the calibration measured on `hw` (more than twice
    past its rows' span: core/coverage.py, the rule of estimate's note)."""
    cov = calibration.measured.get(hw.id)
    if cov is None:  # no record: nothing to be outside of
        return False
    model = load_model(m.model)
    if m.phase == "prefill":
        out = cov.outside(model.id, model.total_params, prefill_tokens=m.batch * m.prompt_tokens)
    else:
        out = cov.outside(
            model.id, model.total_params, decode_batch=m.batch, decode_context=m.context_tokens
        )
    return bool(out)


def report(
    folder: Path,
    train: str = "first",
    calibrate_on: Path | None = None,
    defaults_outside: bool = False,
) -> tuple[str, dict[str, Any]]:
    run = Run(folder)
    source = Run(calibrate_on) if calibrate_on is not None else run
    if source.doc.get("started") == run.doc.get("started"):  # the same run, or a copy of it:
        source = run  # its training points are not held out
    doc, rows, by_line = run.doc, run.rows, run.case
    if source.doc["hardware_id"] != doc["hardware_id"]:
        raise SystemExit(
            f"{calibrate_on} ran on {source.doc['hardware_id']}, {folder} on "
            f"{doc['hardware_id']}: a calibration is of one device"
        )
    extra = [folder / doc["hardware_file"]] if doc.get("hardware_file") else []
    catalog = load_catalog(extra)
    hw = catalog.device(doc["hardware_id"])
    train_rows = source.training(train)
    if len(train_rows) < 2:
        raise SystemExit(f"{len(train_rows)} training points in {source.folder}: too few")
    trained = {source.key(m) for m in train_rows} if source is run else set()
    calibration, (fit,) = fit_calibration(
        train_rows, catalog, source=f"{len(train_rows)} training points"
    )
    calibrated, uncalibrated = calibration.params_for(hw), default_params(hw)
    errs: dict[str, list[tuple[float, float, float | None, float | None]]] = defaultdict(list)
    for m in rows:
        case = by_line[m.line]
        if run.key(m) in trained:
            continue
        unc, cal = step(m, hw, uncalibrated), step(m, hw, calibrated)
        if defaults_outside and beyond(calibration, hw, m):
            cal = unc  # a calibration as a local correction (docs/accuracy.md)
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
        f"# gpu_grid: calibrate on {len(train_rows)}, predict the rest",
        "",
        f"Run {doc['started']} on {doc.get('device', {}).get('name', '?')} "
        f"({hw.id}); models: {', '.join(f'{k} {v}' for k, v in doc.get('models', {}).items())}.",
        f"Calibrated on {len(train_rows)} training points ({train})"
        + (
            f" of the run {source.doc['started']} ({source.folder.name})"
            if source is not run
            else ""
        )
        + ": "
        + ", ".join(f"{m.model} {m.phase} b{m.batch} n{m.prompt_tokens}" for m in train_rows)
        + "; "
        f"fitted {', '.join(fit.fitted) or 'nothing (defaults kept)'}; in-sample "
        f"{fit.mean_abs_pct:.1f}% mean, leave-one-out {_fmt(fit.loo_mean_abs_pct)}, defaults "
        f"{fit.default_mean_abs_pct:.1f}%.",
    ]
    if defaults_outside:
        lines.append(
            "Calibrated column: the uncalibrated prediction for steps more than 2x outside "
            "what the training points measured (--defaults-outside)."
        )
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a gpu_grid run's folder")
    ap.add_argument("--train", choices=sorted(TRAIN_SETS), default="first")
    ap.add_argument("--calibrate-on", type=Path, metavar="RUN", help="fit on this run's points")
    ap.add_argument(
        "--defaults-outside",
        action="store_true",
        help="predict steps more than 2x outside the training points' span uncalibrated",
    )
    args = ap.parse_args(argv)
    text, summary = report(args.folder, args.train, args.calibrate_on, args.defaults_outside)
    print(text)
    name = "report" + ("" if args.train == "first" else f"-{args.train}")
    name += f"-from-{args.calibrate_on.resolve().name}" if args.calibrate_on else ""
    name += "-defaults-outside" if args.defaults_outside else ""
    (args.folder / f"{name}.md").write_text(text + "\n")
    (args.folder / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
