"""An ejection read from Redis lasts no longer than a replica would have set it (session 36's
probe): `ws:eject:<backend>` written by hand with a day's TTL had kept a failing backend out
of rotation on every gateway for that day."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis_server import redis_server

from wattserve.core.fleet import load_fleet
from wattserve.core.policy import make_policy
from wattserve.serve.guard import MAX_RETRY_AFTER_S
from wattserve.serve.router import COOLDOWN_S, Router
from wattserve.serve.state import LIMITED, SharedState, attach

FLEET = """
sites:
  dc: {kind: datacenter}
deployments:
  a: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}
  b: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}
"""


def test_a_planted_ejection_is_cut_to_the_longest_a_replica_sets(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)

    async def run(url: str) -> None:
        router = Router(load_fleet(fleet), make_policy("least_loaded"))
        state = SharedState(url, replica_id="r0", heartbeat_ttl_s=5)
        await state.connect()
        attach(router, state)
        day_ms = 86_400_000
        await state.redis.set(state.key("eject", "a/0"), b"1", px=day_ms)  # failing: 10 s
        await state.redis.set(state.key("eject", "b/0"), LIMITED, px=10 * day_ms)  # a 429
        await state._beat()
        now = router.clock()
        assert 0 < router.ejected_until["a/0"] - now <= COOLDOWN_S
        assert COOLDOWN_S < router.ejected_until["b/0"] - now <= MAX_RETRY_AFTER_S
        assert "b/0" in router.limited_until and "a/0" not in router.limited_until
        await state.stop()

    with redis_server() as rs:
        asyncio.run(run(rs.url))
