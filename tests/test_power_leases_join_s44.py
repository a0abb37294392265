"""Replicas that join while another holds a capped site's headroom (a new user's walkthrough of
docs/scale-out.md, session 44): the first replica to join had taken the whole headroom, and
the others stayed at 0 W for good. Their requests never waited for power, since the cost
policy sent each to the fleet's hosted API when its first choice, an H100, lacked power: so
they never asked for a lease, and their rented GPUs idled while every request paid per token.
Now a replica below its even share takes free headroom nobody asked for, and a request placed
past a target that lacked power asks for it. Real gateway processes and a real redis-server."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis
from redis_server import redis_server
from serving import gateway
from test_scale_out_gateways import replicas

FLEET = (Path(__file__).resolve().parents[1] / "examples" / "fleet-hetero.yaml").read_text()
HI = [{"role": "user", "content": "hi"}]
HEADROOM_W = 1170.0  # dc-east's 1,500 W cap less its 2 H100s' and 2 A100s' idle draw
EDGE_W = 163.0  # edge-sf's 190 W cap less its 3 Jetsons' idle draw


def test_replicas_that_join_later_get_power_and_serve_on_their_gpus(tmp_path: Path) -> None:
    """Three replicas started one after another: each ends with a lease at dc-east (one had
    stayed at 0 W), and each serves on its H100s within a few requests (the first may go to
    the hosted API while its lease grows)."""
    with (
        redis_server() as srv,
        replicas(tmp_path, FLEET, 3, "--state", srv.url) as servers,
    ):
        r = redis.Redis.from_url(srv.url)
        time.sleep(3)  # a few heartbeats: joins and top-ups
        raw: dict[bytes, bytes] = r.hgetall("ws:lease:dc-east")  # type: ignore[assignment]
        held = sorted(float(v.split()[0]) for v in raw.values())
        assert len(held) == 3 and held[0] > 0 and sum(held) <= HEADROOM_W + 1e-3, held
        body = {"model": "llama-3.1-8b", "max_tokens": 8, "messages": HI}
        for s in servers:  # the cheapest target with power: its own H100s, not the API
            deadline, targets = time.monotonic() + 10, []
            while not targets or (targets[-1] != "h100" and time.monotonic() < deadline):
                got = httpx.post(f"{s.url}/v1/chat/completions", json=body, timeout=30).json()
                targets.append(got["usage"]["wattserve"]["target"])
                time.sleep(0.2)
            assert targets[-1] == "h100", targets


def wanted(r: redis.Redis, rid: str) -> tuple[float, float]:
    """(granted, wanted) of replica `rid` at dc-east, as Redis holds them."""
    raw = r.hget("ws:lease:dc-east", rid)
    g, w = (b"0 0" if raw is None else raw).split()  # type: ignore[union-attr]
    return float(g), float(w)


def test_a_request_sent_past_a_gpu_short_of_power_asks_for_the_power(tmp_path: Path) -> None:
    """Another replica (a stand-in, `hog`) holds dc-east's whole headroom, so this replica's
    requests go to the hosted API without waiting for power. Each such request now asks for
    the power its first choice lacked (Redis records what it wanted); it had asked for none,
    and the hog, seeing no demand, kept it all. Once the hog gives it back, the replica's
    requests run on its H100s."""
    with redis_server() as srv:
        r = redis.Redis.from_url(srv.url)
        r.set("ws:replica:hog", "1", px=600_000)
        r.hset("ws:lease:dc-east", "hog", f"{HEADROOM_W:.6f} {HEADROOM_W:.6f}")
        r.hset("ws:lease:edge-sf", "hog", f"{EDGE_W:.6f} {EDGE_W:.6f}")  # its Jetsons' too
        with gateway(tmp_path, FLEET, "--state", srv.url) as gw:
            me = httpx.get(f"{gw.url}/health").json()["state"]["replica"]
            time.sleep(2.5)  # past its join (which asked for an even share): it wants nothing
            assert wanted(r, me) == (0.0, 0.0)
            body = {"model": "llama-3.1-8b", "max_tokens": 4, "messages": HI}

            def target() -> str:
                got = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30)
                return str(got.json()["usage"]["wattserve"]["target"])

            assert target() == "groq-8b"
            deadline = time.monotonic() + 1.0  # its next heartbeat may ask afresh
            while wanted(r, me)[1] == 0.0 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert wanted(r, me)[1] > 0.0, "a request sent past its H100s asked for nothing"
            r.hset("ws:lease:dc-east", "hog", "0.000000 0.000000")  # the hog gives it back
            deadline = time.monotonic() + 10
            while (got := target()) != "h100" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert got == "h100"


def test_two_idle_replicas_topping_up_from_one_spare_figure_take_no_power_from_a_busy_one() -> None:
    """Against the real script: A busy with 600 W of 900, B and C idle at 0 W, both having
    read 300 W spare at their last call. B's top-up takes the 300 W; C's, a moment later,
    finds none and must not be recorded as 300 W of unmet demand: it was (a review, session
    44), and A, seeing a shortage, gave back down to its even share while busy, asked again,
    and the three went round so for good (141 ticks of 50 ms short of power in 120 s)."""
    import asyncio

    import redis.asyncio as aioredis
    from test_power_leases import stand_in_leases

    room, idle = 900.0, 100.0

    async def scenario(url: str) -> tuple[dict[str, str], float]:
        client = aioredis.Redis.from_url(url)
        await client.set("ws:epoch", "e")
        for rid in "ABC":
            await client.set(f"ws:replica:{rid}", 1)
        (a, ga), (b, _), (c, _) = (
            stand_in_leases(client, rid, busy, room, idle, 3)
            for rid, busy in (("A", True), ("B", False), ("C", False))
        )
        await client.hset("ws:lease:dc", "A", "600.000000 600.000000")
        a.sites["dc"].lease_w, a.sites["dc"].joined = 600.0, True
        a.apply("dc")
        ga.change("dc", 0, 600.0)  # A draws its whole lease
        for p in (b, c):
            p.sites["dc"].joined, p.sites["dc"].spare_w = True, 300.0
        await b._ask("dc")
        await c._ask("dc")
        raw = await client.hgetall("ws:lease:dc")
        await a.renew()
        await client.aclose()
        return {k.decode(): v.decode() for k, v in raw.items()}, a.sites["dc"].lease_w

    with redis_server() as srv:
        held, busy_lease = asyncio.run(scenario(srv.url))
    assert held["B"] == "300.000000 300.000000"
    assert held["C"] == "0.000000 0.000000", held  # no demand recorded for a lost top-up
    assert busy_lease == 600.0  # nothing taken from the busy replica


TWO_SITES = """
sites:
  x: {kind: datacenter, power_cap_w: 1000}
  y: {kind: datacenter, power_cap_w: 1000}
