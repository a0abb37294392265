"""Scale-out over a real redis-server: shared budgets, rate limits and holds that expire with
their replica; losing Redis and rejoining; several real gateway processes sharing one key."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from redis_server import redis_server
from serving import fake_upstream, gateway

from wattserve.errors import ConfigError
from wattserve.serve.budgets import Charge, Hold, Refusal
from wattserve.serve.ledger import KeyRecord
from wattserve.serve.net import free_port
from wattserve.serve.shared_budgets import RedisBudgets
from wattserve.serve.state import STATE_LOST, SharedState

KEY = KeyRecord("k1", "team", False, 1.0, None, None, 0.0, 0.0)


def test_holds_never_exceed_a_budget_across_replicas() -> None:
    async def run(url: str) -> None:
        states = [SharedState(url, replica_id=f"r{i}") for i in range(3)]
        for s in states:
            await s.connect()
        budgets = [RedisBudgets(s) for s in states]
        # 3 replicas x 40 concurrent reservations of $0.1 against a $1 budget: 10 fit
        got = await asyncio.gather(
            *(b.reserve(KEY, Charge(0.1, 0.0)) for b in budgets for _ in range(40))
        )
        holds = [h for h in got if isinstance(h, Hold)]
        assert len(holds) == 10
        assert all(
            isinstance(r, Refusal) and r.code == "insufficient_quota" for r in got if r not in holds
        )
        for i, h in enumerate(got):  # each settles at half its hold, where it was made
            if isinstance(h, Hold):
                budgets[i // 40].settle(h, Charge(0.05, 0.0))
        for b in budgets:
            await b.drain()
        again = [await budgets[0].reserve(KEY, Charge(0.1, 0.0)) for _ in range(10)]
        assert sum(isinstance(h, Hold) for h in again) == 5  # $0.5 spent, $0.5 left
        for s in states:
            await s.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))


def test_the_running_sum_of_holds_matches_the_holds_after_many_requests() -> None:
    """A reservation reads the key's held sum instead of summing every hold: after 300
    reservations and settlements over 3 replicas, some concurrent, the sum is back to zero,
    the spend is the sum of the charges, and the budget refuses exactly what it should."""
    key = KeyRecord("k9", "many", False, 100.0, None, None, 0.0, 0.0)

    async def run(url: str) -> None:
        states = [SharedState(url, replica_id=f"r{i}") for i in range(3)]
        for s in states:
            await s.connect()
        budgets = [RedisBudgets(s) for s in states]
        for _ in range(10):
            got = await asyncio.gather(
                *(b.reserve(key, Charge(0.3, 0.0)) for b in budgets for _ in range(10))
            )
            assert all(isinstance(h, Hold) for h in got)
            for i, h in enumerate(got):
                assert isinstance(h, Hold)
                budgets[i // 10].settle(h, Charge(0.1, 0.0))
            for b in budgets:
                await b.drain()
        spent = await states[0].redis.hgetall("ws:spent:k9")
        assert float(spent[b"usd"]) == pytest.approx(30.0)
        assert abs(float(spent[b"held_usd"])) < 1e-9
        assert await states[0].redis.hlen("ws:holds:k9") == 0
        # $70 left: 233 holds of $0.3 fit, the 234th does not
        got = [await budgets[0].reserve(key, Charge(0.3, 0.0)) for _ in range(234)]
        assert sum(isinstance(h, Hold) for h in got) == 233
        assert isinstance(got[-1], Refusal) and "spent $30, $69.9 held" in got[-1].message
        for s in states:
            await s.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))


def test_a_dead_replicas_holds_expire_on_redis_time_and_are_charged() -> None:
    """A dead replica's hold stops being a hold when its heartbeat key expires on Redis's
    clock, and is charged in full: the spend it stood for may never reach Redis (until
    2026-12-06 a request's hold was dropped uncharged, and a replica stopped while Redis hung
    with its settlements queued let another spend the key's budget again)."""

    async def run(url: str) -> None:
        dead = SharedState(url, replica_id="dead", heartbeat_ttl_s=0.6)
        live = SharedState(url, replica_id="live", heartbeat_ttl_s=5)
        await dead.connect()
        await live.connect()
        assert isinstance(await RedisBudgets(dead).reserve(KEY, Charge(0.6, 0.0)), Hold)
        assert isinstance(await RedisBudgets(live).reserve(KEY, Charge(0.5, 0.0)), Refusal)
        # the dead replica never beats again (no loop started); its clock is irrelevant: the
        # heartbeat key's TTL is Redis's
        await asyncio.sleep(0.8)
        assert isinstance(await RedisBudgets(live).reserve(KEY, Charge(0.5, 0.0)), Refusal)
        spent = await live.redis.hgetall(live.key("spent", KEY.id))
        assert float(spent[b"usd"]) == pytest.approx(0.6)  # a hold no more: spent
        assert await live.redis.hlen(live.key("holds", KEY.id)) == 0
        assert isinstance(await RedisBudgets(live).reserve(KEY, Charge(0.4, 0.0)), Hold)
        await dead.close()
        await live.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))


