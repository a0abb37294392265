"""State shared by gateway replicas through Redis (`wattserve serve --state redis://...`).

What is shared (docs/scale-out.md): each API key's budget holds, spend and requests/s bucket
(wattserve.serve.shared_budgets.RedisBudgets, the `Budgets` interface); backend ejections
(cooldowns); drained targets and changed site caps (the live overrides of `POST /v1/fleet`);
the set of live replicas; and each replica's lease of every capped site's power
(wattserve.serve.leases). Without `--state` the gateway keeps all of it in its own process
(LocalBudgets).

Expiry uses Redis's clock only (key TTLs, `TIME` inside scripts), never a replica's: each
replica refreshes `ws:replica:<id>` (TTL `heartbeat_ttl_s`) every third of that; a hold names
its replica, and a reservation that the running sum of a key's holds would refuse first drops
the holds of replicas whose heartbeat key has expired, and charges their slabs in full (every
power lease script drops their leases). A crashed replica's holds and leases thus stop
counting within `heartbeat_ttl_s` (10 s default).

Redis losing its data (restarted empty, flushed, restored from an older snapshot) is found by
the shared state's epoch (redis_scripts.EPOCH) at the next heartbeat: nothing is granted for a
few seconds while every live replica puts back what it holds (docs/scale-out.md).

Losing Redis fails closed: a key with a budget or a rate limit is refused (503) until Redis
answers again; keys without limits, and requests without keys, are still served; power caps
keep the last lease this replica had. The replica says so in /health and /metrics and rejoins
on its own (the heartbeat loop reconnects; settlements made meanwhile are queued and replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from wattserve.core.sites import MAX_POWER_W
from wattserve.errors import ConfigError
from wattserve.serve.budgets import Refusal
from wattserve.serve.guard import MAX_RETRY_AFTER_S
from wattserve.serve.leases import PowerLeases
from wattserve.serve.redis_scripts import EPOCH, SETTLE, SETTLE_BATCH, Settlement, batched
from wattserve.serve.resp import Resp
from wattserve.serve.router import COOLDOWN_S

log = logging.getLogger("wattserve.serve")

HEARTBEAT_TTL_S = 10.0
LIMITED = b"429"  # an ejection's value when its server answered 429 (else b"1": failing)
OP_TIMEOUT_S = 1.0  # a Redis call slower than this counts as Redis lost (until the next beat)
CONNECT_TIMEOUT_S = 2.0
# Power leases are dropped this fraction of the TTL after the last heartbeat Redis took: before
# Redis can count the replica as gone (a TTL after it) and give its leases to the others.
FENCE_AT = 0.75
POOL_CONNECTIONS = 32  # Redis connections per replica; more callers wait for one
POOL_WAIT_S = 30.0  # as long as a request may wait for its first token (serve's --max-queue)
# After Redis lost its data (redis_scripts.EPOCH), nothing is granted for this many heartbeats
# and a second: every live replica puts back what it holds within it.
RECOVER_BEATS = 3


class SharedState:
    """One replica's connection to the shared state: heartbeat, liveness, overrides."""

    def __init__(
        self,
        url: str,
        *,
        replica_id: str | None = None,
        prefix: str = "ws:",
        heartbeat_ttl_s: float = HEARTBEAT_TTL_S,
        op_timeout_s: float = OP_TIMEOUT_S,
    ) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"'{url[:200]}' is not a Redis URL: use redis://HOST:PORT[/DB]", field="--state"
            )
        self.url = url
        self.id = replica_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.prefix = prefix
        self.ttl_ms = max(1, int(heartbeat_ttl_s * 1000))
        self.every_s = min(1.0, heartbeat_ttl_s / 3)  # a new replica is counted within 1 s
        # A bounded pool that makes callers wait for a connection: a burst of requests must
        # queue for Redis, not open a connection each (Redis refuses past its maxclients).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_CONNECTIONS,
            timeout=POOL_WAIT_S,
            socket_timeout=op_timeout_s,
            socket_connect_timeout=max(op_timeout_s, CONNECT_TIMEOUT_S),
            health_check_interval=0,
        )
        self.redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        # the budget scripts of keyed requests, pipelined on one lean connection (serve.resp)
        self.fast = (
            Resp(url, op_timeout_s, max(op_timeout_s, CONNECT_TIMEOUT_S))
            if Resp.supports(url)
            else None
        )
        self.up = False
        self.lost_total = 0  # times Redis was lost
        self.replicas = 1  # live replicas at the last heartbeat (this one included)
        # backend -> (seconds of cooldown left, whether its server is rate limited) (shared)
        self.ejected: dict[str, tuple[float, bool]] = {}
        self.drained: set[str] = set()
        self.caps: dict[str, float | None] = {}  # site -> cap set at run time (shared)
        self._warned: set[tuple[str, bytes]] = set()  # bad values read, warned about once
        self.pending: deque[Settlement] = deque()  # settlements to replay
        self.on_sync: list[Callable[[], None]] = []
        self.on_beat: list[Callable[[], Awaitable[None]]] = []  # after each heartbeat
        self.leases: PowerLeases | None = None  # set by attach()
        # the shared state's epoch (redis_scripts.EPOCH): its name, the highest count seen,
        # how often Redis was found to have lost (or rolled back) its data, and what puts
        # this replica's holds back then (RedisBudgets.rehold)
        self.epoch = ""
        self.count = 0
        self.run_id = ""  # Redis's, at the last heartbeat
        self.reset_total = 0
        self.recover_ms = int(1000 * (RECOVER_BEATS * self.every_s + 1.0))
        self.on_epoch: list[Callable[[], Awaitable[None]]] = []
        self._epoch = self.redis.register_script(EPOCH)
        self._task: asyncio.Task[None] | None = None
        self._fence: asyncio.TimerHandle | None = None  # drops the power leases (see _beat)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def connect(self) -> None:
        """Reach Redis once at start: a wrong or unreachable URL is a clear error here."""
        try:
            await self.redis.ping()
            made = await self._beat()
        except (RedisError, OSError) as exc:
            raise ConfigError(
                f"cannot reach Redis at {self.url[:200]}: {exc.__class__.__name__}: {exc}",
                field="--state",
            ) from None
        if made:  # a Redis new to the replicas, or one that lost its data a moment ago: the
            # others (if any) find the new epoch at their next heartbeat and start the window
            # in which they put back what they hold, before this replica reserves anything
            await asyncio.sleep(self.every_s + 0.25)

    async def close(self) -> None:
        """Close the connections (the pool too: it was passed in, so not closed by default)."""
        if self.fast is not None:
            self.fast.close()
        await self.redis.aclose(close_connection_pool=True)

    async def script(self, script: Any, keys: list[str], args: list[str]) -> Any:
        """Run a registered script: on the lean connection where the URL allows it, else
        through redis-py. Raises RedisError (or OSError) as redis-py does."""
        if self.fast is not None:
            return await self.fast.evalsha(script.sha, script.script, keys, args)
        return await script(keys=keys, args=args)

    async def probe(self) -> None:
        """Check that Redis answers (at start, before serving), without joining as a replica."""
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise ConfigError(
                f"cannot reach Redis at {self.url[:200]}: {exc.__class__.__name__}: {exc}",
                field="--state",
            ) from None
        finally:
            await self.close()

    def describe(self) -> dict[str, Any]:
        """What /health says about the shared state."""
        return {
            "backend": "redis",
            "up": self.up,
            "replica": self.id,
            "replicas": self.replicas,
            "lost_total": self.lost_total,
            "data_lost_total": self.reset_total,
            "pending_settlements": len(self.pending),
            "power_leases_w": {} if self.leases is None else self.leases.describe(),
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._fence is not None:
            self._fence.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.leases is not None:
            await self.leases.drain()
        with contextlib.suppress(RedisError, OSError):
            await self._flush()
            await self.redis.delete(self.key("replica", self.id))  # its holds go at once
        await self.close()

    async def _beat(self) -> bool:
        """One heartbeat; True when it began the shared state's epoch (at this replica's
        start, on a Redis that had none)."""
        sent = asyncio.get_running_loop().time()
        await self.redis.set(self.key("replica", self.id), "1", px=self.ttl_ms)
        self._fence_after(sent)
        made = await self._check_epoch()
        n = 0
        async for _ in self.redis.scan_iter(match=self.key("replica", "*"), count=1000):
            n += 1
        self.replicas = max(1, n)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.key("drained"))
        pipe.hgetall(self.key("caps"))
        drained, caps = await pipe.execute()
        self.drained = {d for k in drained if (d := self._name(k, "drained")) is not None}
        self.caps = self._caps(caps)
        keys = [k async for k in self.redis.scan_iter(match=self.key("eject", "*"), count=1000)]
        pipe = self.redis.pipeline(transaction=False)
        for k in keys:
            pipe.pttl(k)
            pipe.get(k)
        found = await pipe.execute() if keys else []
        self.ejected = {
            name[len(self.key("eject", "")) :]: (ttl / 1000, kind == LIMITED)
            for k, ttl, kind in zip(keys, found[::2], found[1::2], strict=True)
            if ttl > 0 and (name := self._name(k, "eject")) is not None
        }
        if not self.up:
            log.info("wattserve: shared state at %s is up (%d replicas)", self.url, self.replicas)
        self.up = True
        await self._flush()
        for hook in self.on_sync:
            hook()
        for beat in self.on_beat:
            await beat()
        if self.leases is not None:
            await self.leases.renew()
        return made

    async def _check_epoch(self) -> bool:
        """Compare the shared state's epoch with the one this replica knows (see
        redis_scripts.EPOCH); where Redis lost its data, put back what this replica holds
        (on_epoch) before this heartbeat does anything else. The epoch is taken as known only
        once that is done, so a heartbeat that fails meanwhile puts it all back at the next.
        True when this replica began the epoch at its start."""
        proposed = uuid.uuid4().hex
        run_id = await self._run_id()
        restarted = bool(self.run_id and run_id and run_id != self.run_id)
        got = await self._epoch(
            keys=[self.key("epoch"), self.key("recovering"), self.key("count")],
            args=[self.epoch, str(self.count), proposed, str(self.recover_ms), str(int(restarted))],
        )
        name, count, rehold = got[0].decode(), int(got[1]), got[3] == b"1"
        if rehold:
            self.reset_total += 1
            log.warning(
                "wattserve: the shared state lost its data (Redis restarted empty, flushed or "
                "restored from an older snapshot): putting back this replica's holds; nothing "
                "is granted for %.1f s",
                self.recover_ms / 1000,
            )
            for hook in self.on_epoch:
                await hook()
        made = not self.epoch and name == proposed
        self.epoch, self.count = name, max(self.count, count)
        self.run_id = run_id or self.run_id
        return made

    async def _run_id(self) -> str:
        """Redis's run_id (INFO server), which a restart changes: '' where INFO is not allowed
        (a proxy, a managed Redis that renames it), the epoch's count still finding the rest."""
        try:
            info = await self.redis.info("server")
        except ResponseError:
            return ""
        return str(info.get("run_id", ""))

    # -- what the beat reads: written by the gateways' own admin calls, or by anyone who may
    # write to Redis (an operator's redis-cli, another program): a value set_cap would not take
    # is left out with a warning, never a crash of the beat (which had stopped it for good:
    # its heartbeat key expired, so every replica counted the others dead and dropped their
    # holds, and keys spent past their budgets)

    def _name(self, raw: bytes, where: str) -> str | None:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            self._bad(where, raw, "not UTF-8")
            return None

    def _caps(self, raw: dict[bytes, bytes]) -> dict[str, float | None]:
        caps: dict[str, float | None] = {}
        for k, v in raw.items():
            site = self._name(k, "caps")
            if site is None:
                continue
            if v == b"none":
                caps[site] = None
                continue
            try:
                cap = float(v)
            except ValueError:
                cap = math.nan
            if 0.0 < cap <= MAX_POWER_W:  # False for NaN
                caps[site] = cap
            else:
                self._bad(f"caps {site!r}", v, f"not a cap (over 0 W, at most {MAX_POWER_W:g})")
        return caps

    def _bad(self, where: str, value: bytes, why: str) -> None:
        """One warning per bad value (the beat reads it every second)."""
        seen = (where, value[:200])
        if seen not in self._warned and len(self._warned) < 1000:
            self._warned.add(seen)
            log.warning(
                "wattserve: shared state %s holds %r: %s; left out", where, value[:200], why
            )

    def _fence_after(self, sent: float) -> None:
        """Redis took a heartbeat sent at `sent` (loop time): its key lives at least a TTL from
        then. Drop the power leases FENCE_AT of a TTL from then unless another heartbeat succeeds
        (wattserve.serve.leases: a replica cut off from Redis stops drawing on its leases
        before Redis may give them to others)."""
        if self._fence is not None:
            self._fence.cancel()
        self._fence = asyncio.get_running_loop().call_at(
            sent + FENCE_AT * self.ttl_ms / 1000, self._fence_leases
        )

    def _fence_leases(self) -> None:
        self._fence = None
        if self.leases is not None:
            log.warning(
                "wattserve: no heartbeat reached the shared state for %.1f s: power leases "
                "dropped until it answers",
                FENCE_AT * self.ttl_ms / 1000,
            )
            self.leases.fence()

    def sync_now(self) -> None:
        """Apply the overrides held now (after a change made on this replica)."""
        for hook in self.on_sync:
            hook()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                self.lost(exc)
            except Exception as exc:  # anything else: the beat must go on (see _name)
                log.warning("wattserve: the shared state's heartbeat failed: %r", exc)
                self.lost(exc)

    def failed(self, exc: BaseException) -> Refusal:
        """The refusal for a request whose Redis call failed: busy (every pooled connection
        taken for POOL_WAIT_S: this request only) or lost (Redis itself: until it returns)."""
        if isinstance(exc, RedisConnectionError) and "No connection available" in str(exc):
            return STATE_BUSY
        self.lost(exc)
        return STATE_LOST

    def lost(self, exc: BaseException) -> None:
        if self.up:
            self.lost_total += 1
            log.warning("wattserve: shared state lost (%s): failing closed", exc)
        self.up = False

    async def _flush(self) -> None:
        while self.pending:
            n, keys, args = next(batched(list(itertools.islice(self.pending, SETTLE_BATCH))))
            await self.redis.eval(SETTLE, len(keys), *keys, *args)
            for _ in range(n):
                self.pending.popleft()

    async def eject(self, backend: str, cooldown_s: float, limited: bool) -> None:
        """Publish an ejection: its cooldown as the key's TTL, its kind as the value (LIMITED:
        the server answered 429, so the other replicas answer 429 with its wait too)."""
        kind = LIMITED if limited else b"1"
        with contextlib.suppress(RedisError, OSError):
            await self.redis.set(self.key("eject", backend), kind, px=int(cooldown_s * 1000))

    async def set_drained(self, target: str, drained: bool) -> None:
        if drained:
            await self.redis.hset(self.key("drained"), target, "1")
        else:
            await self.redis.hdel(self.key("drained"), target)

    async def set_cap(self, site: str, cap_w: float | None) -> None:
        await self.redis.hset(self.key("caps"), site, "none" if cap_w is None else repr(cap_w))


