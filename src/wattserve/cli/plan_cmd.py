"""`wattserve plan`."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated

import typer

from wattserve.cli.common import (
    check_writable,
    parse_watts,
    print_json,
    reports_errors,
    save_text,
)
from wattserve.core.configs import SEARCH_DTYPES
from wattserve.core.dtypes import Dtype, parse_dtype
from wattserve.core.fleet import load_sites
from wattserve.core.hardware import MATURITY
from wattserve.core.workload import workload_files
from wattserve.errors import ConfigError, PlanInfeasibleError, printable
from wattserve.plan.api import DEFAULT_ROUNDS, plan
from wattserve.plan.capacity import CapacityCache
from wattserve.plan.fleetfile import fleet_text
from wattserve.plan.report import plan_html
from wattserve.plan.table import clean, plan_text

_COUNT = re.compile(r"[0-9]{1,9}")  # ASCII digits: str.isdigit() takes '²', int() does not


def _available(text: str | None) -> dict[str, int]:
    """`hw=count,...`: each id once, each count a whole number (ids are checked against the
    catalog by `plan`)."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, eq, n = (s.strip() for s in part.partition("="))
        if not eq or not name or not _COUNT.fullmatch(n):
            raise ConfigError(
                f"use hw=count pairs (a device id, a whole number), got {part[:80]!r}",
                field="--available",
            )
        if name in out:
            raise ConfigError(f"{name[:80]!r} is given twice", field="--available")
        out[name] = int(n)
    if text is not None and not out:  # as --hardware '': no pairs is a mistake, not no limit
        raise ConfigError(
            "names no devices: give hw=count pairs, or leave it out", field="--available"
        )
    return out