def test_a_keys_rate_limit_is_shared() -> None:
    key = KeyRecord("k2", "fast", False, None, None, 5.0, 0.0, 0.0)

    async def run(url: str) -> None:
        states = [SharedState(url, replica_id=f"r{i}") for i in range(3)]
        for s in states:
            await s.connect()
        got = await asyncio.gather(
            *(RedisBudgets(s).take_request(key) for s in states for _ in range(10))
        )
        assert sum(g is None for g in got) == 5  # a burst of one second's worth, shared
        refused = [g for g in got if g is not None]
        assert all(g.code == "rate_limit_exceeded" and g.retry_after_s for g in refused)
        for s in states:
            await s.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))


def test_losing_redis_fails_closed_and_rejoins() -> None:
    async def run(server: object) -> None:
        url = server.url  # type: ignore[attr-defined]
        state = SharedState(url, replica_id="r", heartbeat_ttl_s=0.6)
        await state.connect()
        budgets = RedisBudgets(state)
        hold = await budgets.reserve(KEY, Charge(0.2, 0.0))
        assert isinstance(hold, Hold)
        server.stop()  # type: ignore[attr-defined]
        state.start()
        await asyncio.sleep(0.5)
        assert not state.up and state.lost_total == 1
        assert await budgets.reserve(KEY, Charge(0.1, 0.0)) is STATE_LOST
        assert STATE_LOST.status == 503
        free = KeyRecord("k3", "free", False, None, None, None, 0.0, 0.0)
        assert isinstance(await budgets.reserve(free, Charge(0.1, 0.0)), Hold)  # no limits
        budgets.settle(hold, Charge(0.2, 0.0))  # queued while Redis is away
        await budgets.drain()
        assert len(state.pending) == 1
        server.start()  # type: ignore[attr-defined]  # a fresh, empty Redis
        for _ in range(40):
            await asyncio.sleep(0.1)
            if state.up and not state.pending:
                break
        assert state.up and not state.pending
        spent = await state.redis.hget(state.key("spent", KEY.id), "usd")
        assert spent is not None and float(spent) == pytest.approx(0.2)
        await state.stop()

    with redis_server() as r:
        asyncio.run(run(r))


def test_bad_state_urls_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"--state.*not a Redis URL"):
        SharedState("http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="cannot reach Redis"):
        asyncio.run(SharedState(f"redis://127.0.0.1:{free_port()}/0").probe())


def test_serve_with_an_unreachable_redis_says_so(tmp_path: Path) -> None:
    fleet = tmp_path / "f.yaml"
    fleet.write_text(FLEET.format(port=1))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "wattserve",
            "serve",
            "--fleet",
            str(fleet),
            "--state",
            f"redis://127.0.0.1:{free_port()}/0",
            "--db",
            str(tmp_path / "l.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "cannot reach Redis" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


FLEET = """\
sites:
  acme: {{kind: cloud}}
providers:
  acme-large:
    site: acme
    model: acme-large
    usd_per_mtok_input: 1000
    usd_per_mtok_output: 1000
    backend: {{kind: openai, url: "http://127.0.0.1:{port}/v1"}}
"""


def test_three_gateways_share_one_budget(tmp_path: Path) -> None:
    from wattserve.serve.ledger import Ledger

    db = tmp_path / "shared.db"
    secret = Ledger(db).create_key("team", budget_usd=0.3)
    with redis_server() as r, fake_upstream() as port:
        fleet = FLEET.format(port=port)
        args = ("--state", r.url, "--db", str(db))
        with (
            gateway(tmp_path, fleet, *args, name="a") as a,
            gateway(tmp_path, fleet, *args, name="b") as b,
            gateway(tmp_path, fleet, *args, name="c") as c,
        ):
            urls = [a.url, b.url, c.url]

            def one(i: int) -> int:
                body = {
                    "model": "acme-large",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "hi"}],
                }
                return httpx.post(
                    f"{urls[i % 3]}/v1/chat/completions",
                    json=body,
                    timeout=30,
                    headers={"Authorization": f"Bearer {secret}"},
                ).status_code

            with concurrent.futures.ThreadPoolExecutor(24) as pool:
                codes = list(pool.map(one, range(120)))
            assert set(codes) <= {200, 429} and codes.count(429) > 0
            health = httpx.get(f"{a.url}/health").json()
            assert health["state"]["up"] and health["state"]["replicas"] == 3
            metrics = httpx.get(f"{a.url}/metrics").text
            assert "wattserve_state_up 1" in metrics
    with sqlite3.connect(db) as conn:
        billed = conn.execute(
            "SELECT SUM(billed_usd), COUNT(*) FROM requests WHERE status='ok'"
        ).fetchone()
    assert billed[1] == codes.count(200)
    assert billed[0] <= 0.3 + 1e-9
