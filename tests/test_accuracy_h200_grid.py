"""wattserve against a real NVIDIA H200 (issue #12 item 3(c)): steps timed with NVML energy by
benchmarks/gpu_grid.py on 2026-12-04, committed under tests/data/gpu_grid_h200_2026-12-04/.

The engine timed is wattserve's synthetic decoder (exact shapes, random weights) in bf16 with
CUDA graphs, PyTorch's fused attention and, for MoE, PyTorch's grouped multiply: not vLLM, so
what holds here holds for an engine of that make (docs/accuracy.md, "An NVIDIA H200").
- run2: llama-3.1-8b, llama-3.2-1b, smollm2-135m, qwen1.5-moe-a2.7b (102 steps);
- run3-heldout: qwen2.5-7b, qwen3-30b-a3b, qwen2.5-0.5b, qwen3-14b (102 steps), measured to
  test a calibration fitted on run2 on models it never saw.
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


def test_dense_7b_to_14b_uncalibrated_within_15_percent_in_23_of_24_shape_groups(
    rep: ModuleType,
) -> None:
    """Uncalibrated figures do not depend on the training points; the two-sizes report scores
    every 8B step but its three training points. The one group past 15% is the 8B's single
    prefills of up to 512 tokens (16.5%: the 128-token prefill is 21% too fast)."""
    _, run2 = rep.report(DATA / "run2", "two-sizes")
    _, held = rep.report(DATA / "run3-heldout", "two-sizes", DATA / "run2")
    groups = {
        **_groups(run2, "large"),
        **_groups(held, "qwen2.5-7b"),
        **_groups(held, "qwen3-14b"),
    }
    errors = sorted(v["unc"] for v in groups.values())
    assert len(errors) == 24
    assert errors[-2] < 15.0 and errors[-1] < 17.0, errors[-2:]


def test_calibrated_on_six_points_of_two_sizes_predicts_unseen_dense_models(
    rep: ModuleType,
) -> None:
    """Fitted on three steps each of the 8B and the 1B (run2), then every step of qwen2.5-7b
    and qwen3-14b, other architectures measured in another run: within 10% in every group,
    about 3% on average, against 7% uncalibrated."""
    text, held = rep.report(DATA / "run3-heldout", "two-sizes", DATA / "run2")
    assert "leave-one-out 2.6%" in text
    groups = {**_groups(held, "qwen2.5-7b"), **_groups(held, "qwen3-14b")}
    points = sum(v["points"] for v in groups.values())
    cal = sum(v["cal"] * v["points"] for v in groups.values()) / points
    unc = sum(v["unc"] * v["points"] for v in groups.values()) / points
    assert points == 51 and cal < 4.0 and unc < 8.0, (cal, unc)
    assert max(v["cal"] for v in groups.values()) < 11.0  # 10.2%: 7B prefill of <= 512 tokens


def test_what_falls_short_is_what_the_docs_say(rep: ModuleType) -> None:
    """MoE steps are predicted too fast with or without calibration (the grouped multiply
    with a few rows per expert runs far below bandwidth), and small models' decode too slow
    uncalibrated (no scheduler: the default 1 ms per step is an engine's, not this one's)."""
    _, run2 = rep.report(DATA / "run2")
    _, held = rep.report(DATA / "run3-heldout", "two-sizes", DATA / "run2")
    moe = sorted(
        v["unc"] for v in {**_groups(run2, "moe"), **_groups(held, "qwen3-30b-a3b")}.values()
    )
    assert len(moe) == 16 and moe[0] > 6.0 and moe[1] > 20.0  # 6.7%, then 21-52%
    small = _groups(run2, "small")
    assert all(v["unc"] > 10.0 for g, v in small.items() if "decode" in g)
    assert run2["overall"]["uncalibrated"] > 15.0  # over all four models: 23.1%


@pytest.mark.parametrize(
    ("folder", "name", "train", "source"),
    [
        ("run1", "report", "first", None),
        ("run2", "report", "first", None),
        ("run2", "report-two-sizes", "two-sizes", None),
        ("run3-heldout", "report-from-run2", "first", "run2"),
        ("run3-heldout", "report-two-sizes-from-run2", "two-sizes", "run2"),
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
