"""Hostile trace, workload and fleet files: each a clear error naming the file, line and field,
or a bad row skipped, counted and reported with its row number; never a traceback or a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wattserve import ConfigError
from wattserve.core.fleet import load_fleet
from wattserve.core.traces import MAX_BAD_ROWS_KEPT, MAX_TRACE_BYTES
from wattserve.core.workload import Workload, load_workload

REPO = Path(__file__).resolve().parent.parent
HOMOGENEOUS = REPO / "examples" / "fleet-homogeneous.yaml"
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW = '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5}\n'


def load(path: Path, duration_s: float | None = None, rate_scale: float = 1.0) -> Workload:
    return load_workload(
        path, default_model="llama-3.1-8b", duration_s=duration_s, rate_scale=rate_scale
    )


def simulate_cli(*args: str, fleet: Path = HOMOGENEOUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattserve", "simulate", "--fleet", str(fleet), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- trace files: read as bounded regular UTF-8 files --------------------------------------


def test_cli_trace_dev_zero_is_refused_not_read_forever() -> None:
    p = simulate_cli("--trace", "/dev/zero")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "/dev/zero" in p.stderr and "not a regular file" in p.stderr


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        path = tmp_path / "t.csv"
        os.mkfifo(path)  # opening it would wait for a writer for ever
    elif kind == "directory":
        path = tmp_path / "t.jsonl"
        path.mkdir()
    else:  # sparse: a gigabyte that takes no disk
        path = tmp_path / "t.csv"
        with path.open("wb") as f:
            f.truncate(1 << 30)
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [("fifo", "not a regular file"), ("directory", "not a regular file"), ("sparse", "larger")],
)
def test_special_and_huge_trace_files_are_refused(tmp_path: Path, kind: str, says: str) -> None:
    path = _special(tmp_path, kind)
    with pytest.raises(ConfigError, match=says) as err:
        load(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_workload_file_naming_a_special_trace_is_refused(tmp_path: Path, target: str) -> None:
    if target == "fifo":
        target = str(_special(tmp_path, "fifo"))
    w = tmp_path / "w.yaml"
    w.write_text(f"trace: {target}\n")
    with pytest.raises(ConfigError, match="not a regular file") as err:
        load(w)
    assert err.value.path == target


def test_a_missing_trace_names_the_workload_file_and_its_field(tmp_path: Path) -> None:
    """It used to name only the resolved trace path, not the file that named it."""
    w = tmp_path / "w.yaml"
    w.write_text("slos: {default: {ttft_s: 2}}\ntrace: nosuch.csv\n")
    with pytest.raises(ConfigError, match="no such trace file") as err:
        load(w)
    assert (err.value.path, err.value.line, err.value.field) == (str(w), 2, "workload.trace")
    assert str(tmp_path / "nosuch.csv") in str(err.value)  # resolved beside the workload


def test_latin1_trace_names_the_line(tmp_path: Path) -> None:
    t = tmp_path / "t.csv"
    t.write_bytes(
        (HEADER + "2023-11-16 18:15:46,1,1\n2023-11-16 18:15:47,caf\xe9,1\n").encode("latin-1")
    )
    with pytest.raises(ConfigError, match="not UTF-8") as err:
        load(t)
    assert (err.value.path, err.value.line) == (str(t), 3)


def test_published_traces_fit_the_size_limit(shared: Path) -> None:
    for trace in (shared / "traces").glob("*.csv"):
        assert trace.stat().st_size < MAX_TRACE_BYTES // 32
        wl = load(trace)
        assert wl.requests and not wl.bad_rows


# -- Azure CSV ---------------------------------------------------------------------------------


def test_azure_csv_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    t = tmp_path / "t.csv"
    t.write_text("\ufeff" + HEADER + "2023-11-16 18:15:46.6805900,374,44\n", encoding="utf-8")
    wl = load(t)
    assert [(r.row, r.prompt_tokens) for r in wl.requests] == [(2, 374)]


def test_azure_mixed_time_zones_are_bad_rows(tmp_path: Path) -> None:
    t = tmp_path / "t.csv"
    t.write_text(
        HEADER + "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16T18:17:04+00:00,10,10\n"
        "2023-11-16 18:15:48.0000000,100,20\n"
    )
    wl = load(t)
    assert [r.row for r in wl.requests] == [2, 4]
    assert [row for row, _ in wl.bad_rows] == [3]
    assert "time zone" in wl.bad_rows[0][1]


def test_azure_rows_out_of_order_are_sorted_from_the_earliest(tmp_path: Path) -> None:
    t = tmp_path / "t.csv"
    t.write_text(
        HEADER + "2023-11-16 18:00:10,1,1\n"
        "2023-11-16 18:00:00,2,2\n"  # before the first row: used to arrive at -10 s
        "2023-11-16 18:01:00,3,3\n"  # outside a 30 s window: used to end the read there
        "2023-11-16 18:00:20,4,4\n"
        "2023-11-16 18:00:10,5,5\n"
    )
    wl = load(t, duration_s=30)
    got = [(r.row, r.arrival_s, r.prompt_tokens) for r in wl.requests]
    assert got == [(3, 0.0, 2), (2, 10.0, 1), (6, 10.0, 5), (5, 20.0, 4)]


def test_azure_duplicated_column_is_named(tmp_path: Path) -> None:
    t = tmp_path / "t.csv"
    t.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens,ContextTokens\n2023-11-16 18:00:10,1,1,9\n"
    )
    with pytest.raises(ConfigError, match="'ContextTokens' is given twice") as err:
        load(t)
    assert (err.value.path, err.value.line) == (str(t), 1)


@pytest.mark.parametrize("count", ["1_000", "\u0661\u0662", "+5", "1e3", "99999999999"])
def test_azure_counts_are_ascii_digits_in_range(tmp_path: Path, count: str) -> None:
    t = tmp_path / "t.csv"
    t.write_text(HEADER + f"2023-11-16 18:00:10,{count},1\n2023-11-16 18:00:11,7,1\n")
    wl = load(t)
    assert [r.row for r in wl.requests] == [3]
    assert [(row, "ContextTokens" in why) for row, why in wl.bad_rows] == [(2, True)]


def test_azure_field_past_the_csv_limit_is_a_bad_row(tmp_path: Path) -> None:
    t = tmp_path / "t.csv"
    t.write_text(HEADER + f"2023-11-16 18:00:10,{'9' * 200_000},1\n2023-11-16 18:00:11,7,1\n")
    wl = load(t)
    assert [r.row for r in wl.requests] == [3] and wl.bad_rows[0][0] == 2


# -- JSONL and Mooncake ------------------------------------------------------------------------

HUGE = "1" + "0" * 400  # an integer literal past float range


@pytest.mark.parametrize(
    ("row", "says"),
    [
        (f'{{"arrival_s": {HUGE}, "prompt_tokens": 1, "output_tokens": 1}}', "arrival_s"),
        (f'{{"timestamp": {HUGE}, "input_length": 1, "output_length": 1}}', "timestamp"),
        ('{"arrival_s": true, "prompt_tokens": 1, "output_tokens": 1}', "arrival_s"),
        ('{"arrival_s": "1_0", "prompt_tokens": 1, "output_tokens": 1}', "arrival_s"),
        ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "origin": {"a": 1}}', "origin"),
        ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "origin": [1]}', "origin"),
        ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "model": 7}', "model"),
        (
            '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "slo": null, "local_only": '
            '"false"}',
            "local_only",
        ),
        (f'{{"arrival_s": 0, "prompt_tokens": {2**64}, "output_tokens": 1}}', "prompt_tokens"),
        ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1e300}', "output_tokens"),
        ('{"timestamp": 0, "input_length": 1, "output_length": 18446744073709551616}', "output"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_jsonl_bad_rows_are_counted_with_their_field(tmp_path: Path, row: str, says: str) -> None:
    t = tmp_path / "t.jsonl"
    t.write_text(ROW + row + "\n" + ROW)
    wl = load(t)
    assert [r.row for r in wl.requests] == [1, 3]
    assert len(wl.bad_rows) == 1 and wl.bad_rows[0][0] == 2
    assert says in wl.bad_rows[0][1] and len(wl.bad_rows[0][1]) < 300


@pytest.mark.parametrize(
    ("name", "head", "bad"), [("t.jsonl", "", "x\n"), ("t.csv", HEADER, "a\n")]
)
def test_every_bad_row_is_counted_but_only_the_first_are_kept(
    tmp_path: Path, name: str, head: str, bad: str
) -> None:
    # a 64 MiB file of two-byte bad lines kept all 33 million (7.5 GB) to print ten of them
    t = tmp_path / name
    good = ROW if name.endswith(".jsonl") else "2023-11-16 18:15:46,10,5\n"
    n = MAX_BAD_ROWS_KEPT + 500
    t.write_text(head + bad * n + good)
    wl = load(t)
    assert len(wl.requests) == 1 and wl.bad_rows.total == n
    first = 2 if head else 1
    assert [row for row, _ in wl.bad_rows[:3]] == [first, first + 1, first + 2]
    assert len(wl.bad_rows) == len(list(wl.bad_rows)) == MAX_BAD_ROWS_KEPT  # what is held


def test_jsonl_local_only_is_a_json_boolean(tmp_path: Path) -> None:
    t = tmp_path / "t.jsonl"
    t.write_text(
        '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "local_only": false}\n'
        '{"arrival_s": 1, "prompt_tokens": 1, "output_tokens": 1, "local_only": true}\n'
    )
    assert [r.local_only for r in load(t).requests] == [False, True]


def test_jsonl_slo_the_workload_does_not_define_is_a_bad_row(tmp_path: Path) -> None:
    t = tmp_path / "t.jsonl"
    rows = [{"arrival_s": i, "prompt_tokens": 1, "output_tokens": 1} for i in range(3)]
    slos = [{}, {"slo": "chat"}, {"slo": "chta"}]
    t.write_text("".join(json.dumps(r | s) + "\n" for r, s in zip(rows, slos, strict=True)))
    w = tmp_path / "w.yaml"
    w.write_text("trace: t.jsonl\nslos:\n  chat: {ttft_s: 1}\n")
    wl = load(w)
    assert [(r.row, r.slo) for r in wl.requests] == [(1, "default"), (2, "chat")]
    assert [row for row, _ in wl.bad_rows] == [3] and "'chta'" in wl.bad_rows[0][1]
    # A bare trace defines no SLOs: its names fall back to the default, as documented.
    assert [r.slo for r in load(t).requests] == ["default", "chat", "chta"]


# -- workload files: generators, lengths, classes -------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "field"),
    [
        ("generator:\n  kind: gamma\n  cv: 1e-200\n", 3, "generator.cv"),
        ("generator:\n  kind: gamma\n  cv: 1e200\n", 3, "generator.cv"),
        ("generator:\n  kind: diurnal\n  period_s: 5e-324\n", 3, "generator.period_s"),
        ("generator:\n  prompt_tokens: {dist: lognormal, mean: 1e300}\n", 2,
         "generator.prompt_tokens.mean"),
        ("generator:\n  prompt_tokens: {dist: lognormal, sigma: 1e200}\n", 2,
         "generator.prompt_tokens.sigma"),
        ("generator:\n  output_tokens: {dist: fixed}\n", 2, "generator.output_tokens.dist"),
        ("generator:\n  output_tokens: {dist: uniform, max: 99999999999}\n", 2,
         "generator.output_tokens.max"),
        ("generator:\n  output_tokens: 18446744073709551616\n", 2, "generator.output_tokens"),
        ("trace: t.csv\ngenerator: {kind: poisson}\n", 2, "workload.generator"),
        ("generator: {}\nslos:\n  a: {percentile: 1e-300}\n", 3, "slos.a.percentile"),
        ("generator: {}\nslos:\n  a: {percentile: 101}\n", 3, "slos.a.percentile"),
        ("generator: {}\nslos:\n  a: {ttft_s: 1e308}\n", 3, "slos.a.ttft_s"),
        ("generator: {}\nslos:\n  a: {tpot_s: 86401}\n", 3, "slos.a.tpot_s"),
        ("generator: {}\nclasses:\n  - origins: {dc-east: .nan}\n", 3, "classes[0].origins"),
        ("generator: {}\nclasses:\n  - origins: {a: 1e308, b: 1e308}\n", 3, "classes[0].origins"),
        (f"generator: {{}}\nclasses:\n  - origins: {{a: {HUGE}}}\n", 3, "classes[0].origins"),
        ("generator: {}\nclasses:\n  - {weight: 1e308}\n  - {weight: 1e308}\n", 2, "classes"),
        ("generator: {}\nclasses:\n  - {weight: .inf}\n", 3, "classes[0].weight"),
    ],
)  # fmt: skip
def test_absurd_workload_fields_are_refused(
    tmp_path: Path, body: str, line: int, field: str
) -> None:
    w = tmp_path / "w.yaml"
    w.write_text(body)
    (tmp_path / "t.csv").write_text(HEADER + "2023-11-16 18:00:10,1,1\n")
    with pytest.raises(ConfigError) as err:
        load(w)
    assert (err.value.path, err.value.line, err.value.field) == (str(w), line, field)


def test_cli_duration_caps_what_a_generator_makes(tmp_path: Path) -> None:
    w = tmp_path / "w.yaml"
    # 19.9M requests: just under the limit; --duration 0.01 keeps about 1,000 of them.
    w.write_text("generator: {rate_rps: 100000, duration_s: 199, prompt_tokens: 100}\n")
    p = simulate_cli("--trace", str(w), "--duration", "0.01", "--json")
    assert p.returncode == 0, p.stderr
    assert 800 < json.loads(p.stdout)["requests"] < 1200
    assert 800 < len(load(w, duration_s=0.005, rate_scale=2.0).requests) < 1200
    w.write_text("generator: {rate_rps: 100000, duration_s: 201}\n")  # uncapped: the limit holds
    with pytest.raises(ConfigError, match="20,000,000") as err:
        load(w)
    assert err.value.field == "generator.rate_rps"


# -- fleet files -------------------------------------------------------------------------------

SITE = "sites:\n  s: {kind: datacenter%s}\n"
DEPLOYMENT = "deployments:\n  a: {site: s, model: llama-3.1-8b, hardware: h100-sxm%s}\n"
PROVIDER = (
    "providers:\n  p:\n    site: s\n    model: acme-1\n    usd_per_mtok_input: 1\n"
    "    usd_per_mtok_output: 1\n    backend: {kind: openai, url: 'http://x'}\n    %s\n"
)


@pytest.mark.parametrize(
    ("body", "line", "field"),
    [
        (SITE % "" + PROVIDER % "ttft_s: 1e300", 10, "providers.p.ttft_s"),
        (SITE % "" + PROVIDER % "ttft_s: .inf", 10, "providers.p.ttft_s"),
        (SITE % "" + PROVIDER % "output_tokens_per_s: 1e-300", 10,
         "providers.p.output_tokens_per_s"),
        (SITE % "" + PROVIDER % "output_tokens_per_s: 0", 10, "providers.p.output_tokens_per_s"),
        # 1e308 $/1M tokens made simulate's dollars inf ("the result's usd came out as inf")
        (SITE % "" + PROVIDER % "joules_per_token: 1e308", 10, "providers.p.joules_per_token"),
        ("sites:\n  s: {kind: datacenter}\nproviders:\n  p:\n    site: s\n    model: acme-1\n"
         "    usd_per_mtok_input: 1e308\n    usd_per_mtok_output: 1\n"
         "    backend: {kind: openai, url: 'http://x'}\n", 7, "providers.p.usd_per_mtok_input"),
        (SITE % ", pue: 0.5" + DEPLOYMENT % "", 2, "sites.s.pue"),
        (SITE % ", pue: .inf" + DEPLOYMENT % "", 2, "sites.s.pue"),
        (SITE % ", carbon_g_per_kwh: .inf" + DEPLOYMENT % "", 2, "sites.s.carbon_g_per_kwh"),
        (SITE % ", power_cap_w: .inf" + DEPLOYMENT % "", 2, "sites.s.power_cap_w"),
        (SITE % ", power_cap_w: .nan" + DEPLOYMENT % "", 2, "sites.s.power_cap_w"),
        ("sites:\n  s: {}\n  t: {}\nlinks:\n  - {between: [s, t], bandwidth_gbps: 0}\n"
         + DEPLOYMENT % "", 5, "links[0].bandwidth_gbps"),
        ("sites:\n  s: {}\n  t: {}\nlinks:\n  - {between: [s, t], rtt_ms: 1e12}\n"
         + DEPLOYMENT % "", 5, "links[0].rtt_ms"),
        ("default_rtt_ms: 1e300\n" + SITE % "" + DEPLOYMENT % "", 1, "fleet.default_rtt_ms"),
        (SITE % "" + DEPLOYMENT % ", tp: 3", 4, "deployments.a.tp"),
        # 1e308 g/kWh made simulate --json's carbon infinite: a traceback, not JSON
        (SITE % ", carbon_g_per_kwh: 1e308" + DEPLOYMENT % "", 2, "sites.s.carbon_g_per_kwh"),
        (SITE % ", electricity_usd_per_kwh: 1e308" + DEPLOYMENT % "", 2,
         "sites.s.electricity_usd_per_kwh"),
        ("sites:\n  s: {}\nlinks:\n  - {between: [s, s], rtt_ms: 5}\n" + DEPLOYMENT % "", 4,
         "links[0].between"),
        # a pair linked twice: one of the two was used and the other ignored, unsaid
        ("sites:\n  s: {}\n  t: {}\nlinks:\n  - {between: [s, t], rtt_ms: 5}\n"
         "  - {between: [t, s], rtt_ms: 500}\n" + DEPLOYMENT % "", 6, "links[1].between"),
        ("name: {a: 1}\n" + SITE % "" + DEPLOYMENT % "", 1, "fleet.name"),
    ],
)  # fmt: skip
def test_absurd_fleet_fields_name_file_line_and_field(
    tmp_path: Path, body: str, line: int, field: str
) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_fleet(f)
    assert (err.value.path, err.value.line, err.value.field) == (str(f), line, field)
    assert str(f) in str(err.value)


def test_cli_fleet_tp_error_names_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(SITE % "" + DEPLOYMENT % ", tp: 3")
    t = tmp_path / "t.jsonl"
    t.write_text(ROW)
    p = simulate_cli("--trace", str(t), fleet=f)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{f}:4, field 'deployments.a.tp'" in p.stderr


def calibrated_fleet(tmp_path: Path, terms: dict[str, float]) -> Path:
    """A one-deployment fleet file whose calibration, c.json, holds `terms` for H100s."""
    (tmp_path / "c.json").write_text(json.dumps({"version": 1, "hardware": {"h100-sxm": terms}}))
    f = tmp_path / "f.yaml"
    f.write_text(SITE % "" + DEPLOYMENT % ", calibration: c.json")
    return f


@pytest.mark.parametrize(
    ("terms", "field"),
    [({"eff_compute": 1e-308}, "eff_compute"), ({"overhead_step_s": 1e308}, "overhead_step_s")],
    ids=["efficiency-1e-308", "overhead-1e308"],
)
def test_a_calibration_term_out_of_physical_range_is_refused_naming_it(
    tmp_path: Path, terms: dict[str, float], field: str
) -> None:
    """Terms whose steps took 1e303 s: simulate hung accounting power second by second (or
    overflowed to inf in the governor). The calibration's reader refuses them."""
    with pytest.raises(ConfigError, match="must be a number in") as err:
        load_fleet(calibrated_fleet(tmp_path, terms))
    assert (err.value.path, err.value.field) == (
        str(tmp_path / "c.json"),
        f"hardware.h100-sxm.{field}",
    )


