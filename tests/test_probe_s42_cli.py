"""A session-42 probe of calibrate, rank, catalog, compare, bench and estimate as an attacker
and a new user would use them. What it confirmed, each now refused or fixed: an MoE config
with no FFN size modelled as attention alone, `rank --report` into a pipe with no reader
hanging for ever, `bench --rate-scale` ignored beside `--request-rate` but recorded, reports
and results written over a measurements CSV, cost flags ignored for a hosted API, a requests
file missing `row` called "not JSON", path errors that named no flag, `catalog --vendor` of a
typo listing nothing, and choices taken in any case by some verbs and refused by others. Each
test fails on the code before the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve.cli.app import app
from wattserve.core.modelspec import model_from_hf_config
from wattserve.errors import ConfigError

MOE_NO_FFN = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "vocab_size": 32000,
}


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _one_request(folder: Path) -> tuple[Path, Path]:
    """A trace of one request and a fleet of one H100 that serves it."""
    trace = folder / "t.jsonl"
    trace.write_text('{"arrival_s": 0, "prompt_tokens": 100, "output_tokens": 10}\n')
    fleet = folder / "f.yaml"
    fleet.write_text(
        "name: one\nsites:\n  dc: {kind: datacenter}\ndeployments:\n  h100:\n    site: dc\n"
        "    model: llama-3.1-8b\n    hardware: h100-sxm\n"
    )
    return trace, fleet


def test_an_moe_config_without_its_experts_size_is_refused() -> None:
    """Mixtral's shape with no intermediate_size: 3.21 GB of weights and 2.49 ms a token (the
    built-in Mixtral: 46.7 GB a device at TP2), exit 0, in estimate, rank and calibrate."""
    with pytest.raises(ConfigError) as info:
        model_from_hf_config(MOE_NO_FFN, "moe", "moe.json")
    assert info.value.field == "intermediate_size" and "8 experts" in str(info.value)
    spec = model_from_hf_config({**MOE_NO_FFN, "intermediate_size": 14336}, "moe", "moe.json")
    assert spec.expert_intermediate_size == 14336  # every expert as wide: as before


def test_a_report_into_a_pipe_with_no_reader_is_refused_not_hung(tmp_path: Path) -> None:
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", "rank", "--model", "llama-3.1-8b", "--top", "1",
         "--report", str(fifo)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2 and "field '--report'" in p.stderr
    assert "a pipe that no process reads" in p.stderr
    code, out = _cli("rank", "--model", "llama-3.1-8b", "--top", "1", "--report", os.devnull)
    assert code == 0, out  # /dev/null: asked for, and written to nothing


def test_bench_refuses_a_rate_scale_beside_a_request_rate(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,10,5\n")
    code, out = _cli(
        "bench", "--url", "http://127.0.0.1:9", "--trace", str(trace), "--rate-scale", "1000",
        "--request-rate", "0.5",
    )  # fmt: skip
    assert code == 2 and "field '--rate-scale'" in out and "give one" in out, out


@pytest.mark.parametrize(
    "args",
    [
        ["rank", "--model", "llama-3.1-8b", "--top", "1", "--report", "OUT"],
        ["bench", "--url", "http://127.0.0.1:9", "--trace", "TRACE", "--out", "OUT"],
        ["bench", "--url", "http://127.0.0.1:9", "--trace", "TRACE", "--report", "OUT"],
        ["simulate", "--fleet", "FLEET", "--trace", "TRACE", "--requests-out", "OUT"],
        ["simulate", "--fleet", "FLEET", "--trace", "TRACE", "--report", "OUT"],
    ],
)
def test_an_output_never_replaces_a_file_of_another_kind(tmp_path: Path, args: list[str]) -> None:
    """`rank --report measurements.csv` had replaced the measurements with HTML, exit 0, and
    bench's --out and --report and simulate's outputs did the same, where calibrate refuses
    to replace what is not a calibration."""
    victim = tmp_path / "measurements.csv"
    victim.write_text("model,hardware,count\nllama-3.1-8b,h100-sxm,1\n")
    trace, fleet = _one_request(tmp_path)
    given = {"OUT": str(victim), "TRACE": str(trace), "FLEET": str(fleet)}
    code, out = _cli(*[given.get(a, a) for a in args])
    assert code == 2 and "measurements.csv is not" in out and "remove it" in out, out
    assert victim.read_text().startswith("model,hardware")


def test_a_report_of_an_earlier_run_is_replaced(tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    for _ in range(2):
        code, out = _cli("rank", "--model", "llama-3.1-8b", "--top", "1", "--report", str(report))
        assert code == 0, out
    assert report.read_text().lower().startswith("<!doctype html")


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--cost-basis", "own"),
        ("--pue", "2"),
        ("--electricity-usd-per-kwh", "5"),
        ("--lifetime-years", "2"),
        ("--batch", "64"),
    ],
)
def test_a_hosted_api_refuses_what_only_devices_use(flag: str, value: str) -> None:
    """Each was accepted and ignored: the answer said "(per-token)" under --cost-basis own."""
    code, out = _cli("estimate", "--model", "llama-3.1-8b", "--hardware", "groq-cloud", flag, value)
    assert code == 2 and f"field '{flag}'" in out and "hosted API" in out, out


def test_a_hosted_api_refuses_a_calibration(tmp_path: Path) -> None:
    calibration = tmp_path / "c.json"
    calibration.write_text('{"version": 1, "hardware": {}}')
    code, out = _cli(
        "estimate", "--model", "llama-3.1-8b", "--hardware", "groq-cloud", "--calibration",
        str(calibration),
    )  # fmt: skip
    assert code == 2 and "field '--calibration'" in out and "hosted API" in out, out


def test_compare_names_the_field_a_requests_files_first_line_lacks(tmp_path: Path) -> None:
    lines = [
        {"id": i, "policy": "p", "status": "ok", "arrival_s": 0.0, "admitted_s": 0.0,
         "first_token_s": 0.1, "end_s": 0.2, "prompt_tokens": 10, "output_tokens": 5}
        for i in range(2)
    ]  # fmt: skip
    rq = tmp_path / "rq.jsonl"
    rq.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out = _cli("compare", str(rq), str(rq))
    assert code == 2 and "rq.jsonl:1, field 'row': missing" in out, out
    assert "not JSON" not in out


EST = ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm"]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["estimate", "--hardware", "h100-sxm", "--model", "NOPE.json"], "--model"),
        (["estimate", "--hardware", "h100-sxm", "--model", "DIR"], "--model"),
        ([*EST, "--calibration", os.devnull], "--calibration"),
        ([*EST, "--hardware-file", "DIR"], "--hardware-file"),
        (["rank", "--model", "llama-3.1-8b", "--calibration", "DIR"], "--calibration"),
        (["rank", "--model", "DIR"], "--model"),
    ],
)
def test_a_file_that_cannot_be_read_names_its_flag(
    tmp_path: Path, args: list[str], flag: str
) -> None:
    given = {"NOPE.json": str(tmp_path / "nope.json"), "DIR": str(tmp_path)}
    code, out = _cli(*[given.get(a, a) for a in args])
    assert code == 2 and f"field '{flag}'" in out, out


def test_catalog_names_a_vendor_it_does_not_know() -> None:
    code, out = _cli("catalog", "--vendor", "foo")
    assert code == 2 and "field '--vendor'" in out and "NVIDIA" in out, out
    code, out = _cli("catalog", "--vendor", "nvidia", "--json")
    assert code == 0 and json.loads(out), out
    code, out = _cli("catalog", "--min-memory-gb", "-1")
    assert code == 2 and out.startswith("error: field '--min-memory-gb'"), out  # not boxed


def test_choices_are_taken_in_any_case_in_every_verb(tmp_path: Path) -> None:
    code, out = _cli(
        "rank", "--model", "llama-3.1-8b", "--dtype", "FP8", "--category", "GPU",
        "--min-maturity", "Production", "--require-software", "Plugin", "--top", "1", "--json",
    )  # fmt: skip
    assert code == 0, out
    assert json.loads(out)["rows"], out
    code, out = _cli("estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
                     "--cost-basis", "OWN", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["cost_basis"] in ("own", "unknown"), out


def test_a_measurements_phase_is_read_in_any_case(tmp_path: Path) -> None:
    """`PREFILL` was refused where the same row's `BF16` was taken."""
    from wattserve.calibrate.measurements import read_measurements

    source = Path(__file__).parent.parent / "examples" / "measurements-h100-70b.csv"
    upper = tmp_path / "m.csv"
    upper.write_text(source.read_text().replace(",decode,", ",DECODE,").replace(",bf16,", ",BF16,"))
    assert [m.phase for m in read_measurements(upper)] == [
        m.phase for m in read_measurements(source)
    ]


