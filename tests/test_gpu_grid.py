"""benchmarks/gpu_grid.py end to end on the CPU (--smoke: tiny stand-in models, no NVML), and
the report that calibrates on its training points. Only the pipeline is checked: timings on a
shared CPU say nothing about a GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from wattserve import fit_calibration, load_catalog, read_measurements

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src")}
    return subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _grid_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_grid", BENCH / "gpu_grid.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_grid"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_grid_runs_training_points_first_then_every_model() -> None:
    grid = _grid_module()
    cases = grid.plan(grid.GPU_GRID)
    assert [c.tier for c in cases[:6]] == [0] * 6 and {c.role for c in cases[:6]} == {"large"}
    tiers = [c.tier for c in cases]
    assert tiers == sorted(tiers)
    assert {c.role for c in cases if c.tier == 1} == set(grid.MODELS)
    assert len({c.key for c in cases}) == len(cases)


def test_smoke_run_writes_calibrate_csv_grid_json_and_report(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "run"
    done = _script("gpu_grid.py", "--device", "cpu", "--smoke", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = read_measurements(out / "measurements.csv")  # calibrate's own loader
    doc = json.loads((out / "grid.json").read_text())
    assert len(rows) == len(doc["cases"]) and {r.phase for r in rows} == {"prefill", "decode"}
    assert all(r.watts is None for r in rows)  # no NVML: energy unknown, never made up
    assert doc["idle_w"] is None and "no NVML" in doc["power"]
    assert {Path(r.model).name for r in rows} == {f"smoke-{k}.json" for k in doc["models"]}
    catalog = load_catalog([out / doc["hardware_file"]])
    _, (fit,) = fit_calibration(rows[:4], catalog)
    assert fit.hardware == "local-cpu"
    for case in doc["cases"]:
        r = case["result"]
        assert r["seconds"] > 0 and len(r["samples_s"]) == 3 and "energy_j_per_step" not in r
    assert "cases measured" in (out / "summary.txt").read_text()

    report = _script("gpu_grid_report.py", str(out))
    assert report.returncode == 0, report.stdout + report.stderr
    assert "| shape group |" in report.stdout and "tiny decode" in report.stdout
    assert "moe prefill" in report.stdout and "SMOKE RUN" in report.stdout
    assert (out / "report.md").read_text().strip() == report.stdout.strip()


def test_a_spent_budget_skips_every_case_and_says_so(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    done = _script(
        "gpu_grid.py", "--device", "cpu", "--smoke", "--budget-s", "0", "--out", str(tmp_path)
    )
    assert done.returncode == 1  # nothing measured
    doc = json.loads((tmp_path / "grid.json").read_text())
    assert all(c["result"]["skipped"].startswith("budget") for c in doc["cases"])
    assert "skipped: budget" in (tmp_path / "summary.txt").read_text()


def test_the_report_refuses_a_folder_that_is_no_grid_run(tmp_path: Path) -> None:
    done = _script("gpu_grid_report.py", str(tmp_path))
    assert done.returncode != 0 and "no grid.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_gemm_shapes_smoke_run_times_every_gemm_and_elementwise_kernel(tmp_path: Path) -> None:
    """benchmarks/gemm_shapes.py, the check that tells a GEMM ramp in K from the engine's
    elementwise kernels (docs/accuracy.md), runs its whole pipeline on tiny shapes."""
    pytest.importorskip("torch")
    out = tmp_path / "g"
    done = _script("gemm_shapes.py", "--device", "cpu", "--smoke", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((out / "gemm_shapes.json").read_text())
    assert doc["square_matmul_tflops"] > 0 and len(doc["models"]) == 4
    for model in doc["models"].values():
        for row in model["rows"]:
            assert set(row["gemms"]) == {"qkv", "o", "gate_up", "down"}
            assert set(row["elementwise"]) == {"rmsnorm", "gated_silu", "residual_add"}
            assert all(c["us"] > 0 and c["tflops"] > 0 for c in row["gemms"].values())
    assert "share of the square rate" in (out / "gemm_shapes.txt").read_text()
    file = tmp_path / "f"
    file.write_text("")
    refused = _script("gemm_shapes.py", "--device", "cpu", "--smoke", "--out", str(file))
    assert refused.returncode == 2 and "is a file, not a folder" in refused.stderr