def test_a_calibration_without_terms_for_the_deployments_hardware_is_refused(
    tmp_path: Path,
) -> None:
    """Its defaults would have stood in without a word (a profile of this CPU named on an H100
    deployment, say)."""
    (tmp_path / "c.json").write_text('{"version": 1, "hardware": {"local-cpu": {}}}')
    f = tmp_path / "f.yaml"
    f.write_text(SITE % "" + DEPLOYMENT % ", calibration: c.json")
    with pytest.raises(ConfigError, match=r"no terms for h100-sxm \(it has local-cpu\)") as err:
        load_fleet(f)
    assert (err.value.path, err.value.line, err.value.field) == (
        str(f),
        4,
        "deployments.a.calibration",
    )


def test_a_deployment_whose_steps_take_for_ever_is_refused(tmp_path: Path) -> None:
    """Terms each in range, together over a minute a step (60 s a step and 1 s a layer)."""
    f = calibrated_fleet(tmp_path, {"overhead_step_s": 60.0, "overhead_layer_s": 1.0})
    with pytest.raises(ConfigError, match="one decode step of one sequence would take") as err:
        load_fleet(f)
    assert (err.value.path, err.value.line, err.value.field) == (str(f), 4, "deployments.a")


def test_cli_a_device_of_absurdly_slow_figures_is_refused_not_simulated(tmp_path: Path) -> None:
    hw = tmp_path / "hw.yaml"  # each figure within the catalog's bounds, together 2e7 s a step
    hw.write_text(
        "devices:\n  slow:\n    category: gpu\n    software: plugin\n    maturity: pilot\n"
        "    source: s\n    memory_gb: 80\n    mem_bw_gbps: 1e-6\n"
        "    peak_tflops: {bf16: 1e-6}\n    tdp_w: 700\n"
    )
    f = tmp_path / "f.yaml"
    f.write_text(
        "hardware_files: [hw.yaml]\n" + SITE % "" + DEPLOYMENT.replace("h100-sxm", "slow") % ""
    )
    t = tmp_path / "t.jsonl"
    t.write_text(ROW)
    p = simulate_cli("--trace", str(t), fleet=f)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{f}:5, field 'deployments.a': infeasible: one decode step" in p.stderr