def test_calibrate_says_what_is_wrong_with_an_empty_file_or_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, out = _cli("calibrate", str(empty), "-o", str(tmp_path / "c.json"))
    assert code == 2 and "an empty file: the header must be" in out, out  # not "missing columns"
    source = Path(__file__).parent.parent / "examples" / "measurements-h100-70b.csv"
    code, out = _cli("calibrate", str(source), "-o", "")
    assert code == 2 and "field '--output': an empty path" in out, out  # not "cannot write ."


def test_rows_of_one_shape_without_watts_say_there_are_no_watts(tmp_path: Path) -> None:
    """The note blamed the rows' one shape for the power curve kept, where no row had watts."""
    header, row = (
        (Path(__file__).parent.parent / "examples" / "measurements-h100-70b.csv")
        .read_text()
        .splitlines()[:2]
    )
    unpowered = row.rsplit(",", 1)[0] + ","
    rows = tmp_path / "m.csv"
    rows.write_text("\n".join([header, unpowered, unpowered]) + "\n")
    code, out = _cli("calibrate", str(rows), "-o", str(tmp_path / "c.json"))
    assert code == 0 and "no watts in the measurements" in out, out


def test_a_pipe_with_a_reader_is_written(tmp_path: Path) -> None:
    """`--report >(wc -c)` and a named pipe some process reads: written, as before the check
    for pipes with no reader (a review, 2026-12-07); the reader sees the whole page."""
    fifo, got = tmp_path / "ff", tmp_path / "got.html"
    os.mkfifo(fifo)
    with got.open("wb") as sink:
        reader = subprocess.Popen(["cat", str(fifo)], stdout=sink)
        try:
            p = subprocess.run(
                [sys.executable, "-m", "wattserve", "rank", "--model", "llama-3.1-8b", "--top",
                 "1", "--report", str(fifo)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            reader.wait(timeout=60)
        finally:  # a reader left waiting (the write never came) is not left behind
            reader.kill()
            reader.wait()
    assert p.returncode == 0, p.stderr
    assert got.read_text().lower().startswith("<!doctype html")


def test_an_output_that_is_also_standard_output_is_refused_for_every_kind(
    tmp_path: Path,
) -> None:
    """`plan --json --out X > X` and `calibrate -o X --json > X`: the check moved with the
    check of an output's kind, and outputs of no kind lost it (a review, 2026-12-07)."""
    source = Path(__file__).parent.parent / "examples" / "measurements-h100-70b.csv"
    out = tmp_path / "x.json"
    out.write_text("")
    with out.open("a") as stdout:
        p = subprocess.run(
            [sys.executable, "-m", "wattserve", "calibrate", str(source), "-o", str(out),
             "--json"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    assert p.returncode == 2 and "also where standard output goes" in p.stderr, p.stderr


def test_standard_output_by_name_is_written_after_what_it_holds(tmp_path: Path) -> None:
    """`rank --report /dev/stdout >> log`: refused as "not an HTML report", though the write
    goes through the stream, after the log's text (a review, 2026-12-07)."""
    log = tmp_path / "log.txt"
    log.write_text("earlier lines\n")
    with log.open("a") as stdout:
        p = subprocess.run(
            [sys.executable, "-m", "wattserve", "rank", "--model", "llama-3.1-8b", "--top", "1",
             "--report", "/dev/stdout"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert p.returncode == 0, p.stderr
    text = log.read_text()
    assert text.startswith("earlier lines\n") and "<!doctype html" in text.lower()


def test_standard_output_closed_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    trace, fleet = _one_request(tmp_path)
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", "simulate", "--fleet", str(fleet), "--trace",
         str(trace), "--requests-out", "/dev/stdout"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
        preexec_fn=lambda: os.close(1),  # `>&-`
    )  # fmt: skip
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert "--requests-out" in p.stderr or "error" in p.stderr, p.stderr


def test_a_model_path_not_written_plainly_names_its_flag(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{bad")
    for given in (f"{tmp_path}/./bad.json", f"{tmp_path}//bad.json"):
        code, out = _cli("estimate", "--hardware", "h100-sxm", "--model", given)
        assert code == 2 and "field '--model'" in out, out


def test_a_hosted_api_takes_its_default_dtype_in_any_case() -> None:
    code, out = _cli("estimate", "--model", "llama-3.1-8b", "--hardware", "groq-cloud",
                     "--dtype", "BF16")  # fmt: skip
    assert code == 0, out


def test_a_bench_result_in_any_json_layout_is_replaced(tmp_path: Path) -> None:
    """`bench --out r.json` over an earlier result, compacted (`jq -c`) or as printed."""
    from wattserve.cli.common import check_writable

    earlier = tmp_path / "r.json"
    for text in ('{"date": "x", "tool": "wattserve bench"}', '{"tool":"wattserve bench"}'):
        earlier.write_text(text)
        check_writable(earlier, "--out", kind="bench")  # no error: it may be replaced
    earlier.write_text('{"hardware": {}}')  # a calibration
    with pytest.raises(ConfigError, match="not a wattserve bench result"):
        check_writable(earlier, "--out", kind="bench")
