"""Session 44's hostile-input probe of `bench` and `compare` (2026-12-07): a site whose
requests reported no energy read 0.0 J (and a partial sum read as the whole); an error of
1e307 printed `+inf %`; a server whose prompt counts do not grow with the prompt was said to
report none, while input_lens took its counts; a requests-file line whose policy is null, a
number or a list became a policy named '' (chosen first) or '[1]'. Real gateways and servers
on loopback where bench is run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from serving import ThreadedApp, gateway, write_trace
from test_probe_s36_compare import BENCH, record, run_compare, sim_entry, write

from wattserve.bench.client import Result
from wattserve.bench.metrics import summarize
from wattserve.core.workload import SLO


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    """`wattserve bench` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "wattserve", "bench", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- 5. a site's J and $ where its requests reported none ---------------------------------------

# tpu-v5e has no TDP: the gateway reports energy_j null for what it serves (and a price)
DARK_FLEET = """\
sites:
  dc: {kind: datacenter}
  dark: {kind: datacenter}
deployments:
  h: {site: dc, model: llama-3.2-1b, hardware: h100-sxm}
  t: {site: dc, model: qwen2.5-0.5b, hardware: tpu-v5e}
  d: {site: dark, model: smollm2-135m, hardware: tpu-v5e}
"""


def test_a_sites_energy_no_request_reported_is_unknown_not_zero(tmp_path: Path) -> None:
    models = ["llama-3.2-1b", "qwen2.5-0.5b", "smollm2-135m"]
    rows = [
        {"arrival_s": 0.05 * i, "prompt_tokens": 20, "output_tokens": 3, "model": models[i % 3]}
        for i in range(6)
    ]
    trace = write_trace(tmp_path / "t.jsonl", rows)
    out, report = tmp_path / "r.json", tmp_path / "r.html"
    with gateway(tmp_path, DARK_FLEET) as gw:
        r = bench("--url", gw.url, "--trace", str(trace), "--out", str(out),
                  "--report", str(report))  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    res = json.loads(out.read_text())
    assert res["completed"] == 6, res["errors_by_kind"]
    dark, dc = res["sites"]["dark"], res["sites"]["dc"]
    # no request at `dark` reported energy: unknown (it read 0.0)
    assert dark["requests"] == 2 and dark["energy_j"] is None, dark
    assert dark["energy_unknown_requests"] == 2
    assert dark["usd"] > 0 and dark["usd_unknown_requests"] == 0
    # at `dc` the H100's two did, the TPU's two did not: the known part, and a count of the rest
    assert dc["requests"] == 4 and dc["energy_j"] > 0 and dc["energy_unknown_requests"] == 2, dc
    assert res["energy_j"] == pytest.approx(dc["energy_j"])  # as the total gives it
    assert "(2 of 6 completed requests)" in res["energy_note"]
    page = report.read_text()
    assert "Energy per site (+?: the known part at dc) (unknown: dark)" in page


def _done(i: int, site: str, energy_j: float | None, usd: float | None) -> Result:
    r = Result(i, i, 0.0, 10, 3, ok=True, ttft_s=0.01, e2e_s=0.05, backend=f"{site}/0", site=site)
    r.energy_j, r.usd, r.usage_completion_tokens = energy_j, usd, 3
    return r


def test_a_sites_dollars_no_request_reported_are_unknown_not_zero() -> None:
    got = summarize(
        [_done(0, "a", 1.0, None), _done(1, "a", 2.0, None), _done(2, "b", None, 0.5)],
        1.0,
        {"default": SLO()},
    )
    a, b = got["sites"]["a"], got["sites"]["b"]
    assert a["usd"] is None and a["usd_unknown_requests"] == 2  # it read $0.0
    assert a["energy_j"] == 3.0 and a["energy_unknown_requests"] == 0
    assert b["energy_j"] is None and b["usd"] == 0.5 and b["energy_unknown_requests"] == 1


# -- 8. an error whose percentage is past a float ------------------------------------------------


