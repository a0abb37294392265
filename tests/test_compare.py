"""`wattserve compare`: simulate, bench and vLLM result files side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result as Result_
from typer.testing import CliRunner

from wattserve.bench.client import Result
from wattserve.bench.compare import compare, metrics
from wattserve.bench.metrics import summarize
from wattserve.cli.app import app
from wattserve.core.workload import SLO

REPO = Path(__file__).resolve().parents[1]

# The fields `vllm bench serve --save-result` writes (vllm/benchmarks/serve.py), with
# --metric-percentiles 50,90,99.
VLLM = {
    "date": "20261201-120000",
    "backend": "vllm",
    "model_id": "meta-llama/Llama-3.2-1B",
    "num_prompts": 20,
    "duration": 2.0,
    "completed": 20,
    "failed": 0,
    "total_input_tokens": 1190,
    "total_output_tokens": 130,
    "request_throughput": 10.0,
    "request_goodput": None,
    "output_throughput": 65.0,
    "total_token_throughput": 660.0,
    "mean_ttft_ms": 8.0,
    "median_ttft_ms": 6.0,
    "std_ttft_ms": 1.0,
    "p50_ttft_ms": 6.0,
    "p90_ttft_ms": 11.0,
    "p99_ttft_ms": 14.0,
    "mean_tpot_ms": 3.0,
    "median_tpot_ms": 2.5,
    "p99_tpot_ms": 4.0,
    "mean_itl_ms": 3.0,
    "median_itl_ms": 2.5,
    "p99_itl_ms": 9.0,
    "mean_e2el_ms": 24.0,
    "median_e2el_ms": 22.0,
    "p99_e2el_ms": 30.0,
}


def compare_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattserve", "compare", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bench_against_vllm_per_metric() -> None:
    results = []
    for i in range(4):
        r = Result(i, i + 1, 0.0, 10, 3, ok=True, ttft_s=0.01 * (i + 1), e2e_s=0.05 * (i + 1))
        r.usage_completion_tokens = 3
        results.append(r)
    ours = {"tool": "wattserve bench", **summarize(results, 1.0, {"default": SLO()})}
    rows = {r["metric"]: r for r in compare(metrics(VLLM), metrics(ours))}
    assert rows["ttft_p50_s"]["a"] == pytest.approx(0.006)
    assert rows["ttft_p50_s"]["b"] == pytest.approx(0.025)
    assert rows["ttft_p50_s"]["error"] == pytest.approx((0.025 - 0.006) / 0.006)
    assert rows["completed"]["b"] == 4 and rows["output_tokens"]["b"] == 12
    assert "slo_attainment" in rows and rows["slo_attainment"]["a"] is None


def test_cli_simulate_against_vllm(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "".join(
            json.dumps({"arrival_s": i * 0.1, "prompt_tokens": 50 + i, "output_tokens": 6}) + "\n"
            for i in range(20)
        )
    )
    sim = tmp_path / "sim.json"
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", "simulate", "--fleet",
         str(REPO / "examples" / "fleet-homogeneous.yaml"), "--trace", str(trace),
         "--compare", "round_robin,least_loaded", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    sim.write_text(p.stdout)
    real = tmp_path / "vllm.json"
    real.write_text(json.dumps(VLLM))
    r = compare_cli(str(real), str(sim), "--policy", "least_loaded")
    assert r.returncode == 0, r.stderr
    assert "simulate:least_loaded" in r.stdout and "ttft_p50_s" in r.stdout and "%" in r.stdout
    j = compare_cli(str(real), str(sim), "--json")  # the first policy of the list
    rows = json.loads(j.stdout)["rows"]
    assert {r["metric"] for r in rows} >= {"ttft_p99_s", "e2e_p50_s", "request_throughput"}
    assert json.loads(j.stdout)["b"]["kind"] == "simulate"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ('{"hello": 1}', "not a result of simulate --json"),
        ('[{"policy": "cost", "ttft_s": {}}]', "no policy 'energy'"),
        ("[]", "a list with no result"),  # said "no policy 'energy' ... (it holds )"
        ("[1, 2]", "a list with no result"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, content: str | None, message: str) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    good = tmp_path / "vllm.json"
    good.write_text(json.dumps(VLLM))
    r = compare_cli(str(good), str(bad), "--policy", "energy")
    assert r.returncode == 2 and message in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr


def test_request_by_request_when_both_files_list_requests() -> None:
    from wattserve.bench.compare import paired, per_request

    def run(scale: float) -> dict[str, object]:
        results = []
        for i in range(10):
            r = Result(i, 100 + i, 0.0, 10, 3, ok=True, ttft_s=0.01 * scale, e2e_s=0.1 * scale)
            r.usage_completion_tokens = 3
            results.append(r)
        results[3].fail("http_500", "boom")  # a failed request has no pair
        return summarize(results, 1.0, {"default": SLO()})

    rows = {r["metric"]: r for r in paired(per_request(run(1.0)), per_request(run(1.5)))}
    assert rows["ttft_s"]["pairs"] == 9 and rows["e2e_s"]["pairs"] == 9
    assert rows["ttft_s"]["median_abs_diff_s"] == pytest.approx(0.005)
    assert rows["e2e_s"]["median_error"] == pytest.approx(0.5)
    assert paired(per_request(VLLM), per_request(run(1.0))) == []  # vLLM lists no requests here


def run_compare(*args: str) -> Result_:
    return CliRunner().invoke(app, ["compare", *args])


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    good = tmp_path / "vllm.json"
    good.write_text(json.dumps(VLLM))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for bad in ("/dev/zero", str(fifo), str(tmp_path)):  # a read without end, a hang, a folder
        r = run_compare(str(good), bad)
        assert r.exit_code == 2 and f"{bad}: not a regular file" in r.stderr, r.stderr


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "bad.json: an empty file"),
        ("\n \n", "bad.json: an empty file"),
        (deep(100_000), "bad.json:1: not valid JSON: nested too deeply"),
        ('{"completed": 1' + "0" * 5000 + "}", "bad.json:1: a number of more than 4,300 dig"),
        ('{"mean_ttft_ms": 5, "completed": 1' + "0" * 400 + "}", "'completed': must be finite"),
        ('{"mean_ttft_ms": 1e400}', "field 'mean_ttft_ms': must be a finite number >= 0, got inf"),
        ('{"mean_ttft_ms": NaN}', "field 'mean_ttft_ms': must be a finite number >= 0, got nan"),
        ('{"mean_ttft_ms": "8", "completed": 3}', "field 'mean_ttft_ms': must be a number"),
        ('{"request_throughput": 2, "completed": true}', "field 'completed': must be a number"),
        ('{"mean_ttft_ms": -5}', "field 'mean_ttft_ms': must be a finite number >= 0, got -5"),
        ('{"mean_ttft_ms": 5, "completed": 2.5}', "field 'completed': must be a whole number"),
        ('{"policy": "p", "ttft_s": {"p50": 1}, "requests": -3}', "field 'requests'"),
        ('{"policy": "p", "ttft_s": {"p50": -1}}', "field 'ttft_s.p50'"),
        ('{"policy": "p", "ttft_s": {}, "slo_attainment": 7.5}', "between 0 and 1, got 7.5"),
        ('{"mean_ttft_ms": 5, "ttfts": [0.1, -0.2]}', "field 'ttfts[1]'"),
        ('{"request_throughput": null}', "none of the figures compare reads"),
        ('{"tool": "wattserve bench"}', "none of the figures compare reads"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_a_result_file_that_is_not_one(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    good = tmp_path / "vllm.json"
    good.write_text(json.dumps(VLLM))
    r = run_compare(str(good), str(bad))
    assert r.exit_code == 2 and message in r.stderr and str(bad) in r.stderr, r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit)


def record(i: int, policy: str, **fields: object) -> str:
    rec = {"id": i, "row": i + 1, "policy": policy, "arrival_s": 0.1 * i, "admitted_s": 0.1 * i,
           "first_token_s": 0.1 * i + 0.01, "end_s": 0.1 * i + 0.05, "prompt_tokens": 10,
           "output_tokens": 5, "status": "ok", "reason": ""}  # fmt: skip
    return json.dumps({**rec, **fields}) + "\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (deep(100_000) + "\n", "bad.jsonl:3: not valid JSON: nested too deeply"),
        (record(2, "p", end_s=10**400), "bad.jsonl:3, field 'end_s': must be a number below"),
        (record(2, "p", output_tokens=10**300), "bad.jsonl:3, field 'output_tokens'"),
        (record(2, "p", first_token_s=0.1), "bad.jsonl:3, field 'first_token_s': 0.1 is before"),
        (record(2, "p", end_s=1e12), "bad.jsonl:3, field 'end_s': 1e+12 s is past"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_a_bad_line_of_a_requests_file(tmp_path: Path, line: str, message: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(record(0, "p") + record(1, "p") + line)
    r = run_compare(str(bad), str(bad))
    assert r.exit_code == 2 and message in r.stderr, r.stderr


def test_json_never_holds_inf(tmp_path: Path) -> None:
    tiny, huge = tmp_path / "tiny.json", tmp_path / "huge.json"
    tiny.write_text('{"mean_ttft_ms": 1e-300, "ttfts": [1e-300, 1e-300]}')
    huge.write_text('{"mean_ttft_ms": 1e12, "ttfts": [1e9, 1e9]}')  # 31 years: the most
    r = run_compare(str(tiny), str(huge), "--json")
    assert r.exit_code == 0, r.stderr
    rows = {row["metric"]: row for row in json.loads(r.stdout)["rows"]}
    assert rows["ttft_mean_s"]["b"] == pytest.approx(1e9) and rows["ttft_mean_s"]["error"] is None
    pairs = json.loads(r.stdout)["per_request"]
    assert pairs[0]["pairs"] == 2 and pairs[0]["median_error"] is None
    text = run_compare(str(tiny), str(huge))
    assert text.exit_code == 0 and "1e+09 s" in text.stdout


def test_which_policy_of_several_is_said(tmp_path: Path) -> None:
    real = tmp_path / "vllm.json"
    real.write_text(json.dumps(VLLM))
    sims = tmp_path / "sims.json"
    sims.write_text(json.dumps([
        {"policy": "cost", "ttft_s": {"p50": 0.01}, "requests": 5},
        {"policy": "energy", "ttft_s": {"p50": 0.02}, "requests": 5},
    ]))  # fmt: skip
    r = run_compare(str(real), str(sims))
    assert r.exit_code == 0 and "simulate:cost" in r.stdout
    assert f"note: {sims} holds 2 policies (cost, energy); comparing the first, 'cost'" in r.stderr
    r = run_compare(str(real), str(sims), "--policy", "energy")
    assert r.exit_code == 0 and "simulate:energy" in r.stdout and "note" not in r.stderr
    reqs = tmp_path / "r.jsonl"
    reqs.write_text("".join(record(i, p) for p in ("rr", "cost") for i in range(3)))
    r = run_compare(str(reqs), str(real))
    assert r.exit_code == 0 and "requests:cost" in r.stdout, r.stderr
    assert "holds 2 policies (cost, rr); comparing the first, 'cost'" in r.stderr
    one = tmp_path / "one.jsonl"
    one.write_text("".join(record(i, "rr") for i in range(3)))
    r = run_compare(str(one), str(real))
    assert r.exit_code == 0 and "note" not in r.stderr
