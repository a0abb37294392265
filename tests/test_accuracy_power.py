"""The power curve's default slopes against measured watts (docs/accuracy.md, "The power curve").

`power_k_compute` (1.7) makes a compute-bound step at the default efficiency draw its TDP;
`power_k_memory` (0.9) was chosen on the H200 grid's first run (tests/data/gpu_grid_h200_2026-
12-04/run2: llama-3.1-8b, llama-3.2-1b, smollm2-135m, qwen1.5-moe-a2.7b, NVML energy of
back-to-back steps) as the memory slope with the least mean error in joules per step. It is
then checked on data it was not chosen on:
- the H200's held-out models (run3-heldout: qwen2.5-7b, qwen3-14b, qwen2.5-0.5b, qwen3-30b-a3b);
- ML.ENERGY's vLLM runs on H100 and B200 (tests/data/mlenergy_v3.csv; tests/test_accuracy_
  mlenergy.py), another engine, harness and GPU.

`python tests/test_accuracy_power.py` prints the selection and the held-out tables.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import test_accuracy_mlenergy as ml

from wattserve import Deployment, load_catalog, load_model
from wattserve.calibrate.measurements import Measurement, read_measurements
from wattserve.core.params import EngineParams, default_params
from wattserve.core.perf import PerfModel

GRID = Path(__file__).parent / "data" / "gpu_grid_h200_2026-12-04"
SLOPES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)  # memory slopes the selection tried
DENSE_7B_TO_14B = ("llama-3.1-8b", "qwen2.5-7b", "qwen3-14b")


def grid_rows(run: str) -> list[Measurement]:
    """The run's steps with watts whose whole context fits the model (one smollm2-135m decode
    at 8,192 + 1 tokens does not, and the model refuses it)."""
    return [
        m
        for m in read_measurements(GRID / run / "measurements.csv")
        if m.watts is not None and m.context_tokens < load_model(m.model).max_context
    ]


def grid_errors(
    rows: Iterable[Measurement], params: EngineParams, by: Callable[[Measurement], str]
) -> dict[str, tuple[int, float, float]]:
    """Per group: (steps, mean |power error| %, mean |joules-per-step error| %)."""
    hw = load_catalog().device("h200-sxm")
    acc: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for m in rows:
        pm = PerfModel(Deployment(load_model(m.model), hw, dtype=m.dtype), params)
        c = (
            pm.prefill(m.batch, m.prompt_tokens)
            if m.phase == "prefill"
            else pm.decode_step(m.batch, m.context_tokens)
        )
        watts = m.watts or 0.0
        err = (c.power_w / watts - 1.0, c.energy_j / (watts * m.seconds) - 1.0)
        acc[by(m)].append(err)
        acc["all"].append(err)
    return {
        g: (
            len(v),
            100 * sum(abs(p) for p, _ in v) / len(v),
            100 * sum(abs(j) for _, j in v) / len(v),
        )
        for g, v in acc.items()
    }


def selection() -> dict[float, float]:
    """Mean |joules-per-step error| % on run2 for each memory slope, the compute slope at its
    default: what chose power_k_memory."""
    base = default_params(load_catalog().device("h200-sxm"))
    rows = grid_rows("run2")
    return {
        k: grid_errors(rows, base.with_updates(power_k_memory=k), lambda m: "")["all"][2]
        for k in SLOPES
    }


def _model(m: Measurement) -> str:
    return m.model


def test_the_default_memory_slope_is_the_one_the_first_h200_run_chooses() -> None:
    scores = selection()
    assert EngineParams().power_k_memory == min(scores, key=scores.__getitem__) == 0.9, scores
    # a compute-bound step at the default efficiency reaches TDP, no further
    p = EngineParams()
    assert 1.0 <= p.power_k_compute * p.eff_compute < 1.05


def test_held_out_h200_models_power_and_energy() -> None:
    """Models never used to choose the slopes: power 8.3% off on average, joules per step
    16.4% (MoE and sub-1B steps carry their time errors: the 0.5B's prefills, whose LM head
    is no longer charged per token, run 14-21% faster than predicted in this engine of unfused
    kernels); the dense 7-14B models, whose times are right, within 7% in both."""
    t = grid_errors(grid_rows("run3-heldout"), EngineParams(), _model)
    assert t["all"][1] < 9.0 and t["all"][2] < 17.0, t["all"]
    for model in ("qwen2.5-7b", "qwen3-14b"):
        assert t[model][1] < 7.0 and t[model][2] < 7.0, (model, t[model])
    # what falls short: MoE energy (its steps are predicted too fast: docs/accuracy.md)
    assert t["qwen3-30b-a3b"][2] > 30.0


def test_ml_energy_h100_power_and_energy_on_another_engine() -> None:
    """vLLM 0.11.1 on H100, 81 runs: power 9.1% off (10.3% before the elementwise kernels and
    per-layer launches of 2026-12-04, 14.4% with the earlier curve), joules per output token
    15.1% (16.9%, 31.8%), uncalibrated."""
    t, _ = ml.table(ml.rows(), None)
    power, energy = t["H100 all"]["power"][0], t["H100 all"]["J/token"][0]
    assert power < 10.0 and energy < 16.0, (power, energy)
    # B200's chat runs are closer too; its long-context gpqa runs are not (steps 4-7x slower
    # than the model's, so the GPU waits and draws less: docs/accuracy.md)
    chat = [t[g]["power"] for g in t if g.startswith("B200 chat")]
    mean_chat = sum(e * n for e, _, n in chat) / sum(n for *_, n in chat)
    assert mean_chat < 18.0, mean_chat  # 17.4% (16.5% before the elementwise kernels)
    assert t["B200 gpqa dense batch <= 32"]["power"][0] > 50.0


def _render(t: dict[str, tuple[int, float, float]]) -> str:
    lines = ["| model | steps | power | J/step |", "| --- | --- | --- | --- |"]
    for g in sorted(t, key=lambda g: (g == "all", g)):
        n, p, j = t[g]
        lines.append(f"| {g} | {n} | {p:.1f}% | {j:.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("memory slope chosen on run2 (mean |J/step error|, compute slope 1.7):")
    print(", ".join(f"{k}: {v:.1f}%" for k, v in selection().items()))
    for run in ("run2", "run3-heldout"):
        print(f"\nH200 {run}, default curve")
        print(_render(grid_errors(grid_rows(run), EngineParams(), _model)))
