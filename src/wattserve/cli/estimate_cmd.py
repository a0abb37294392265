"""`wattserve estimate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattserve.cli.common import as_flags, check_finite, input_flags, print_json, reports_errors
from wattserve.core.catalog import load_catalog
from wattserve.core.cost import CostAssumptions, check_pue
from wattserve.core.params import check_memory_share
from wattserve.core.sites import MAX_USD_PER_KWH
from wattserve.errors import ConfigError
from wattserve.estimate import estimate
from wattserve.estimate.explain import explain, summary

# estimate()'s parameters that are flags of this command under the same name
# the API's parameters a user of the command line gave as flags
FLAGS = {
    name: "--" + name.replace("_", "-")
    for name in (
        "tp",
        "pp",
        "dtype",
        "kv_dtype",
        "batch",
        "prompt_tokens",
        "output_tokens",
        "context",
        "gpu_memory_utilization",
        "expert_parallel",
        "max_batched_tokens",
        "calibration",
        "cost_basis",
        "electricity_usd_per_kwh",
        "pue",
        "lifetime_years",
    )
}


@reports_errors
def estimate_cmd(
    model: Annotated[
        str,
        typer.Option(
            help="Model id (see `wattserve models`), a Hugging Face repo id, or a config.json path."
        ),
    ],
    hardware: Annotated[str, typer.Option(help="Device or provider id (see `wattserve catalog`).")],
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[
        int | None,
        typer.Option(help="Pipeline stages (default 1; SRAM-only parts: as many as needed)."),
    ] = None,
    dtype: Annotated[
        str,
        typer.Option(
            help="Weight format: fp32, bf16, fp16, fp8, int8, int4, or weight-only "
            "w4a16, w8a16 (GPTQ/AWQ/GGUF: 16-bit math), w8a8."
        ),
    ] = "bf16",
    kv_dtype: Annotated[
        str | None, typer.Option(help="KV-cache dtype (default follows --dtype).")
    ] = None,
    batch: Annotated[int, typer.Option(help="Sequences processed together.")] = 1,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt tokens per sequence.")] = 512,
    output_tokens: Annotated[int, typer.Option(help="Output tokens per sequence.")] = 128,
    context: Annotated[
        int | None,
        typer.Option(
            help="KV context of the decode step, at least --prompt-tokens (default prompt + "
            "output/2); the memory fit holds it for every sequence when it exceeds prompt + output."
        ),
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Calibration JSON from `wattserve calibrate`.")
    ] = None,
    hardware_file: Annotated[
        list[Path] | None, typer.Option(help="Extra hardware/provider YAML (repeatable).")
    ] = None,
    cost_basis: Annotated[str, typer.Option(help="auto, rent or own.")] = "auto",
    electricity_usd_per_kwh: Annotated[
        float, typer.Option(help="Electricity price for owned hardware.")
    ] = 0.08,
    pue: Annotated[float, typer.Option(help="Power usage effectiveness for owned hardware.")] = 1.5,
    lifetime_years: Annotated[
        float, typer.Option(help="Amortisation period for owned hardware.")
    ] = 4.0,
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option(
            help="Share of device memory the engine uses (vLLM's name; default: the "
            "calibration's, else 0.9)."
        ),
    ] = None,
    max_batched_tokens: Annotated[
        int | None,
        typer.Option(
            help="Tokens the engine batches in one step (vLLM's --max-num-batched-tokens; "
            "default 8192, at least --batch): the memory fit reserves their activations, and "
            "the prefill (TTFT) runs in steps of it."
        ),
    ] = None,
    expert_parallel: Annotated[
        bool,
        typer.Option(
            "--expert-parallel",
            help="MoE: place whole experts across the --tp devices (vLLM's "
            "--enable-expert-parallel); the step waits for the busiest device.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    explain_out: Annotated[
        bool, typer.Option("--explain", help="Show every term, its bound and sources.")
    ] = False,
) -> None:
    """How fast, how power-hungry and how costly MODEL is on HARDWARE."""
    if json_out and explain_out:  # until 2026-12-07 --explain was dropped without a word
        raise ConfigError(
            "--explain is a text breakdown and --json one object of the figures: give one "
            "(the JSON names each step's bound in prefill_bound and decode_bound)",
            field="--explain",
        )
    cost_basis = cost_basis.strip().lower()  # any case, as the other choices are taken
    if cost_basis not in ("auto", "rent", "own"):
        raise ConfigError(f"use auto, rent or own, got {cost_basis!r:.40}", field="--cost-basis")
    check_pue("--pue", pue)
    if not 0.1 <= lifetime_years <= 100:  # NaN too; 1e-300 years made a 300-digit price
        raise ConfigError(
            f"must be from 0.1 to 100 years, got {lifetime_years!r}", field="--lifetime-years"
        )
    if gpu_memory_utilization is not None:
        check_memory_share(gpu_memory_utilization, "--gpu-memory-utilization")
    if not 0 <= electricity_usd_per_kwh <= MAX_USD_PER_KWH:  # the fleet file's bound; NaN too
        raise ConfigError(
            f"must be from 0 to {MAX_USD_PER_KWH:g} $/kWh, got {electricity_usd_per_kwh!r}",
            field="--electricity-usd-per-kwh",
        )
    costs = CostAssumptions(cost_basis, electricity_usd_per_kwh, pue, lifetime_years)  # type: ignore[arg-type]
    # the API names its parameters; a user of the command line typed flags
    with input_flags(model, calibration, hardware_file), as_flags(FLAGS):
        result = estimate(
            model,
            hardware,
            tp=tp,
            pp=pp,
            dtype=dtype,
            kv_dtype=kv_dtype,
            batch=batch,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            context=context,
            calibration=calibration,
            catalog=load_catalog(hardware_file or []),
            costs=costs,
            gpu_memory_utilization=gpu_memory_utilization,
            expert_parallel=expert_parallel,
            max_batched_tokens=max_batched_tokens,
        )
    if json_out:
        print_json(result.to_dict())
        return
    check_finite(result.to_dict())  # as --json refuses it: never `inf` printed as a figure
    if explain_out:
        typer.echo(explain(result))
    else:
        typer.echo(summary(result))