@reports_errors
def plan_cmd(
    workload: Annotated[Path, typer.Option(help="Workload file (docs/workload.md) or trace.")],
    sites: Annotated[
        Path | None, typer.Option(help="Sites file: a fleet file without deployments.")
    ] = None,
    hardware: Annotated[
        str | None, typer.Option(help="Comma-separated device ids to consider.")
    ] = None,
    all_hardware: Annotated[
        bool,
        typer.Option(help="Consider every catalog device (what happens without --hardware)."),
    ] = False,
    objective: Annotated[str, typer.Option(help="cost, energy, carbon or throughput.")] = "cost",
    dtype: Annotated[
        str,
        typer.Option(
            help="Weight formats to plan: bf16, a comma list (bf16,fp8,w4a16), or auto (every "
            "format each device has a peak for, as rank's)."
        ),
    ] = "bf16",
    power_cap: Annotated[
        str | None,
        typer.Option(
            help="Power cap of every site, e.g. 500kW (W without a unit); a site's own smaller "
            "cap stays."
        ),
    ] = None,
    budget_usd_per_h: Annotated[float | None, typer.Option(help="Most $/h to spend.")] = None,
    headroom: Annotated[
        float, typer.Option(help="Share of each site's power cap kept free.")
    ] = 0.1,
    available: Annotated[
        str | None, typer.Option(help="Devices available over all sites: hw=count,...")
    ] = None,
    require_software: Annotated[
        str | None,
        typer.Option(
            help="At least this mature a software stack: vendor-sdk < plugin < pytorch-native "
            "(as in rank)."
        ),
    ] = None,
    min_maturity: Annotated[
        str | None, typer.Option(help=f"Least maturity: {', '.join(MATURITY)}.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model for requests that name none.")] = (
        "llama-3.1-8b"
    ),
    capacity: Annotated[
        str, typer.Option(help="Capacity at SLO: simulated (bisection) or analytic.")
    ] = "simulated",
    cache: Annotated[
        Path | None, typer.Option(help="Capacity cache file (JSON), read and updated.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the plan as a fleet file.")] = None,
    verify: Annotated[bool, typer.Option(help="Simulate the plan; add capacity, re-solve.")] = (
        False
    ),
    max_rounds: Annotated[
        int, typer.Option(help="--verify: rounds of derating at most, after the first run.")
    ] = DEFAULT_ROUNDS,
    time_limit: Annotated[float, typer.Option(help="Solver time limit, s.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Seed for the workload's generators.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report.")] = None,
) -> None:
    """Which devices, how many, at which site, for WORKLOAD within its SLOs and power caps."""
    if hardware and all_hardware:
        raise ConfigError("give --hardware or --all-hardware, not both", field="--hardware")
    ids = None if hardware is None else [h.strip() for h in hardware.split(",") if h.strip()]
    if ids is not None and not ids:
        raise ConfigError("names no device id; give id,... or leave it out", field="--hardware")
    if capacity not in ("simulated", "analytic"):  # before the outputs and inputs are read
        raise ConfigError("use simulated or analytic", field="--capacity")
    if not math.isfinite(time_limit) or time_limit <= 0:
        raise ConfigError("must be a positive finite number of seconds", field="--time-limit")
    pairs = _available(available)
    # outputs are checked before the work: neither may replace an input, nor the other
    # every file read: the workload and the trace it names, the sites file and its hardware
    # files and calibrations, the cache
    inputs = tuple(p for p in (*workload_files(workload), cache) if p is not None)
    if sites is not None:
        site_fleet = load_sites(sites)
        inputs += site_fleet.files
        if site_fleet.deployments:  # checked, as a fleet file's, but plan chooses its own
            names = ", ".join(d.name for d in site_fleet.deployments)
            typer.echo(
                f"note: --sites {printable(str(sites))}: its deployments ({printable(names):.200}) "
                "are not read: plan sizes its own replicas, with the engine's default limits "
                "and gpu_memory_utilization (docs/plan.md)",
                err=True,
            )
    if out is not None:
        check_writable(out, "--out", inputs)
    if report is not None:
        check_writable(report, "--report", inputs, kind="html")
        if out is not None and report.resolve() == out.resolve():
            raise ConfigError(f"{report!s:.200} is also --out; give two files", field="--report")
    if cache is not None:  # read and written again: refused before the work, not after it
        check_writable(cache, "--cache", tuple(p for p in inputs if p != cache), makes_folder=True)
    store = CapacityCache.load(cache) if cache is not None else CapacityCache()
    if store.dropped:
        n = store.dropped
        typer.echo(
            f"warning: --cache {cache}: {n} damaged {'entry' if n == 1 else 'entries'} dropped, "
            "never trusted; what this plan needs is measured again",
            err=True,
        )
    if store.stale:
        typer.echo(
            f"note: --cache {cache}: written by an earlier wattserve (another format); "
            "what this plan needs is measured again and the file rewritten",
            err=True,
        )
    try:
        result = plan(
            workload,
            sites=sites,
            hardware=ids,
            objective=objective,
            power_cap_w=None if power_cap is None else parse_watts(power_cap, "--power-cap"),
            budget_usd_per_h=budget_usd_per_h,
            headroom=headroom,
            available=pairs,
            require_software=require_software,
            min_maturity=min_maturity,
            model=model,
            dtypes=_dtypes(dtype),
            capacity=capacity,  # type: ignore[arg-type]
            cache=store,
            verify=verify,
            max_rounds=max_rounds,
            time_limit_s=time_limit,
            seed=seed,
        )
    except PlanInfeasibleError as exc:
        if json_out:
            print_json({"status": exc.status, "reasons": exc.reasons})
        else:
            typer.echo(f"{exc.headline}:", err=True)
            for r in exc.reasons:
                typer.echo(f"  - {r}", err=True)
        raise typer.Exit(3) from None
    finally:
        if cache is not None and (
            store.misses or store.dropped or store.stale
        ):  # only what a run measured
            store.save(cache)
    if out is not None:
        save_text(out, fleet_text(result, result.hardware_files), "--out")
    if report is not None:
        save_text(report, plan_html(result), "--report")
    if json_out:
        print_json(clean(result.as_dict()))
    else:
        typer.echo(plan_text(result))
        if out is not None:
            typer.echo(f"fleet file written: {out}")
        if report is not None:
            typer.echo(f"report: {report}")
    if result.unmet:  # asked to verify, and a class still misses its SLO: written, not verified
        raise typer.Exit(4)


def _dtypes(text: str) -> tuple[Dtype, ...] | None:
    """`--dtype`: `auto` (None: each device's own formats, as rank's auto) or a comma list."""
    if text.strip().lower() == "auto":
        return None
    names = [t for t in (part.strip() for part in text.split(",")) if t]
    if not names:
        raise ConfigError("names no dtype", field="--dtype")
    chosen = tuple(dict.fromkeys(parse_dtype(n, "--dtype", SEARCH_DTYPES) for n in names))
    return chosen
