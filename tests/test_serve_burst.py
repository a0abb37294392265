"""Bursts of concurrent requests past what a small fleet can take, end to end over real
sockets: two emulated replicas at a site whose power cap lets one request run at a time, and
a server (the fake OpenAI one) slower to its first token than --max-queue. The refused
requests answer 429 (waited for power) or 503 (their first token would come, or came, too
late) in OpenAI's error shape with `code: no_capacity` and a Retry-After; every request sent
is counted once in /metrics and written once to the ledger, whether served, refused or left by
its client; and the gateway is whole afterwards (/health, idle power, a request served). The
bursts found that a request given up for a late first token answered 503 with
`param: "no_capacity"` and no code, and was counted under reason `server_error`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from serving import Server, fake_upstream, gateway, requests_total

from wattserve.serve.ledger import Ledger

MODEL = "llama-3.2-1b"
CHAT = "/v1/chat/completions"
FLEET = f"""\
sites:
  dc: {{kind: datacenter, power_cap_w: 5000}}
deployments:
  g: {{site: dc, model: {MODEL}, hardware: h100-sxm, replicas: 2, max_num_seqs: 1}}
"""
SERVED, LEAVING = 24, 8  # requests read to the end, and requests whose client leaves early
LEAST = re.compile(r"the least cap that lets one run is ([0-9.]+) W")


def one_at_a_time(s: Server, admin: str) -> float:
    """Set the site's cap to a little over the least that lets one request run (the admin
    API says what it is), so that a second running request never fits; returns the cap."""
    url, auth = f"{s.url}/v1/fleet", {"Authorization": f"Bearer {admin}"}
    idle = httpx.get(url).json()["sites"]["dc"]["power_w"]
    r = httpx.post(
        url, headers=auth, json={"action": "set_cap", "site": "dc", "power_cap_w": idle + 1}
    )
    found = LEAST.search(r.json()["error"]["message"])
    assert r.status_code == 400 and found, r.text
    cap = float(found.group(1)) + 10
    r = httpx.post(url, headers=auth, json={"action": "set_cap", "site": "dc", "power_cap_w": cap})
    assert r.status_code == 200, r.text
    return cap


async def burst(root: str) -> list[tuple[int | None, dict[str, str], Any]]:
    """All requests at once: (status or None when the client left, headers, JSON body). The
    clients that leave do so once the gateway holds every request (in flight or answered): a
    client that gives up before its request arrives was never the gateway's to count, and on a
    loaded machine (the whole suite on 2 vCPUs) 32 connections took longer than 0.3 s to
    deliver, so a fixed 0.3 s left none to count."""
    sent = SERVED + LEAVING
    arrived = asyncio.Event()

    async def watch(c: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = (await c.get(f"{root}/metrics")).text
            held = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith(("wattserve_requests_total{", "wattserve_in_flight_requests "))
            )
            if held >= sent:
                break
            await asyncio.sleep(0.02)
        arrived.set()

    async def send(c: httpx.AsyncClient, i: int) -> tuple[int | None, dict[str, str], Any]:
        body = {
            "model": MODEL,
            "max_tokens": 1024,  # a second or more each on the emulated H100
            "stream": i % 2 == 1,
            "messages": [{"role": "user", "content": f"request {i}"}],
        }
        post = asyncio.ensure_future(c.post(f"{root}{CHAT}", json=body))
        if i >= SERVED:  # this client leaves as soon as the gateway holds every request
            await asyncio.wait(
                [post, asyncio.ensure_future(arrived.wait())],
                timeout=120,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not post.done():
                post.cancel()  # the client left (its connection is closed)
                with contextlib.suppress(asyncio.CancelledError):
                    await post
                return None, {}, None
        r = await post
        data = r.json() if r.status_code != 200 or not body["stream"] else r.text
        return r.status_code, dict(r.headers), data

    limits = httpx.Limits(max_connections=sent + 1)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        watcher = asyncio.ensure_future(watch(c))
        out = await asyncio.gather(*(send(c, i) for i in range(sent)))
        await watcher
        return out


def ledger_statuses(db: Path, sent: int) -> Counter[str]:
    """The ledger's statuses, once every request sent is committed (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        con = sqlite3.connect(db)
        rows = con.execute("SELECT status FROM requests").fetchall()
        con.close()
        if len(rows) >= sent or time.monotonic() > deadline:
            return Counter(status for (status,) in rows)
        time.sleep(0.1)


def settled_counts(url: str, sent: int) -> dict[str, float]:
    """wattserve_requests_total by status once `sent` requests are counted (or after 10 s): a
    request whose client left is counted when the gateway sees its closed connection, which
    under a loaded machine (the whole suite on 2 vCPUs) can be seconds after it left."""
    deadline = time.monotonic() + 10
    while True:
        counted = {k: requests_total(url, k) for k in ("ok", "rejected", "cancelled", "error")}
        if sum(counted.values()) >= sent or time.monotonic() > deadline:
            return counted
        time.sleep(0.2)


