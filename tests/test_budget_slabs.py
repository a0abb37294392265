"""Slabs of a key's budget (wattserve.serve.shared_budgets) over a real redis-server: a replica
reserves most requests from its own share without a call to Redis, and the replicas together
still never spend past the budget, whether a replica dies, Redis restarts or the budget
changes."""

from __future__ import annotations

import asyncio
import random

import pytest
from redis_server import redis_server

from wattserve.serve.budgets import Charge, Hold, Refusal
from wattserve.serve.ledger import KeyRecord
from wattserve.serve.shared_budgets import SLAB_REQUESTS, RedisBudgets
from wattserve.serve.state import STATE_LOST, SharedState

BIG = KeyRecord("kb", "big", False, 100.0, None, None, 0.0, 0.0)


async def _replicas(url: str, n: int, ttl_s: float = 10.0) -> list[SharedState]:
    states = [SharedState(url, replica_id=f"r{i}", heartbeat_ttl_s=ttl_s) for i in range(n)]
    for s in states:
        await s.connect()
    for s in states:
        await s._beat()  # each counts every replica
    return states


async def _script_calls(state: SharedState) -> int:
    stats = await state.redis.info("commandstats")
    return sum(
        int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")
    )


async def _spent_and_held(state: SharedState, key: KeyRecord) -> tuple[float, float, int]:
    h = await state.redis.hgetall(state.key("spent", key.id))
    n = await state.redis.hlen(state.key("holds", key.id))
    return float(h.get(b"usd", 0)), float(h.get(b"held_usd", 0)), n


def test_a_slab_serves_most_requests_without_a_call_to_redis() -> None:
    async def run(url: str) -> None:
        (state,) = await _replicas(url, 1)
        budgets = RedisBudgets(state)
        before = await _script_calls(state)
        charged = 0.0
        for i in range(640):
            hold = await budgets.reserve(BIG, Charge(0.01, 0.0))
            assert isinstance(hold, Hold)
            charged += budgets.settle(hold, Charge(0.001 * (i % 7), 0.0)).usd
        calls = await _script_calls(state) - before
        assert calls <= 640 // SLAB_REQUESTS * 2 + 2, calls  # not one or two per request
        await budgets.drain()  # writes the spend, gives the slab back
        spent, held, holds = await _spent_and_held(state, BIG)
        assert spent == pytest.approx(charged) and abs(held) < 1e-9 and holds == 0
        await state.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))


def test_three_replicas_with_slabs_never_pass_a_budget_and_use_nearly_all_of_it() -> None:
    key = KeyRecord("kt", "tight", False, 10.0, None, None, 0.0, 0.0)
    rng = random.Random(7)

    async def run(url: str) -> None:
        states = await _replicas(url, 3)
        budgets = [RedisBudgets(s) for s in states]
        charged, refused_rounds, slabs = 0.0, 0, 0
        for _ in range(80):
            got = await asyncio.gather(
                *(b.reserve(key, Charge(0.05, 0.0)) for b in budgets for _ in range(8))
            )
            slabs += sum(key.id in b.slabs and b.slabs[key.id].size[0] > 0 for b in budgets)
            spent, held, _ = await _spent_and_held(states[0], key)
            assert spent + held <= 10.0 + 1e-9  # what Redis holds and counts never passes it
            for i, h in enumerate(got):
                if isinstance(h, Hold):
                    charged += budgets[i // 8].settle(h, Charge(rng.uniform(0.0, 0.05), 0.0)).usd
                else:
                    assert isinstance(h, Refusal) and h.code == "insufficient_quota"
            refused_rounds += all(isinstance(h, Refusal) for h in got)
            assert charged <= 10.0 + 1e-9
            for s in states:
                await s._beat()  # writes spend, gives back idle slabs
        for b in budgets:
            await b.drain()
        spent, held, holds = await _spent_and_held(states[0], key)
        assert spent == pytest.approx(charged) and abs(held) < 1e-9 and holds == 0
        assert slabs > 0 and refused_rounds > 0 and charged > 10.0 - 0.05 * 24  # the end
        for s in states:
            await s.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))


def test_a_dead_replicas_slab_is_charged_in_full() -> None:
    key = KeyRecord("kd", "dead", False, 10.0, None, None, 0.0, 0.0)

    async def run(url: str) -> None:
        dead = SharedState(url, replica_id="dead", heartbeat_ttl_s=0.6)
        live = SharedState(url, replica_id="live", heartbeat_ttl_s=5)
        await dead.connect()
        await live.connect()
        lost = RedisBudgets(dead)
        for _ in range(3):  # spent from its slab, never written to Redis
            hold = await lost.reserve(key, Charge(0.1, 0.0))
            assert isinstance(hold, Hold)
            lost.settle(hold, Charge(0.1, 0.0))
        slab = lost.slabs[key.id]
        size = slab.size[0]
        assert size > 0.3
        await asyncio.sleep(0.8)  # its heartbeat key expires on Redis's clock
        budgets = RedisBudgets(live)
        free = 10.0 - size
        assert isinstance(await budgets.reserve(key, Charge(free + 0.01, 0.0)), Refusal)
        assert isinstance(await budgets.reserve(key, Charge(free, 0.0)), Hold)
        spent, _, _ = await _spent_and_held(live, key)
        assert spent == pytest.approx(size)  # all of it: more than the $0.3 it spent
        await dead.close()
        await live.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))


