"""serve against simulate on --max-queue and residency, over real sockets: what a read-only
review of the first cross-clock fixes found (docs/bench.md, "serve against simulate, request by
request")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import FAST_FLEET, bench, gateway, simulated, write_trace

from wattserve.core.admission import no_first_token
from wattserve.core.fleet import load_fleet
from wattserve.core.records import RequestRecord
from wattserve.core.workload import load_workload
from wattserve.errors import ConfigError
from wattserve.simulate import simulate

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


def chat(
    url: str, site: str, model: str = "llama-3.1-8b", headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers={"x-wattserve-site": site, **(headers or {})},
        timeout=30,
    )


def test_a_target_passed_over_for_its_queue_keeps_its_rate_limit_token(tmp_path: Path) -> None:
    """A request passed over for its predicted first token takes no rate-limit token: serve
    checked --max-queue after admission had taken the hosted API's token, so the next request,
    which simulate serves, found the bucket empty (503)."""
    with gateway(tmp_path, RATE_LIMITED, "--policy", "cost", "--max-queue", "0.23") as s:
        far = chat(s.url, "edge")
        near = chat(s.url, "dc")
    assert far.status_code == 503 and "would take more than" in far.text, far.text
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


LONG_PROMPTS = """\
name: xclock-long-prompts
sites:
  dc: {kind: datacenter}
  edge: {kind: edge}
links:
  - {between: [edge, dc], rtt_ms: 40}
deployments:
  h100:
    site: dc
    model: llama-3.1-8b
    hardware: h100-sxm
    replicas: 1
    max_num_seqs: 1
"""


@pytest.mark.parametrize("exact", [False, True])
def test_a_request_running_with_no_first_token_at_the_limit_is_refused(
    tmp_path: Path, exact: bool
) -> None:
    """--max-queue bounds the wait for the first token at the client, not for a place in the
    batch: serve's timeout refuses (503) a request still prefilling at the limit, or whose
    first token is still on the link; simulate refused only requests still queued, and served
    the second of these (in the batch at 0.68 s, its first token at the edge at 1.24 s)."""
    trace = write_trace(
        tmp_path / "t.jsonl",
        [
            {"arrival_s": 0.0, "prompt_tokens": 16000, "output_tokens": 20, "origin": "edge"}
            for _ in range(3)
        ],
    )
    records: list[RequestRecord] = []
    fleet_file = tmp_path / "sim-fleet.yaml"
    fleet_file.write_text(LONG_PROMPTS)
    workload = load_workload(trace, default_model="llama-3.1-8b")
    _, out = simulate(
        load_fleet(fleet_file),
        workload,
        "cost",
        max_queue_s=1.0,
        exact=exact,
        on_request=records.append,
    )
    # each request once: the one stopped in the engine is not counted again when it leaves
    assert sorted(r.row for r in records) == [1, 2, 3]
    assert out.completed == 1 and len(out.ttft) == 1
    sim = {r.row: r for r in records}
    assert [sim[row].status for row in (1, 2, 3)] == ["ok", "rejected", "rejected"]
    assert sim[2].reason == no_first_token(1.0)  # the third is passed over: a long queue
    if not exact:  # one gateway run for both
        return
    with gateway(tmp_path, LONG_PROMPTS, "--policy", "cost", "--max-queue", "1") as s:
        got = bench(s.url, trace, tmp_path / "bench.json")
    # three requests sent at once may reach the gateway in any order: the same three outcomes
    outcomes = sorted(
        next((r for r in (sim[2].reason, sim[3].reason) if r in error), error)
        for error in got["errors"]
    )
    assert outcomes == sorted(["", sim[2].reason, sim[3].reason]), got["errors"]


def test_a_local_only_row_without_an_origin_is_refused_on_both_clocks(tmp_path: Path) -> None:
    """A local-only row must say where it may not leave: simulate refused one without an
    origin while bench sent it without x-wattserve-data-local, so the gateway served it
    anywhere. bench now sends the header and the gateway answers 400."""
    trace = write_trace(
        tmp_path / "t.jsonl",
        [
            {"arrival_s": 0.0, "prompt_tokens": 50, "output_tokens": 5, "local_only": True},
            {"arrival_s": 0.1, "prompt_tokens": 50, "output_tokens": 5},
        ],
    )
    sim = simulated(tmp_path, FAST_FLEET, trace, "cost")
    assert sim[1].status == "rejected" and "must name its site" in sim[1].reason
    assert sim[2].status == "ok"
    with gateway(tmp_path, FAST_FLEET, "--policy", "cost") as s:
        got = bench(s.url, trace, tmp_path / "bench.json")
    errors = dict(zip(got["trace_rows"], got["errors"], strict=True))
    assert "name the site in x-wattserve-site" in errors[1] and not errors[2], errors


def test_a_name_with_spaces_at_its_ends_is_refused(tmp_path: Path) -> None:
    """An HTTP header drops a value's leading and trailing spaces, so a site 'dc ' ran in
    simulate and could not be named to the gateway (400: 'dc' is not a site). A fleet may not
    name a site so, and a trace row's origin, model or SLO name is a bad row."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        FAST_FLEET.replace("  dc: {kind", "  'dc ': {kind").replace("site: dc", "site: 'dc '")
    )
    with pytest.raises(ConfigError, match="not beginning or ending with a space"):
        load_fleet(fleet)
    trace = write_trace(
        tmp_path / "t.jsonl",
        [
            {"arrival_s": 0.0, "prompt_tokens": 5, "output_tokens": 5, "origin": "dc "},
            {"arrival_s": 0.0, "prompt_tokens": 5, "output_tokens": 5, "model": " llama-3.2-1b"},
            {"arrival_s": 0.0, "prompt_tokens": 5, "output_tokens": 5, "origin": "dc"},
        ],
    )
    workload = load_workload(trace, default_model="llama-3.2-1b")
    assert [r.row for r in workload.requests] == [3]
    assert [why for _, why in workload.bad_rows] == [
        "malformed row: origin must not begin or end with a space, not 'dc '",
        "malformed row: model must not begin or end with a space, not ' llama-3.2-1b'",
    ]


