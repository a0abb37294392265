"""wattserve against a real NVIDIA H200 (issue #12 item 3(c)): steps timed with NVML energy by
benchmarks/gpu_grid.py on 2026-12-04, committed under tests/data/gpu_grid_h200_2026-12-04/.

The engine timed is wattserve's synthetic decoder (exact shapes, random weights) in bf16 with
CUDA graphs, PyTorch's fused attention and, for MoE, PyTorch's grouped multiply: not vLLM, so
what holds here holds for an engine of that make (docs/accuracy.md, "An NVIDIA H200").
- run2: llama-3.1-8b, llama-3.2-1b, smollm2-135m, qwen1.5-moe-a2.7b (102 steps);
- run3-heldout: qwen2.5-7b, qwen3-30b-a3b, qwen2.5-0.5b, qwen3-14b (102 steps), measured to
  test a calibration fitted on run2 on models it never saw;
- moe-kernels: the MoE layer taken apart (benchmarks/moe_kernels.py): routing, kernels, layouts;
- run4 (the four models again) and run5-moe-heldout (qwen1.5-moe-a2.7b and qwen3-30b-a3b), after
  the synthetic MoE was made to route as a trained router does and to combine without atomics.
Each test states a claim docs/accuracy.md makes, and the committed reports must be what the
current code computes from the committed measurements.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DATA = Path(__file__).parent / "data" / "gpu_grid_h200_2026-12-04"
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def rep() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_grid_report", BENCH / "gpu_grid_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_grid_report"] = module
    spec.loader.exec_module(module)
    return module


def _groups(summary: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    return {g: v for g, v in summary["groups"].items() if g.startswith(prefix + " ")}


def test_dense_7b_to_14b_uncalibrated_within_15_percent_in_every_shape_group(
    rep: ModuleType,
) -> None:
    """Uncalibrated figures do not depend on the training points; the two-sizes report scores
    every 8B step but its three training points. Worst 14.8% (before the elementwise kernels,
    the LM head once per sequence and the per-layer launches of 2026-12-04: 23 of 24, the
    8B's single prefills of up to 512 tokens at 16.5%)."""
    _, run2 = rep.report(DATA / "run2", "two-sizes")
    _, held = rep.report(DATA / "run3-heldout", "two-sizes", DATA / "run2")
    groups = {
        **_groups(run2, "large"),
        **_groups(held, "qwen2.5-7b"),
        **_groups(held, "qwen3-14b"),
    }
    errors = sorted(v["unc"] for v in groups.values())
    assert len(errors) == 24
    assert errors[-1] < 15.0, errors[-2:]


def test_the_step_model_fitted_on_three_dense_sizes_predicts_never_seen_models(
    rep: ModuleType,
) -> None:
    """The form of the step model, not six points: calibrate fitted on every dense step of
    run4 (llama 8B and 1B, smollm2 135M) finds this engine's elementwise kernels moving about
    3.8 times vLLM's bytes and its layers costing about 37 us, and predicts run3's qwen2.5-0.5b,
    qwen2.5-7b and qwen3-14b, other architectures in another run, within 4.1% per model and
    phase (uncalibrated: up to 29%). Without the elementwise kernels and with the LM head per
    token, the 135M's prefills ran 25-39% slower than predicted (docs/accuracy.md, "The model
    across model sizes")."""
    from wattserve.calibrate.fit import fit_calibration
    from wattserve.core.catalog import load_catalog

    run4, run3 = rep.Run(DATA / "run4"), rep.Run(DATA / "run3-heldout")
    catalog = load_catalog()
    hw = catalog.device("h200-sxm")
    rows = [
        m
        for m in run4.rows
        if run4.case[m.line]["role"] != "moe"
        and m.context_tokens + (m.phase == "decode") <= 8192  # smollm2's window
    ]
    calibration, (fit,) = fit_calibration(rows, catalog, source="run4 dense")
    p = calibration.params_for(hw)
    assert "elementwise_factor" in fit.fitted and 3.0 < p.elementwise_factor < 4.5
    assert 30e-6 < p.overhead_layer_s < 45e-6 and p.overhead_step_s < 2e-4
    errors: dict[tuple[str, str], list[float]] = {}
    for m in run3.rows:
        if m.model == "qwen3-30b-a3b":
            continue
        e = abs(rep.step(m, hw, p).time_s - m.seconds) / m.seconds * 100
        errors.setdefault((m.model, m.phase), []).append(e)
    means = {k: sum(v) / len(v) for k, v in errors.items()}
    assert len(means) == 6 and max(means.values()) < 4.5, means


def test_calibrated_on_six_points_of_two_sizes_predicts_unseen_dense_models(
    rep: ModuleType,
) -> None:
    """Fitted on three steps each of the 8B and the 1B (run2), then every step of qwen2.5-7b
    and qwen3-14b, other architectures measured in another run: within 10% in every group,
    about 4% on average, against 6% uncalibrated (3% and 7% before 2026-12-04's changes to
    the defaults, docs/model.md)."""
    text, held = rep.report(DATA / "run3-heldout", "two-sizes", DATA / "run2")
    assert "leave-one-out 3.6%" in text
    groups = {**_groups(held, "qwen2.5-7b"), **_groups(held, "qwen3-14b")}
    points = sum(v["points"] for v in groups.values())
    cal = sum(v["cal"] * v["points"] for v in groups.values()) / points
    unc = sum(v["unc"] * v["points"] for v in groups.values()) / points
    assert points == 51 and cal < 4.5 and unc < 6.0, (cal, unc)  # 4.1% and 5.9%
    assert max(v["cal"] for v in groups.values()) < 10.0  # 9.1%: 7B prefill of <= 512 tokens


def test_what_falls_short_is_what_the_docs_say(rep: ModuleType) -> None:
    """MoE steps are predicted too fast with or without calibration (the grouped multiply
    with a few rows per expert runs far below bandwidth), and small models' decode too slow
    uncalibrated (no scheduler: the default 0.3 ms per step is a serving engine's, not this
    one's)."""
    _, run2 = rep.report(DATA / "run2")
    _, held = rep.report(DATA / "run3-heldout", "two-sizes", DATA / "run2")
    moe = sorted(
        v["unc"] for v in {**_groups(run2, "moe"), **_groups(held, "qwen3-30b-a3b")}.values()
    )
    assert len(moe) == 16 and moe[0] > 6.0 and moe[1] > 20.0  # 7.3%, then 22-52%
    small = _groups(run2, "small")
    assert all(v["unc"] > 10.0 for g, v in small.items() if "decode" in g)
    assert run2["overall"]["uncalibrated"] > 15.0  # over all four models: 18.0%


def test_a_random_router_crowds_one_prompt_onto_few_experts_and_the_route_bias_does_not() -> None:
    """benchmarks/moe_kernels.py on the H200: distinct experts per layer of the synthetic
    decoder's first six layers. A 128-token prompt of qwen3-30b-a3b (128 experts, top-8)
    reached 27-42 experts from the second layer on where even routing reaches 128; with each
    token's route bias, every layer touches 128 (SyntheticDecoder.route_bias)."""
    text = (DATA / "moe-kernels" / "call1.txt").read_text()
    model = text[text.index("qwen3-30b-a3b: E=128") :]
    line = next(ln for ln in model.splitlines() if ln.strip().startswith("prefill b1    n128 "))
    router, biased = (json.loads(part.strip()) for part in line.split(":", 1)[1].split("|"))
    assert max(router[1:]) < 50 and biased == [128] * 6, line


def test_two_moe_points_in_six_predict_an_unseen_moe_models_decode(rep: ModuleType) -> None:
    """Six points, two each of the 8B, the 1B and qwen1.5-moe (run4), fit the MoE routing
    overhead; then qwen3-30b-a3b, never in a calibration, decodes within 6-16% (uncalibrated:
    24-49% too fast). Without MoE rows (two-sizes) calibration makes the MoE worse. MoE
    prefill stays 23-46% too fast: at 128-512 rows per expert the grouped multiply reaches
    39-70% of the model's dense FLOP rate, and the unfused routing around it adds 32-77% of
    its time (moe-kernels/call2), which the six points do not identify."""
    _, three = rep.report(DATA / "run5-moe-heldout", "three-kinds", DATA / "run4")
    _, two = rep.report(DATA / "run5-moe-heldout", "two-sizes", DATA / "run4")
    decode = _groups(three, "qwen3-30b-a3b")
    decode = {g: v for g, v in decode.items() if "decode" in g}
    assert len(decode) == 4
    assert all(v["cal"] < 17.0 and v["unc"] > 24.0 for v in decode.values()), decode
    small_moe = {g: v for g, v in _groups(three, "qwen1.5-moe-a2.7b").items() if "decode" in g}
    assert all(v["cal"] < 11.0 for v in small_moe.values()), small_moe
    prefill = [v["cal"] for g, v in three["groups"].items() if "prefill" in g]
    assert min(prefill) > 20.0  # what falls short
    assert len(three["worse_groups"]) <= 1
    assert three["overall"]["calibrated"] < 22.0 < 36.0 < three["overall"]["uncalibrated"]
    assert two["overall"]["calibrated"] > two["overall"]["uncalibrated"]


def test_three_points_each_of_the_8b_and_the_moe_predict_an_unseen_moe_within_10_percent(
    rep: ModuleType,
) -> None:
    """Three steps each of the 8B and qwen1.5-moe (run4) fit the expert kernels' share of the
    dense rates, their own small-GEMM pad and the memory rate; then run5, never seen: 8.9% mean
    (uncalibrated 36.6%), no group worse; qwen3-30b-a3b, in no calibration, within 17% in every
    group. Joules per step 7.1%: the expert kernels' shortfall counts as load (counted as time
    alone, their power was 20% low). The 1B, in no row, 9.2% (uncalibrated 13.2%): since the
    expert kernels' pad is a term of its own (2026-12-05), the MoE's rows no longer set the
    dense GEMMs' pad, which made it 16% (and the 0.5B's decode 28-36% too slow)."""
    text, held = rep.report(DATA / "run5-moe-heldout", "large-moe", DATA / "run4")
    assert "fitted eff_expert, gemm_pad_expert_elems" in text
    assert "gemm_pad_elems" not in text.split("; fitted ")[1].split(";")[0]
    assert held["overall"]["calibrated"] < 9.5 and held["overall"]["energy"] < 7.5
    assert held["worse_groups"] == []
    unseen = _groups(held, "qwen3-30b-a3b")
    assert all(v["cal"] < 17.0 for v in unseen.values()), unseen
    _, run4 = rep.report(DATA / "run4", "large-moe")
    small = _groups(run4, "small")
    mean = sum(v["cal"] * v["points"] for v in small.values()) / sum(
        v["points"] for v in small.values()
    )
    assert mean < 9.5, mean
    assert run4["overall"]["calibrated"] < 10.05  # 9.97%: item 4's 10% on the run it came from


def test_the_8b_and_moe_points_predict_unseen_dense_models_of_other_architectures(
    rep: ModuleType,
) -> None:
    """The same six points predict run3's models, none in any row: 9.4% mean over all four
    (12.8% while the MoE rows set the dense pad; uncalibrated 17.0%), qwen2.5-7b and qwen3-14b
    within 2.5% and 3.3% on average, and no decode group of the 0.5B worse than uncalibrated
    (it was 28-36% too slow). What is still worse than uncalibrated is prefill: short prompts
    of the 7B, 14B and 0.5B (by 0.1-10.9 points), and run3's qwen3-30b-a3b prefills, whose
    random router crowded each prompt onto a third of the experts (docs/accuracy.md)."""
    _, held = rep.report(DATA / "run3-heldout", "large-moe", DATA / "run4")
    assert held["overall"]["calibrated"] < 9.5 < 16.0 < held["overall"]["uncalibrated"]
    for model, most in (("qwen2.5-7b", 3.0), ("qwen3-14b", 3.5)):
        groups = _groups(held, model)
        points = sum(v["points"] for v in groups.values())
        assert sum(v["cal"] * v["points"] for v in groups.values()) / points < most, model
    assert all("prefill" in g for g in held["worse_groups"]), held["worse_groups"]


def test_the_six_points_with_moe_still_predict_unseen_dense_models(rep: ModuleType) -> None:
    """The same six points (run4) predict qwen2.5-7b and qwen3-14b (run3, other architectures)
    to 4.3% and 4.6% on average, as the two-sizes calibration does (5.8% and 6.0%
    uncalibrated; under 4% calibrated before 2026-12-04's changes to the defaults)."""
    _, held = rep.report(DATA / "run3-heldout", "three-kinds", DATA / "run4")
    for model in ("qwen2.5-7b", "qwen3-14b"):
        groups = _groups(held, model)
        points = sum(v["points"] for v in groups.values())
        cal = sum(v["cal"] * v["points"] for v in groups.values()) / points
        assert cal < 5.0, (model, cal)


def test_the_defaults_outside_the_measured_span_trade_the_mean_for_no_group_worse(
    rep: ModuleType,
) -> None:
    """The same six points as a local correction (--defaults-outside: steps more than 2x
    outside what the rows measured predicted uncalibrated): no group of run3 worse than
    uncalibrated, and a mean of 16.3% where the calibration alone has 9.4% (uncalibrated
    17.0%): why it was not taken (docs/accuracy.md)."""
    _, held = rep.report(DATA / "run3-heldout", "large-moe", DATA / "run4", defaults_outside=True)
    assert held["worse_groups"] == []
    assert 15.0 < held["overall"]["calibrated"] < held["overall"]["uncalibrated"]


@pytest.mark.parametrize(
    ("folder", "name", "train", "source"),
    [
        ("run1", "report", "first", None),
        ("run2", "report", "first", None),
        ("run2", "report-two-sizes", "two-sizes", None),
        ("run3-heldout", "report-from-run2", "first", "run2"),
        ("run3-heldout", "report-two-sizes-from-run2", "two-sizes", "run2"),
        ("run3-heldout", "report-three-kinds-from-run4", "three-kinds", "run4"),
        ("run4", "report", "first", None),
        ("run4", "report-two-sizes", "two-sizes", None),
        ("run4", "report-three-kinds", "three-kinds", None),
        ("run5-moe-heldout", "report-two-sizes-from-run4", "two-sizes", "run4"),
        ("run5-moe-heldout", "report-three-kinds-from-run4", "three-kinds", "run4"),
        ("run4", "report-large-moe", "large-moe", None),
        ("run5-moe-heldout", "report-large-moe-from-run4", "large-moe", "run4"),
        ("run3-heldout", "report-large-moe-from-run4", "large-moe", "run4"),
    ],
)
def test_committed_reports_are_what_the_code_computes(
    rep: ModuleType, folder: str, name: str, train: str, source: str | None
) -> None:
    text, summary = rep.report(DATA / folder, train, DATA / source if source else None)
    committed = json.loads((DATA / folder / f"{name}.json").read_text())
    for key, value in committed["overall"].items():
        assert summary["overall"][key] == pytest.approx(value, abs=0.05), key
    assert (DATA / folder / f"{name}.md").read_text().strip() == text.strip()
