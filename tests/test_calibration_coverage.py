"""What a calibration measured (core/coverage.py): recorded by calibrate, read back strictly,
and said by estimate and rank where a prediction lies outside it. The rows are real: steps of
llama-3.1-8b measured on an H200 (tests/data/gpu_grid_h200_2026-12-04/run4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wattserve import ConfigError, estimate, fit_calibration, load_calibration, load_catalog
from wattserve.calibrate.measurements import read_measurements
from wattserve.core.coverage import Coverage, outside_note
from wattserve.rank import rank

RUN4 = Path(__file__).parent / "data" / "gpu_grid_h200_2026-12-04" / "run4" / "measurements.csv"
# three steps of the 8B: decode at batch 1 and 64, a prefill of 2,048 (context 2,048)
CHOSEN = {("decode", 1, 2048), ("decode", 64, 2048), ("prefill", 1, 2048)}


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [
        m
        for m in read_measurements(RUN4)
        if m.model == "llama-3.1-8b"
        and (m.phase, m.batch, m.prompt_tokens if m.phase == "prefill" else m.context_tokens)
        in CHOSEN
    ]
    assert len(rows) == 3
    calibration, (fit,) = fit_calibration(rows, load_catalog(), source="three 8B steps")
    assert fit.fitted, "the fixture needs a calibration that moved some term"
    path = tmp_path_factory.mktemp("cov") / "cal.json"
    calibration.save(path)
    return path


def test_calibrate_records_the_span_of_its_rows(calib_file: Path) -> None:
    entry = json.loads(calib_file.read_text())["hardware"]["h200-sxm"]
    assert entry["measured"] == {
        "models": ["llama-3.1-8b"],
        "params_b": [8.030261248, 8.030261248],
        "prefill_tokens": [2048, 2048],
        "decode_batch": [1, 64],
        "decode_context": [2048, 2048],
        "tensor_parallel": [1],
        "dtypes": ["bf16"],
    }
    cov = load_calibration(calib_file).measured["h200-sxm"]
    assert cov.describe() == (
        "llama-3.1-8b (8.03B parameters); prefill of 2,048 tokens a step; decode at batch "
        "1-64, context 2,048; tp 1, bf16 weights"
    )


def test_a_tensor_parallel_degree_or_format_no_row_ran_is_said(
    calib_file: Path, tmp_path: Path
) -> None:
    """Rows at tp=1 in bf16 say nothing of all-reduces or another format's kernels: estimate
    had applied the terms at tp=4 and in fp8 without a word (a session-37 review)."""
    inside = {"batch": 1, "prompt_tokens": 1984, "output_tokens": 128}  # decode at 2,048
    assert not _notes(calib_file, "llama-3.1-8b", **inside)
    (tp4,) = _notes(calib_file, "llama-3.1-8b", tp=4, **inside)
    assert "no row measured tp=4" in tp4
    (fp8,) = _notes(calib_file, "llama-3.1-8b", dtype="fp8", **inside)
    assert "no row measured fp8 weights" in fp8
    # a file written before these were recorded loads, and says nothing of them
    old = json.loads(calib_file.read_text())
    for key in ("tensor_parallel", "dtypes"):
        del old["hardware"]["h200-sxm"]["measured"][key]
    before = tmp_path / "old.json"
    before.write_text(json.dumps(old))
    assert not _notes(before, "llama-3.1-8b", tp=4, **inside)
    # and the two come together
    half = json.loads(calib_file.read_text())
    del half["hardware"]["h200-sxm"]["measured"]["dtypes"]
    broken = tmp_path / "half.json"
    broken.write_text(json.dumps(half))
    with pytest.raises(ConfigError, match="tensor_parallel and dtypes"):
        load_calibration(broken)


def _notes(calib: Path, model: str, **kw: Any) -> list[str]:
    e = estimate(model, "h200-sxm", calibration=calib, **kw)
    return [a for a in e.assumptions if "calibration of h200-sxm measured" in a]


def test_estimate_says_when_a_prediction_lies_outside_what_was_measured(calib_file: Path) -> None:
    # within: a 7.6B model (under 2x smaller), a prefill and contexts within 2x
    assert _notes(calib_file, "qwen2.5-7b", prompt_tokens=2048, output_tokens=128) == []
    assert _notes(calib_file, "llama-3.1-8b", batch=2, prompt_tokens=1500) == []
    # a model 60x smaller: the H200 grid's 135M, whose prefill calibration made worse
    (tiny,) = _notes(calib_file, "smollm2-135m", prompt_tokens=2048, output_tokens=128)
    assert "smollm2-135m (0.135B parameters) is more than 2x past that" in tiny
    assert "extrapolated there (docs/calibration.md)" in tiny
    # a short prompt, a large batch, a long context: each named
    (short,) = _notes(calib_file, "llama-3.1-8b", prompt_tokens=128, output_tokens=16)
    assert "a prefill of 128 tokens" in short and "decode at context 136" in short
    (big,) = _notes(calib_file, "llama-3.1-8b", batch=256, prompt_tokens=16, output_tokens=16)
    assert "decode at batch 256" in big and "a prefill of 4,096" not in big
    # uncalibrated: nothing to say
    assert not any("measured" in a for a in estimate("smollm2-135m", "h200-sxm").assumptions)


def test_rank_says_which_device_terms_are_extrapolated(calib_file: Path) -> None:
    notes = rank("smollm2-135m", calibration=load_calibration(calib_file)).notes
    assert any("calibration of h200-sxm measured" in n and "smollm2-135m" in n for n in notes)
    assert not any(
        "measured" in n
        for n in rank("llama-3.1-8b", calibration=load_calibration(calib_file)).notes
    )


def test_calibrate_prints_what_it_measured(tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    lines = RUN4.read_text().splitlines(True)
    csv.write_text(
        lines[0] + "".join(ln for ln in lines[1:] if ln.startswith("llama-3.1-8b"))[:4000]
    )
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", "calibrate", str(csv), "-o", str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "  measured: llama-3.1-8b (8.03B parameters); prefill of" in p.stdout, p.stdout


@pytest.mark.parametrize(
    ("measured", "field"),
    [
        ([], "measured"),
        ({"models": ["m"], "params_b": [1, 2], "extra": 1}, "measured.extra"),
        ({"models": ["m"], "params_b": [1, 2], "\x1b[2J": 1}, "measured.'\\x1b[2J'"),
        ({"models": [], "params_b": [1, 2]}, "measured.models"),
        ({"models": ["a\nb"], "params_b": [1, 2]}, "measured.models"),
        ({"models": ["m"] * 101, "params_b": [1, 2]}, "measured.models"),
        ({"models": ["m"]}, "measured.params_b"),
        ({"models": ["m"], "params_b": [2, 1]}, "measured.params_b"),
        ({"models": ["m"], "params_b": [True, 2]}, "measured.params_b"),
        ({"models": ["m"], "params_b": [0, 2]}, "measured.params_b"),
        ({"models": ["m"], "params_b": [1, 1e300]}, "measured.params_b"),
        ({"models": ["m"], "params_b": ["1", 2]}, "measured.params_b"),
        ({"models": ["m"], "params_b": [1, 2], "decode_batch": [1]}, "measured.decode_batch"),
        ({"models": ["m"], "params_b": [1, 2], "prefill_tokens": "1-2"}, "measured.prefill_tokens"),
        # a decode row gives both spans: one alone read as no decode at all
        ({"models": ["m"], "params_b": [1, 2], "decode_batch": [1, 4]}, "measured.decode_context"),
        (
            {"models": ["m"], "params_b": [1, 2], "decode_batch": None, "decode_context": [8, 9]},
            "measured.decode_batch",
        ),
    ],
)
def test_a_broken_measured_record_is_refused_naming_its_field(
    calib_file: Path, tmp_path: Path, measured: object, field: str
) -> None:
    doc = json.loads(calib_file.read_text())
    doc["hardware"]["h200-sxm"]["measured"] = measured
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_calibration(bad)
    assert err.value.field == f"hardware.h200-sxm.{field}", err.value


def test_a_file_without_the_record_still_reads_and_says_nothing(
    calib_file: Path, tmp_path: Path
) -> None:
    doc = json.loads(calib_file.read_text())
    del doc["hardware"]["h200-sxm"]["measured"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert load_calibration(old).measured == {}
    assert _notes(old, "smollm2-135m") == []


def test_coverage_of_rows_without_a_phase() -> None:
    cov = Coverage.of([("m", 1e9, "decode", 8, 0, 512, 1, "bf16")])
    assert cov.prefill_tokens is None and cov.describe().endswith(
        "no prefill; decode at batch 8, context 512; tp 1, bf16 weights"
    )
    out = cov.outside("m", 1e9, prefill_tokens=512)
    assert out == ["unmeasured: prefill"]
    note = outside_note("h", cov, ["m (0.1B parameters)", *out])
    assert note.endswith(
        ": m (0.1B parameters) is more than 2x past that; no row measured prefill; the fitted "
        "terms are extrapolated there (docs/calibration.md)"
    ), note
