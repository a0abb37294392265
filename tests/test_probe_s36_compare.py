"""`wattserve compare` against hostile result files (a robustness probe's finds, 2026-12-06):
per-request lists bounded and cross-checked as a requests file's lines are, simulate's
percentiles and counts held to what simulate writes, and `--policy` refused where no file
holds a policy. Real files (bench, simulate --json, --requests-out) stay accepted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result as Result_
from typer.testing import CliRunner

from wattserve.cli.app import app

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "tests" / "data" / "sim_to_real_runs" / "AA"
BENCH = RUNS / "light-direct.json"  # a real bench --json result, 20 requests
REAL = json.loads(BENCH.read_text())


def run_compare(*args: str) -> Result_:
    return CliRunner().invoke(app, ["compare", *args])


def refused(r: Result_, path: Path, field: str, line: int | None = None) -> None:
    """One line `error: FILE[:LINE], field 'FIELD': ...` and exit 2."""
    where = str(path) if line is None else f"{path}:{line}"
    assert r.exit_code == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "\n" not in err and err.startswith(f"error: {where}, field '{field}': "), err
    assert r.exception is None or isinstance(r.exception, SystemExit)


def bench(tmp_path: Path, name: str = "b.json", **edits: Any) -> Path:
    """The real bench result with `edits` applied: `key=value`, or `key=(index, value)` to set
    one entry of a list."""
    raw = json.loads(json.dumps(REAL))
    for key, value in edits.items():
        if isinstance(value, tuple):
            raw[key][value[0]] = value[1]
        else:
            raw[key] = value
    out = tmp_path / name
    out.write_text(json.dumps(raw))
    return out


VLLM_N = 20


def vllm(tmp_path: Path, **edits: Any) -> Path:
    """A `vllm bench serve --save-result` file of 20 requests (with its per-request lists)."""
    raw: dict[str, Any] = {
        "backend": "vllm", "model_id": "m", "num_prompts": VLLM_N, "duration": 10.0,
        "completed": VLLM_N, "total_input_tokens": 2000, "total_output_tokens": 400,
        "request_throughput": 2.0, "output_throughput": 40.0,
        "mean_ttft_ms": 30.0, "median_ttft_ms": 30.0, "p90_ttft_ms": 40.0, "p99_ttft_ms": 45.0,
        "mean_tpot_ms": 20.0, "median_tpot_ms": 20.0, "p90_tpot_ms": 21.0, "p99_tpot_ms": 22.0,
        "mean_itl_ms": 20.0, "median_itl_ms": 20.0, "p90_itl_ms": 21.0, "p99_itl_ms": 22.0,
        "mean_e2el_ms": 410.0, "median_e2el_ms": 410.0, "p90_e2el_ms": 420.0,
        "p99_e2el_ms": 430.0,
        # the lengths of BENCH's requests: the same trace, as compare expects
        "input_lens": REAL["input_lens"], "output_lens": REAL["output_lens"],
        "ttfts": [0.03] * VLLM_N, "itls": [[0.02] * 19 for _ in range(VLLM_N)],
        "errors": [""] * VLLM_N,
    }  # fmt: skip
    for key, value in edits.items():
        raw[key] = value
    out = tmp_path / "vllm.json"
    out.write_text(json.dumps(raw))
    return out


def sim_entry(policy: Any = "cost", **edits: Any) -> dict[str, Any]:
    """One `simulate --json` result, as simulate writes it (the fields compare reads)."""
    return {
        "policy": policy, "requests": 20, "completed": 19, "rejected": 1,
        "ttft_s": {"p50": 0.02, "p90": 0.03, "p99": 0.04},
        "tpot_s": {"p50": 0.01, "p90": 0.012, "p99": 0.013},
        "e2e_s": {"p50": 0.3, "p90": 0.4, "p99": 0.5},
        "slo_attainment": 0.9, "output_tokens": 400, "output_tokens_per_s": 40.0,
        "span_s": 10.0, "energy_j_per_token": 0.5, "usd_per_mtok": 1.0, **edits,
    }  # fmt: skip


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def record(i: int, **fields: Any) -> dict[str, Any]:
    """One `simulate --requests-out` line of status ok, with the latencies its times give."""
    arrival, first, end, out = 0.5 * i, 0.5 * i + 0.02, 0.5 * i + 0.3, 15
    rec = {
        "id": i, "row": i + 1, "policy": "cost", "arrival_s": arrival, "admitted_s": arrival,
        "first_token_s": first, "end_s": end, "prompt_tokens": 100, "output_tokens": out,
        "target": "d/0", "site": "dc", "preemptions": 0, "status": "ok", "reason": "",
        "ttft_s": first - arrival, "tpot_s": (end - first) / (out - 1), "e2e_s": end - arrival,
    }  # fmt: skip
    return {**rec, **fields}


def lines(path: Path, records: list[dict[str, Any]]) -> Path:
    # allow_nan: json.dumps writes NaN and Infinity, as a hand edit or another tool might
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- 1. bench's per-request lists: bounded and cross-checked ---------------------------------


def test_a_bench_ttft_past_1e9_s_is_refused(tmp_path: Path) -> None:
    a = bench(tmp_path, ttfts=(0, 1e300))
    refused(run_compare(str(a), str(BENCH)), a, "ttfts[0]")


def test_a_bench_e2e_past_1e9_s_is_refused(tmp_path: Path) -> None:
    a = bench(tmp_path, e2els=(4, 2e9))
    refused(run_compare(str(BENCH), str(a)), a, "e2els[4]")


@pytest.mark.parametrize("e2e", [0.0, 0.01])
def test_a_bench_request_ending_before_its_first_token_is_refused(
    tmp_path: Path, e2e: float
) -> None:
    # was: 0.0 read as "no figure", the pair silently left out of TPOT and E2E
    a = bench(tmp_path, e2els=(1, e2e))
    r = run_compare(str(a), str(BENCH))
    refused(r, a, "e2els[1]")
    assert "ttfts[1]" in r.stderr


def test_a_trace_row_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    # was: read as 0 (no row), so the file paired by position without a word
    a = bench(tmp_path, trace_rows=(2, "3"))
    refused(run_compare(str(a), str(BENCH)), a, "trace_rows[2]")


# -- 2. simulate --json ------------------------------------------------------------------------


def test_a_simulated_percentile_past_1e9_s_is_refused(tmp_path: Path) -> None:
    s = write(tmp_path / "s.json", sim_entry(ttft_s={"p50": 1e300, "p90": 1e300, "p99": 1e300}))
    refused(run_compare(str(BENCH), str(s)), s, "ttft_s.p50")


def test_simulated_percentiles_out_of_order_are_refused(tmp_path: Path) -> None:
    s = write(tmp_path / "s.json", sim_entry(e2e_s={"p50": 0.3, "p90": 0.4, "p99": 0.2}))
    r = run_compare(str(BENCH), str(s))
    refused(r, s, "e2e_s.p99")
    assert "e2e_s.p90" in r.stderr


def test_more_completed_than_simulated_is_refused(tmp_path: Path) -> None:
    s = write(tmp_path / "s.json", sim_entry(completed=120, rejected=0))
    refused(run_compare(str(BENCH), str(s)), s, "completed")
    s = write(tmp_path / "s.json", sim_entry(completed=19, rejected=5))
    refused(run_compare(str(BENCH), str(s)), s, "rejected")


def test_a_policy_simulated_twice_in_one_list_is_refused(tmp_path: Path) -> None:
    s = write(tmp_path / "s.json", [sim_entry("cost"), sim_entry("energy"), sim_entry("cost")])
    r = run_compare(str(BENCH), str(s))
    refused(r, s, "[2].policy")
    assert "'cost' is also the policy of entry 0" in r.stderr


@pytest.mark.parametrize("policy", [None, 3, ""])
def test_a_simulate_result_without_a_policy_name_is_refused(tmp_path: Path, policy: Any) -> None:
    s = write(tmp_path / "s.json", [sim_entry(policy), sim_entry("energy")])
    refused(run_compare(str(BENCH), str(s)), s, "[0].policy")  # was shown as "simulate:None"
    one = write(tmp_path / "one.json", sim_entry(policy))
    refused(run_compare(str(BENCH), str(one)), one, "policy")


def test_a_huge_error_is_printed_in_a_few_digits(tmp_path: Path) -> None:
    # J/token of 1e-300 against 1e6: an error of 1e306, finite, once printed as 308 digits
    a = write(tmp_path / "a.json", sim_entry(energy_j_per_token=1e-300))
    b = write(tmp_path / "b.json", sim_entry(energy_j_per_token=1e6))
    r = run_compare(str(a), str(b))
    assert r.exit_code == 0, r.stderr
    row = next(x for x in r.stdout.splitlines() if x.startswith("energy_j_per_token"))
    assert len(row) < 120 and row.endswith("+1e+308 %"), row


# -- 3. vLLM's result file ----------------------------------------------------------------------


def test_more_completed_than_vllm_lists_is_refused(tmp_path: Path) -> None:
    v = vllm(tmp_path, completed=1_000_000)
    r = run_compare(str(v), str(BENCH))  # was: printed as -100 %
    refused(r, v, "completed")
    assert "ttfts lists 20" in r.stderr
    v = vllm(tmp_path, completed=20, errors=["boom"] + [""] * 19)
    refused(run_compare(str(v), str(BENCH)), v, "completed")


@pytest.mark.parametrize(
    ("gaps", "field"),
    [
        ([0.02, float("nan")], "itls[3][1]"),
        ([0.02, -1], "itls[3][1]"),
        ([0.02, "0.02"], "itls[3][1]"),
        ([0.02, None], "itls[3][1]"),
        ([0.02, 5e9], "itls[3][1]"),
        (0.02, "itls[3]"),
        ("0.02", "itls[3]"),
    ],
    ids=["nan", "negative", "string", "null", "past-1e9", "number", "string-list"],
)
def test_a_bad_vllm_itl_is_refused(tmp_path: Path, gaps: Any, field: str) -> None:
    itls: list[Any] = [[0.02] * 19 for _ in range(VLLM_N)]
    itls[3] = gaps
    v = vllm(tmp_path, itls=itls)
    refused(run_compare(str(v), str(BENCH)), v, field)


def test_a_failed_vllm_request_keeps_its_empty_itls(tmp_path: Path) -> None:
    # vLLM writes ttft 0 and itl [] for a failed request, and does not count it completed
    itls: list[Any] = [[0.02] * 19 for _ in range(VLLM_N)]
    itls[5] = []
    ttfts = [0.03] * VLLM_N
    ttfts[5] = 0.0
    errors = [""] * VLLM_N
    errors[5] = "Bad Request"
    v = vllm(tmp_path, itls=itls, ttfts=ttfts, errors=errors, completed=19)
    r = run_compare(str(v), str(BENCH))
    assert r.exit_code == 0, r.stderr


# -- 4. simulate --requests-out -----------------------------------------------------------------


@pytest.mark.parametrize("key", ["first_token_s", "end_s"])
def test_a_completed_request_without_its_times_is_refused(tmp_path: Path, key: str) -> None:
    f = lines(tmp_path / "r.jsonl", [record(0), record(1), record(2, **{key: None})])
    refused(run_compare(str(BENCH), str(f)), f, key, line=3)
    rec = record(2)  # a field left out is the same as null
    del rec[key]
    f = lines(tmp_path / "r.jsonl", [record(0), record(1), rec])
    refused(run_compare(str(BENCH), str(f)), f, key, line=3)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ttft_s", float("nan")),
        ("e2e_s", float("inf")),
        ("tpot_s", -0.02),
        ("ttft_s", "0.02"),
        ("tpot_s", 5.0),  # not what the line's times give
        ("e2e_s", 0.31),
        ("ttft_s", 1e300),
    ],
)
def test_a_latency_a_line_repeats_must_be_the_one_its_times_give(
    tmp_path: Path, key: str, value: Any
) -> None:
    f = lines(tmp_path / "r.jsonl", [record(0), record(1, **{key: value}), record(2)])
    refused(run_compare(str(BENCH), str(f)), f, key, line=2)


def test_a_latency_where_the_times_give_none_is_refused(tmp_path: Path) -> None:
    one_token = record(1, output_tokens=1, tpot_s=0.01)
    f = lines(tmp_path / "r.jsonl", [record(0), one_token])
    refused(run_compare(str(BENCH), str(f)), f, "tpot_s", line=2)


def test_a_line_rounded_for_reading_is_accepted(tmp_path: Path) -> None:
    # docs/simulate.md's example line: its latencies rounded to 0.1 ms
    line = {
        "id": 0, "row": 2, "policy": "least_loaded", "arrival_s": 0.0, "admitted_s": 0.0,
        "first_token_s": 0.0509, "end_s": 0.3639, "prompt_tokens": 374, "output_tokens": 44,
        "target": "h100/0", "site": "dc-east", "preemptions": 0, "status": "ok", "reason": "",
        "ttft_s": 0.0509, "tpot_s": 0.0073, "e2e_s": 0.3639,
    }  # fmt: skip
    refusal = {**record(5), "status": "rejected", "reason": "site power cap", "target": None,
               "admitted_s": None, "first_token_s": None, "end_s": None, "ttft_s": None,
               "tpot_s": None, "e2e_s": None}  # fmt: skip
    f = lines(tmp_path / "r.jsonl", [line, refusal])
    r = run_compare(str(f), str(f))
    assert r.exit_code == 0, r.stderr


# -- 5. --policy where no file holds one ----------------------------------------------------------


def test_policy_with_two_bench_files_is_refused(tmp_path: Path) -> None:
    b = bench(tmp_path)
    r = run_compare(str(BENCH), str(b), "--policy", "nosuch")  # was: exit 0, flag ignored
    assert r.exit_code == 2, r.stdout
    err = r.stderr.strip()
    assert "\n" not in err and err.startswith("error: field '--policy': ")
    assert str(BENCH) in err and str(b) in err
    v = vllm(tmp_path)
    assert run_compare(str(v), str(b), "--policy", "cost").exit_code == 2


def test_policy_not_in_a_single_simulate_result_is_refused(tmp_path: Path) -> None:
    s = write(tmp_path / "s.json", sim_entry("cost"))
    r = run_compare(str(BENCH), str(s), "--policy", "nosuch")
    assert r.exit_code == 2 and f"error: {s}: no policy 'nosuch'" in r.stderr, r.stderr
    r = run_compare(str(BENCH), str(s), "--policy", "cost")  # bench holds none: fine
    assert r.exit_code == 0 and "simulate:cost" in r.stdout, r.stderr


# -- real files stay accepted -------------------------------------------------------------------


def test_real_bench_and_simulate_files_are_accepted(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "".join(
            json.dumps(
                {"arrival_s": i * 0.3, "prompt_tokens": 200 + 37 * i, "output_tokens": 1 + i * 7}
            )
            + "\n"
            for i in range(25)
        )
        + json.dumps({"arrival_s": 8, "prompt_tokens": 10, "output_tokens": 5, "model": "nope"})
        + "\n"
    )
    reqs, sims = tmp_path / "r.jsonl", tmp_path / "s.json"
    p = CliRunner().invoke(
        app,
        ["simulate", "--fleet", str(REPO / "examples" / "fleet-hetero.yaml"), "--trace",
         str(trace), "--model", "llama-3.1-8b", "--compare", "cost,least_loaded",
         "--requests-out", str(reqs), "--json"],
    )  # fmt: skip
    assert p.exit_code == 0, p.stderr
    sims.write_text(p.stdout)
    assert any(json.loads(x)["status"] == "rejected" for x in reqs.read_text().splitlines())
    gateway = RUNS / "light-gateway.json"
    for args in (
        (str(BENCH), str(gateway)),
        (str(BENCH), str(sims), "--policy", "least_loaded"),
        (str(sims), str(reqs), "--policy", "cost"),
        (str(reqs), str(reqs)),
        (str(BENCH), str(vllm(tmp_path))),
    ):
        r = run_compare(*args, "--ignore-lengths")
        assert r.exit_code == 0, (args, r.stderr)


def test_json_never_holds_inf_within_the_bounds(tmp_path: Path) -> None:
    # test_compare.py's test of this held 1e300 s latencies, now refused: the same overflow
    # from a tiny A against the longest latency accepted
    tiny, huge = tmp_path / "tiny.json", tmp_path / "huge.json"
    tiny.write_text('{"mean_ttft_ms": 1e-300, "ttfts": [1e-300, 1e-300]}')
    huge.write_text('{"mean_ttft_ms": 1e12, "ttfts": [1e9, 1e9]}')
    r = run_compare(str(tiny), str(huge), "--json")
    assert r.exit_code == 0, r.stderr
    rows = {row["metric"]: row for row in json.loads(r.stdout)["rows"]}
    assert rows["ttft_mean_s"]["b"] == pytest.approx(1e9) and rows["ttft_mean_s"]["error"] is None
    assert json.loads(r.stdout)["per_request"][0]["median_error"] is None
