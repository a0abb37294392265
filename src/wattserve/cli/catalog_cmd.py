"""`wattserve catalog` (devices and providers) and `wattserve models`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from wattserve.cli.common import print_json, reports_errors
from wattserve.core.catalog import load_catalog
from wattserve.core.hardware import CATEGORIES, MATURITY, Hardware, Provider
from wattserve.core.memory import GB, device_capacity_bytes
from wattserve.core.modelspec import builtin_model_ids, load_model
from wattserve.errors import ConfigError, UnknownNameError, printable

catalog_app = typer.Typer(help="List, filter and show devices and hosted providers.")

HardwareFiles = Annotated[
    list[Path] | None, typer.Option(help="Extra hardware/provider YAML (repeatable).")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def device_dict(hw: Hardware, with_sources: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": hw.id,
        "name": hw.name,
        "vendor": hw.vendor,
        "category": hw.category,
        "software": hw.software,
        "maturity": hw.maturity,
        "year": hw.year,
        "memory_type": hw.memory_type,
    }
    for key, fig in hw.figures.items():
        out[key] = fig.value
    if with_sources:
        out["sources"] = {
            key: {"source": f.source, "verified": f.verified, "note": f.note}
            for key, f in hw.figures.items()
        }
        out["notes"] = hw.notes
    return out


OFFER_FIGURES = ("usd_per_mtok_input", "usd_per_mtok_output", "ttft_s", "output_tokens_per_s")


def provider_dict(p: Provider) -> dict[str, Any]:
    def v(fig: Any) -> float | None:
        return None if fig is None else float(fig.value)

    return {
        "id": p.id,
        "name": p.name,
        "hardware": p.hardware,
        "base_url": p.base_url,
        "models": {
            mid: {
                "remote_name": o.remote_name,
                "usd_per_mtok_input": v(o.usd_per_mtok_input),
                "usd_per_mtok_output": v(o.usd_per_mtok_output),
                "ttft_s": v(o.ttft_s),
                "output_tokens_per_s": v(o.output_tokens_per_s),
            }
            for mid, o in p.offers.items()
        },
    }


def _group_options(
    ctx: typer.Context, hardware_file: list[Path] | None, json_out: bool
) -> tuple[list[Path], bool]:
    """A subcommand's hardware files and --json, with those given to `catalog` before it."""
    outer = ctx.obj if isinstance(ctx.obj, dict) else {}
    return [*outer.get("hardware_file", []), *(hardware_file or [])], json_out or bool(
        outer.get("json_out")
    )


def _capacity_gb(hw: Hardware) -> float | None:
    """GB per device for weights and KV cache, as estimate and rank count it (an SRAM-only
    part's SRAM too; None where no byte count is published): the table's `mem GB` and what
    --min-memory-gb filters on. Until 2026-12-07 only `memory_gb` was read: a Cerebras WSE-3
    (44 GB of SRAM) was left out at 40, and a device with no figure passed
    `--min-memory-gb 0` as if it had 0 GB."""
    capacity = device_capacity_bytes(hw)
    return None if capacity is None else capacity / GB


def _holds(hw: Hardware, min_gb: float) -> bool:
    """At least `min_gb` by `_capacity_gb`; never where it is unknown."""
    gb = _capacity_gb(hw)
    return gb is not None and gb >= min_gb


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@catalog_app.callback(invoke_without_command=True)
@reports_errors
def catalog_list(
    ctx: typer.Context,
    category: Annotated[str | None, typer.Option(help=f"One of {', '.join(CATEGORIES)}.")] = None,
    vendor: Annotated[str | None, typer.Option(help="Vendor name (case-insensitive).")] = None,
    min_memory_gb: Annotated[
        float | None,
        typer.Option(
            help="At least this many GB per device for weights and KV cache (an SRAM-only "
            "part's SRAM counts, as estimate counts it); a device that publishes no such "
            "figure is left out."
        ),
    ] = None,
    maturity: Annotated[str | None, typer.Option(help="prototype, pilot or production.")] = None,
    hardware_file: HardwareFiles = None,
    json_out: JsonFlag = False,
) -> None:
    """List devices (filtered), or run a subcommand: show, providers."""
    if ctx.invoked_subcommand is not None:
        filters = {
            "--category": category,
            "--vendor": vendor,
            "--min-memory-gb": min_memory_gb,
            "--maturity": maturity,
        }
        given = [flag for flag, value in filters.items() if value is not None]
        if given:
            raise ConfigError(
                f"filters the device list, not `catalog {ctx.invoked_subcommand}`",
                field=", ".join(given),
            )
        # files and --json named before the subcommand count for it too
        ctx.obj = {"hardware_file": list(hardware_file or []), "json_out": json_out}
        return
    # in any case, as ids are (`--category GPU` was refused)
    category = None if category is None else category.lower()
    maturity = None if maturity is None else maturity.lower()
    if category is not None and category not in CATEGORIES:
        raise ConfigError(f"use one of {', '.join(CATEGORIES)}", field="--category")
    if maturity is not None and maturity not in MATURITY:
        raise ConfigError(f"use one of {', '.join(MATURITY)}", field="--maturity")
    if min_memory_gb is not None and not (math.isfinite(min_memory_gb) and min_memory_gb >= 0):
        raise ConfigError("must be a finite number, 0 or more", field="--min-memory-gb")
    cat = load_catalog(hardware_file or [])
    vendors = sorted({hw.vendor for hw in cat.devices.values()}, key=str.lower)
    if vendor is not None and vendor.lower() not in {v.lower() for v in vendors}:
        # an empty table with exit 0 read as "no such device", not as a typo
        raise ConfigError(
            f"no device of vendor '{printable(vendor):.80}'; the catalog's vendors: "
            + ", ".join(vendors),
            field="--vendor",
        )
    rows = [
        hw
        for hw in cat.devices.values()
        if (category is None or hw.category == category)
        and (vendor is None or hw.vendor.lower() == vendor.lower())
        and (maturity is None or hw.maturity == maturity)
        and (min_memory_gb is None or _holds(hw, min_memory_gb))
    ]
    if json_out:
        print_json([device_dict(hw) for hw in rows])
        return
    typer.echo(
        f"{'id':24} {'category':18} {'mem GB':>7} {'GB/s':>8} {'bf16 TF':>8} "
        f"{'int8 TOPS':>9} {'TDP W':>6} {'$/h':>5}  maturity"
    )
    for hw in rows:
        peaks = hw.peaks()
        typer.echo(
            f"{hw.id:24} {hw.category:18} {_cell(_capacity_gb(hw)):>7} "
            f"{_cell(hw.value('mem_bw_gbps') or hw.value('sram_bw_gbps')):>8} "
            f"{_cell(peaks.get('bf16', peaks.get('fp16'))):>8} {_cell(peaks.get('int8')):>9} "
            f"{_cell(hw.value('tdp_w')):>6} {_cell(hw.value('usd_per_hour')):>5}  {hw.maturity}"
        )
    typer.echo(f"{len(rows)} devices; `wattserve catalog show ID` for figures and sources")


