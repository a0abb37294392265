"""`wattserve compare`, request by request: which requests pair, whether they are the same
requests (their lengths), and the spread of the pairs' differences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result as Result_
from typer.testing import CliRunner

from wattserve.bench.client import Result
from wattserve.bench.compare import paired, per_request
from wattserve.bench.metrics import summarize
from wattserve.cli.app import app
from wattserve.core.workload import SLO

PROMPTS = [36, 135, 73, 119, 20, 78, 27, 158, 117, 27, 132, 108, 137, 126, 45, 95, 148, 191, 170]
OUTPUTS = [21, 35, 11, 32, 33, 11, 6, 5, 18, 38, 36, 19, 23, 40, 16, 12, 32, 17, 36]


def run_compare(*args: str) -> Result_:
    return CliRunner().invoke(app, ["compare", *args])


def bench_file(
    path: Path, prompts: list[int] = PROMPTS, outputs: list[int] = OUTPUTS, **lists: Any
) -> Path:
    """A `bench --json` result of one request per trace row (rows 1, 2, ...)."""
    results = []
    for i, (p, o) in enumerate(zip(prompts, outputs, strict=True)):
        r = Result(i, i + 1, 0.1 * i, p, o, ok=True, ttft_s=0.01, e2e_s=0.01 + 0.002 * o)
        r.usage_prompt_tokens, r.usage_completion_tokens = p, o
        results.append(r)
    raw = {"tool": "wattserve bench", **summarize(results, 2.0, {"default": SLO()}), **lists}
    path.write_text(json.dumps(raw))
    return path


def record(i: int, row: int | None = None, **fields: Any) -> dict[str, Any]:
    p, o = PROMPTS[i % len(PROMPTS)], OUTPUTS[i % len(OUTPUTS)]
    return {"id": i, "row": i + 1 if row is None else row, "policy": "cost",
            "arrival_s": 0.1 * i, "admitted_s": 0.1 * i, "first_token_s": 0.1 * i + 0.012,
            "end_s": 0.1 * i + 0.012 + 0.0025 * o, "prompt_tokens": p, "output_tokens": o,
            "status": "ok", "reason": "", **fields}  # fmt: skip


def requests_file(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- 1. requests of different traces --------------------------------------------------------


def test_the_same_trace_pairs_without_a_word(tmp_path: Path) -> None:
    a = bench_file(tmp_path / "b.json")
    b = requests_file(tmp_path / "s.jsonl", [record(i) for i in range(len(PROMPTS))])
    r = run_compare(str(a), str(b))
    assert r.exit_code == 0, r.stderr
    assert "warning" not in r.stderr and "paired by trace row" in r.stdout


def test_different_traces_are_refused(tmp_path: Path) -> None:
    a = bench_file(tmp_path / "b.json")
    other = [record(i, prompt_tokens=(PROMPTS[i] * 7) % 190 + 20) for i in range(len(PROMPTS))]
    b = requests_file(tmp_path / "s.jsonl", other)
    r = run_compare(str(a), str(b))
    assert r.exit_code == 2, r.stdout
    assert "different traces" in r.stderr and "prompt lengths disagree" in r.stderr
    assert "(furthest: row " in r.stderr and " against " in r.stderr
    assert "the same" not in r.stderr.split("traces:")[0]  # the first pair that disagrees, named
    forced = run_compare(str(a), str(b), "--ignore-lengths")
    assert forced.exit_code == 0 and "warning: " in forced.stderr
    assert "different traces" in forced.stderr


def test_one_prompt_off_is_a_warning(tmp_path: Path) -> None:
    a = bench_file(tmp_path / "b.json")
    recs = [record(i) for i in range(len(PROMPTS))]
    recs[4]["prompt_tokens"] = 60  # row 5: 20 tokens in the bench file
    b = requests_file(tmp_path / "s.jsonl", recs)
    r = run_compare(str(a), str(b))
    assert r.exit_code == 0, r.stderr
    assert (
        "warning: prompt lengths disagree on 1 of 19 pairs (furthest: row 5: 20 against 60"
        in r.stderr
    )


def test_shorter_outputs_are_a_warning_not_a_refusal(tmp_path: Path) -> None:
    # a server that stops at its end-of-sequence token answers shorter than the trace asks
    a = bench_file(tmp_path / "b.json", outputs=[max(2, o // 2) for o in OUTPUTS])
    b = requests_file(tmp_path / "s.jsonl", [record(i) for i in range(len(PROMPTS))])
    r = run_compare(str(a), str(b))
    assert r.exit_code == 0, r.stderr
    assert "warning: output lengths disagree on" in r.stderr


# -- 2. unpaired, duplicate and missing requests ---------------------------------------------


def test_unpaired_requests_are_counted(tmp_path: Path) -> None:
    a = bench_file(tmp_path / "b.json")
    n = len(PROMPTS)
    b = requests_file(tmp_path / "s.jsonl", [record(i) for i in range(5, n)])
    r = run_compare(str(a), str(b))
    assert r.exit_code == 0, r.stderr
    assert f"{n - 5} pairs; 5 completed requests only in A, 0 only in B" in r.stdout
    j = run_compare(str(a), str(b), "--json")
    pairing = json.loads(j.stdout)["pairing"]
    assert pairing["pairs"] == n - 5 and pairing["only_in_a"] == 5 and pairing["only_in_b"] == 0
    extra = requests_file(tmp_path / "x.jsonl", [record(i) for i in range(n + 1)])
    r = run_compare(str(a), str(extra), "--json")
    assert json.loads(r.stdout)["pairing"]["only_in_b"] == 1


def test_no_pair_at_all_is_said(tmp_path: Path) -> None:
    a = bench_file(tmp_path / "b.json")
    n = len(PROMPTS)
    b = requests_file(tmp_path / "s.jsonl", [record(i, row=i + 1 + n) for i in range(n)])
    r = run_compare(str(a), str(b))
    assert r.exit_code == 0, r.stderr
    assert "no request pairs" in r.stdout and "no request pairs" in r.stderr
    j = run_compare(str(a), str(b), "--json")
    assert json.loads(j.stdout)["pairing"]["pairs"] == 0


@pytest.mark.parametrize("same_id", [True, False])
def test_a_request_twice_in_a_requests_file_is_refused(tmp_path: Path, same_id: bool) -> None:
    a = bench_file(tmp_path / "b.json")
    recs = [record(i) for i in range(len(PROMPTS))]
    recs.append(recs[2] if same_id else {**recs[2], "id": 99})
    b = requests_file(tmp_path / "s.jsonl", recs)
    r = run_compare(str(a), str(b))
    assert r.exit_code == 2, r.stdout
    assert str(b) in r.stderr and "trace row 3 is on two lines" in r.stderr


def test_a_row_twice_in_a_bench_file_is_refused(tmp_path: Path) -> None:
    rows = list(range(1, len(PROMPTS) + 1))
    rows[5] = 3
    a = bench_file(tmp_path / "b.json", trace_rows=rows)
    r = run_compare(str(a), str(a))
    assert r.exit_code == 2 and "field 'trace_rows': row 3 is listed twice" in r.stderr


@pytest.mark.parametrize("key", ["e2els", "ttfts", "output_lens", "input_lens", "trace_rows"])
def test_bench_lists_of_unequal_length_are_refused(tmp_path: Path, key: str) -> None:
    raw = json.loads(bench_file(tmp_path / "b.json").read_text())
    raw[key] = raw[key][:5]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(raw))
    r = run_compare(str(short), str(short))
    assert r.exit_code == 2, r.stdout
    assert str(short) in r.stderr and "one entry per request" in r.stderr
    named = key if key != "ttfts" else "e2els"  # the first list that disagrees with ttfts
    assert f"field '{named}'" in r.stderr or f"field '{key}'" in r.stderr


# -- 3. the spread of the pairs: interpolated percentiles, as elsewhere ----------------------


def test_median_and_p90_are_interpolated() -> None:
    def run(ttfts: list[float]) -> dict[str, Any]:
        results = []
        for i, t in enumerate(ttfts):
            r = Result(i, i + 1, 0.0, 10, 3, ok=True, ttft_s=t, e2e_s=t + 0.1)
            r.usage_completion_tokens = 3
            results.append(r)
        return summarize(results, 1.0, {"default": SLO()})

    base = [0.1] * 10
    diffs = [0.001 * (k + 1) for k in range(10)]  # 1..10 ms
    rows = paired(
        per_request(run(base)), per_request(run([x + d for x, d in zip(base, diffs, strict=True)]))
    )
    ttft = next(r for r in rows if r["metric"] == "ttft_s")
    assert ttft["median_abs_diff_s"] == pytest.approx(float(np.percentile(diffs, 50)))  # 5.5 ms
    assert ttft["p90_abs_diff_s"] == pytest.approx(float(np.percentile(diffs, 90)))  # 9.1 ms
    errors = [d / 0.1 for d in diffs]
    assert ttft["median_error"] == pytest.approx(float(np.median(errors)))
    assert ttft["median_abs_error"] == pytest.approx(float(np.median(errors)))


# -- 4. ITL has its p90 row ------------------------------------------------------------------


def test_itl_p90_is_compared(tmp_path: Path) -> None:
    a = bench_file(tmp_path / "b.json")
    raw = json.loads(a.read_text())
    raw["p90_itl_ms"] = 7.0
    a.write_text(json.dumps(raw))
    r = run_compare(str(a), str(a), "--json")
    rows = {row["metric"]: row for row in json.loads(r.stdout)["rows"]}
    assert rows["itl_p90_s"]["a"] == pytest.approx(0.007)


def test_a_prompt_shift_common_to_every_pair_is_the_same_trace(tmp_path: Path) -> None:
    # `wattserve serve` in front of llama.cpp reports every streamed prompt 28 tokens short
    a = bench_file(tmp_path / "b.json", prompts=[p + 28 for p in PROMPTS])
    b = requests_file(tmp_path / "s.jsonl", [record(i) for i in range(len(PROMPTS))])
    r = run_compare(str(a), str(b))
    assert r.exit_code == 0, r.stderr
    assert "warning: every prompt of B is -28 tokens from its pair in A" in r.stderr
    assert "disagree" not in r.stderr
