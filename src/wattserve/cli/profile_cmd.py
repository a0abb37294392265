"""`wattserve profile`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattserve.cli.calibrate_cmd import render_report
from wattserve.cli.common import print_json, reports_errors
from wattserve.profile import run_profile


@reports_errors
def profile_cmd(
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            help="Folder for the results (default ~/.cache/wattserve/profile, where serve's "
            "local backend reads them); its files change only when the whole run succeeds.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            help="CPU engine to time: llama (the llama.cpp engine serve runs), numpy (a "
            "synthetic decoder) or auto (llama when installed)."
        ),
    ] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            help="llama.cpp threads, 1 to 4 per CPU (default: as serve's server runs, half "
            "the CPUs); refused where no llama.cpp engine is timed."
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Fewer cases (about a minute on 2 CPU cores; more when busy).")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Measure this machine, write a measurements CSV and a calibration for it."""
    if device not in ("auto", "cpu", "gpu"):
        raise typer.BadParameter("use auto, cpu or gpu", param_hint="--device")
    if engine not in ("auto", "llama", "numpy"):
        raise typer.BadParameter("use auto, llama or numpy", param_hint="--engine")
    if output is not None and not output.strip():  # Path("") is the working folder
        raise typer.BadParameter("an empty name: give a folder", param_hint="--output")
    log = (lambda _msg: None) if json_out else typer.echo
    # run_profile refuses a bad --output or --threads (naming it, exit status 2) before it
    # measures anything, and writes the folder's files only once the whole run succeeded
    results = run_profile(
        None if output is None else Path(output),
        device=device,
        quick=quick,
        log=log,
        engine=engine,
        threads=threads,
    )
    if json_out:
        print_json(
            [
                {
                    "hardware": r.hardware.id,
                    "micro": r.micro,
                    "power": r.power,
                    "rows": len(r.measurements),
                    "fit": [rep.as_dict() for rep in r.reports],
                    "files": {k: str(v) for k, v in r.files.items()},
                }
                for r in results
            ]
        )
        return
    for r in results:
        for rep in r.reports:
            typer.echo(render_report(rep, r.calibration.measured.get(rep.hardware)))
        files = ", ".join(str(p) for p in r.files.values())
        typer.echo(f"wrote {files}")
        calib = r.files["calibration"]
        hw_file = r.files.get("hardware")
        extra = f" --hardware-file {hw_file}" if hw_file else ""
        typer.echo(
            f"try: wattserve estimate --model smollm2-135m --hardware {r.hardware.id}{extra} "
            f"--dtype {r.measurements[0].dtype} --calibration {calib}"
        )
