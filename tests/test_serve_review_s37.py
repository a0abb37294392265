"""Session 37's review of the gateway's state machine: a site served by OpenAI-compatible
servers was never at its power cap (a server's requests drew nothing in the gateway's
accounts, so eight requests ran where the cap left room for one), and a client that left
while its key's shared budget was asked of Redis left its hold there for the replica's life.

Over real sockets (a gateway process, wattserve's fake OpenAI server) and a real
redis-server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import redis.asyncio
from redis_server import redis_server
from serving import fake_upstream, gateway

from wattserve.core.fleet import load_fleet
from wattserve.core.policy import make_policy
from wattserve.core.workload import Request
from wattserve.serve.budgets import Charge, Hold, usd_per_s
from wattserve.serve.ledger import KeyRecord
from wattserve.serve.router import Router
from wattserve.serve.shared_budgets import RedisBudgets
from wattserve.serve.state import SharedState

MODEL = "llama-3.2-1b"


def _fleet(port: int, cap: str = "") -> str:
    return (
        f"sites:\n  dc: {{kind: datacenter{cap}}}\n"
        "deployments:\n"
        f"  u: {{site: dc, model: {MODEL}, hardware: h100-sxm, replicas: 2, "
        f"backend: {{kind: openai, url: 'http://127.0.0.1:{port}/v1'}}}}\n"
    )


def test_a_site_of_servers_holds_its_cap(tmp_path: Path) -> None:
    with fake_upstream() as port:
        fleet = tmp_path / "probe.yaml"
        fleet.write_text(_fleet(port))
        router = Router(load_fleet(fleet), make_policy("least_loaded"))
        draw = router.targets["u"].draw  # type: ignore[attr-defined]
        idle = router.gov.sites["dc"].base_w
        assert idle > 0  # the two servers' devices draw idle from the start
        # room for three requests (two on one server, one on the other), not four
        cap = idle + (draw.dynamic_w(3) + draw.dynamic_w(4)) / 2
        assert draw.dynamic_w(1) < draw.dynamic_w(2) < draw.dynamic_w(3) < draw.dynamic_w(4)
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
            "fake_delay_s": 2.0,
        }
        with gateway(
            tmp_path, _fleet(port, f", power_cap_w: {cap:.3f}"), "--max-wait", "0.5"
        ) as gw:
            site = httpx.get(f"{gw.url}/v1/fleet", timeout=10).json()["sites"]["dc"]
            assert abs(site["power_w"] - idle) < 0.01  # idle: what nothing running draws
            seen: list[float] = []
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    s = httpx.get(f"{gw.url}/v1/fleet", timeout=10).json()["sites"]["dc"]
                    seen.append(s["power_w"])
                    time.sleep(0.05)

            def ask() -> int:
                return httpx.post(
                    f"{gw.url}/v1/chat/completions", json=body, timeout=30
                ).status_code

            watcher = threading.Thread(target=watch)
            watcher.start()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda _: ask(), range(8)))
            stop.set()
            watcher.join()
            assert codes.count(200) >= 3 and codes.count(429) >= 1, codes
            assert max(seen) <= cap + 0.01, (max(seen), cap)
            assert max(seen) >= idle + draw.dynamic_w(3) - 0.01  # three ran at once
            end = httpx.get(f"{gw.url}/v1/fleet", timeout=10).json()["sites"]["dc"]
            assert abs(end["power_w"] - idle) < 0.01  # all given back


def test_a_client_that_leaves_while_redis_answers_leaves_no_hold() -> None:
    # a budget of three worst cases: too small for a slab, so one hold per request
    key = KeyRecord("k1", "k", False, 3.0, None, None, 0.0, 0.0)
    worst = Charge(1.0, 0.0)

    async def run(url: str) -> None:
        state = SharedState(url, replica_id="r1", heartbeat_ttl_s=5)
        await state.connect()
        await state._beat()
        budgets = RedisBudgets(state)
        first = await budgets.reserve(key, worst)
        assert isinstance(first, Hold)
        budgets.settle(first, Charge(0.0, 0.0))
        other = redis.asyncio.Redis.from_url(url)
        await other.execute_command("CLIENT", "PAUSE", "600", "WRITE")  # Redis slow a moment
        task = asyncio.ensure_future(budgets.reserve(key, worst))
        await asyncio.sleep(0.2)
        task.cancel()  # as aiohttp cancels the handler of a client that left
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(1.0)  # the pause ends: the script ran
        await state._beat()
        await asyncio.sleep(0.2)
        assert await other.hgetall(state.key("holds", key.id)) == {}
        again = [await budgets.reserve(key, worst) for _ in range(3)]
        assert all(isinstance(h, Hold) for h in again), again  # the whole budget is there
        await other.aclose()
        await state.stop()

    with redis_server() as rs:
        asyncio.run(run(rs.url))


def _slow_body(port: int, body: bytes) -> str:
    """Send the headers, then the body 0.5 s later (a slow client): the status line's code."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        )
        time.sleep(0.5)
        sock.sendall(body)
        return sock.makefile("rb").readline().split()[1].decode()


def test_clients_still_sending_their_bodies_do_not_pass_the_in_flight_limit(
    tmp_path: Path,
) -> None:
    with fake_upstream() as port, gateway(tmp_path, _fleet(port), "--max-in-flight", "2") as gw:
        body = json.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2,
                "fake_delay_s": 2.0,
            }
        ).encode()
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: _slow_body(gw.port, body), range(6)))
        assert codes.count("200") == 2 and codes.count("503") == 4, codes


