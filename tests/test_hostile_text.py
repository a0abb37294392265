"""Lone UTF-16 surrogates: JSON's and YAML's "\\ud800" escapes decode to a Python str that no
UTF-8 text can hold, and every reader took them, so the command crashed with a traceback when it
printed or wrote the text. The readers refuse them now (a file's key or value is a ConfigError
naming the file, line and field; a trace row holding one is a malformed row, skipped and
counted), and a character written as a pair of escapes still reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wattserve import ConfigError, load_catalog
from wattserve.core.textfile import find_lone_surrogate, load_json, parse_json
from wattserve.core.traces import read_trace
from wattserve.core.yamlio import load_yaml_text

REPO = Path(__file__).resolve().parent.parent
FLEET = REPO / "examples" / "fleet-homogeneous.yaml"
DEVICE = (
    "devices:\n"
    '  "my\\ud800npu":\n'
    "    category: gpu\n"
    "    software: plugin\n"
    "    maturity: pilot\n"
    "    source: datasheet\n"
    "    memory_gb: 80\n"
    "    mem_bw_gbps: 3000\n"
    "    peak_tflops: {bf16: 900}\n"
    "    tdp_w: 700\n"
)
ROW = '{"arrival_s": %d, "prompt_tokens": 200, "output_tokens": 5%s}\n'


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: its stdout and stderr are real UTF-8 streams."""
    return subprocess.run(
        [sys.executable, "-m", "wattserve", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def refused(p: subprocess.CompletedProcess[str], where: str, says: str) -> None:
    """One error line naming the file, line and field, and no traceback."""
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"error: {where}: {says}"), p.stderr
    assert "lone UTF-16 surrogate" in p.stderr


# -- the commands the probe crashed ------------------------------------------------------------


def test_a_calibration_source_holding_a_surrogate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(
        '{"version": 1,\n "hardware": {"h100-sxm": {"source": "\\ud800"}}}\n'
    )
    p = cli("estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
            "--calibration", "s.json", cwd=tmp_path)  # fmt: skip
    refused(p, "s.json:2, field 'hardware.h100-sxm.source'", "'\\ud800' holds U+D800")


@pytest.mark.parametrize("report", [False, True], ids=["text", "report"])
def test_a_hardware_file_device_id_holding_a_surrogate_is_refused(
    tmp_path: Path, report: bool
) -> None:
    (tmp_path / "f.yaml").write_text(DEVICE)
    extra = ["--report", "r.html"] if report else []
    p = cli("rank", "--model", "llama-3.1-8b", "--hardware-file", "f.yaml", *extra, cwd=tmp_path)
    refused(p, "f.yaml:2, field 'devices'", "the key 'my\\ud800npu' holds U+D800")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("through", ["trace", "workload"])
def test_trace_rows_holding_a_surrogate_are_skipped_and_counted(
    tmp_path: Path, through: str
) -> None:
    (tmp_path / "t.jsonl").write_text(
        ROW % (0, "")
        + ROW % (1, ', "model": "\\ud800"')
        + ROW % (2, ', "origin": "dc\\udfffeast"')
        + ROW % (3, ', "origin": "\\ud83c\\udfe0"')  # a pair: one character (U+1F3E0), kept
    )
    (tmp_path / "w.yaml").write_text("trace: t.jsonl\n")
    trace = "t.jsonl" if through == "trace" else "w.yaml"
    p = cli("simulate", "--fleet", str(FLEET), "--trace", trace, "--model", "llama-3.1-8b",
            "--requests-out", "r.jsonl", "--json", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    summary = json.loads(p.stdout)
    assert summary["bad_trace_rows"] == 2 and summary["requests"] == 2
    (row2, why2), (row3, why3) = summary["bad_trace_row_examples"]
    assert (row2, row3) == (2, 3)
    assert why2.startswith("malformed row: model: '\\ud800' holds U+D800")
    assert why3.startswith("malformed row: origin: 'dc\\udfffeast' holds U+DFFF")
    written = (tmp_path / "r.jsonl").read_bytes().decode("utf-8")  # strict: no surrogate
    assert [json.loads(line)["row"] for line in written.splitlines()] == [1, 4]


def test_a_fleet_name_holding_a_surrogate_is_refused(tmp_path: Path) -> None:
    text = FLEET.read_text().replace("name: homogeneous-h100", 'name: "sm\\ud800all"')
    (tmp_path / "f.yaml").write_text(text)
    line = text[: text.index("name:")].count("\n") + 1
    (tmp_path / "t.jsonl").write_text(ROW % (0, ""))
    p = cli("simulate", "--fleet", "f.yaml", "--trace", "t.jsonl", "--model", "llama-3.1-8b",
            "--report", "r.html", cwd=tmp_path)  # fmt: skip
    refused(p, f"f.yaml:{line}, field 'name'", "'sm\\ud800all' holds U+D800")
    assert not (tmp_path / "r.html").exists()


# -- the JSON reader ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "field", "says"),
    [
        ('"\\ud800"', 1, None, "'\\ud800' holds U+D800"),
        ('{"\\udc00x": 1}', 1, None, "the key '\\udc00x' holds U+DC00"),
        ('{"a": [1,\n {"b": "\\uDBFF"}]}', 2, "a[1].b", "'\\udbff' holds U+DBFF"),
        ('{"a": {"k\\ud800": 1}}', 1, "a", "the key 'k\\ud800' holds U+D800"),
        ('{"a":\n\n "\\ude00\\ud83d"}', 3, "a", "'\\ude00\\ud83d' holds U+DE00"),  # reversed
        ('["\\ud83d\\ud83d\\ude00"]', 1, "[0]", "'\\ud83d\U0001f600' holds U+D83D"),
        ('["\\\\ud83d\\ude00"]', 1, "[0]", "'\\\\ud83d\\ude00' holds U+DE00"),  # `\\` is text
    ],
)
def test_json_text_holding_a_surrogate_names_the_line_and_field(
    text: str, line: int, field: str | None, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_json(text, "x.json")
    assert (err.value.path, err.value.line, err.value.field) == ("x.json", line, field)
    assert err.value.detail.startswith(says)
    str(err.value).encode("utf-8")  # the message itself prints


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"\\ud83d\\ude00"', "\U0001f600"),
        ('"\\uD83D\\uDE00\\ud83d\\ude00"', "\U0001f600" * 2),
        ('"\\\\ud800"', "\\ud800"),  # an escaped backslash: text, not an escape
        ('"\\\\\\ud83d\\ude00"', "\\\U0001f600"),
        ('"caf\\u00e9"', "café"),
    ],
)
def test_json_characters_written_as_escapes_still_read(text: str, value: str) -> None:
    assert parse_json(text, "x.json") == value