WAKE_ONE = """\
name: xclock-wake-one
sites:
  dc: {kind: datacenter, power_cap_w: 600}
  edge: {kind: edge}
links:
  - {between: [edge, dc], rtt_ms: 20}
deployments:
  h100:
    site: dc
    model: llama-3.1-8b
    hardware: h100-sxm
    replicas: 2
    max_num_seqs: 1
"""


@pytest.mark.parametrize("origin", [None, "edge"])
def test_requests_placed_together_under_a_cap_wake_one_replica(
    tmp_path: Path, origin: str | None
) -> None:
    """Under a cap that lets one of two replicas run, requests admitted in one turn of the
    gateway's event loop (three at once: the two waiting for power retried together) each
    woke a replica, whose steps then waited for each other's power (TPOT 14.5 ms against
    7.3 ms); simulate promises an idle replica's first step its power on placement and ran
    them one after the other. The emulated replica now promises it too (PowerGovernor.reserve)
    until it plans a step with the request: from the edge, a request reaches it a turn later
    (a task carries it over the link), and a promise given back before then did nothing
    (TTFT 7.2 s for the second and third against simulate's 2.2 s and 4.4 s); and a promise
    given back tells the steps waiting for power (one waited 5 s, until a timeout)."""
    row = {"arrival_s": 0.0, "prompt_tokens": 64, "output_tokens": 300, "origin": origin}
    trace = write_trace(tmp_path / "t.jsonl", [row] * 3)
    sim = simulated(tmp_path, WAKE_ONE, trace, "cost", max_wait_s=30.0)
    assert [r.status for r in sim.values()] == ["ok"] * 3
    sim_tpot = sorted(r.tpot_s for r in sim.values() if r.tpot_s is not None)
    sim_ttft = sorted(r.ttft_s for r in sim.values() if r.ttft_s is not None)
    with gateway(tmp_path, WAKE_ONE, "--policy", "cost", "--max-wait", "30") as s:
        got = bench(s.url, trace, tmp_path / "bench.json")
    assert not any(got["errors"]), got["errors"]
    tpots = sorted(
        (e2e - ttft) / (n - 1)
        for e2e, ttft, n in zip(got["e2els"], got["ttfts"], got["output_lens"], strict=True)
    )
    for measured, simulated_s in zip(tpots, sim_tpot, strict=True):
        assert abs(measured - simulated_s) < 0.1 * simulated_s, (tpots, sim_tpot)
    for measured, simulated_s in zip(sorted(got["ttfts"]), sim_ttft, strict=True):
        assert abs(measured - simulated_s) < 0.25, (got["ttfts"], sim_ttft)


