"""rank on the CPU `wattserve profile` measures: a device whose only published peak is fp32."""

from __future__ import annotations

from pathlib import Path

from wattserve.core.catalog import Catalog, load_catalog
from wattserve.core.params import Calibration, EngineParams
from wattserve.profile.run import hardware_yaml
from wattserve.rank import rank

FIGURES = {"peak_tflops": 0.2, "mem_bw_gbps": 20.0, "memory_gb": 32.0, "tdp_w": 65.0}


def _cpu_catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "local-cpu.yaml"
    path.write_text(hardware_yaml("local-cpu", "a CPU", "cpu", "fp32", dict(FIGURES), "test"))
    return load_catalog([path])


def test_auto_ranks_a_device_whose_only_peak_is_fp32(tmp_path: Path) -> None:
    """`--dtype auto` tried the formats a device has a peak for and left the profiled CPU out
    ('missing-figure ... it has: fp32'), though its 16-bit math runs at its fp32 peak
    (COMPUTE_PEAK_ORDER) and an explicit `--dtype bf16` ranked it."""
    catalog = _cpu_catalog(tmp_path)
    auto = rank("smollm2-135m", hardware="local-cpu", catalog=catalog, slo_ttft_s=60.0)
    bf16 = rank(
        "smollm2-135m", hardware="local-cpu", catalog=catalog, slo_ttft_s=60.0, dtype="bf16"
    )
    assert [r.hardware for r in auto.rows] == ["local-cpu"], auto.excluded
    assert auto.rows[0].dtype == "bf16" and auto.rows[0] == bf16.rows[0]


def test_the_note_names_a_calibrated_device_that_missed_the_slo(tmp_path: Path) -> None:
    """A device excluded for its SLO was evaluated with the calibration (its closest miss is
    calibrated), so the note must not say that no ranked device used it."""
    catalog = _cpu_catalog(tmp_path)
    calib = Calibration(params={"local-cpu": EngineParams(eff_compute=0.3)})
    got = rank(
        "llama-3.1-8b", hardware="local-cpu", catalog=catalog, calibration=calib, dtype="bf16"
    )
    assert not got.rows and got.excluded[0].why == "misses-slo"
    assert any(n.startswith("engine terms calibrated for local-cpu") for n in got.notes), got.notes
