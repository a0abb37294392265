"""Calibration's input: rows whose seconds or watts no device could have taken or drawn are
refused when they load, naming the file, line and field (calibrate/rows.py), and every
measured file in the repository still loads."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve import ConfigError, Deployment, EngineParams, load_catalog, load_model
from wattserve.calibrate.measurements import COLUMNS, read_measurements
from wattserve.calibrate.rows import step_row
from wattserve.cli.app import app
from wattserve.core.modelspec import ModelSpec
from wattserve.core.perf import PerfModel

REPO = Path(__file__).resolve().parent.parent
HEADER = ",".join(COLUMNS)
GOOD_ROW = "llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,512,512,0.008,400"
CPU = """devices:
  my-cpu:
    name: a CPU
    vendor: me
    category: cpu
    software: pytorch-native
    maturity: production
    source: test
    peak_tflops: {fp32: 2}
    mem_bw_gbps: 100
    memory_gb: 64
    tdp_w: 65
"""


def _load(tmp_path: Path, row: str, hardware_files: tuple[Path, ...] = ()) -> None:
    f = tmp_path / "m.csv"
    f.write_text(f"{HEADER}\n{GOOD_ROW}\n{row}\n")
    catalog = load_catalog(list(hardware_files))
    for m in read_measurements(f):
        step_row(m, catalog.device(m.hardware), str(f))


def _measured_files() -> list[Path]:
    found = sorted((REPO / "tests" / "data").rglob("*.csv")) + sorted(
        (REPO / "examples").glob("*.csv")
    )
    return [f for f in found if f.read_text(encoding="utf-8").startswith("model,hardware,")]


def test_every_measured_file_in_the_repository_passes_the_bounds() -> None:
    """The bounds were set on these: 0.69 to 19 times the uncalibrated prediction, watts from
    1.13 times the assumed idle draw to 1.29 times TDP (an H200 profile's short windows).
    Rows past a model's memory are refused as before, never for their seconds or watts;
    rows past its context window load (the H200 grid's decodes at 8,192 on 8,192-token
    models)."""
    files = _measured_files()
    assert len(files) >= 15
    for f in files:
        catalog = load_catalog([f.parent / "local-cpu.yaml"] if f.parent.joinpath(
            "local-cpu.yaml").exists() else [])  # fmt: skip
        for m in read_measurements(f):
            try:
                step_row(m, catalog.device(m.hardware), str(f))
            except ConfigError as exc:
                assert exc.field not in ("seconds", "watts"), exc
                assert "KV cache" in exc.detail, exc


@pytest.mark.parametrize(
    ("row", "message"),
    [
        # a unit slip: kW written as W (0.4 for 400)
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,1024,1024,0.01,0.4", "under half of h100-sxm"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,1024,1024,0.01,0.002", "under half"),
        # a node of eight H100s' power written per device
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,1024,1024,0.01,4800", "over 1.5 times"),
        # four devices' draw written per device: 4 x 500 W
        ("llama-3.1-70b,h100-sxm,4,4,bf16,decode,8,256,431,0.017,2000", "over 1.5 times"),
    ],
)
def test_watts_no_device_can_draw_are_refused_naming_the_row(
    tmp_path: Path, row: str, message: str
) -> None:
    """They entered the power fit and were only warned about after it, with the size of the
    miss (0.002 W on an H100: the terms at their bounds, 99% off)."""
    with pytest.raises(ConfigError, match=message) as err:
        _load(tmp_path, row)
    where = (err.value.path, err.value.line, err.value.field)
    assert where == (str(tmp_path / "m.csv"), 3, "watts")


@pytest.mark.parametrize(
    "row",
    [
        # above TDP, as a short window reads (an H200's 905 W of 700): fitted with a warning
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,1024,1024,0.01,1000",
        # under the assumed idle draw (15% of TDP, 105 W), over half of it: an H100 idles at 60
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,1024,1024,0.01,60",
        "llama-3.1-70b,h100-sxm,4,4,bf16,decode,8,256,431,0.017,441",
    ],
)
def test_watts_within_the_physical_bounds_load(tmp_path: Path, row: str) -> None:
    _load(tmp_path, row)


def test_a_cpu_may_draw_past_its_sustained_limit(tmp_path: Path) -> None:
    """A CPU's tdp_w is its sustained limit (RAPL's PL1), which turbo exceeds for tens of
    seconds: three times it loads, five times does not."""
    hw = tmp_path / "cpu.yaml"
    hw.write_text(CPU)
    _load(tmp_path, "smollm2-135m,my-cpu,1,1,fp32,decode,1,128,128,0.02,190", (hw,))
    with pytest.raises(ConfigError, match="over 4 times my-cpu's TDP") as err:
        _load(tmp_path, "smollm2-135m,my-cpu,1,1,fp32,decode,1,128,128,0.02,330", (hw,))
    assert (err.value.line, err.value.field) == (3, "watts")


def _predicted_s(model: str, batch: int, context: int) -> float:
    dep = Deployment(load_model(model), load_catalog().device("h100-sxm"))
    return PerfModel(dep, EngineParams()).decode_step(batch, context).time_s


@pytest.mark.parametrize(
    ("model", "factor", "message"),
    [
        ("llama-3.1-8b", 1e3, "milliseconds written as seconds"),
        ("llama-3.1-8b", 1e6, "microseconds written as seconds"),
        ("llama-3.1-8b", 300, "or the time of many steps"),
        # faster than a hundredth of the prediction, not yet a tenth of the datasheet's floor
        ("smollm2-135m", 1e-3, "divided by 1,000 once too often"),
    ],
)
def test_seconds_far_from_the_uncalibrated_prediction_are_refused_naming_the_slip(
    tmp_path: Path, model: str, factor: float, message: str
) -> None:
    """A row 10^7 times its prediction went into the fit without a word of its own."""
    seconds = _predicted_s(model, 8, 1024) * factor
    with pytest.raises(ConfigError, match=message) as err:
        _load(tmp_path, f"{model},h100-sxm,1,1,bf16,decode,8,1024,1024,{seconds:.6g},")
    assert (err.value.line, err.value.field) == (3, "seconds")


@pytest.mark.parametrize("factor", [0.02, 50.0])
def test_seconds_within_a_hundred_times_the_prediction_load(tmp_path: Path, factor: float) -> None:
    seconds = _predicted_s("smollm2-135m", 8, 1024) * factor
    _load(tmp_path, f"smollm2-135m,h100-sxm,1,1,bf16,decode,8,1024,1024,{seconds:.6g},")


def test_calibrate_refuses_a_row_of_absurd_watts_with_its_line(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    rows = [
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,512,512,0.008,400",
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,1024,1024,0.010,450",
        "llama-3.1-8b,h100-sxm,1,1,bf16,prefill,1,512,512,0.05,0.002",
    ]
    f.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    result = CliRunner().invoke(app, ["calibrate", str(f), "-o", str(tmp_path / "c.json")])
    assert result.exit_code == 2, result.output
    assert f"{f}:4, field 'watts'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c.json").exists()


def test_a_header_of_many_columns_is_refused_at_once(tmp_path: Path) -> None:
    """300,000 columns named twice took minutes (header.count for each column)."""
    f = tmp_path / "m.csv"
    f.write_text(HEADER + ",model" * 300_000 + "\n" + GOOD_ROW + "\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="named twice: model") as err:
        read_measurements(f)
    assert time.monotonic() - start < 5
    assert err.value.line == 1


def test_a_bad_row_of_a_later_device_is_refused_before_any_fit(tmp_path: Path) -> None:
    """Every device's rows are resolved before the first device's fit (which may take a
    minute): an impossible row of the second device is refused in a fraction of the time one
    fit takes, not after it."""
    from wattserve.calibrate.fit import fit_calibration

    good = [
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,512,512,0.008,400",
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,1024,1024,0.010,450",
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,64,1024,1024,0.016,500",
        "llama-3.1-8b,h100-sxm,1,1,bf16,prefill,1,2048,2048,0.09,650",
    ]
    f = tmp_path / "m.csv"
    f.write_text(HEADER + "\n" + "\n".join(good) + "\n")
    catalog = load_catalog()
    start = time.perf_counter()
    fit_calibration(read_measurements(f), catalog, str(f))
    one_fit_s = time.perf_counter() - start
    f.write_text(
        HEADER
        + "\n"
        + "\n".join([*good, "llama-3.1-8b,a100-sxm-80gb,1,1,bf16,decode,1,512,512,0.01,0.002"])
        + "\n"
    )
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        fit_calibration(read_measurements(f), catalog, str(f))
    assert (err.value.line, err.value.field) == (6, "watts")
    assert time.perf_counter() - start < one_fit_s / 2, one_fit_s


@pytest.mark.parametrize(
    ("field", "value", "char"),
    [
        ("model", "llama\x1b[2J-3.1-8b", "U+001B"),  # an escape that clears the terminal
        ("model", "llama-3.1\u202e-8b", "U+202E"),  # prints reversed, as a known id
        ("hardware", "h100\x00-sxm", "U+0000"),
        ("hardware", "h100\u00a0sxm", "U+00A0"),  # a no-break space prints as a space
        ("dtype", "bf\x1b]0;x\x0716", "U+001B"),
        ("seconds", "0.008\x07", "U+0007"),
    ],
)
def test_a_field_holding_a_control_or_invisible_character_is_refused(
    tmp_path: Path, field: str, value: str, char: str
) -> None:
    """Such an id was refused as unknown with the character printed raw into the terminal
    (an id printing as the one the catalog has); now the row names it, escaped."""
    f = tmp_path / "m.csv"
    cells = dict(zip(COLUMNS, GOOD_ROW.split(","), strict=True))
    cells[field] = value
    f.write_text(f"{HEADER}\n{GOOD_ROW}\n{','.join(cells.values())}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"holds {char}, a control or")) as err:
        read_measurements(f)
    assert (err.value.line, err.value.field) == (3, field)
    assert str(err.value).isprintable()


def test_a_tab_around_a_number_is_space(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    row = GOOD_ROW.replace(",1,512,", ",\t1 ,512,")
    f.write_text(f"{HEADER}\n{row}\n", encoding="utf-8")
    assert read_measurements(f)[0].batch == 1


def test_an_id_longer_than_any_id_or_path_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    for field, length in (("hardware", 201), ("model", 4097)):
        cells = dict(zip(COLUMNS, GOOD_ROW.split(","), strict=True))
        cells[field] = "x" * length
        f.write_text(f"{HEADER}\n{','.join(cells.values())}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=f"{length:,} characters") as err:
            read_measurements(f)
        assert (err.value.line, err.value.field) == (2, field)


def test_calibrate_prints_a_control_character_in_a_row_escaped(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    row = GOOD_ROW.replace("h100-sxm", "h100-sxm\x1b[2J")
    f.write_text(f"{HEADER}\n{row}\n")
    result = CliRunner().invoke(app, ["calibrate", str(f), "-o", str(tmp_path / "c.json")])
    assert result.exit_code == 2, result.output
    assert "\x1b" not in result.output and "'h100-sxm\\x1b[2J'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "c.json").exists()


def test_a_model_file_many_rows_name_is_read_once(tmp_path: Path) -> None:
    """A 60 MB config.json named by 2,000 rows was read and parsed once a row: ten minutes
    before the fit began. The rows share what the first read (the file may go after it)."""
    config = tmp_path / "m" / "config.json"
    config.parent.mkdir()
    config.write_bytes((REPO / "src/wattserve/data/models/llama-3.1-8b.json").read_bytes())
    f = tmp_path / "m.csv"
    row = GOOD_ROW.replace("llama-3.1-8b", "m")
    f.write_text(f"{HEADER}\n{row}\n{row.replace(',1,512,', ',8,512,')}\n")
    first, second = read_measurements(f)
    hw = load_catalog().device("h100-sxm")
    models: dict[str, ModelSpec] = {}
    step_row(first, hw, str(f), models)
    config.unlink()
    assert step_row(second, hw, str(f), models).dep.model.id == "m"
    assert list(models) == [str(tmp_path / "m")]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seconds", "1" * 100_000 + "x"),  # the number pattern backtracked: 18 s at 30,000
        ("watts", "1" * 100_000 + "x"),
        ("dtype", "b" * 100_000),  # each quoted whole in its error
        ("kv_dtype", "b" * 100_000),
        ("phase", "d" * 100_000),
    ],
)
def test_a_field_of_100000_characters_is_refused_at_once_and_quoted_short(
    tmp_path: Path, field: str, value: str
) -> None:
    f = tmp_path / "m.csv"
    cells = dict(zip(COLUMNS, GOOD_ROW.split(","), strict=True))
    cells["kv_dtype"] = ""
    cells[field] = value
    f.write_text(f"{HEADER},kv_dtype\n{','.join(cells.values())}\n")
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        read_measurements(f)
    assert time.monotonic() - start < 2
    assert (err.value.line, err.value.field) == (2, field) and len(str(err.value)) < 400


def test_a_row_after_blank_lines_is_named_on_its_own_line(tmp_path: Path) -> None:
    """The reader skips blank lines: a row after two of them was named on the first blank."""
    f = tmp_path / "m.csv"
    bad = GOOD_ROW.replace(",0.008,", ",-1,")
    f.write_text(f"{HEADER}\n\n\n{GOOD_ROW}\r\n\n{bad}\n")
    with pytest.raises(ConfigError, match="positive") as err:
        read_measurements(f)
    assert (err.value.line, err.value.field) == (6, "seconds")
    f.write_text(f"{HEADER}\n\n{GOOD_ROW}\n\n\n{GOOD_ROW}\n")
    assert [m.line for m in read_measurements(f)] == [3, 6]
    # a quote never closed runs to the end of the file; its row began after the blank line
    f.write_text(f'{HEADER}\n{GOOD_ROW}\n\nllama-3.1-8b,"h100\n\n,1\n')
    with pytest.raises(ConfigError, match="a quote opened on line 4") as err:
        read_measurements(f)
    assert err.value.line == 4


def test_rows_past_the_context_window_are_fitted_with_a_warning(tmp_path: Path) -> None:
    """A decode at 8,192 tokens of context on an 8,192-token model holds 8,193: the project's
    own H200 grid measured it (random weights, no engine's window check), and calibrate
    refused the whole file. Its seconds are real; the warning names the line."""
    run4 = REPO / "tests/data/gpu_grid_h200_2026-12-04/run4/measurements.csv"
    rows = [step_row(m, load_catalog([]).device(m.hardware), str(run4)) for m in
            read_measurements(run4)]  # fmt: skip
    past = [r for r in rows if r.past_window]
    assert past and {r.dep.model.id for r in past} <= {"smollm2-135m", "qwen1.5-moe-a2.7b"}
    assert all(r.held_tokens == 8193 for r in past)
    f = tmp_path / "m.csv"
    f.write_text(
        f"{HEADER}\n"
        "smollm2-135m,h200-sxm,1,1,bf16,decode,1,,512,0.0025,\n"
        "smollm2-135m,h200-sxm,1,1,bf16,decode,16,,2048,0.0031,\n"
        "smollm2-135m,h200-sxm,1,1,bf16,decode,16,,8192,0.0042,\n"
        "smollm2-135m,h200-sxm,1,1,bf16,prefill,1,512,,0.0040,\n"
    )
    out = CliRunner().invoke(app, ["calibrate", str(f), "--output", str(tmp_path / "c.json")])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "line(s) 4 held more tokens than their model's context window" in text, text
    assert "smollm2-135m: 8193 of 8192" in text
