"""A deployment on devices with no price (the catalog's l40s, this machine's local-cpu): the
gateway had billed and recorded its requests at $0.00, a known figure, where `estimate` and
`simulate` say the dollars are unknown. Its requests now carry `usd: null` in their answers
and ledger rows (whole, streamed, or ended early by their client), and `wattserve usage`
reads the group as unknown. Real gateway and fake server processes on loopback sockets."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving import Server, fake_upstream, gateway, ledger_row
from typer.testing import CliRunner

from wattserve.cli.app import app

CHAT = "/v1/chat/completions"
UNPRICED, UPSTREAM, PRICED = "llama-3.1-8b", "llama-3.2-1b", "qwen2.5-0.5b"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("unpriced")
    with fake_upstream() as port:
        fleet = (
            "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
            f"  l40s: {{site: dc, model: {UNPRICED}, hardware: l40s}}\n"
            f"  l40s-server: {{site: dc, model: {UPSTREAM}, hardware: l40s, "
            f"backend: {{kind: openai, url: 'http://127.0.0.1:{port}/v1'}}}}\n"
            f"  h100: {{site: dc, model: {PRICED}, hardware: h100-sxm}}\n"
        )
        with gateway(tmp, fleet, name="unpriced") as s:
            yield s


def body(model: str, **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    } | extra


@pytest.mark.parametrize(("model", "known"), [(UNPRICED, False), (UPSTREAM, False), (PRICED, True)])
def test_an_unpriced_devices_answers_cost_null_not_zero(
    gw: Server, model: str, known: bool
) -> None:
    r = httpx.post(f"{gw.url}{CHAT}", json=body(model), timeout=30)
    assert r.status_code == 200, r.text
    usd = r.json()["usage"]["wattserve"]["usd"]
    assert (usd is not None and usd > 0) if known else usd is None, usd
    assert (ledger_row(gw.db, r.json()["id"])["usd"] is not None) is known
    streamed = body(model, stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", f"{gw.url}{CHAT}", json=streamed, timeout=30) as s:
        events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
    last = json.loads(events[-2])["usage"]["wattserve"]
    assert (last["usd"] is not None) is known


@pytest.mark.parametrize("model", [UNPRICED, UPSTREAM])
def test_a_stream_its_client_left_is_recorded_with_unknown_dollars(gw: Server, model: str) -> None:
    slow = {"fake_tokens": 50, "fake_gap_s": 0.2} if model == UPSTREAM else {}  # the fake's
    streamed = body(model, max_tokens=2000, stream=True, **slow)
    with httpx.stream("POST", f"{gw.url}{CHAT}", json=streamed, timeout=30) as s:
        first = next(line for line in s.iter_lines() if line.startswith("data: "))
    rid = json.loads(first[6:])["id"]
    row = ledger_row(gw.db, rid)
    assert row["status"] != "ok" and row["completion_tokens"] < 2000
    assert row["usd"] is None and row["energy_j"] is not None


def test_usage_reads_an_unpriced_group_as_unknown(gw: Server) -> None:
    httpx.post(f"{gw.url}{CHAT}", json=body(UNPRICED), timeout=30)
    httpx.post(f"{gw.url}{CHAT}", json=body(PRICED), timeout=30)
    out = CliRunner().invoke(app, ["usage", "--db", str(gw.db), "--by", "model", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["group"]: r for r in json.loads(out.output)}
    assert rows[UNPRICED]["usd"] is None and rows[UNPRICED]["usd_unknown_requests"] >= 1
    assert rows[PRICED]["usd"] > 0 and rows[PRICED]["usd_unknown_requests"] == 0


ACROSS_A_LINK = """
sites:
  edge: {kind: edge}
  dc: {kind: datacenter}
links:
  - {between: [edge, dc], rtt_ms: 3000}
deployments:
  l40s: {site: dc, model: llama-3.1-8b, hardware: l40s}
"""


def test_an_answer_its_client_left_while_it_crossed_a_link_costs_unknown_dollars(
    tmp_path: Path,
) -> None:
    """The engine finished, and the client left while the answer waited on the 3 s link to
    its site: billed as the engine finished it (Backend.unread), at unknown dollars too."""
    with gateway(tmp_path, ACROSS_A_LINK, name="link") as gw:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                f"{gw.url}{CHAT}",
                json=body(UNPRICED, max_tokens=2),
                headers={"x-wattserve-site": "edge"},
                timeout=1.0,
            )
        deadline = time.monotonic() + 10
        while True:  # the row is written once the answer has crossed the link
            con = sqlite3.connect(gw.db)
            rows = con.execute("SELECT status, energy_j, usd FROM requests").fetchall()
            con.close()
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        ((status, energy, usd),) = rows
        assert status == "cancelled" and energy is not None and usd is None, rows
