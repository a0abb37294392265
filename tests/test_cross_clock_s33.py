"""serve against simulate, request by request: a gateway on emulated engines, replayed with
`wattserve bench` over real sockets, decides and times what `simulate` predicts for the same
fleet, trace and policy (docs/bench.md, "serve against simulate, request by request")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aiohttp import web
from serving import FAST_FLEET, bench, gateway, simulated, write_trace

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


ONE_AT_A_TIME = """\
name: xclock-queue
sites:
  dc: {kind: datacenter}
deployments:
  h100:
    site: dc
    model: llama-3.1-8b
    hardware: h100-sxm
    replicas: 1
    max_num_seqs: 1
"""


def test_a_request_queued_past_max_queue_is_refused_on_both_clocks(tmp_path: Path) -> None:
    """serve refuses (503) a request with no first token after --max-queue; simulate had no
    such limit and served it: on one L4 saturated by 60 requests, serve refused 19 and
    simulate none (it now refuses 16, the other 3 within a step of the limit). Here one
    sequence at a time, about 0.7 s each, five at once, a limit of 2 s: the fourth and fifth
    have no first token by then on both clocks."""
    trace = write_trace(
        tmp_path / "t.jsonl",
        [{"arrival_s": 0.0, "prompt_tokens": 64, "output_tokens": 100} for _ in range(5)],
    )
    with gateway(tmp_path, ONE_AT_A_TIME, "--policy", "cost", "--max-queue", "2") as s:
        got = bench(s.url, trace, tmp_path / "bench.json")
    fleet_file = tmp_path / "sim-fleet.yaml"
    fleet_file.write_text(ONE_AT_A_TIME)
    fleet = load_fleet(fleet_file)
    records: list[RequestRecord] = []
    workload = load_workload(trace, default_model="llama-3.1-8b")
    simulate(fleet, workload, "cost", max_queue_s=2.0, on_request=records.append)
    sim = {r.row: r for r in records}
    served = sorted(row for i, row in enumerate(got["trace_rows"]) if not got["errors"][i])
    refused = [e for e in got["errors"] if e]
    assert len(served) == 3 and len(refused) == 2, got["errors"]
    assert all("no first token within 2 s" in e for e in refused)
    assert sorted(r.row for r in sim.values() if r.status == "ok") == [1, 2, 3]
    assert [r.reason for r in sim.values() if r.status != "ok"] == [
        "no first token within 2 s: the fleet is saturated"
    ] * 2


def test_bench_tells_the_gateway_where_a_row_comes_from(tmp_path: Path) -> None:
    """A trace row's origin and residency reach the gateway (`x-wattserve-site`,
    `x-wattserve-data-local`), as simulate routes by them: bench sent neither, so under
    edge_first a row from the edge went to the datacenter's faster H100s in serve and to the
    edge module in simulate (and a local-only row could leave its site)."""
    rows = [
        {"arrival_s": 0.3 * i, "prompt_tokens": 50, "output_tokens": 8, "origin": "edge"}
        for i in range(4)
    ]
    rows[1]["local_only"] = True
    trace = write_trace(tmp_path / "t.jsonl", rows)
    with gateway(tmp_path, FAST_FLEET, "--policy", "edge_first") as s:
        got = bench(s.url, trace, tmp_path / "bench.json")
    sim = simulated(tmp_path, FAST_FLEET, trace, "edge_first")
    assert {r.target for r in sim.values()} == {"edge-small/0"}
    assert got["request_backends"] == [sim[row].target for row in got["trace_rows"]]
    assert got["request_sites"] == ["edge"] * 4


def test_an_emulated_answer_crosses_the_link_from_its_origin(tmp_path: Path) -> None:
    """A request from the edge answered by an emulated engine in the datacenter reaches its
    client a link's round trip after the engine's tokens, as simulate times it: the gateway's
    emulated answers came that much early (TTFT and E2E 38 ms under simulate's over the 40 ms
    edge-to-datacenter link of examples/fleet-hetero.yaml, on every such request)."""
    rows = [
        {"arrival_s": 0.3 * i, "prompt_tokens": 50, "output_tokens": 16, "origin": "edge"}
        for i in range(4)
    ]
    trace = write_trace(tmp_path / "t.jsonl", rows)
    fleet_yaml = FAST_FLEET + "links:\n  - {between: [edge, dc], rtt_ms: 80}\n"
    with gateway(tmp_path, fleet_yaml, "--policy", "slo") as s:
        got = bench(s.url, trace, tmp_path / "bench.json")
    sim = simulated(tmp_path, fleet_yaml, trace, "slo")
    for i, row in enumerate(got["trace_rows"]):
        r = sim[row]
        assert got["request_backends"][i] == r.target and r.site == "dc"
        assert r.ttft_s is not None and r.e2e_s is not None
        assert r.ttft_s > 0.08  # the link's round trip, and the engine's prefill
        assert abs(got["ttfts"][i] - r.ttft_s) < 0.025, (got["ttfts"][i], r.ttft_s)
        assert abs(got["e2els"][i] - r.e2e_s) < 0.025, (got["e2els"][i], r.e2e_s)


def test_compare_counts_the_requests_that_ran_on_the_same_target(tmp_path: Path) -> None:
    """`compare` holds bench's `request_backends` against simulate's targets, request by
    request: which target served each request was not compared at all."""
    trace = write_trace(
        tmp_path / "t.jsonl",
        [{"arrival_s": 0.2 * i, "prompt_tokens": 50, "output_tokens": 8} for i in range(4)],
    )
    with gateway(tmp_path, FAST_FLEET, "--policy", "cost") as s:
        bench(s.url, trace, tmp_path / "bench.json")
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(FAST_FLEET)
    out = tmp_path / "req.jsonl"
    subprocess.run(
        [
            *(sys.executable, "-m", "wattserve", "simulate", "--fleet", str(fleet_file)),
            *("--trace", str(trace), "--policy", "cost", "--requests-out", str(out)),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shown = subprocess.run(
        [sys.executable, "-m", "wattserve", "compare", str(tmp_path / "bench.json"), str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "4 ran on the same target in both, 0 on another" in shown


WAKE_ONE = """\
name: xclock-wait
sites:
  dc: {kind: datacenter, power_cap_w: 600}