def test_a_loop_of_symbolic_links_is_an_error_naming_it_not_a_traceback(tmp_path: Path) -> None:
    """A loop named as an output was a RuntimeError from Path.resolve(), or replaced by a
    regular file (rank --report, plan --cache); named as an input, 'no such trace file'."""
    from typer.testing import CliRunner

    from wattserve.cli.app import app

    (tmp_path / "L1").symlink_to("L2")
    (tmp_path / "L2").symlink_to("L1")
    loop = str(tmp_path / "L1")
    wl = tmp_path / "wl.yaml"
    wl.write_text("classes:\n  - {name: a, rate_rps: 1, model: llama-3.1-8b}\n")
    plan = ["plan", "--workload", str(wl), "--hardware", "l4", "--capacity", "analytic"]
    rank = ["rank", "--model", "llama-3.1-8b", "--hardware", "l4"]
    for args, says in (
        ([*plan, "--out", loop], "field '--out': cannot write"),
        ([*plan, "--cache", loop], "field '--cache': cannot write"),
        ([*rank, "--report", loop], "field '--report': cannot write"),
        ([*rank, "--hardware-file", loop, "--report", str(tmp_path / "r.html")], "L1"),
        (["plan", "--workload", loop, "--hardware", "l4"], "symbolic links"),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert says in result.output and "Traceback" not in result.output, result.output
        assert (tmp_path / "L1").is_symlink() and (tmp_path / "L2").is_symlink()


def test_a_cap_past_any_real_site_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("sites:\n  dc: {kind: datacenter, power_cap_w: 1e308}\n")
    with pytest.raises(ConfigError, match="at most 1e\\+12 W") as err:
        load_fleet(path)
    assert err.value.field == "sites.dc.power_cap_w"
