"""`wattserve calibrate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattserve.calibrate import fit_calibration, read_measurements
from wattserve.calibrate.fit import FitReport
from wattserve.calibrate.output import calibration_text
from wattserve.cli.common import (
    check_regular_output,
    check_writable,
    print_json,
    reports_errors,
    save_text,
)
from wattserve.core.catalog import load_catalog
from wattserve.core.coverage import SPAN, Coverage
from wattserve.core.modelspec import model_files
from wattserve.core.params import MAX_CALIBRATION_BYTES, moved_terms
from wattserve.core.textfile import parse_json, read_text
from wattserve.errors import ConfigError, printable


def render_report(r: FitReport, measured: Coverage | None = None) -> str:
    p = r.params
    fitted = ", ".join(r.fitted) or "nothing (defaults kept)"
    lines = [
        f"{r.hardware}: {r.rows} row{'s' if r.rows != 1 else ''}; fitted {fitted}; kept at "
        "defaults: "
        f"{', '.join(r.kept) or 'none'}",
        f"  defaults' error on these rows: mean {r.default_mean_abs_pct:.2f}%",
        f"  calibrated: mean {r.mean_abs_pct:.2f}%, max {r.max_abs_pct:.2f}% (in sample)",
    ]
    if r.loo_mean_abs_pct is not None:
        lines.append(
            f"  held out: mean {r.loo_mean_abs_pct:.2f}%, max {r.loo_max_abs_pct:.2f}% "
            "(each row predicted by a fit without it)"
        )
    if r.power_mean_abs_pct is not None:
        lines.append(
            f"  power: mean {r.power_mean_abs_pct:.2f}% over {r.power_rows} rows; "
            f"compute slope {p.power_k_compute:.3g}, memory slope {p.power_k_memory:.3g}, "
            + (
                f"idle {p.idle_fraction:.0%} of TDP (the catalog has no idle_w)"
                if "idle_fraction" in r.fitted + r.kept
                else "idle: the catalog's idle_w"
            )
        )
    lines.append(
        f"  eff_compute {p.eff_compute:.3f}, eff_memory {p.eff_memory:.3f}, "
        f"eff_comm {p.eff_comm:.3f}, step {p.overhead_step_s * 1e3:.3g} ms, "
        f"layer {p.overhead_layer_s * 1e6:.3g} us, seq {p.overhead_seq_s * 1e6:.3g} us, "
        f"collective {p.overhead_collective_s * 1e6:.3g} us"
        + "".join(f", {term}" for term in moved_terms(p))
    )
    lines.append("  line  phase    measured s  predicted s  error  held-out error")
    for x in r.residuals:
        held = x.held_out_error_pct
        lines.append(
            f"  {x.line:4}  {x.phase:7}  {x.measured_s:10.4g}  {x.predicted_s:11.4g}  "
            f"{x.error_pct:+5.1f}%  " + ("-" if held is None else f"{held:+.1f}%")
        )
    if measured is not None and r.fitted:
        lines.append(
            f"  measured: {measured.describe()}; estimate and rank say when a prediction lies "
            f"more than {SPAN:g}x past that"
        )
    lines += [f"  note: {n}" for n in r.notes]
    lines += [f"  WARNING: {w}" for w in r.warnings]
    return "\n".join(lines)


def _check_replaceable(output: Path) -> None:
    """Refuse an existing `output` that is not a calibration file (another CSV, a YAML, a
    profile's local-cpu.yaml), before the fit: calibrate would replace it. An empty file, or
    any JSON object with a `hardware` object, is one to replace (a calibration its readers now
    refuse, an older wattserve's, is what calibrating again is for)."""
    if not output.exists():
        return
    why = ""
    try:
        text = read_text(output, MAX_CALIBRATION_BYTES)
        data = parse_json(text, str(output)) if text.strip() else {"hardware": {}}
    except ConfigError as exc:
        why = exc.detail
    else:
        if not isinstance(data, dict) or not isinstance(data.get("hardware"), dict):
            why = "JSON, but no 'hardware' object"
    if why:
        raise ConfigError(
            f"{output!s:.200} is not a wattserve calibration file ({why}); calibrate would "
            "replace it: remove it or give another --output",
            field="--output",
        )


@reports_errors
def calibrate_cmd(
    measurements: Annotated[
        Path, typer.Argument(help="Measurements CSV (see docs/calibration.md).")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Calibration JSON to write.")],
    hardware_file: Annotated[
        list[Path] | None, typer.Option(help="Extra hardware YAML (repeatable).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the fit report as JSON.")] = False,
    logits_all: Annotated[
        bool,
        typer.Option(
            "--logits-all",
            help="The engine computed every token's logits (llama-cpp-python's server, as "
            "`profile` times it); recorded in the calibration.",
        ),
    ] = False,
) -> None:
    """Fit efficiencies, overheads and the power curve per hardware; print the fit error."""
    check_writable(output, "--output", (measurements, *(hardware_file or [])))
    # not a pipe or a device, as bench refuses them: a FIFO with no reader hung the write
    # after the whole fit, and /dev/null was reported written
    check_regular_output(output, "--output", measurements)
    rows = read_measurements(measurements)
    configs = {c for m in rows for c in model_files(m.model)}  # a row's model may be a file
    check_writable(output, "--output", tuple(configs))
    _check_replaceable(output)
    calibration, reports = fit_calibration(
        rows, load_catalog(hardware_file or []), source=str(measurements), logits_all=logits_all
    )
    # read back before it is written: a file --calibration refuses is never reported written
    save_text(output, calibration_text(calibration), "--output")
    if json_out:
        print_json(
            {
                r.hardware: {
                    **r.as_dict(),
                    "fitted": list(r.fitted),
                    "measured": calibration.measured[r.hardware].to_json(),
                    "kept": list(r.kept),
                    "notes": list(r.notes),
                    "warnings": list(r.warnings),
                    "residuals": [
                        {
                            "line": x.line,
                            "phase": x.phase,
                            "measured_s": x.measured_s,
                            "predicted_s": x.predicted_s,
                            "held_out_s": x.held_out_s,
                        }
                        for x in r.residuals
                    ],
                }
                for r in reports
            }
        )
    else:
        for r in reports:
            typer.echo(render_report(r, calibration.measured.get(r.hardware)))
        shown = printable(str(output))  # a path's escape codes are not sent to the terminal
        typer.echo(f"wrote {shown}; apply it with --calibration {shown}")
