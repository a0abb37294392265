"""Human-readable renderings of an Estimate: a summary and the `--explain` breakdown."""

from __future__ import annotations

import math

from wattserve.core.params import DEFAULT_SOURCES, moved_terms
from wattserve.core.perf import PerfModel, StepCost, prefill_chunks
from wattserve.estimate.api import Estimate


def _fmt(value: float | None, unit: str, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "unknown"
    v = value * scale
    text = f"{v:,.0f}" if abs(v) >= 10**digits else f"{v:.{digits}g}"  # 1,670 ms, not 1.67e+03
    return f"{text} {unit}".rstrip()


def summary(e: Estimate) -> str:
    """The default text output of `wattserve estimate`."""
    head = f"{e.model} on {e.hardware}"
    if e.devices:
        ep = ""
        if e.expert_parallel:  # at tp 1 every expert is on the one device anyway
            ep = ", whole experts over tp (EP)" if (e.tp or 1) > 1 else ", EP (no effect at tp 1)"
        head += f" x{e.devices} (tp={e.tp}, pp={e.pp}{ep}, {e.dtype} weights, {e.kv_dtype} KV)"
    lines = [
        head,
        f"  batch {e.batch}, prompt {e.prompt_tokens}, output {e.output_tokens}, "
        f"decode context {e.context_tokens}",
        f"  fits:                {'yes' if e.fits else 'NO - ' + e.reason}",
    ]
    if e.max_batch is not None:
        lines.append(f"  max batch:           {e.max_batch}")
    lines += [
        f"  TTFT (prefill):      {_fmt(e.ttft_s, 'ms', 1e3)}",
        f"  TPOT (decode step):  {_fmt(e.tpot_s, 'ms', 1e3)}",
        f"  output tokens/s:     {_fmt(e.output_tokens_per_s, '', digits=4)}",
        f"  power:               {_fmt(e.power_w, 'W', digits=4)}",
        f"  energy per token:    {_fmt(e.energy_j_per_token, 'J')}",
        f"  $ per 1M out tokens: {_fmt(e.usd_per_mtok, '', digits=3)}"
        + ("" if e.cost_basis == "unknown" else f" ({e.cost_basis})"),
    ]
    if e.memory is not None:
        mem = e.memory.as_dict()
        lines.append(
            "  memory per device:   "
            + ", ".join(f"{k} {v:.3g} GB" for k, v in mem.items() if v is not None)
        )
    if e.calibration not in DEFAULT_SOURCES and e.calibration != "provider profile":
        lines.append(f"  engine terms:        {e.calibration}")  # else it reads as defaults
    lines += [f"  unknown: {m}" for m in e.missing]
    lines += [f"  assumed: {a}" for a in e.assumptions]
    return "\n".join(lines)


def _phase(name: str, cost: StepCost | None, perf: PerfModel | None, tokens: int) -> list[str]:
    if cost is None:
        return [f"{name}: not computed"]
    # the elementwise kernels' bytes (none on parts that keep activations in their compute
    # array: no memory traffic is modelled there, and until 2026-12-06 the memory line showed
    # their bytes as moved)
    act_gb = 0.0 if perf is None else perf.act_bytes_per_token * tokens / 1e9
    lines = [
        f"{name}: {cost.time_s * 1e3:.4g} ms, bound by {cost.bound}",
        f"  compute    {cost.compute_s * 1e3:10.4g} ms  ({cost.flops / 1e12:.4g} TFLOP)",
        f"  memory     {cost.memory_s * 1e3:10.4g} ms  ({cost.bytes / 1e9 - act_gb:.4g} GB moved)",
        f"  elementwise{cost.elementwise_s * 1e3:10.4g} ms  ({act_gb:.4g} GB: norms, rotary, "
        "activation, in kernels of their own)",
        f"  comm       {cost.comm_s * 1e3:10.4g} ms  (TP all-reduces, PP hops)",
        f"  overhead   {cost.overhead_s * 1e3:10.4g} ms  (step, per layer, per sequence"
        + ("; MoE routing)" if perf is not None and perf.moe else ")"),
    ]
    if not math.isfinite(cost.power_w):
        return [*lines, "  power      unknown (no TDP in the catalog)"]
    lines.append(f"  power      {cost.power_w:10.4g} W    energy {cost.energy_j:.4g} J")
    if perf is not None:
        # the load is the step's own FLOPs and bytes (compute and memory above also count the
        # time small GEMMs, attention's factor and expert-parallel waits add)
        work_c, work_m = perf.work_times(cost, tokens)
        lines.append(
            f"  load       {perf.k_compute * work_c / cost.time_s:.3g} compute + "
            f"{perf.k_memory * work_m / cost.time_s:.3g} memory (of its own "
            f"{work_c * 1e3:.4g} ms + {work_m * 1e3:.4g} ms of work)"
        )
    return lines


def explain(e: Estimate) -> str:
    """Each term, what bounds it, and the catalog figures with their sources."""
    lines = [summary(e), "", "time = max(compute, memory) + elementwise + comm + overhead"]
    chunks = ""
    if e.perf is not None and e.max_batched_tokens is not None:
        budget = e.max_batched_tokens
        steps = len(prefill_chunks(e.batch, e.prompt_tokens, budget))
        chunks = f", {steps} steps of at most {budget} tokens" if steps > 1 else ""
    lines += _phase(
        f"prefill ({e.batch} x {e.prompt_tokens} tokens{chunks})",
        e.prefill_cost,
        e.perf,
        e.batch * e.prompt_tokens,
    )
    lines += _phase(
        f"decode step ({e.batch} seqs at {e.context_tokens} ctx)", e.decode_cost, e.perf, e.batch
    )
    if e.perf is not None and e.perf.ep_ranks:
        pm, b = e.perf, float(e.batch)
        lines.append(
            f"expert parallel over {e.tp} devices, decode step of {e.batch} tokens: the busiest "
            f"device takes {pm.busiest_load(b):.3g} expert assignments (even share "
            f"{b * pm.top_k / pm.ep_ranks:.3g}) and reads {pm.experts_read(b) / pm.ep_ranks:.3g}"
            f" of its {pm.n_experts / pm.ep_ranks:.3g} experts (uniform top-k routing)"
        )
    if e.perf is not None:
        p = e.perf.params
        moved = moved_terms(p, e.perf.moe)  # the terms off by default that a calibration set
        lines += [
            "",
            f"engine terms ({p.source}):",
            f"  eff_compute {p.eff_compute:.3g}, eff_memory {p.eff_memory:.3g}, "
            f"eff_comm {p.eff_comm:.3g}",
            f"  overhead: step {p.overhead_step_s * 1e3:.3g} ms, layer "
            f"{p.overhead_layer_s * 1e6:.3g} us, sequence {p.overhead_seq_s * 1e6:.3g} us, "
            f"collective {p.overhead_collective_s * 1e6:.3g} us",
            *(["  also: " + ", ".join(moved)] if moved else []),
            f"  power: devices * idle + tp * (tdp - idle) * min(1, load), load = "
            f"{p.power_k_compute:.3g} * u_compute + {p.power_k_memory:.3g} * u_memory over the "
            "step's time (its own FLOPs and bytes at the peaks: the rest of the step, overheads, "
            "launches, all-reduces and other pipeline stages' turns, draws idle power)",
            "",
            "catalog figures used:",
        ]
        # the step model's figures, and where the weights and KV cache live (the memory fit)
        used = dict(e.perf.figures_used)
        figures = e.perf.deployment.hardware.figures
        for key in ("memory_gb", "sram_mb", "weight_capacity_m"):
            if key in figures:
                used[key] = figures[key]
        for key, fig in sorted(used.items()):
            lines.append(f"  {key} = {fig.value:g}  [{fig.cite()}]")
    if e.provider is not None:
        offer = e.provider.offers.get(e.model)
        lines += ["", f"provider {e.provider.name} ({e.provider.base_url}):"]
        if offer is not None:
            for key in (
                "usd_per_mtok_input",
                "usd_per_mtok_output",
                "ttft_s",
                "output_tokens_per_s",
            ):
                fig = getattr(offer, key)
                if fig is not None:
                    lines.append(f"  {key} = {fig.value:g}  [{fig.cite()}]")
    return "\n".join(lines)
