"""An infeasible plan's advice can be followed (a new user's walkthrough, session 37): where
the smallest changes together touch several limits (a site's cap, a rate limit, the budget),
each of them raised alone had left the plan infeasible; the change that is enough alone, where
one is, now comes first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wattserve.core.modelspec import load_model
from wattserve.errors import PlanInfeasibleError
from wattserve.plan import plan
from wattserve.plan.capacity import CapacityCache

REPO = Path(__file__).resolve().parents[1]
HW = ["h100-sxm", "l4", "jetson-agx-orin-64gb"]


def _plan(budget: float) -> object:
    return plan(
        REPO / "examples" / "workload-multisite.yaml",
        sites=REPO / "examples" / "sites-two-dc-edge.yaml",
        hardware=HW,
        capacity="analytic",
        budget_usd_per_h=budget,
        compare_with_single=False,
    )


def test_the_change_that_is_enough_alone_comes_first_and_is_enough() -> None:
    with pytest.raises(PlanInfeasibleError) as info:
        _plan(1.0)
    reasons = info.value.reasons
    assert reasons[0].startswith("alone, this is enough: the budget binds"), reasons
    together = [r for r in reasons if r.startswith("or all of these together: ")]
    assert {"power cap", "rate limit", "budget"} <= {
        k for r in together for k in ("power cap", "rate limit", "budget") if k in r
    }, reasons
    usd = float(reasons[0].split("at least $")[1].split("/h")[0])
    _plan(usd)  # raised alone to what it says: a plan
    with pytest.raises(PlanInfeasibleError):
        _plan(usd - 0.01)
    # the joint figure alone is not enough: that was the advice before
    joint = float(next(r for r in together if "budget" in r).split("at least $")[1].split("/h")[0])
    assert joint < usd
    with pytest.raises(PlanInfeasibleError):
        _plan(joint)


L4 = """devices:
  l4:
    name: NVIDIA L4 (site figures)
    vendor: NVIDIA
    category: gpu
    software: pytorch-native
    maturity: production
    year: 2023
    source: test
    memory_gb: 24
    mem_bw_gbps: {bw}
    peak_tflops: {{bf16: 121}}
    tdp_w: {tdp}
    interconnect_gbps: 64
    usd_per_hour: 0.7
"""
WORKLOAD = (
    "generator: {kind: poisson, duration_s: 300}\n"
    "slos:\n  default: {ttft_s: 2.0, tpot_s: 0.1, percentile: 90}\n"
    "classes:\n  - {name: a, model: MODEL, rate_rps: 3, prompt_tokens: 500, output_tokens: 100}\n"
)


def _capacities(p: Any) -> dict[str, tuple[float, float]]:
    return {o.name: (next(iter(o.caps.values())).rate_rps, o.peak_w) for o in p.problem.options}


def test_a_capacity_is_not_reused_for_other_hardware_figures_or_another_model(
    tmp_path: Path,
) -> None:
    """The capacity cache (`--cache FILE`) keyed a replica by its hardware's and model's ids:
    an L4 of other figures under the same id, or a config.json of another model in a folder
    of the same name, got the first one's capacity and power."""
    shared, got = CapacityCache(), {}
    wl = tmp_path / "wl.yaml"
    wl.write_text(WORKLOAD.replace("MODEL", "llama-3.1-8b"))
    for name, bw, tdp in (("fast", 300, 72), ("slow", 250, 200)):
        (tmp_path / f"{name}.yaml").write_text(L4.format(bw=bw, tdp=tdp))
        sites = tmp_path / f"sites-{name}.yaml"
        sites.write_text(f"hardware_files: [{name}.yaml]\nsites:\n  region: {{kind: datacenter}}\n")
        runs = [
            plan(
                wl,
                sites=sites,
                hardware=["l4"],
                capacity="analytic",
                cache=c,
                compare_with_single=False,
            )
            for c in (shared, CapacityCache())
        ]
        assert _capacities(runs[0]) == _capacities(runs[1]), name  # shared == fresh
        got[name] = _capacities(runs[0])
    assert got["fast"] != got["slow"]
    for folder, ref in (("v1", "llama-3.2-1b"), ("v2", "llama-3.1-8b")):
        config = tmp_path / folder / "mymodel"
        config.mkdir(parents=True)
        (config / "config.json").write_text(json.dumps(_hf_config(ref)), encoding="utf-8")
        wl.write_text(WORKLOAD.replace("MODEL", str(config / "config.json")))
        runs = [
            plan(wl, hardware=["h100-sxm"], capacity="analytic", cache=c, compare_with_single=False)
            for c in (shared, CapacityCache())
        ]
        assert _capacities(runs[0]) == _capacities(runs[1]), folder


def _hf_config(model: str) -> dict[str, Any]:
    """A config.json of a catalog model, as Hugging Face writes one."""
    m = load_model(model)
    return {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": m.hidden_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads,
        "num_key_value_heads": m.num_kv_heads,
        "head_dim": m.head_dim,
        "intermediate_size": m.intermediate_size,
        "vocab_size": m.vocab_size,
        "tie_word_embeddings": m.tied_embeddings,
        "max_position_embeddings": m.max_context,
    }