@catalog_app.command("show")
@reports_errors
def catalog_show(
    ctx: typer.Context,
    item: Annotated[str, typer.Argument(help="Device or provider id.")],
    hardware_file: HardwareFiles = None,
    json_out: JsonFlag = False,
) -> None:
    """Every figure of one device (or provider) with its source."""
    files, json_out = _group_options(ctx, hardware_file, json_out)
    cat = load_catalog(files)
    found = cat.known_id(item)  # a device's or a provider's id, in any case
    if found is None:  # the nearest of both, the name cut short (it is echoed back)
        shown = item if len(item) <= 100 else item[:100] + "..."
        raise UnknownNameError("device or provider", shown, [*cat.devices, *cat.providers])
    if found not in cat.devices:
        item = found
        provider = cat.providers[item]
        data = provider_dict(provider)
        if json_out:
            print_json(data)
            return
        # as a device's: one figure a line with its source, an unknown one said so (it had
        # been Python's `ttft_s=None`, and no source at all)
        typer.echo(f"{data['name']} ({item}) on {data['hardware']}: {data['base_url']}")
        for mid, offer in provider.offers.items():
            typer.echo(f"  {mid}, sold as {offer.remote_name}:")
            for key in OFFER_FIGURES:
                fig = getattr(offer, key)
                shown = f"{'unknown':>12}" if fig is None else f"{fig.value:>12g}   {fig.cite()}"
                typer.echo(f"    {key:22} {shown}")
        if provider.notes:
            typer.echo(f"  note: {provider.notes}")
        return
    hw = cat.device(found)
    if json_out:
        print_json(device_dict(hw, with_sources=True))
        return
    typer.echo(f"{hw.name} ({hw.id}) - {hw.category}, {hw.vendor}, {hw.year}, {hw.maturity}")
    typer.echo(f"  software: {hw.software}; memory: {hw.memory_type}")
    for key, fig in hw.figures.items():
        typer.echo(f"  {key:24} {fig.value:>12g}   {fig.cite()}")
    if hw.notes:
        typer.echo(f"  note: {hw.notes}")


@catalog_app.command("providers")
@reports_errors
def catalog_providers(
    ctx: typer.Context, hardware_file: HardwareFiles = None, json_out: JsonFlag = False
) -> None:
    """Hosted inference APIs, priced per 1M tokens."""
    files, json_out = _group_options(ctx, hardware_file, json_out)
    cat = load_catalog(files)
    data = [provider_dict(p) for p in cat.providers.values()]
    if json_out:
        print_json(data)
        return
    typer.echo(
        f"{'provider':16} {'model':16} {'$/1M in':>8} {'$/1M out':>9} {'tok/s':>7}  hardware"
    )
    for p in data:
        for mid, o in p["models"].items():
            typer.echo(
                f"{p['id']:16} {mid:16} {_cell(o['usd_per_mtok_input']):>8} "
                f"{_cell(o['usd_per_mtok_output']):>9} {_cell(o['output_tokens_per_s']):>7}  "
                f"{p['hardware']}"
            )


@reports_errors
def models_cmd(json_out: JsonFlag = False) -> None:
    """Built-in model architectures (any HF config.json path works too)."""
    rows = []
    for mid in builtin_model_ids():
        m = load_model(mid)
        rows.append(
            {
                "id": mid,
                "params_b": round(m.total_params / 1e9, 3),
                "active_params_b": round(m.active_matmul_params / 1e9, 3),
                "layers": m.num_layers,
                "hidden": m.hidden_size,
                "heads": m.num_heads,
                "kv_heads": m.num_kv_heads,
                "experts": m.num_experts,
                "kv_kib_per_token_bf16": round(m.kv_bytes_per_token("bf16") / 1024, 2),
                "source": m.source,
            }
        )
    if json_out:
        print_json(rows)
        return
    typer.echo(
        f"{'id':20} {'params B':>9} {'active B':>9} {'layers':>6} {'kv heads':>8} "
        f"{'experts':>7} {'KV KiB/tok':>10}"
    )
    for r in rows:
        typer.echo(
            f"{r['id']:20} {r['params_b']:>9} {r['active_params_b']:>9} {r['layers']:>6} "
            f"{r['kv_heads']:>8} {r['experts']:>7} {r['kv_kib_per_token_bf16']:>10}"
        )