def _rows(db: Path) -> list[tuple[str, float, float]]:
    """(status, duration_s, usd) of every request in a gateway's ledger."""
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT status, duration_s, usd FROM requests").fetchall()
    finally:
        con.close()


def _streams(url: str, body: dict[str, object], n: int, leave_after_s: float | None) -> None:
    """`n` streams at once, read whole, and (with `leave_after_s`) one more whose client
    reads its first chunk and leaves that long after it."""

    def whole() -> None:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
            r.read()

    def leaver() -> None:
        assert leave_after_s is not None
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
            next(r.iter_lines())
            time.sleep(leave_after_s)  # after its first chunk (on a busy host, sent late)

    with concurrent.futures.ThreadPoolExecutor(n + 1) as pool:
        jobs = [pool.submit(whole) for _ in range(n)]
        if leave_after_s is not None:
            jobs.append(pool.submit(leaver))
        for j in jobs:
            j.result()
    time.sleep(1.5)  # the ledger's writer commits


def test_a_servers_time_is_billed_once_over_the_requests_that_shared_it(tmp_path: Path) -> None:
    with fake_upstream() as port:
        probe = tmp_path / "probe.yaml"
        probe.write_text(_fleet(port).replace("replicas: 2", "replicas: 1"))
        price = usd_per_s(Router(load_fleet(probe), make_policy("least_loaded")).targets["u"])
        assert price > 0
        fleet = _fleet(port).replace("replicas: 2", "replicas: 1")
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": 2,
            "fake_gap_s": 1.0,
        }
        with gateway(tmp_path, fleet) as gw:
            _streams(gw.url, body, 5, leave_after_s=1.0)
        rows = _rows(gw.db)
    ok = [usd for status, _, usd in rows if status == "ok"]
    gone = [(d, usd) for status, d, usd in rows if status == "cancelled"]
    assert len(ok) == 5 and len(gone) == 1, rows
    span = max(d for _, d, _ in rows)
    # the six shared the server: their dollars add up to its price for the time it was busy
    assert sum(usd for _, _, usd in rows) <= 1.05 * price * span, (rows, price)
    assert max(ok) <= 1.1 * min(ok), ok  # alike requests pay alike, whatever order they end in
    d, usd = gone[0]
    assert usd < 0.6 * price * d, (usd, price * d)  # its share among six, not all of its time


LINKED = """
sites:
  dc: {kind: datacenter}
  edge: {kind: edge}
links:
  - between: [edge, dc]
    rtt_ms: 2000
deployments:
  d: {site: dc, model: llama-3.2-1b, hardware: h100-sxm}
"""


def test_a_client_that_leaves_before_the_link_delivers_pays_the_answer_not_the_wait(
    tmp_path: Path,
) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 8,
    }
    headers = {"x-wattserve-site": "edge"}
    with gateway(tmp_path, LINKED) as gw:
        url = f"{gw.url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as r:
            r.read()
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as r:
            next(r.iter_lines())  # the first chunk, then gone: the rest is still on the link
        time.sleep(2.5)
    rows = sorted(_rows(gw.db))
    assert [s for s, _, _ in rows] == ["cancelled", "ok"], rows
    (_, _, gone), (_, _, whole) = rows
    # the engine had made the whole answer: that is its cost, not the devices' $/s for 2 s
    assert gone <= 1.01 * whole, rows


def test_a_request_admitted_again_is_predicted_afresh(tmp_path: Path) -> None:
    """A pool keeps its last prediction by the request's identity; the gateway admits a
    request that waits for power again every 50 ms, and had reused the first prediction
    however the replicas' queues had changed since."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
        f"  d: {{site: dc, model: {MODEL}, hardware: h100-sxm, replicas: 2}}\n"
    )
    router = Router(load_fleet(fleet), make_policy("least_loaded"))
    req = Request(0, 0.0, 100, 10, MODEL)
    queued: list[float] = []
    first = router._admission(req, set(), max_queue_s=1.0, queued=queued)
    assert first.target is not None and not queued
    first.bound.abandon()  # type: ignore[union-attr]
    for engine in router.targets["d"].engines:  # type: ignore[attr-defined]
        engine.pending_prefill += 10**7  # every replica's queue now holds minutes of prefill
    again = router._admission(req, set(), max_queue_s=1.0, queued=queued)
    assert again.target is None and queued and min(queued) > 1.0, (again, queued)


def test_a_drained_target_reads_healthy_and_drained_in_the_fleet_state(tmp_path: Path) -> None:
    """`/v1/fleet` said `healthy: false` for a drained target whose backends were up, and so
    on for up to 5 s after it was undrained (a new user's walkthrough)."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
        f"  d: {{site: dc, model: {MODEL}, hardware: h100-sxm}}\n"
    )
    router = Router(load_fleet(fleet), make_policy("least_loaded"))
    router.drained.add("d")
    router._refresh_unhealthy()
    state = router.fleet_state()["targets"]["d"]
    assert state["drained"] and state["healthy"], state
    router.drained.discard("d")
    state = router.fleet_state()["targets"]["d"]
    assert not state["drained"] and state["healthy"], state
    assert "d" not in router.view.unhealthy  # routed to at once
