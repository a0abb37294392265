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
import redis
from redis_server import redis_server
from serving import gateway
from test_scale_out_gateways import replicas

FLEET = (Path(__file__).resolve().parents[1] / "examples" / "fleet-hetero.yaml").read_text()
HI = [{"role": "user", "content": "hi"}]
HEADROOM_W = 1170.0  # dc-east's 1,500 W cap less its 2 H100s' and 2 A100s' idle draw
EDGE_W = 163.0  # edge-sf's 190 W cap less its 3 Jetsons' idle draw


def test_replicas_that_join_later_get_their_share_and_serve_on_their_gpus(
    tmp_path: Path,
) -> None:
    with (
        redis_server() as srv,
        replicas(tmp_path, FLEET, 3, "--state", srv.url) as servers,
    ):
        r = redis.Redis.from_url(srv.url)
        deadline = time.monotonic() + 15
        while True:  # each heartbeat (every second) may move a lease
            raw: dict[bytes, bytes] = r.hgetall("ws:lease:dc-east")  # type: ignore[assignment]
            held = sorted(float(v.split()[0]) for v in raw.values())
            if (len(held) == 3 and held[0] >= HEADROOM_W / 3 - 1) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert len(held) == 3 and held[0] >= HEADROOM_W / 3 - 1, held
        assert sum(held) <= HEADROOM_W + 1e-3
        for s in servers:  # the cheapest target with power: its own H100s, not the API
            body = {
                "model": "llama-3.1-8b",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "hi"}],
            }
            got = httpx.post(f"{s.url}/v1/chat/completions", json=body, timeout=30).json()
            assert got["usage"]["wattserve"]["target"] == "h100", got["usage"]


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
