"""serve against simulate on --max-queue and residency, over real sockets: what a read-only
review of the first cross-clock fixes found (docs/bench.md, "serve against simulate, request by
request")."""

from __future__ import annotations

from pathlib import Path

import httpx
from serving import gateway, simulated, write_trace

# A hosted API that takes one request a second, 50 ms from the edge and 10 ms from dc: with
# --max-queue 0.23 an edge request's first token (0.2 + 0.05 s) is past the limit, a dc
# request's (0.21 s) within it.
RATE_LIMITED = """\
name: xclock-rate-limited
sites:
  edge: {kind: edge}
  dc: {kind: datacenter}
  api: {kind: cloud}
links:
  - {between: [edge, api], rtt_ms: 50}
  - {between: [dc, api], rtt_ms: 10}
  - {between: [edge, dc], rtt_ms: 20}
providers:
  fast-api:
    site: api
    provider: groq-cloud
    model: llama-3.1-8b
    ttft_s: 0.2
    rate_limit_rps: 1
"""


def chat(url: str, site: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={
            "model": "llama-3.1-8b",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
        },
        headers={"x-wattserve-site": site},
        timeout=30,
    )


def test_a_target_passed_over_for_its_queue_keeps_its_rate_limit_token(tmp_path: Path) -> None:
    """A request passed over for its predicted first token takes no rate-limit token: serve
    checked --max-queue after admission had taken the hosted API's token, so the next request,
    which simulate serves, found the bucket empty (503)."""
    with gateway(tmp_path, RATE_LIMITED, "--policy", "cost", "--max-queue", "0.23") as s:
        far = chat(s.url, "edge")
        near = chat(s.url, "dc")
    assert far.status_code == 503 and "has a queue" in far.text, far.text
    assert near.status_code == 200, near.text
    trace = write_trace(
        tmp_path / "t.jsonl",
        [
            {"arrival_s": 0.0, "prompt_tokens": 8, "output_tokens": 4, "origin": "edge"},
            {"arrival_s": 0.1, "prompt_tokens": 8, "output_tokens": 4, "origin": "dc"},
        ],
    )
    sim = simulated(tmp_path, RATE_LIMITED, trace, "cost", max_queue_s=0.23)
    assert [sim[1].status, sim[2].status] == ["rejected", "ok"]  # by the trace's line
