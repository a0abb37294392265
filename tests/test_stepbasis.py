"""StepBasis: a deployment's figures resolved once, and PerfModels built on it for many terms."""

from __future__ import annotations

from wattserve import Deployment, EngineParams, PerfModel, load_catalog, load_model
from wattserve.calibrate.measurements import Measurement
from wattserve.calibrate.rows import predict_seconds, step_row
from wattserve.core.stepbasis import StepBasis

TERMS = (
    EngineParams(),
    EngineParams(eff_compute=0.4, gemm_pad_elems=1e6, gemm_latency_s=3e-6, logits_all=1.0),
    EngineParams(eff_expert=0.5, gemm_pad_expert_elems=1e7, attn_factor=1.7, eff_comm=0.3),
)


def _figures(pm: PerfModel) -> dict[str, str]:
    """Every attribute of a PerfModel, as text (NaN compares equal so)."""
    return {k: repr(v) for k, v in vars(pm).items()}


def test_a_perf_model_on_a_shared_basis_is_the_one_built_alone() -> None:
    catalog = load_catalog()
    deps = [
        Deployment(load_model("mixtral-8x7b"), catalog.device("h100-sxm"), tp=4, pp=2),
        Deployment(
            load_model("qwen3-30b-a3b"), catalog.device("h200-sxm"), tp=4, expert_parallel=True
        ),
        Deployment(load_model("llama-3.1-8b"), catalog.device("l40s"), dtype="w4a16"),
    ]
    for dep in deps:
        basis = StepBasis(dep)
        for params in TERMS:
            shared, alone = PerfModel(dep, params, basis), PerfModel(dep, params)
            assert _figures(shared) == _figures(alone)
            assert shared.decode_step(32, 2000) == alone.decode_step(32, 2000)


def test_terms_applied_to_one_basis_do_not_leak_into_the_next_model() -> None:
    """The idle draw a device's catalog entry lacks is a share of TDP set by the terms: a
    PerfModel built on a basis after another says its own share, and the basis keeps none."""
    catalog = load_catalog()
    hw = next(h for h in catalog.devices.values() if h.value("idle_w") is None and h.value("tdp_w"))
    dep = Deployment(load_model("smollm2-135m"), hw)
    basis = StepBasis(dep)
    first = PerfModel(dep, EngineParams(idle_fraction=0.3), basis)
    second = PerfModel(dep, EngineParams(idle_fraction=0.5), basis)
    assert [a for a in first.assumptions if "30% of TDP" in a]
    assert not [a for a in second.assumptions if "30% of TDP" in a]
    assert [a for a in second.assumptions if "50% of TDP" in a]
    assert not [a for a in basis.assumptions if "of TDP" in a]
    assert second.idle_w == hw.value("tdp_w") * 0.5


def test_a_basis_of_another_deployment_is_not_used() -> None:
    catalog = load_catalog()
    hw = catalog.device("h100-sxm")
    small = Deployment(load_model("llama-3.1-8b"), hw)
    large = Deployment(load_model("llama-3.1-70b"), hw, tp=4)
    wrong = PerfModel(large, EngineParams(), StepBasis(small))
    assert _figures(wrong) == _figures(PerfModel(large, EngineParams()))


def test_rows_of_one_deployment_share_one_basis() -> None:
    hw = load_catalog().device("h100-sxm")
    deployments: dict[Deployment, StepBasis] = {}
    rows = [
        step_row(
            Measurement("llama-3.1-8b", "h100-sxm", 1, 1, "bf16", "decode", b, 0, 512, s, None),
            hw,
            "m.csv",
            {},
            deployments,
        )
        for b, s in ((1, 0.008), (8, 0.009), (64, 0.014))
    ]
    assert len({id(r.basis) for r in rows}) == 1
    assert len(deployments) == 1
    alone = [step_row(r.m, hw, "m.csv") for r in rows]
    params = EngineParams(eff_memory=0.5, overhead_layer_s=2e-5)
    assert list(predict_seconds(rows, params)) == list(predict_seconds(alone, params))