def test_a_burst_past_capacity_is_refused_cleanly_and_counted_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "gw.db")
    admin = ledger.create_key("ops", admin=True)
    ledger.close()
    with gateway(tmp_path, FLEET, "--max-wait", "1", "--max-queue", "1") as s:
        cap = one_at_a_time(s, admin)
        results = asyncio.run(burst(s.url))
        time.sleep(1)  # clients that left: the gateway sees the closed connections
        statuses = Counter(status for status, _, _ in results)
        refused = [(st, h, b) for st, h, b in results if st in (429, 503)]
        assert set(statuses) <= {200, 429, 503, None}, statuses
        assert statuses[200] >= 1 and refused, statuses
        for status, headers, body in refused:
            err = body["error"]
            assert set(err) == {"message", "type", "param", "code"}, err
            assert err["code"] == "no_capacity" and err["param"] is None, err
            assert err["type"] == ("rate_limit_error" if status == 429 else "server_error"), err
            assert int(headers["retry-after"]) >= 1, headers
        # every request once in /metrics: served, refused, or left by its client
        sent = SERVED + LEAVING
        counted = settled_counts(s.url, sent)
        assert counted["error"] == 0 and sum(counted.values()) == sent, counted
        # the clients that left before their answer (none, when the gateway answered all 32
        # first: under the whole suite every request got its 503 before all had arrived)
        assert counted["cancelled"] == statuses[None], (counted, statuses)
        assert counted["ok"] >= statuses[200] and counted["rejected"] >= len(refused), counted
        text = httpx.get(f"{s.url}/metrics", timeout=10).text
        for code in (429, 503):
            line = f'wattserve_rejected_total{{reason="no_capacity",status="{code}"}}'
            found = [float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line)]
            assert (found or [0.0])[0] == statuses[code], (code, found, statuses)
        assert "wattserve_in_flight_requests 0" in text
        # the gateway is whole: healthy, its site back to idle, a request served
        assert httpx.get(f"{s.url}/health", timeout=10).status_code == 200
        fleet = httpx.get(f"{s.url}/v1/fleet", timeout=10).json()
        assert fleet["sites"]["dc"]["peak_power_w"] <= cap + 1e-3
        assert fleet["targets"]["g"]["in_flight"] == 0
        assert all(r["batch"] == 0 and r["waiting"] == 0 for r in fleet["targets"]["g"]["replicas"])
        body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{s.url}{CHAT}", json=body, timeout=60).status_code == 200
        in_ledger = ledger_statuses(s.db, sent + 1)
        log = (tmp_path / "gw.log").read_text()
    assert sum(in_ledger.values()) == sent + 1, in_ledger
    assert in_ledger["ok"] == counted["ok"] + 1 and in_ledger["rejected"] == counted["rejected"]
    assert in_ledger["cancelled"] == counted["cancelled"], in_ledger
    assert "Traceback" not in log and "internal error" not in log


def test_a_burst_to_a_server_slower_than_max_queue_is_refused_cleanly(tmp_path: Path) -> None:
    """Streams whose first token the server holds past --max-queue: each answers 503 (given
    up, nothing billed), the server stays in rotation, and it serves the next request."""
    n = 12
    with fake_upstream() as port:
        fleet = (
            "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
            f"  u: {{site: dc, model: {MODEL}, hardware: h100-sxm, "
            f"backend: {{kind: openai, url: 'http://127.0.0.1:{port}/v1'}}}}\n"
        )
        with gateway(tmp_path, fleet, "--max-queue", "0.5") as s:

            async def slow_burst() -> list[httpx.Response]:
                body = {
                    "model": MODEL,
                    "stream": True,
                    "fake_delay_s": 3,
                    "messages": [{"role": "user", "content": "hi"}],
                }
                async with httpx.AsyncClient(timeout=60) as c:
                    return await asyncio.gather(
                        *(c.post(f"{s.url}{CHAT}", json=body) for _ in range(n))
                    )

            replies = asyncio.run(slow_burst())
            for r in replies:
                assert r.status_code == 503, r.text
                err = r.json()["error"]
                assert err["code"] == "no_capacity" and err["param"] is None, err
                assert err["type"] == "server_error" and "no first token" in err["message"]
                assert int(r.headers["retry-after"]) >= 1
            assert requests_total(s.url, "rejected") == n
            text = httpx.get(f"{s.url}/metrics", timeout=10).text
            assert f'wattserve_rejected_total{{reason="no_capacity",status="503"}} {n}' in text
            assert httpx.get(f"{s.url}/health", timeout=10).status_code == 200
            target = httpx.get(f"{s.url}/v1/fleet", timeout=10).json()["targets"]["u"]
            assert target["in_flight"] == 0 and target["healthy"], target
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(f"{s.url}{CHAT}", json=body, timeout=30).status_code == 200
            assert requests_total(s.url, "ok") == 1
            in_ledger = ledger_statuses(s.db, n + 1)
        log = (tmp_path / "gw.log").read_text()
    assert in_ledger == Counter({"rejected": n, "ok": 1}), in_ledger
    assert "Traceback" not in log and "internal error" not in log
