"""The gateway decides as the simulator does for the same fleet and requests (session 39's
review of serve against simulate): the priority scheduling a fleet file asks for, replicas
chosen for requests from another site, a deployment behind an OpenAI-compatible server counted
by its replicas, and a request waiting for a link that is down. Each runs the simulator and a
real gateway (emulated H100s, wattserve's fake OpenAI server) on the same requests."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from serving import fake_upstream, gateway

from wattserve.core.fleet import load_fleet
from wattserve.core.workload import load_workload
from wattserve.simulate import simulate

MODEL = "llama-3.1-8b"
LEAST = ("--policy", "least_loaded")  # as simulated() runs


def simulated(tmp: Path, fleet: str, rows: list[dict[str, Any]], slos: str = "") -> list[Any]:
    """The simulator's records of `rows` (least_loaded), in request order."""
    (tmp / "sim-fleet.yaml").write_text(fleet)
    (tmp / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = tmp / "trace.jsonl"
    if slos:
        source = tmp / "workload.yaml"
        source.write_text(f"trace: trace.jsonl\nslos:\n{slos}")
    records: list[Any] = []
    simulate(
        load_fleet(tmp / "sim-fleet.yaml"),
        load_workload(source, default_model=MODEL),
        "least_loaded",
        on_request=records.append,
        max_wait_s=10.0,
    )
    return sorted(records, key=lambda r: r.id)


async def _one(
    client: httpx.AsyncClient, url: str, row: dict[str, Any], t0: float, **extra: Any
) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, t0 + row["arrival_s"] - time.monotonic()))
    headers = {}
    if row.get("origin"):
        headers["x-wattserve-site"] = row["origin"]
    if row.get("slo"):
        headers["x-wattserve-slo"] = row["slo"]
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "abcd" * row["prompt_tokens"]}],
        "max_tokens": row["output_tokens"],
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    sent = time.monotonic()
    first = None
    usage: dict[str, Any] = {}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and first is None:
                first = time.monotonic()
            usage = chunk.get("usage") or usage
    assert first is not None
    return {"ttft_s": first - sent, "backend": usage["wattserve"]["backend"]}


def served(url: str, rows: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=120) as client:
            t0 = time.monotonic() + 0.2
            return await asyncio.gather(*(_one(client, url, r, t0, **extra) for r in rows))

    return asyncio.run(main())


PRIORITY = f"""
sites:
  dc: {{kind: datacenter}}
deployments:
  h100: {{site: dc, model: {MODEL}, hardware: h100-sxm, max_num_seqs: 1,
          max_batched_tokens: 2048, scheduling: priority}}
"""
SLOS = "  default: {ttft_s: 10, tpot_s: 1}\n  interactive: {ttft_s: 0.5, tpot_s: 0.1}\n"


def test_priority_scheduling_serves_the_urgent_class_first(tmp_path: Path) -> None:
    """One sequence at a time: a default request queued before an interactive one runs after
    it, in the gateway as in simulate (until 2026-12-06 the gateway ran them in arrival
    order: every request it emulated had priority 0)."""
    rows = [
        {"arrival_s": 0.0, "prompt_tokens": 100, "output_tokens": 200},
        {"arrival_s": 0.1, "prompt_tokens": 100, "output_tokens": 100, "slo": "default"},
        {"arrival_s": 0.2, "prompt_tokens": 100, "output_tokens": 100, "slo": "interactive"},
    ]
    sim = simulated(tmp_path, PRIORITY, rows, SLOS)
    assert sim[2].ttft_s < sim[1].ttft_s
    slos = tmp_path / "slos.yaml"
    slos.write_text(f"trace: trace.jsonl\nslos:\n{SLOS}")
    with gateway(tmp_path, PRIORITY, *LEAST, "--slos", str(slos)) as gw:
        got = served(gw.url, rows)
    assert got[2]["ttft_s"] < got[1]["ttft_s"], got


LINKED = f"""
sites:
  dc: {{kind: datacenter}}
  edge: {{kind: edge}}
links:
  - between: [edge, dc]
    rtt_ms: 40
deployments:
  h100: {{site: dc, model: {MODEL}, hardware: h100-sxm, replicas: 4}}
"""


def test_requests_from_another_site_spread_over_the_replicas(tmp_path: Path) -> None:
    """Eight at once from the edge site: two on each of four replicas, as simulate places
    them (until 2026-12-06 a replica counted a request only once its stream began, after the
    others had been placed: 3 and 5 on two replicas, or all eight on one)."""
    rows = [
        {"arrival_s": 0.0, "prompt_tokens": 100, "output_tokens": 50, "origin": "edge"}
        for _ in range(8)
    ]
    sim = Counter(r.target for r in simulated(tmp_path, LINKED, rows))
    assert sorted(sim.values()) == [2, 2, 2, 2], sim
    with gateway(tmp_path, LINKED, *LEAST) as gw:
        got = Counter(g["backend"] for g in served(gw.url, rows))
    assert got == sim, got


def test_a_deployment_behind_a_server_counts_its_replicas(tmp_path: Path) -> None:
    """An emulated H100 beside a server of the same figures: least loaded splits eight
    requests as simulate does, four and four (until 2026-12-06 the server counted as 64
    slots: seven of eight went to it)."""
    rows = [{"arrival_s": 0.05 * i, "prompt_tokens": 100, "output_tokens": 300} for i in range(8)]
    with fake_upstream() as port:
        fleet = (
            f"sites:\n  dc: {{kind: datacenter}}\ndeployments:\n"
            f"  emu: {{site: dc, model: {MODEL}, hardware: h100-sxm}}\n"
            f"  srv: {{site: dc, model: {MODEL}, hardware: h100-sxm, "
            f"backend: {{kind: openai, url: 'http://127.0.0.1:{port}/v1'}}}}\n"
        )
        sim = Counter(r.target.split("/")[0] for r in simulated(tmp_path, fleet, rows))
        assert sim == {"emu": 4, "srv": 4}, sim
        with gateway(tmp_path, fleet, *LEAST) as gw:
            got = Counter(g["backend"].split("/")[0] for g in served(gw.url, rows, fake_delay_s=3))
    assert got == sim, got


def test_a_request_waits_for_a_link_that_is_down(tmp_path: Path) -> None:
    """The only link to the model's site is down for its first 6 s: the request waits for it
    (up to --max-wait) and is served, as simulate serves it (until 2026-12-06: 503 at once)."""
    fleet = LINKED.replace("rtt_ms: 40", "rtt_ms: 40\n    outages: [{start_s: 0, end_s: 6}]")
    rows = [{"arrival_s": 0.0, "prompt_tokens": 100, "output_tokens": 20, "origin": "edge"}]
    sim = simulated(tmp_path, fleet, rows)
    assert sim[0].status == "ok" and sim[0].ttft_s >= 6.0
    with gateway(tmp_path, fleet, *LEAST, "--max-wait", "10") as gw:  # up within about 2 s
        got = served(gw.url, rows)  # 200, not 503
    assert got[0]["backend"].startswith("h100/") and got[0]["ttft_s"] > 1.0, got