deployments:
  h100:
    site: dc
    model: llama-3.1-8b
    hardware: h100-sxm
    replicas: 2
    max_num_seqs: 1
"""


def test_a_request_waiting_for_power_is_placed_as_soon_on_both_clocks(tmp_path: Path) -> None:
    """A request that waits at the governor for power (the 600 W cap lets one of the two
    replicas run) is offered again every POWER_RETRY_S on both clocks: simulate retried every
    0.25 s and the gateway every 50 ms, so here the second request's first token came 0.2 s
    later in simulate (1.51 s against the 1.31 s the first request's end frees the power at)."""
    trace = write_trace(
        tmp_path / "t.jsonl",
        [{"arrival_s": 0.0, "prompt_tokens": 64, "output_tokens": 180} for _ in range(2)],
    )
    with gateway(tmp_path, WAKE_ONE, "--policy", "cost", "--max-wait", "30") as s:
        got = bench(s.url, trace, tmp_path / "bench.json")
    sim = simulated(tmp_path, WAKE_ONE, trace, "cost")
    assert not any(got["errors"]) and [r.status for r in sim.values()] == ["ok", "ok"]
    first, second = sim[1], sim[2]
    assert first.end_s is not None and second.ttft_s is not None
    assert second.ttft_s < first.end_s + 0.06  # placed within a retry of the power's return
    waited = max(got["ttfts"])  # whichever of the two the gateway took second
    assert abs(waited - second.ttft_s) < 0.1, (waited, second.ttft_s)


def test_requests_passed_over_for_their_queue_are_refused_for_one_reason(tmp_path: Path) -> None:
    """The refusal of a request every target would queue past --max-queue reads the same for
    each (serve's 503 and simulate's `rejected_by_reason`): it held the shortest predicted
    wait, so one saturated simulation counted one refusal under eight reasons."""
    rows = [{"arrival_s": 0.0, "prompt_tokens": 64, "output_tokens": 1000}]
    rows += [{"arrival_s": 0.5 * i, "prompt_tokens": 64, "output_tokens": 10} for i in (1, 2, 3)]
    trace = write_trace(tmp_path / "t.jsonl", rows)
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(ONE_AT_A_TIME)
    workload = load_workload(trace, default_model="llama-3.1-8b")
    report, _ = simulate(load_fleet(fleet_file), workload, "cost", max_queue_s=2.0)
    assert report["rejected_by_reason"] == {
        "on every backend that serves llama-3.1-8b the first token would take more than 2 s "
        "(its queue, its prefill and the network, as predicted)": 3
    }


def test_fast_mode_refuses_for_the_queue_as_exact_stepping_does(
    tmp_path: Path, shared: Path
) -> None:
    """A request refused for waiting past --max-queue leaves its engine's queue; the next in
    line may then fit at the next step, where exact stepping admits it. Fast mode ran its
    decode run on past that point: on one KV-bound replica (Llama-2-70B, TP2 on A100s, the
    Azure conversation trace) it completed 1,095 of 3,000 requests at 30 s where --exact
    completed 1,082."""
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
        "  d: {site: dc, model: llama-2-70b, hardware: a100-sxm-80gb, tp: 2, replicas: 1,"
        " max_num_seqs: 128, max_batched_tokens: 4096}\n"
    )
    runs = {}
    for exact in (False, True):
        wl = load_workload(
            shared / "traces" / "azure_llm_2023_conv.csv", default_model="llama-2-70b"
        )
        wl = type(wl)(wl.requests[:1500], wl.slos)
        records: list[RequestRecord] = []
        simulate(
            load_fleet(fleet_file),
            wl,
            "least_loaded",
            exact=exact,
            max_queue_s=5.0,
            on_request=records.append,
        )
        runs[exact] = {r.id: r for r in records}
    fast, exact_ = runs[False], runs[True]
    assert sum(r.status == "rejected" for r in fast.values()) > 100  # the limit binds
    assert fast.keys() == exact_.keys()
    for rid, r in fast.items():
        e = exact_[rid]
        assert (r.status, r.reason) == (e.status, e.reason), rid
        assert (r.first_token_s is None) == (e.first_token_s is None), rid
        if r.first_token_s is not None and e.first_token_s is not None:
            assert abs(r.first_token_s - e.first_token_s) <= 1e-6, rid


