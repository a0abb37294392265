"""`wattserve compare`: simulate, bench and vLLM result files side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wattserve.bench.client import Result
from wattserve.bench.compare import compare, metrics
from wattserve.bench.metrics import summarize
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
