"""Session 36's probe of the shared state, over a real redis-server: values written into the
gateways' keys by another program or a hand (redis-cli). A cap of "abc" or a drained name
that is not UTF-8 stopped the heartbeat for good (every replica then counted the others dead,
dropped their holds, and a key spent 4.7x its budget); a spend of "nan" let a key spend 3x
its budget, and HINCRBYFLOAT's refusal of it then failed every settlement: Redis counted as
lost, every keyed request refused, until someone mended the value by hand."""

from __future__ import annotations

import asyncio
import math

import pytest
from redis_server import redis_server

from wattserve.serve.budgets import Charge, Hold, Refusal
from wattserve.serve.ledger import KeyRecord
from wattserve.serve.shared_budgets import RedisBudgets
from wattserve.serve.state import SharedState


def test_bad_caps_drained_names_and_ejections_are_left_out_and_the_beat_goes_on() -> None:
    async def run(url: str) -> None:
        state = SharedState(url, replica_id="r0", heartbeat_ttl_s=5)
        await state.connect()
        r = state.redis
        await r.hset(
            state.key("caps"),
            mapping={
                "abc": "abc",
                "nan": "nan",
                "inf": "inf",
                "neg": "-5",
                "ok": "700",
                "no": "none",
            },
        )
        await r.hset(state.key("drained"), b"\xff\xfe", 1)
        await r.hset(state.key("drained"), "good", 1)
        await r.set(state.key("eject", "").encode() + b"\xff/0", b"1", px=60_000)
        await state._beat()
        assert state.up and state.caps == {"ok": 700.0, "no": None}
        assert state.drained == {"good"} and state.ejected == {}
        await state.stop()

    with redis_server() as rs:
        asyncio.run(run(rs.url))


@pytest.mark.parametrize("planted", ["nan", "-1", "-inf", "inf", "abc"])
def test_a_spend_that_is_not_a_number_is_the_ledgers_and_never_grants_past_the_budget(
    planted: str,
) -> None:
    key = KeyRecord("kn", "nan", False, 0.0002, None, None, 0.00005, 0.0)

    async def run(url: str) -> None:
        states = [SharedState(url, replica_id=f"r{i}", heartbeat_ttl_s=5) for i in range(2)]
        for s in states:
            await s.connect()
            await s._beat()
        await states[0].redis.hset(states[0].key("spent", key.id), mapping={"usd": planted, "j": 0})
        budgets = [RedisBudgets(s) for s in states]
        charged = 0.0
        for _ in range(40):
            got = await asyncio.gather(*(b.reserve(key, Charge(0.00002, 0.0)) for b in budgets))
            for b, h in zip(budgets, got, strict=True):
                if isinstance(h, Hold):
                    charged += b.settle(h, Charge(0.00002, 0.0)).usd
        for b in budgets:
            await b.drain()
        for s in states:
            await s._beat()  # the settlements reach Redis: none fails
            assert s.up and not s.pending
        assert key.spent_usd + charged <= key.budget_usd + 1e-12  # type: ignore[operator]
        assert charged > 0  # the key is not locked out either
        usd = float(await states[0].redis.hget(states[0].key("spent", key.id), "usd"))
        assert math.isfinite(usd) and usd == pytest.approx(key.spent_usd + charged)
        assert isinstance(await budgets[0].reserve(key, Charge(0.00002, 0.0)), Refusal)
        for s in states:
            await s.stop()

    with redis_server() as rs:
        asyncio.run(run(rs.url))


def test_holds_that_are_not_holds_are_dropped_not_summed() -> None:
    key = KeyRecord("kh", "holds", False, 1.0, None, None, 0.0, 0.0)

    async def run(url: str) -> None:
        state = SharedState(url, replica_id="r0", heartbeat_ttl_s=5)
        await state.connect()
        await state._beat()
        r = state.redis
        await r.hset(
            state.key("holds", key.id),
            mapping={"r0:999": "nan nan", "nocolon": "0.5 0", "r0:998": "x"},
        )
        await r.hset(state.key("spent", key.id), mapping={"held_usd": "nan", "held_j": "0"})
        budgets = RedisBudgets(state)
        hold = await budgets.reserve(key, Charge(0.9, 0.0))  # all but the planted 0.5 is free
        assert isinstance(hold, Hold), hold
        budgets.settle(hold, Charge(0.9, 0.0))
        await budgets.drain()
        await state._beat()
        assert state.up and not state.pending
        left = await r.hgetall(state.key("holds", key.id))
        assert not any(f in left for f in (b"r0:999", b"nocolon", b"r0:998"))
        await state.stop()

    with redis_server() as rs:
        asyncio.run(run(rs.url))