def test_the_gateway_routes_by_the_slo_class_a_request_names(tmp_path: Path) -> None:
    """The gateway knew only the default SLO class, so under `energy` every request went where
    the default allows (the Jetson), where simulate sent the workload's interactive class to the
    H100s that meet its 6 ms TPOT. `serve --slos W` takes the workload file's classes, bench
    sends each row's in x-wattserve-slo, and both clocks place each row alike."""
    (tmp_path / "t.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "arrival_s": 0.3 * i,
                    "prompt_tokens": 200,
                    "output_tokens": 20,
                    "slo": ("interactive", "batch")[i % 2],
                }
            )
            + "\n"
            for i in range(6)
        )
    )
    workload = tmp_path / "w.yaml"
    workload.write_text(
        "trace: t.jsonl\nslos:\n  interactive: {ttft_s: 0.5, tpot_s: 0.006}\n"
        "  batch: {ttft_s: 20, tpot_s: 1.0}\n"
    )
    sim = simulated(tmp_path, FAST_FLEET, workload, "energy")
    targets = [sim[row].target for row in range(1, 7)]
    assert targets == ["fast/0", "edge-small/0"] * 3  # the classes decide
    with gateway(tmp_path, FAST_FLEET, "--policy", "energy", "--slos", str(workload)) as s:
        got = bench(s.url, workload, tmp_path / "bench.json")
        unknown = httpx.post(
            f"{s.url}/v1/chat/completions",
            json={"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-wattserve-slo": "gold"},
            timeout=30,
        )
    by_row = dict(zip(got["trace_rows"], got["request_backends"], strict=True))
    assert [by_row[row] for row in range(1, 7)] == targets
    assert unknown.status_code == 400
    assert "x-wattserve-slo 'gold' is not an SLO class" in unknown.text, unknown.text
    assert unknown.json()["error"]["param"] == "x-wattserve-slo"


