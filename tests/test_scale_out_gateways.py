"""Three real gateway processes sharing a real redis-server: a site's power cap and a key's
budget hold over the sum of the replicas; a replica killed mid-stream loses no record of a
completed request and its holds expire; Redis restarting mid-run is survived."""

from __future__ import annotations

import concurrent.futures
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis
from redis_server import RedisServer, redis_server
from serving import Server, gateway
from test_serve_reliability import SMALL, ask

from wattserve.serve.ledger import Ledger

# 210 W idle (2 x H100): the replicas lease the 1,090 W above it between them (one request adds
# about 190 W to an idle H100 for this model's decode, 345 W at a 128-token prefill)
CAP_W = 1300.0
CAPPED = f"""
sites:
  dc: {{kind: datacenter, power_cap_w: {CAP_W:g}}}
deployments:
  gpus: {{site: dc, model: {SMALL}, hardware: h100-sxm, replicas: 2}}
"""


@contextlib.contextmanager
def replicas(tmp: Path, fleet: str, n: int, *args: str) -> Iterator[list[Server]]:
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(gateway(tmp, fleet, *args, name=f"r{i}")) for i in range(n)]
        deadline = time.monotonic() + 10  # every replica has seen the others' heartbeats
        while any(httpx.get(f"{s.url}/health").json()["state"]["replicas"] != n for s in servers):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield servers


def test_site_cap_and_key_budget_hold_over_three_replicas(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    key = Ledger(db).create_key("team", budget_j=3000.0)
    with (
        redis_server() as r,
        replicas(
            tmp_path,
            CAPPED,
            3,
            "--state",
            r.url,
            "--db",
            str(db),
            "--policy",
            "least_loaded",
            "--max-wait",
            "2",
            # no load shedding (a 503 after 30 s without a first token, which a loaded test
            # machine reached): this test is about caps and budgets, not queueing
            "--max-queue",
            "600",
        ) as servers,
    ):
        idle = [httpx.get(f"{s.url}/v1/fleet").json()["sites"]["dc"]["power_w"] for s in servers]
        peak_dynamic = [0.0]
        samples = [0]  # sums taken while no lease moved
        stop = threading.Event()
        shared = redis.Redis.from_url(r.url)

        def grants() -> dict[bytes, bytes]:  # the leases granted (a wanted figure may move)
            held: dict[bytes, bytes] = shared.hgetall("ws:lease:dc")  # type: ignore[assignment]
            return {k: v.split()[0] for k, v in held.items()}

        def watch() -> None:
            client = httpx.Client()  # kept-alive connections: reads close together in time
            while not stop.is_set():
                before = grants()
                now = [client.get(f"{s.url}/v1/fleet").json()["sites"]["dc"] for s in servers]
                # the draws are read one replica after another: their sum is one moment's only
                # when no lease moved between the reads (tests/test_power_leases.py); one
                # scripts/check run summed 1,147 W of a 1,090 W headroom across a handover
                if grants() == before:
                    samples[0] += 1
                    dynamic = sum(site["power_w"] - i for site, i in zip(now, idle, strict=True))
                    peak_dynamic[0] = max(peak_dynamic[0], dynamic)
                time.sleep(0.002)
            client.close()

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(24) as pool:
                results = list(pool.map(lambda i: ask(servers[i % 3].url, 64, key), range(72)))
        finally:
            stop.set()
            watcher.join()
        # every replica emulates the same devices: their idle draw is each one's own, the
        # dynamic power above it is what the cap's headroom is shared out as
        assert peak_dynamic[0] <= CAP_W - idle[0] + 1e-6
        assert samples[0] >= 3 and peak_dynamic[0] > 0, samples  # it checked something
        codes = [x.status_code for x in results]
        assert set(codes) <= {200, 429} and 200 in codes, [
            x.text for x in results if x.status_code not in (200, 429)
        ][:3]
    with sqlite3.connect(db) as conn:
        (billed_j,) = conn.execute("SELECT SUM(billed_j) FROM requests").fetchone()
    assert billed_j <= 3000.0 + 1e-6


def _stream(url: str, key: str, max_tokens: int) -> httpx.Response:
    return ask(url, max_tokens, key, stream=True)


def test_a_replica_killed_mid_stream(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    key = Ledger(db).create_key("team", budget_j=100000.0)
    with (
        redis_server() as r,
        replicas(tmp_path, CAPPED, 2, "--state", r.url, "--db", str(db), "--state-ttl", "1") as (
            a,
            b,
        ),
    ):
        done = [ask(a.url, 4, key).json()["id"] for _ in range(10)]
        # a long stream holds most of the budget on `a`, which is then killed mid-stream
        long = {
            "model": SMALL,
            "max_tokens": 2000,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        with httpx.stream(
            "POST",
            f"{a.url}/v1/chat/completions",
            json=long,
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
        ) as resp:
            assert resp.status_code == 200
            next(resp.iter_lines())
            a.kill()
        rows = dict(sqlite3.connect(db).execute("SELECT id, status FROM requests").fetchall())
        assert all(rows.get(i) == "ok" for i in done)  # every completed request is recorded
        # b still serves; the dead replica is no longer counted after its TTL
        deadline = time.monotonic() + 5
        while httpx.get(f"{b.url}/health").json()["state"]["replicas"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert ask(b.url, 4, key).status_code == 200


def test_redis_restarting_mid_run_is_survived(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    key = Ledger(db).create_key("team", budget_usd=100.0)
    server: RedisServer
    with (
        redis_server() as server,
        replicas(tmp_path, CAPPED, 2, "--state", server.url, "--db", str(db)) as (a, b),
    ):
        assert ask(a.url, 4, key).status_code == 200
        # b serves too, so holds a share of the site's power (a replica keeps its last lease
        # while Redis is away: one that held none could not serve at the capped site)
        assert ask(b.url, 4).status_code == 200
        server.stop()
        deadline = time.monotonic() + 15  # generous: the machine running the tests is loaded
        while httpx.get(f"{a.url}/health").json()["state"]["up"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        refused = ask(a.url, 4, key)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "state_unavailable"
        assert ask(b.url, 4).status_code == 200  # no key, no limit: still served
        assert "wattserve_state_up 0" in httpx.get(f"{a.url}/metrics").text
        server.start()
        deadline = time.monotonic() + 20
        while not all(  # up again, and each has seen the other's new heartbeat
            (st := httpx.get(f"{s.url}/health").json()["state"])["up"] and st["replicas"] == 2
            for s in (a, b)
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # Redis came back empty: a new epoch, whose window (4 s) refuses keyed requests with a
        # budget while the replicas put back what they hold (docs/scale-out.md)
        while (got := ask(a.url, 4, key)).status_code == 503:
            assert got.json()["error"]["code"] == "state_recovering", got.text
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert got.status_code == 200 and ask(b.url, 4, key).status_code == 200
        health = httpx.get(f"{a.url}/health").json()["state"]
        assert health["lost_total"] >= 1 and health["replicas"] == 2
        assert health["data_lost_total"] == 1