def test_an_error_whose_percentage_overflows_is_a_dash_not_inf(tmp_path: Path) -> None:
    # (1e307 - 0.5) / 0.5 = 2e307: a float, but x 100 it is not (it printed `+inf %`)
    a = write(tmp_path / "a.json", sim_entry(energy_j_per_token=0.5))
    b = write(tmp_path / "b.json", sim_entry(energy_j_per_token=1e307))
    r = run_compare(str(a), str(b))
    assert r.exit_code == 0, r.stderr
    row = next(x for x in r.stdout.splitlines() if x.startswith("energy_j_per_token"))
    assert "inf" not in row and row.endswith(" -"), row
    assert "inf" not in r.stdout


# -- 12. prompt counts that do not grow with the prompt ------------------------------------------


class FlatCounts(ThreadedApp):
    """An OpenAI-compatible server that counts every prompt 5 tokens, whatever its length, or
    (`creep`) one more per 128 words: 5 for the 16-word probe, 6 for the 144-word one, a line
    fit had taken as 1/128 token a word (prompts sized 128 times too long)."""

    def __init__(self, creep: bool = False) -> None:
        self.creep = creep
        super().__init__(
            [web.post("/v1/chat/completions", self._chat), web.get("/v1/models", self._models)]
        )

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body["max_tokens"])
        words = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        usage = {"prompt_tokens": 5 + self.creep * (words // 128), "completion_tokens": n}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "a " * n}
            choice = {"index": 0, "message": message, "finish_reason": "length"}
            return web.json_response({"choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events: list[dict[str, Any]] = [
            {"choices": [{"index": 0, "delta": {"content": "a "}}]} for _ in range(n)
        ]
        events.append({"choices": [], "usage": usage})
        for obj in events:
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@pytest.mark.parametrize("creep", [False, True])
def test_prompt_counts_that_do_not_grow_are_said_so_and_not_taken(
    tmp_path: Path, creep: bool
) -> None:
    rows = [{"arrival_s": 0.05 * i, "prompt_tokens": 100, "output_tokens": 4} for i in range(3)]
    trace = write_trace(tmp_path / "t.jsonl", rows)
    out = tmp_path / "r.json"
    with FlatCounts(creep) as s:
        r = bench("--url", f"http://127.0.0.1:{s.port}", "--trace", str(trace), "--out", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    notes = " ".join(res["notes"])
    # the note had said the server reports no counts
    said = f"(5 tokens for 16 words, {5 + creep} for 144; each word is about one token)"
    assert "do not grow with the prompt as a tokenizer's do " + said in notes, notes
    assert "reports no counted" not in notes and "reports no counted" not in r.stderr
    # and the lengths are the ones asked for, as the note says (they were the server's 5s)
    assert res["input_lens"] == [100, 100, 100] and res["total_input_tokens"] == 300
    assert not res["prompt_calibration"]["measured"]
    total = next(x for x in r.stdout.splitlines() if x.startswith("Total input tokens:"))
    assert total.split()[-1] == "300", total


# -- 13. a requests-file line whose policy is not a name -----------------------------------------


@pytest.mark.parametrize("policy", [None, 3, ["cost"], "", "missing"])
@pytest.mark.parametrize("line", [1, 3])
def test_a_requests_line_whose_policy_is_not_a_name_is_refused(
    tmp_path: Path, policy: Any, line: int
) -> None:
    recs = [record(i, policy="least_loaded") for i in range(5)]
    if policy == "missing":
        del recs[line - 1]["policy"]
    else:
        recs[line - 1]["policy"] = policy
    req = tmp_path / "r.jsonl"
    req.write_text("".join(json.dumps(x) + "\n" for x in recs))
    r = run_compare(str(BENCH), str(req))  # it was a policy named '' (compared first) or "['cost']"
    assert r.exit_code == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "\n" not in err and err.startswith(f"error: {req}:{line}"), err
    assert "field 'policy' must be the name of the policy simulated" in err, err


def test_a_simulate_result_without_a_policy_name_still_reads_as_before(tmp_path: Path) -> None:
    """The rule is the one `simulate --json` input was held to, and still is."""
    one = write(tmp_path / "one.json", sim_entry(["cost"]))
    r = run_compare(str(BENCH), str(one))
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {one}, field 'policy': "), r.stderr
    assert "must be the name of the policy simulated, got ['cost']" in r.stderr
