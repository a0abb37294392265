"""`wattserve rank`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattserve.cli.common import (
    check_writable,
    input_flags,
    parse_watts,
    print_json,
    reports_errors,
    save_text,
)
from wattserve.core.catalog import load_catalog
from wattserve.core.params import Calibration, load_calibration
from wattserve.core.workload import DEFAULT_TPOT_S, DEFAULT_TTFT_S
from wattserve.errors import ConfigError
from wattserve.rank.api import DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS, positive, rank
from wattserve.rank.edge import edge_view
from wattserve.rank.report import report_html
from wattserve.rank.text import edge_text, ranking_text


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


@reports_errors
def rank_cmd(
    model: Annotated[
        str | None,
        typer.Option(
            help="Model id (see `wattserve models`), a Hugging Face repo id, or a config.json path."
        ),
    ] = None,
    prompt_tokens: Annotated[
        int,
        typer.Option(
            help="Prompt tokens per request (default: the Azure 2023 conversation median)."
        ),
    ] = DEFAULT_PROMPT_TOKENS,
    output_tokens: Annotated[
        int,
        typer.Option(
            help="Output tokens per request (default: the Azure 2023 conversation median)."
        ),
    ] = DEFAULT_OUTPUT_TOKENS,
    slo_ttft: Annotated[
        float, typer.Option(help="Time-to-first-token SLO, s (default: MLPerf v4.1 server limit).")
    ] = DEFAULT_TTFT_S,
    slo_tpot: Annotated[
        float,
        typer.Option(help="Time-per-output-token SLO, s (default: MLPerf v4.1 server limit)."),
    ] = DEFAULT_TPOT_S,
    dtype: Annotated[
        str,
        typer.Option(
            help="auto (every dtype the device has a peak for), bf16, fp8, int8, int4, or "
            "weight-only w4a16, w8a16, w8a8."
        ),
    ] = "auto",
    category: Annotated[
        list[str] | None,
        typer.Option(help="Only these categories (comma-separated or repeated; hosted-api too)."),
    ] = None,
    hardware: Annotated[
        list[str] | None, typer.Option(help="Only these device/provider ids (comma-separated).")
    ] = None,
    hardware_file: Annotated[
        list[Path] | None, typer.Option(help="Extra hardware/provider YAML (repeatable).")
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Calibration JSON from `wattserve calibrate`.")
    ] = None,
    require_software: Annotated[
        str | None,
        typer.Option(help="At least this mature a stack: pytorch-native, plugin or vendor-sdk."),
    ] = None,
    min_maturity: Annotated[
        str | None, typer.Option(help="At least: production, pilot or prototype.")
    ] = None,
    sort: Annotated[
        str,
        typer.Option(
            help="usd_per_mtok, j_per_token, tokens_per_s, tokens_per_s_per_kw, tpot_s, ttft_s, "
            "envelope_tokens_per_s."
        ),
    ] = "usd_per_mtok",
    power_envelope: Annotated[
        str | None, typer.Option(help="Facility power envelope, e.g. 1MW (W without a unit).")
    ] = None,
    pue: Annotated[
        float | None,
        typer.Option(help="Power usage effectiveness: host overhead and cooling (default 1.5)."),
    ] = None,
    top: Annotated[int | None, typer.Option(help="Show only the best N rows.")] = None,
    training_cost_usd: Annotated[
        float | None, typer.Option(help="Training spend, $, for the inference crossover.")
    ] = None,
    daily_tokens: Annotated[
        float | None, typer.Option(help="Output tokens served per day, for the crossover.")
    ] = None,
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option(
            help="Share of device memory the engine uses (vLLM's name; default: the "
            "calibration's, else 0.9), for every device."
        ),
    ] = None,
    max_batched_tokens: Annotated[
        int | None,
        typer.Option(
            help="Tokens every engine batches in one step (vLLM's --max-num-batched-tokens; "
            "default 8192): the memory fit reserves their activations, the prefill runs in "
            "steps of it, and no batch past it is searched."
        ),
    ] = None,
    edge: Annotated[
        bool, typer.Option("--edge", help="The largest model each edge/CIM part holds.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
) -> None:
    """Every device and hosted API for MODEL, each at its best configuration within the SLO."""
    if report is not None:
        check_writable(report, "--report", (*(hardware_file or []), calibration or ""), kind="html")
    with input_flags(model, calibration, hardware_file):
        catalog = load_catalog(hardware_file or [])
        calib = Calibration() if calibration is None else load_calibration(calibration)
    hw = _split(hardware)
    if hardware is not None and not hw:  # `--hardware ,,` meant no filter at all
        raise ConfigError("names no device or provider id", field="--hardware")
    if category is not None and not _split(category):  # as `--hardware ,,`: no filter at all
        raise ConfigError("names no category", field="--category")
    if edge:
        unused = [  # --edge weighs every catalog model on every part: these would go unheard
            flag
            for flag, given in (
                ("--model", model is not None),
                ("--slo-ttft", slo_ttft != DEFAULT_TTFT_S),
                ("--slo-tpot", slo_tpot != DEFAULT_TPOT_S),
                ("--category", category is not None),
                ("--sort", sort != "usd_per_mtok"),
                ("--top", top is not None),
                ("--power-envelope", power_envelope is not None),
                ("--pue", pue is not None),
                ("--dtype", dtype != "auto"),
                ("--require-software", require_software is not None),
                ("--min-maturity", min_maturity is not None),
                ("--training-cost-usd", training_cost_usd is not None),
                ("--daily-tokens", daily_tokens is not None),
                ("--max-batched-tokens", max_batched_tokens is not None),
            )
            if given
        ]
        if unused:
            raise ConfigError(
                f"--edge ranks every catalog model on each edge part; {', '.join(unused)} "
                + ("does" if len(unused) == 1 else "do")
                + " not apply to it: leave "
                + ("it" if len(unused) == 1 else "them")
                + " out",
                field=unused[0],
            )
        if gpu_memory_utilization is not None:  # else it would be ignored without a word
            raise ConfigError(
                "--edge finds the largest model each part holds at its default memory share; "
                "leave --gpu-memory-utilization out",
                field="--gpu-memory-utilization",
            )
        positive("--prompt-tokens", prompt_tokens, integer=True)
        positive("--output-tokens", output_tokens, integer=True)
        hw = [catalog.device(name).id for name in hw]  # any case is the id
        rows = edge_view(
            catalog,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            hardware=hw,
            calibration=calib,
        )
        if report is not None:
            save_text(report, report_html(None, rows), "--report")
        if json_out:
            print_json({"edge": [r.to_dict() for r in rows]})
        else:
            typer.echo(edge_text(rows))
        return
    if model is None:
        raise ConfigError("give a model (see `wattserve models`), or --edge", field="--model")
    with input_flags(model, calibration, hardware_file):
        result = rank(
            model,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            slo_ttft_s=slo_ttft,
            slo_tpot_s=slo_tpot,
            dtype=dtype,
            categories=_split(category),
            hardware=hw,
            require_software=require_software,
            min_maturity=min_maturity,
            sort=sort,
            power_envelope_w=None
            if power_envelope is None
            else parse_watts(power_envelope, "--power-envelope"),
            pue=pue,
            top=top,
            training_cost_usd=training_cost_usd,
            daily_tokens=daily_tokens,
            calibration=calib,
            catalog=catalog,
            gpu_memory_utilization=gpu_memory_utilization,
            max_batched_tokens=max_batched_tokens,
        )
    if report is not None:
        save_text(report, report_html(result, None), "--report")
    if json_out:
        print_json(result.to_dict())
    else:
        typer.echo(ranking_text(result))
        if report is not None:
            typer.echo(f"report: {report}")