def test_a_trace_rows_origin_cannot_add_a_header(tmp_path: Path) -> None:
    """bench sends a row's origin as `x-wattserve-site` (so that the gateway routes it as
    simulate does). An origin with a line break in a JSONL trace made bench's HTTP/1 client
    write a header of the row's choosing (`edge\\r\\nX-Evil: 1` arrived as two headers; an
    `Authorization` would have spent another key's budget). Such a row is a bad row now
    (no site is named so), and the client refuses a header that carries a line break."""
    import asyncio

    from serving import ThreadedApp

    from wattserve.bench.run import residency_headers
    from wattserve.serve.backends.http1 import Http1Pool, HTTPError

    trace = tmp_path / "t.jsonl"
    rows = [
        {"arrival_s": 0.0, "prompt_tokens": 10, "output_tokens": 4, "origin": "edge\r\nX-Evil: 1"},
        {"arrival_s": 0.1, "prompt_tokens": 10, "output_tokens": 4, "origin": "edge"},
    ]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    wl = load_workload(trace, default_model="m")
    assert [residency_headers(r) for r in wl.requests] == [{"x-wattserve-site": "edge"}]
    assert wl.bad_rows.total == 1 and "printable" in str(wl.bad_rows[0])

    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({})

    async def post(headers: dict[str, str]) -> int:
        pool = Http1Pool(f"http://127.0.0.1:{app.port}")
        try:
            status, _ = await pool.post("/v1/chat/completions", b"{}", headers, 5.0)
        finally:
            await pool.close()
        return status

    with ThreadedApp([web.post("/v1/chat/completions", echo)]) as app:
        assert asyncio.run(post({"x-wattserve-site": "edge"})) == 200
        for bad in ("edge\r\nX-Evil: 1", "edge\nX-Evil: 1", "edge\x00"):
            try:
                asyncio.run(post({"x-wattserve-site": bad}))
            except HTTPError as exc:
                assert "line break or NUL" in str(exc)
            else:
                raise AssertionError(f"sent {bad!r}")
    assert len(seen) == 1 and "X-Evil" not in seen[0]