def test_an_idle_slab_is_given_back_and_a_changed_budget_ends_one() -> None:
    async def run(url: str) -> None:
        (state,) = await _replicas(url, 1)
        budgets = RedisBudgets(state)
        hold = await budgets.reserve(BIG, Charge(0.5, 0.0))
        assert isinstance(hold, Hold) and BIG.id in budgets.slabs
        budgets.settle(hold, Charge(0.25, 0.0))
        await budgets.beat()  # used since the last beat: spend written, slab kept
        spent, held, holds = await _spent_and_held(state, BIG)
        assert spent == pytest.approx(0.25) and held > 0 and holds == 1
        await budgets.beat()  # idle: given back
        spent, held, holds = await _spent_and_held(state, BIG)
        assert spent == pytest.approx(0.25) and abs(held) < 1e-9 and holds == 0
        assert BIG.id not in budgets.slabs
        # the key's budget is lowered: its slab is not used any more, and goes at the beat
        hold = await budgets.reserve(BIG, Charge(0.5, 0.0))
        assert isinstance(hold, Hold)
        lower = KeyRecord(BIG.id, BIG.name, False, 1.0, None, None, 0.0, 0.0)
        small = await budgets.reserve(lower, Charge(0.5, 0.0))
        assert isinstance(small, Refusal)  # $0.25 spent, the slab's hold counts against $1
        budgets.release(hold)
        await budgets.beat()
        assert BIG.id not in budgets.slabs
        assert isinstance(await budgets.reserve(lower, Charge(0.5, 0.0)), Hold)
        await state.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))


def test_a_slabs_spend_survives_redis_restarting_empty() -> None:
    async def run(server: object) -> None:
        url = server.url  # type: ignore[attr-defined]
        (state,) = await _replicas(url, 1, ttl_s=0.6)
        budgets = RedisBudgets(state)
        holds = [await budgets.reserve(BIG, Charge(0.2, 0.0)) for _ in range(3)]
        assert all(isinstance(h, Hold) for h in holds) and BIG.id in budgets.slabs
        server.stop()  # type: ignore[attr-defined]
        state.start()
        await asyncio.sleep(0.5)
        assert await budgets.reserve(BIG, Charge(0.2, 0.0)) is STATE_LOST  # fails closed
        for h in holds:
            assert isinstance(h, Hold)
            budgets.settle(h, Charge(0.15, 0.0))  # into the slab, while Redis is away
        server.start()  # type: ignore[attr-defined]  # a fresh, empty Redis
        for _ in range(40):
            await asyncio.sleep(0.1)
            spent, _, _ = await _spent_and_held(state, BIG) if state.up else (0.0, 0.0, 0)
            if spent:
                break
        assert state.up and spent == pytest.approx(0.45)
        await budgets.drain()
        spent, held, n = await _spent_and_held(state, BIG)
        assert spent == pytest.approx(0.45) and abs(held) < 1e-9 and n == 0
        await state.stop()

    with redis_server() as r:
        asyncio.run(run(r))


def test_a_slab_whose_refresh_fails_still_holds_its_requests_in_flight() -> None:
    """Redis stops answering during a slab's refresh (whether the call ran is unknown): the
    slab takes nothing more, and the first heartbeat that reaches Redis writes its spend and
    keeps what its request in flight holds held, so no other replica can take that money."""

    async def run(url: str) -> None:
        state = SharedState(url, replica_id="r0", op_timeout_s=0.3)
        await state.connect()
        budgets = RedisBudgets(state)
        running = await budgets.reserve(BIG, Charge(0.5, 0.0))
        done = await budgets.reserve(BIG, Charge(0.5, 0.0))
        assert isinstance(running, Hold) and isinstance(done, Hold)
        budgets.settle(done, Charge(0.1, 0.0))
        slab = budgets.slabs[BIG.id]
        other = SharedState(url, replica_id="admin")
        await other.redis.execute_command("CLIENT", "PAUSE", "800", "ALL")
        big = Charge(slab.size[0], 0.0)  # does not fit what is left: a refresh is asked
        got = await budgets.reserve(BIG, big)
        assert got is STATE_LOST and slab.retired  # Redis did not answer in time
        await asyncio.sleep(0.9)
        await state._beat()  # Redis answers again: the retired slab is written back
        assert state.up
        spent, held, holds = await _spent_and_held(state, BIG)
        assert 0.1 - 1e-9 <= spent <= 0.2 + 1e-9  # written once, or twice if the call ran
        assert held == pytest.approx(0.5) and holds == 1  # the request in flight, still held
        assert isinstance(await budgets.reserve(BIG, Charge(0.5, 0.0)), Hold)  # one by one
        budgets.settle(running, Charge(0.2, 0.0))  # into the retired slab
        await state._beat()
        assert BIG.id not in budgets.slabs  # given back once its request ended
        spent2, _, _ = await _spent_and_held(state, BIG)
        assert spent2 == pytest.approx(spent + 0.2)
        await other.close()
        await state.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))
