"""Every JSON file a user names (calibrations, model configs, bench and simulate results,
request traces, the capacity cache) is parsed by core/textfile.py's load_json, and every YAML
file (fleets, workloads, sites, hardware files) by core/yamlio.py: a key given twice is an
error naming the file, the key and its lines, never the last value silently winning."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve import ConfigError, estimate, load_calibration, load_catalog, load_model
from wattserve.bench.results import load as load_result
from wattserve.cli.app import app
from wattserve.core.fleet import load_sites
from wattserve.core.textfile import load_json
from wattserve.core.workload import load_workload
from wattserve.plan.capacity import CapacityCache

REPO = Path(__file__).resolve().parent.parent
CALIBRATION = """{
  "version": 1,
  "hardware": {
    "h100-sxm": {
      "eff_memory": 0.5,
      "eff_compute": 0.6,
      "eff_memory": 0.9
    }
  }
}
"""


def test_a_calibration_giving_a_term_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    """The last eff_memory (0.9) won: the estimate was not the one the file seemed to say."""
    f = tmp_path / "c.json"
    f.write_text(CALIBRATION)
    with pytest.raises(ConfigError, match=r"'eff_memory' is given twice \(first on line 5\)") as e:
        load_calibration(f)
    assert (e.value.path, e.value.line) == (str(f), 7)
    result = CliRunner().invoke(
        app,
        ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--calibration", str(f)],
    )
    assert result.exit_code == 2 and f"{f}:7" in result.output, result.output


def test_a_model_config_giving_a_field_twice_is_refused(tmp_path: Path) -> None:
    text = (REPO / "src/wattserve/data/models/llama-3.1-8b.json").read_text()
    f = tmp_path / "config.json"
    f.write_text(text.replace("{", '{\n  "num_hidden_layers": 2,', 1))
    with pytest.raises(ConfigError, match="'num_hidden_layers' is given twice") as err:
        load_model(str(f))
    assert err.value.path == str(f) and err.value.line is not None and err.value.line > 2
    with pytest.raises(ConfigError, match="given twice"):
        estimate(str(f), "h100-sxm")


def test_a_trace_row_giving_a_field_twice_is_a_bad_row(tmp_path: Path) -> None:
    t = tmp_path / "t.jsonl"
    row = '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5}\n'
    t.write_text(row + '{"arrival_s": 1, "prompt_tokens": 10, "prompt_tokens": 9999}\n' + row)
    wl = load_workload(t, default_model="llama-3.1-8b")
    assert [r.row for r in wl.requests] == [1, 3]
    assert wl.bad_rows == [(2, "malformed row: 'prompt_tokens' is given twice (first on line 2)")]


def test_a_result_file_giving_a_figure_twice_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text('{\n"completed": 10,\n"request_throughput": 2.0,\n"completed": 99\n}\n')
    with pytest.raises(ConfigError, match=r"'completed' is given twice \(first on line 2\)") as e:
        load_result(f)
    assert (e.value.path, e.value.line) == (str(f), 4)
    lines = tmp_path / "requests.jsonl"  # simulate --requests-out: one record a line
    rec = '"id": 1, "arrival_s": 0, "prompt_tokens": 9, "output_tokens": 9, "status": "rejected",'
    rec += ' "policy": "cost"'
    lines.write_text(f'{{"row": 1, {rec}}}\n{{"row": 2, {rec}, "row": 3}}\n')
    with pytest.raises(ConfigError, match="'row' is given twice") as e:
        load_result(lines)
    assert (e.value.path, e.value.line) == (str(lines), 2)


def test_a_capacity_cache_giving_an_entry_twice_is_not_a_cache(tmp_path: Path) -> None:
    f = tmp_path / "cache.json"
    f.write_text('{"version": 1, "entries": {}, "version": 2}')
    with pytest.raises(ConfigError, match="'version' is given twice"):
        CapacityCache.load(f)


def test_keys_of_one_name_in_different_objects_are_not_twice() -> None:
    text = '{"a": {"k": 1}, "b": [{"k": 2}, {"k": 3}], "k": "{\\"k\\": 4, \\"k\\": 5}"}'
    assert load_json(text, "x.json")["b"][1] == {"k": 3}


def test_a_key_twice_at_the_end_of_a_large_file_is_found_in_seconds() -> None:
    body = ",\n".join(f'"k{i}": {{"a": 1, "b": "x,{{[]}}"}}' for i in range(200_000))
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"'k7' is given twice \(first on line 9\)") as err:
        load_json("{\n" + body + ',\n"k7": 0}', "big.json")
    assert err.value.line == 200_002
    assert time.monotonic() - start < 10


# YAML files: core/yamlio.py has refused keys given twice since the fleet file; every other
# YAML reader goes through it too


@pytest.mark.parametrize(
    ("name", "text", "line", "first"),
    [
        (
            "hw.yaml",
            "devices:\n  g:\n    name: G\n    vendor: v\n    category: gpu\n    tdp_w: 700\n"
            "    software: plugin\n    tdp_w: 70\n",
            8,
            6,
        ),
        (
            "w.yaml",
            "generator: {kind: poisson, rate_rps: 1, duration_s: 5}\nrate_rps: 2\n"
            "generator: {kind: poisson, rate_rps: 9, duration_s: 5}\n",
            3,
            1,
        ),
        ("s.yaml", "sites:\n  dc: {kind: datacenter, power_cap_w: 100, power_cap_w: 9}\n", 2, 2),
    ],
)
def test_every_yaml_reader_refuses_a_key_twice(
    tmp_path: Path, name: str, text: str, line: int, first: int
) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"given twice \(first on line {first}\)") as err:
        if name == "hw.yaml":
            load_catalog([f])
        elif name == "w.yaml":
            load_workload(f, default_model="llama-3.1-8b")
        else:
            load_sites(f)
    assert (err.value.path, err.value.line) == (str(f), line)


def test_a_calibration_of_absurdly_many_entries_is_refused(tmp_path: Path) -> None:
    """3,000,000 entries took 36 s to read, and estimate printed every name (29 MB)."""
    f = tmp_path / "c.json"
    entries = ", ".join(f'"hw{i}": {{}}' for i in range(1001))
    f.write_text('{"version": 1, "hardware": {' + entries + "}}")
    with pytest.raises(ConfigError, match="1,001 hardware entries; a calibration holds at most"):
        load_calibration(f)
    f.write_text('{"version": 1, "hardware": {' + entries.rsplit(", ", 971)[0] + "}}")
    said = estimate("llama-3.1-8b", "h100-sxm", calibration=f).assumptions[0]
    assert said.startswith("the calibration has no entry for h100-sxm (it has hw0, hw1, hw10,")
    assert "and 20 more): uncalibrated terms used" in said


def test_a_look_alike_id_in_a_calibration_is_shown_escaped(tmp_path: Path) -> None:
    """A Cyrillic `һ100-sxm` entry: estimate said `no entry for h100-sxm (it has һ100-sxm)`,
    two ids that print alike."""
    f = tmp_path / "c.json"
    f.write_text('{"version": 1, "hardware": {"\u04bb100-sxm": {}}}')
    said = estimate("llama-3.1-8b", "h100-sxm", calibration=f).assumptions[0]
    assert "(it has '\\u04bb100-sxm')" in said, said