def test_json_line_counts_from_the_texts_first_line() -> None:
    with pytest.raises(ConfigError) as err:
        load_json('{"a": 1,\n "b": "\\ud800"}', "t.jsonl", 40)
    assert (err.value.line, err.value.field) == (41, "b")


def test_a_surrogate_nested_deep_is_found_without_recursion() -> None:
    text = "[" * 900 + '"\\ud800"' + "]" * 900
    with pytest.raises(ConfigError) as err:
        parse_json(text, "x.json")
    field = err.value.field
    assert field is not None and field.endswith("[0][0]") and len(field) <= 200


def test_trace_rows_keep_their_numbers_and_say_which_field(tmp_path: Path) -> None:
    t = tmp_path / "t.jsonl"
    t.write_text(
        ROW % (0, "")
        + ROW % (1, ', "slo": "\\ud800"')
        + '{"timestamp": 5, "input_length": 9, "output_length": 2, "\\ud800": 1}\n'
        + ROW % (3, "")
    )
    good, bad = read_trace(t)
    assert [r.row for r in good] == [1, 4]
    assert [(row, why.split(" holds ")[0]) for row, why in bad] == [
        (2, "malformed row: slo: '\\ud800'"),
        (3, "malformed row: the key '\\ud800'"),
    ]


# -- the YAML reader ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "field", "says"),
    [
        ('a: 1\nids: ["ok", "\\ud800"]\n', 2, "ids[1]", "'\\ud800' holds U+D800"),
        ('a: "\\U0000dfff"\n', 1, "a", "'\\udfff' holds U+DFFF"),
        ('a: "\\ud83d\\ude00"\n', 1, "a", "'\\ud83d\\ude00' holds U+D83D"),  # YAML joins none
        ('a:\n  - b: 1\n  - c: x\n    "d\\udc00": 2\n', 4, "a[1]", "the key 'd\\udc00'"),
        ('base: &b {c: "\\udc00"}\nd:\n  <<: *b\n', 1, "base.c", "'\\udc00' holds U+DC00"),
        ('a: 1\nb: !!set {"\\ud800"}\n', 2, "b[0]", "'\\ud800' holds U+D800"),
        ('"\\ud800"\n', None, None, "'\\ud800' holds U+D800"),
    ],
)
def test_yaml_text_holding_a_surrogate_names_the_line_and_field(
    text: str, line: int | None, field: str | None, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_yaml_text(text, "x.yaml")
    assert (err.value.path, err.value.line, err.value.field) == ("x.yaml", line, field)
    assert err.value.detail.startswith(says)
    assert "\\U0001F600" in err.value.detail  # how YAML writes a character past U+FFFF
    str(err.value).encode("utf-8")


def test_yaml_characters_written_as_escapes_still_read() -> None:
    text = "a: \"\\U0001F600 caf\\u00e9\"\nb: '\\ud800'\n"  # single quotes: no escapes
    assert load_yaml_text(text, "x.yaml") == {"a": "\U0001f600 café", "b": "\\ud800"}


def test_a_hardware_file_value_holding_a_surrogate_names_its_field(tmp_path: Path) -> None:
    f = tmp_path / "hw.yaml"
    f.write_text(DEVICE.replace('"my\\ud800npu"', "npu").replace("datasheet", '"d\\ud800"'))
    with pytest.raises(ConfigError) as err:
        load_catalog([f])
    assert (err.value.path, err.value.line, err.value.field) == (str(f), 6, "devices.npu.source")


def test_find_lone_surrogate_walks_in_document_order() -> None:
    assert find_lone_surrogate({"a": "ok", "b": ["x", {"c": 1}], "d": "fine"}) is None
    found = find_lone_surrogate({"a": ["x", "\ud800"], "\udc00": "y"})
    assert found is not None and (found.at, found.is_key) == (("a", 1), False)
    shared = {"v": "\ud800"}
    found = find_lone_surrogate({"one": shared, "two": shared})  # a YAML alias: walked once
    assert found is not None and found.field == "one.v"
