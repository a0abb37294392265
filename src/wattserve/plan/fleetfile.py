"""A plan as a fleet file: the same format `simulate` and `serve` load (docs/fleet-file.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wattserve.core.fleet import Fleet, parse_fleet
from wattserve.core.yamlio import load_yaml_text
from wattserve.plan.api import Plan


def fleet_mapping(plan: Plan, hardware_files: list[str] | None = None) -> dict[str, Any]:
    """The fleet file's content as plain data."""
    p = plan.problem
    sites: dict[str, Any] = {}  # every site: requests keep their origins and links
    for name, s in p.sites.items():
        entry: dict[str, Any] = {
            "kind": s.kind,
            "electricity_usd_per_kwh": s.electricity_usd_per_kwh,
            "pue": s.pue,
        }
        if s.power_cap_w is not None:
            entry["power_cap_w"] = s.power_cap_w
        if s.carbon_g_per_kwh is not None:
            entry["carbon_g_per_kwh"] = s.carbon_g_per_kwh
        if s.available:
            entry["available"] = dict(s.available)
        sites[name] = entry
    deployments: dict[str, Any] = {}
    for j, n in sorted(plan.solution.replicas.items()):
        o = p.options[j]
        d = o.deployment
        # each TPOT tier a deployment of its own (name@tpot20ms), as the plan sized it: merged
        # into one, the tiers' classes shared every replica in simulation, and a 20 ms class
        # batched with a 200 ms one's long prompts missed its SLO whatever --verify derated
        name = o.name
        deployments[name] = {
            "site": o.site,
            "model": d.model.id,
            "hardware": d.hardware.id,
            "replicas": n,
            "tp": d.tp,
            "pp": d.pp,
            "dtype": d.dtype,
            "kv_dtype": d.kv_dtype,
            "max_num_seqs": d.max_num_seqs,
            "max_batched_tokens": d.max_batched_tokens,
        }
        if d.expert_parallel:
            deployments[name]["expert_parallel"] = True
    providers: dict[str, Any] = {}
    for k in sorted({k for _, k in plan.solution.hosted_rates}):
        h = p.hosted[k].spec
        entry = {
            "site": h.site,
            "provider": h.provider,
            "model": h.model,
            "ttft_s": h.ttft_s,
            "output_tokens_per_s": h.output_tokens_per_s,
            "usd_per_mtok_input": h.usd_per_mtok_input,
            "usd_per_mtok_output": h.usd_per_mtok_output,
        }
        if h.rate_limit_rps is not None:
            entry["rate_limit_rps"] = h.rate_limit_rps
        providers[h.name] = entry
    links = [
        {"between": [lk.a, lk.b], "rtt_ms": lk.rtt_s * 1e3}
        | ({"bandwidth_gbps": lk.bandwidth_gbps} if lk.bandwidth_gbps is not None else {})
        for lk in p.fleet.links
        if lk.a in sites and lk.b in sites
    ]
    out: dict[str, Any] = {"name": f"plan-{plan.objective}"}
    if hardware_files:
        out["hardware_files"] = hardware_files
    out["sites"] = sites
    if links:
        out["links"] = links
    out["default_rtt_ms"] = p.fleet.default_rtt_s * 1e3
    if deployments:
        out["deployments"] = deployments
    if providers:
        out["providers"] = providers
    return out


def fleet_text(plan: Plan, hardware_files: list[str] | None = None) -> str:
    head = (
        f"# Written by `wattserve plan` (objective: {plan.objective}): "
        f"${plan.usd_per_h:.2f}/h, {plan.avg_w:.0f} W average at the meter, "
        f"{plan.output_tokens_per_s:.0f} output tokens/s.\n"
        "# A fleet file: `wattserve simulate --fleet` and `wattserve serve --fleet` load it.\n"
        "# The figures hold with the plan's split of each class over these deployments (plan\n"
        "# --verify); simulate's and serve's policies route by their own rule, which may not\n"
        "# meet the SLO on this fleet (docs/plan.md, on --out).\n"
    )
    body = yaml.safe_dump(fleet_mapping(plan, hardware_files), sort_keys=False)
    return head + body


def plan_fleet(
    plan: Plan, hardware_files: list[str] | None = None, path: str = "plan.yaml"
) -> Fleet:
    """The plan as a loaded Fleet (through the fleet file's own parser, so it loads as written)."""
    text = fleet_text(plan, hardware_files)
    return parse_fleet(load_yaml_text(text, path), path)


def write_fleet(plan: Plan, path: str | Path, hardware_files: list[str] | None = None) -> None:
    Path(path).write_text(fleet_text(plan, hardware_files), encoding="utf-8")
