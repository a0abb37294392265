"""serve against simulate, request by request: a gateway on emulated engines, replayed with
`wattserve bench` over real sockets, decides and times what `simulate` predicts for the same
fleet, trace and policy (docs/bench.md, "serve against simulate, request by request")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.serving import gateway
from wattserve.core.fleet import load_fleet
from wattserve.core.records import RequestRecord
from wattserve.core.workload import load_workload
from wattserve.simulate import simulate

HOSTED_FLEET = """\
name: xclock-hosted
sites:
  api: {kind: cloud}
providers:
  fast-api:
    site: api
    provider: groq-cloud
    model: llama-3.1-8b
    ttft_s: 0.05
"""


def write_trace(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bench(url: str, trace: Path, out: Path) -> dict[str, Any]:
    """`wattserve bench` against the gateway, as a user runs it; its JSON result (it exits 1
    when a request failed, and still writes it)."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "wattserve", "bench", "--url", url),
            *("--trace", str(trace), "--out", str(out), "--no-progress"),
        ],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode in (0, 1) and out.exists(), done.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def simulated(tmp: Path, fleet_yaml: str, trace: Path, policy: str) -> dict[int, RequestRecord]:
    """`simulate --requests-out`'s records of the same fleet, trace and policy, by trace row."""
    fleet_file = tmp / "sim-fleet.yaml"
    fleet_file.write_text(fleet_yaml)
    fleet = load_fleet(fleet_file)
    workload = load_workload(trace, default_model=sorted(fleet.models)[0])
    records: list[RequestRecord] = []
    simulate(fleet, workload, policy, on_request=records.append)
    return {r.row: r for r in records}


def test_emulated_hosted_api_streams_at_its_profiles_pace(tmp_path: Path) -> None:
    """An emulated hosted API's tokens come 1 / output_tokens_per_s apart, as `simulate` times
    them. Each token waited its gap on a timer: uvloop rounds a timer to whole milliseconds, so
    GroqCloud's 1.33 ms gap took 1.1 ms (TPOT 15-17% under simulate's in every run on the
    development VM), and asyncio's timers wake late (2.1 ms)."""
    trace = write_trace(
        tmp_path / "t.jsonl",
        [{"arrival_s": 0.5 * i, "prompt_tokens": 100, "output_tokens": 400} for i in range(3)],
    )
    with gateway(tmp_path, HOSTED_FLEET, "--policy", "cost") as s:
        got = bench(s.url, trace, tmp_path / "bench.json")
    sim = simulated(tmp_path, HOSTED_FLEET, trace, "cost")
    for i, row in enumerate(got["trace_rows"]):
        assert not got["errors"][i]
        assert got["request_backends"][i] == sim[row].target == "fast-api"
        tpot = (got["e2els"][i] - got["ttfts"][i]) / (got["output_lens"][i] - 1)
        expected = sim[row].tpot_s
        assert expected is not None
        assert abs(tpot - expected) < 0.05 * expected, (tpot, expected)