deployments:
  first: {site: x, model: llama-3.1-8b, hardware: h100-sxm}
  second: {site: y, model: llama-3.1-8b, hardware: h100-sxm}
"""


def test_a_request_passed_over_one_site_asks_there_only(tmp_path: Path) -> None:
    """Placed at y past x's target (short of power): it asks at x alone. It had asked at every
    capped site of its model, y too, where it had just been placed with room to spare, and
    its lease at y grew an eighth of the headroom a request, to the whole of it."""
    import asyncio

    from wattserve.core.fleet import load_fleet
    from wattserve.core.policy import make_policy
    from wattserve.core.workload import Request
    from wattserve.serve.leases import PowerLeases
    from wattserve.serve.router import Router
    from wattserve.serve.state import SharedState

    (tmp_path / "fleet.yaml").write_text(TWO_SITES)
    router = Router(load_fleet(tmp_path / "fleet.yaml"), make_policy("cost"))
    state = SharedState("redis://127.0.0.1:1/0", replica_id="me")  # never connected
    leases = PowerLeases(router, state)
    for site in ("x", "y"):
        leases.sites[site].lease_w = 0.0 if site == "x" else 400.0

    async def passed_over() -> None:
        leases.short_of_power(Request(0, 0.0, 100, 10, "llama-3.1-8b"), ("first",))
        await leases.drain()

    asyncio.run(passed_over())
    assert leases.sites["x"].demand_w > 0.0
    assert leases.sites["y"].demand_w == 0.0


def test_a_joiners_ask_stays_shown_until_the_holder_has_read_it() -> None:
    """Against the real script: H holds the whole 1,170 W, idle; J1 and J2 join (asking for
    390 W each, granted nothing) and each makes its next heartbeat before H makes its own.
    Their asks had been gone by then (each heartbeat asked for the lease held: 0 W), H kept
    everything, and the two stayed at 0 W. Now each ask stays shown until granted."""
    import asyncio

    import redis.asyncio as aioredis
    from test_power_leases import stand_in_leases

    room, idle = HEADROOM_W, 330.0

    async def scenario(url: str) -> list[float]:
        client = aioredis.Redis.from_url(url)
        await client.set("ws:epoch", "e")
        for rid in ("H", "J1", "J2"):
            await client.set(f"ws:replica:{rid}", 1)
        (h, _), (j1, _), (j2, _) = (
            stand_in_leases(client, rid, False, room, idle, 3) for rid in ("H", "J1", "J2")
        )
        await client.hset("ws:lease:dc", "H", f"{room:.6f} {room:.6f}")
        h.sites["dc"].lease_w, h.sites["dc"].joined = room, True
        h.apply("dc")
        for p in (j1, j2, j1, j2):  # joins, then their next heartbeats
            await p.renew()
        await h.renew()  # H reads what the joiners asked for
        for p in (j1, j2):
            await p.renew()
        await client.aclose()
        return [p.sites["dc"].lease_w for p in (h, j1, j2)]

    with redis_server() as srv:
        leases = asyncio.run(scenario(srv.url))
    assert leases == pytest.approx([room / 3] * 3), leases