def test_without_classes_the_gateway_serves_any_class_as_the_default(tmp_path: Path) -> None:
    """As simulate serves a trace's rows under the default class when its workload names no
    classes, a gateway given none serves a request naming any class (bench sends the rows'
    names) under the default; two headers are refused."""
    with gateway(tmp_path, FAST_FLEET, "--policy", "energy") as s:
        named = chat(s.url, "dc", "llama-3.2-1b", {"x-wattserve-slo": "gold"})
        twice = httpx.post(
            f"{s.url}/v1/chat/completions",
            json={"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "hi"}]},
            headers=[("x-wattserve-slo", "a"), ("x-wattserve-slo", "b")],
            timeout=30,
        )
    assert named.status_code == 200, named.text
    assert twice.status_code == 400 and "one x-wattserve-slo" in twice.text


STOPS = """\
name: xclock-stops
sites:
  dc: {kind: datacenter, power_cap_w: 1000}
  edge: {kind: edge}
links:
  - {between: [edge, dc], rtt_ms: 600}
deployments:
  d:
    site: dc
    model: llama-3.1-8b
    hardware: h100-sxm
    replicas: 2
    max_num_seqs: 2
    max_batched_tokens: 512
"""


def _same_record(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two request records alike: times to rounding, every other field exactly (pytest 9.2's
    approx refuses a text value under a relative tolerance)."""
    assert a.keys() == b.keys(), (a, b)
    for key, value in a.items():
        if isinstance(value, float):
            assert value == pytest.approx(b[key], rel=1e-9, abs=1e-12), (key, a, b)
        else:
            assert value == b[key], (key, a, b)


def _records(tmp: Path, fleet_yaml: str, trace: Path, **options: Any) -> tuple[Any, list[Any]]:
    fleet_file = tmp / "stops-fleet.yaml"
    fleet_file.write_text(fleet_yaml)
    workload = load_workload(trace, default_model="llama-3.1-8b")
    records: list[RequestRecord] = []
    report, _ = simulate(load_fleet(fleet_file), workload, on_request=records.append, **options)
    return report, sorted((r.as_json() for r in records), key=lambda r: r["row"])


def test_fast_mode_and_exact_stepping_agree_when_running_requests_are_stopped(
    tmp_path: Path,
) -> None:
    """A running request stopped at --max-queue (a review's random case, 22 rows, two H100s
    under 1 kW, a 600 ms link): its record kept the output the engine cut it to (5 in fast
    mode, 81 stepping, 300 in the trace), the workload's request was cut for a later run, and
    a cut run's stale end moved fast mode's clock (span, energy and $ 0.1% over)."""
    trace = Path(__file__).parent / "data" / "max_queue_stops.jsonl"
    options = {"policy": "cost", "max_queue_s": 0.8, "max_wait_s": 5.0}
    fast, fast_records = _records(tmp_path, STOPS, trace, **options)
    exact, exact_records = _records(tmp_path, STOPS, trace, exact=True, **options)
    for a, b in zip(fast_records, exact_records, strict=True):  # times to rounding
        _same_record(a, b)
    for key in ("span_s", "energy_j", "usd"):
        assert fast[key] == pytest.approx(exact[key], rel=1e-9), key
    stopped = [r for r in fast_records if r["reason"] == no_first_token(0.8)]
    assert stopped and next(r for r in stopped if r["row"] == 18)["output_tokens"] == 300
    workload = load_workload(trace, default_model="llama-3.1-8b")
    fleet_file = tmp_path / "stops-fleet.yaml"
    simulate(load_fleet(fleet_file), workload, max_queue_s=0.8, max_wait_s=5.0)
    assert [r.output_tokens for r in workload.requests] == [
        r.output_tokens for r in load_workload(trace, default_model="llama-3.1-8b").requests
    ]


LATE_LINK = """\
name: xclock-late-link
sites:
  dc: {kind: datacenter}
  edge: {kind: edge}
links:
  - {between: [edge, dc], rtt_ms: 200}
deployments:
  d:
    site: dc
    model: llama-3.1-8b
    hardware: l4
    replicas: 1
    max_num_seqs: 1
"""


def test_an_answer_finished_before_the_limit_whose_first_token_arrives_after_it(
    tmp_path: Path,
) -> None:
    """A short answer the engine finished before --max-queue whose first token reaches its
    client across a 200 ms link after it: simulate counted it served, the gateway's timeout
    answers 503. Now both refuse it (row 7), and agree on every row."""
    trace = Path(__file__).parent / "data" / "max_queue_late_link.jsonl"
    options = {"policy": "least_loaded", "max_queue_s": 1.0, "max_wait_s": 5.0}
    for exact in (False, True):
        _, records = _records(tmp_path, LATE_LINK, trace, exact=exact, **options)
        assert next(r for r in records if r["row"] == 7)["reason"] == no_first_token(1.0)
    args = ("--policy", "least_loaded", "--max-queue", "1", "--max-wait", "5")
    with gateway(tmp_path, LATE_LINK, *args) as s:
        got = bench(s.url, trace, tmp_path / "bench.json")
    errors = dict(zip(got["trace_rows"], got["errors"], strict=True))
    for r in records:
        assert (r["status"] == "ok") == (not errors[r["row"]]), (r, errors[r["row"]])


def test_fast_mode_cuts_a_run_waiting_for_power_when_a_request_in_it_is_stopped(
    tmp_path: Path,
) -> None:
    """A request stopped at --max-queue while its engine's next decode run waited for power
    rode the whole run in fast mode (exact stepping drops it after a step): the example fleet
    on the conversation workload at 8x, `energy`, a 0.5 s limit completed 598 in fast mode and
    602 stepping. The waiting run is now cut to its first step."""
    repo = Path(__file__).resolve().parent.parent
    fleet = load_fleet(repo / "examples" / "fleet-hetero.yaml")
    runs = []
    for exact in (False, True):
        workload = load_workload(
            repo / "examples" / "workload-conv.yaml",
            default_model="llama-3.1-8b",
            rate_scale=8.0,
            duration_s=20.0,
        )
        records: list[RequestRecord] = []
        report, _ = simulate(
            fleet,
            workload,
            "energy",
            max_queue_s=0.5,
            exact=exact,
            on_request=records.append,
        )
        runs.append((report, sorted((r.as_json() for r in records), key=lambda r: r["id"])))
    (fast, fast_records), (exact_report, exact_records) = runs
    assert fast["completed"] == exact_report["completed"]
    for a, b in zip(fast_records, exact_records, strict=True):
        _same_record(a, b)
