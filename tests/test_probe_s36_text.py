"""Session 36's probes: text from a hardware file reached the terminal as written. A device's
`source` with an escape sequence set the terminal's title on every line of `catalog show` and
`estimate --explain`, a carriage return and line feed forged a line, a right-to-left override
reordered a note; a provider's `name` and `base_url` the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattserve.core.catalog import load_catalog
from wattserve.errors import ConfigError

DEVICE = """\
devices:
  my-npu:
    name: Acme
    vendor: Acme
    category: asic
    software: plugin
    maturity: pilot
    year: 2026
    source: {source}
    notes: {notes}
    memory_gb: 96
    mem_bw_gbps: 3200
    peak_tflops: {{bf16: 800}}
    tdp_w: 600
"""
PROVIDER = """\
providers:
  evil-api:
    name: {name}
    hardware: h100-sxm
    base_url: {url}
    source: s
    models:
      llama-3.1-8b: {{remote_name: x, usd_per_mtok_input: 0.1, usd_per_mtok_output: 0.2}}
"""


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text(text)
    load_catalog([path])


@pytest.mark.parametrize(
    ("source", "notes", "field", "shown"),
    [
        ('"data\\e]0;TITLE\\asheet"', "plain", "my-npu.source", "'\\x1b' at character 5"),
        ('"sheet\\r\\nFAKE LINE"', "plain", "my-npu.source", "'\\r' at character 6"),
        ("sheet", '"n\\u202etxt"', "my-npu.notes", "'\\u202e' at character 2"),
    ],
)
def test_device_text_must_be_printable(
    tmp_path: Path, source: str, notes: str, field: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, DEVICE.format(source=source, notes=notes))
    assert err.value.field == field and f"must be printable text: {shown}" in str(err.value)


def test_a_note_may_run_over_lines(tmp_path: Path) -> None:
    load(tmp_path, DEVICE.format(source="sheet", notes="|\n      line one\n      line two"))


@pytest.mark.parametrize(
    ("name", "url", "field"),
    [
        ('"Evil\\e]0;PWN\\a API"', "https://api.example.com/v1", "evil-api.name"),
        ("Evil", '"https://api.example.com/v1\\r\\nX: y"', "evil-api.base_url"),
    ],
)
def test_provider_text_must_be_printable(tmp_path: Path, name: str, url: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, PROVIDER.format(name=name, url=url))
    assert err.value.field == field and "must be printable text" in str(err.value)
    load(tmp_path, PROVIDER.format(name="Evil", url="https://api.example.com/v1"))


def test_a_cli_error_is_one_line_whatever_the_file_is_called(tmp_path: Path) -> None:
    """A file name with an escape sequence and a line break: the escape was shown escaped but
    the line break started a second line, which the name could forge."""
    from typer.testing import CliRunner

    from wattserve.cli.app import app

    bad = tmp_path / "bad\x1b]0;PWN\x07\nFAKE.csv"
    bad.write_text("not,a,measurements,file\n")
    r = CliRunner().invoke(app, ["calibrate", str(bad), "-o", str(tmp_path / "c.json")])
    assert r.exit_code == 2 and r.output.startswith("error: "), r.output
    assert r.output.count("\n") == 1 and "\x1b" not in r.output and "\\nFAKE.csv" in r.output


POLICIES = """
from wattserve.core.policy import Decision


class Evil:
    name = "ev\\x1b]0;pwn\\x07il"

    def choose(self, req, view):
        c = view.candidates(req)
        return Decision(c[0].name if c else None, "")


class Exits:
    def choose(self, req, view):
        raise SystemExit(0)
"""


def test_a_policy_of_your_own_is_shown_escaped_and_may_not_end_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy class's `name` reached simulate's table raw (an escape sequence that set the
    terminal's title); a `choose` that raised SystemExit ended simulate with status 0 and no
    report."""
    from typer.testing import CliRunner

    from wattserve.cli.app import app

    (tmp_path / "s36pols.py").write_text(POLICIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "t.jsonl").write_text('{"arrival_s": 0, "prompt_tokens": 9, "output_tokens": 9}\n')
    fleet = str(Path(__file__).parent.parent / "examples" / "fleet-homogeneous.yaml")
    run = ["simulate", "--fleet", fleet, "--trace", str(tmp_path / "t.jsonl"), "--policy"]
    r = CliRunner().invoke(app, [*run, "s36pols:Evil"])
    assert r.exit_code == 0 and "\x1b" not in r.output and "ev\\x1b]0;pwn\\x07il" in r.output
    r = CliRunner().invoke(app, [*run, "s36pols:Exits"])
    assert r.exit_code == 0 and "choose() raised SystemExit(0)" in r.output, r.output