STATE_LOST = Refusal(
    "the gateway's shared state (Redis) is unreachable: keys with a budget or a rate limit "
    "are refused until it returns",
    "server_error",
    "state_unavailable",
    retry_after_s=2.0,
    status=503,
)


STATE_RECOVERING = Refusal(
    "the gateway's shared state (Redis) lost its data: the replicas are putting back what "
    "they hold, and nothing is granted until they have (a few seconds)",
    "server_error",
    "state_recovering",
    retry_after_s=2.0,
    status=503,
)


STATE_BUSY = Refusal(
    "the gateway's shared state (Redis) is saturated: every connection to it is busy",
    "server_error",
    "state_busy",
    retry_after_s=1.0,
    status=503,
)


def attach(router: Any, state: SharedState) -> PowerLeases:
    """Apply the shared overrides to a router at every heartbeat: drained targets, caps set at
    run time, ejections made by other replicas, and this replica's power lease at each capped
    site (wattserve.serve.leases: its local cap). Ejections made here are published; a request
    refused for power asks for more lease."""
    leases = PowerLeases(router, state)

    def sync() -> None:
        now = router.clock()
        router.drained = set(state.drained)
        for name, (left_s, limited) in state.ejected.items():
            if name in router.backends:  # a longer cooldown held here stays (Router.hold_out)
                # no longer than a replica would have set: a key written by hand with a day's
                # TTL had kept a failing backend out for a day
                longest = MAX_RETRY_AFTER_S if limited else COOLDOWN_S
                router.hold_out(name, now + min(left_s, longest), limited)
        for name in router.fleet.sites:
            leases.apply(name)
        router._refresh_unhealthy()

    def published(backend: Any, cooldown_s: float, limited: bool) -> None:
        task = asyncio.get_running_loop().create_task(
            state.eject(backend.name, cooldown_s, limited)
        )
        router.background.add(task)
        task.add_done_callback(router.background.discard)

    state.leases = leases
    state.on_sync.append(sync)
    router.on_eject.append(published)
    router.on_power_wait.append(leases.short_of_power)
    sync()
    return leases
