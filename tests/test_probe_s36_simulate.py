"""What a robustness probe of `simulate` found (2026-12-06): each case failed before its fix."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from wattserve.cli.app import app
from wattserve.core import workload as workload_module
from wattserve.core.fleet import Fleet, load_fleet
from wattserve.core.traces import MAX_LINE_CHARS, read_trace
from wattserve.core.workload import SLO, Request, Workload, load_workload
from wattserve.errors import ConfigError
from wattserve.simulate import simulate

FLEET = (
    "name: one\n"
    "sites:\n  dc: {kind: datacenter, power_cap_w: 3000}\n"
    "deployments:\n  h100: {site: dc, model: llama-3.1-8b, hardware: h100-sxm, replicas: 1}\n"
)
ROW = '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5}\n'


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    path = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    path.write_text(FLEET)
    return load_fleet(path)


def _req(i: int, arrival: Any = 0.0, prompt: Any = 10, output: Any = 5, **kw: Any) -> Request:
    return Request(i, arrival, prompt, output, kw.pop("model", "llama-3.1-8b"), **kw)


def _workload(*requests: Request) -> Workload:
    return Workload(requests=list(requests), slos={"default": SLO()})


def _cli(tmp_path: Path, trace: str, *args: str, name: str = "t.jsonl") -> tuple[int, str]:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    (tmp_path / name).write_text(trace)
    files = ["--fleet", str(tmp_path / "fleet.yaml"), "--trace", str(tmp_path / name)]
    r = CliRunner().invoke(app, ["simulate", *files, *args])
    return r.exit_code, r.output


# -- 1. the Python API checks the requests it is given ------------------------------------------


@pytest.mark.parametrize(
    ("requests", "field", "says"),
    [
        # out of arrival order: TTFT p50 came out -1.99 s
        ([_req(0, 5.0), _req(1, 1.0)], "requests[1].arrival_s", "arrival order"),
        ([_req(0, -100.0)], "requests[0].arrival_s", "from 0 to 1e+09 s"),  # served
        ([_req(0, math.inf)], "requests[0].arrival_s", "not inf"),  # ValueError in governor.py
        ([_req(0, math.nan)], "requests[0].arrival_s", "not nan"),  # "never scheduled"
        ([_req(0, "1")], "requests[0].arrival_s", "a number of seconds"),
        ([_req(0, output=0)], "requests[0].output_tokens", "from 1 to 10,000,000"),  # completed
        ([_req(0, output=-5)], "requests[0].output_tokens", "not -5"),  # negative tokens/s
        ([_req(0, prompt=-10)], "requests[0].prompt_tokens", "not -10"),  # "empty prompt"
        ([_req(0, prompt=10.5)], "requests[0].prompt_tokens", "whole number"),  # TypeError
        ([_req(0, prompt="10")], "requests[0].prompt_tokens", "not '10'"),  # TypeError
        ([_req(0, prompt=True)], "requests[0].prompt_tokens", "whole number"),
        ([_req(0, output=10**12)], "requests[0].output_tokens", "10,000,000"),
        ([_req(0), _req(1, model=None)], "requests[1].model", "not None"),  # AttributeError
        ([_req(0, local_only="false")], "requests[0].local_only", "True or False"),
        ([_req(0, origin=["dc"])], "requests[0].origin", "a site"),
        ([_req(0, slo=None)], "requests[0].slo", "an SLO class"),
    ],
)
def test_simulate_refuses_a_request_naming_its_index_and_field(
    fleet: Fleet, requests: list[Request], field: str, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        simulate(fleet, _workload(*requests))
    assert err.value.field == field
    assert says in err.value.detail
    assert "\n" not in str(err.value)


def test_simulate_refuses_what_is_not_a_request_or_a_policy(fleet: Fleet) -> None:
    with pytest.raises(ConfigError) as err:
        simulate(fleet, _workload(_req(0)), None)  # type: ignore[arg-type]
    assert err.value.field == "policy"  # AttributeError: 'NoneType' has no attribute 'name'
    with pytest.raises(ConfigError) as err:
        simulate(fleet, Workload([{"arrival_s": 0}], {"default": SLO()}))  # type: ignore[list-item]
    assert err.value.field == "requests[0]"
    with pytest.raises(ConfigError) as err:
        simulate(fleet, Workload([_req(0)], {"gold": SLO()}))
    assert err.value.field == "workload.slos"  # a KeyError in the simulator
    with pytest.raises(ConfigError) as err:
        simulate(None, _workload(_req(0)))  # type: ignore[arg-type]
    assert err.value.field == "fleet"


@pytest.mark.parametrize("limit", [0.0, -1.0, math.nan])
def test_simulate_refuses_a_queue_limit_the_cli_refuses(fleet: Fleet, limit: float) -> None:
    """0 rejected every request and NaN was taken; the CLI takes 0.001 s and up."""
    with pytest.raises(ConfigError) as err:
        simulate(fleet, _workload(_req(0)), max_queue_s=limit)
    assert err.value.field == "max_queue_s"
    report, _ = simulate(fleet, _workload(_req(0)), max_queue_s=0.001)
    assert report["requests"] == 1


def test_simulate_still_takes_what_it_took(fleet: Fleet) -> None:
    """Arrivals at one instant, int and numpy numbers, a prompt of 0 tokens (refused as vLLM
    refuses it, as docs/simulate.md says), an unknown SLO class (the default's)."""
    reqs = [
        _req(0, 0),
        _req(1, np.float64(0.5)),
        _req(2, 0.5, prompt=0),
        _req(3, 1.0, slo="gold"),
        _req(4, 1e9),
    ]
    report, _ = simulate(fleet, _workload(*reqs))
    assert report["requests"] == 5 and report["completed"] == 4
    assert report["rejected_by_reason"] == {"empty prompt": 1}


# -- 2. a workload simulate holds is bounded -----------------------------------------------------


def test_a_generator_past_what_simulate_holds_is_refused_before_it_runs(tmp_path: Path) -> None:
    """1,000,000 req/s for 20 s (the generators' 20M limit) was killed at 60 s and 2 GB."""
    w = tmp_path / "w.yaml"
    w.write_text(
        "generator: {kind: poisson, rate_rps: 1000000, duration_s: 20, prompt_tokens: 10,"
        " output_tokens: 2}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_workload(w, default_model="llama-3.1-8b")
    assert err.value.field == "generator.rate_rps" and err.value.line == 1
    assert "makes 20,000,000 requests; the limit is 5,000,000" in err.value.detail
    code, out = _cli(tmp_path, w.read_text(), name="w2.yaml")
    assert code == 2 and "the limit is 5,000,000" in out, out


def test_a_trace_past_the_limit_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(workload_module, "MAX_HELD", 2)
    (tmp_path / "t.jsonl").write_text(ROW * 3)
    with pytest.raises(ConfigError) as err:
        load_workload(tmp_path / "t.jsonl", default_model="llama-3.1-8b")
    assert "has 3 rows; the limit is 2" in str(err.value)


# -- 3. a stray Azure timestamp is the row blamed ------------------------------------------------

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_an_early_azure_outlier_is_the_malformed_row(tmp_path: Path) -> None:
    """A 1970 row made every genuine row '1.70016e+09 s after the first row' and was served
    alone."""
    t = tmp_path / "a.csv"
    t.write_text(HEADER + "2023-11-16 18:15:50.0,10,10\n1970-01-01 00:00:00,10,10\n")
    good, bad = read_trace(t)
    assert [r.row for r in good] == [2]
    assert [line for line, _ in bad] == [3] and "before" in bad[0][1]
    t.write_text(
        HEADER
        + "2023-11-16 18:15:50.0,10,10\n"
        + "1970-01-01 00:00:00,10,10\n"
        + "2023-11-16 18:15:40.0,20,20\n"
        + "2023-11-16 18:15:45.0,30,30\n"
    )
    good, bad = read_trace(t)
    assert [(r.row, r.arrival_s) for r in good] == [(4, 0.0), (5, 5.0), (2, 10.0)]
    assert [line for line, _ in bad] == [3]


# -- 4. a trace's line is bounded ----------------------------------------------------------------


def test_a_line_past_the_cap_is_refused_unparsed(tmp_path: Path) -> None:
    """A 60 MB row of an unknown field took 1.8 GB to parse and was served; a row at the cap
    takes about 6 MB."""
    long = '{"arrival_s": 1, "prompt_tokens": 10, "output_tokens": 5, "x": [' + "{}," * (
        MAX_LINE_CHARS // 3
    )
    t = tmp_path / "t.jsonl"
    t.write_text(ROW + long + "{}]}\n" + ROW)
    good, bad = read_trace(t)
    assert [r.row for r in good] == [1, 3]
    assert bad == [
        (
            2,
            f"malformed row: a line of {len(long) + 5:,} characters, over the "
            f"{MAX_LINE_CHARS:,} a trace's line may have",
        )
    ]
    hashes = ", ".join(["123456"] * 8000)  # a Mooncake row of a 4M-token prompt: 64 kB, kept
    t.write_text(
        f'{{"timestamp": 5, "input_length": 10, "output_length": 5, "hash_ids": [{hashes}]}}\n'
    )
    assert len(t.read_text()) < MAX_LINE_CHARS and len(read_trace(t)[0]) == 1
    a = tmp_path / "a.csv"
    a.write_text(HEADER + "2023-11-16 18:15:50.0,10,10\n" + "x," * MAX_LINE_CHARS + "\n")
    good, bad = read_trace(a)
    assert len(good) == 1 and [line for line, _ in bad] == [3] and "262,144" in bad[0][1]
    a.write_text(HEADER.rstrip("\n") + "," * MAX_LINE_CHARS + "\n")
    with pytest.raises(ConfigError) as err:
        read_trace(a)
    assert err.value.line == 1 and "262,144" in err.value.detail


# -- 5. messages name the file's field and line --------------------------------------------------


def test_malformed_rows_name_the_formats_field_and_the_files_line(tmp_path: Path) -> None:
    t = tmp_path / "t.jsonl"
    t.write_text(
        ROW
        + '{"prompt_tokens": 10, "output_tokens": 5}\n'  # was "needs timestamp"
        + '{"input_length": 10, "output_length": 5}\n'
        + '{"arrival_s": 1, "prompt_tokens": 10, "output_tokens": 5\n'  # was "line 2 column 1"
    )
    _, bad = read_trace(t)
    assert bad[0] == (2, "malformed row: needs arrival_s")
    assert bad[1][0] == 3 and "needs timestamp" in bad[1][1] and "Mooncake" in bad[1][1]
    assert bad[2] == (4, "malformed row: not JSON: Expecting ',' delimiter at column 57")
    a = tmp_path / "a.csv"
    a.write_text(
        HEADER + '"2023-11-16 18:15:46.68","3\n74",44\n2023-11-16 18:15:47.0,10,10\n\n'
        "2023-11-16 18:15:48.0,10,10\n"
    )
    good, bad = read_trace(a)
    assert [line for line, _ in bad] == [2]  # the record's first line, not its last (3)
    assert [r.row for r in good] == [4, 6]


# -- 6. the CLI refuses what it would ignore or reject wholesale ---------------------------------


def test_policy_and_compare_together_or_an_empty_policy_are_refused(tmp_path: Path) -> None:
    code, out = _cli(tmp_path, ROW, "--policy", "cost", "--compare", "slo", "--json")
    assert code == 2 and "field '--policy'" in out and "--compare" in out, out
    code, out = _cli(tmp_path, ROW, "--policy", "", "--json")
    assert code == 2 and "field '--policy'" in out, out  # ran least_loaded
    code, out = _cli(tmp_path, ROW, "--compare", "cost,slo", "--json")
    assert code == 0 and [s["policy"] for s in json.loads(out)] == ["cost", "slo"]


@pytest.mark.parametrize(
    ("cls", "field", "says"),
    [
        ("{model: gpt-4}", "classes[0].model", "'gpt-4': no deployment of"),
        ("{model: llama-3.1-8b, origins: {mars: 1}}", "classes[0].origins", "'mars' is no site"),
    ],
)
def test_a_class_the_fleet_cannot_serve_is_an_error(
    tmp_path: Path, cls: str, field: str, says: str
) -> None:
    """Every request was rejected and the run exited 0, where --model gpt-4 is an error."""
    (tmp_path / "t.jsonl").write_text(ROW)
    code, out = _cli(tmp_path, f"trace: t.jsonl\nclasses:\n  - {cls}\n", name="w.yaml")
    assert code == 2, out
    assert f"w.yaml:3, field '{field}': {says}" in out and len(out.strip().splitlines()) == 1
