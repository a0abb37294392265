"""Per-key budgets and rate limits shared by gateway replicas through Redis: `RedisBudgets`,
the `Budgets` interface of wattserve.serve.budgets (docs/scale-out.md).

A request's worst case is held against its key's budget in one of two ways, and neither lets
the replicas together spend past the budget:

- **a slab** (the fast path): a replica holds a share of a key's budget in Redis, as one hold
  named for it (redis_scripts.SLAB), and holds its requests' worst cases against that share in
  its own memory, with no call to Redis. What they spend is written to Redis when the slab is
  refreshed: when it runs short, and at every heartbeat (about once a second). A slab asks for
  SLAB_REQUESTS worst cases, and is granted at most 1/(SLAB_SHARE x replicas) of what is free,
  so most of a budget stays free for the other replicas; a grant under SLAB_MIN_REQUESTS worst
  cases is none. A slab not used between two heartbeats is given back. If its replica dies, the
  slab is charged in full: the spend taken from it since its last refresh is in that, and the
  rest is lost to the budget (under-used, never over-spent). A refresh whose answer is lost
  may write a spend again when it is retried: counted twice at worst, never lost.
- **one hold per request** (near the end of a budget, where no slab is granted): one RESERVE
  script per request, atomic in Redis, and a SETTLE after it (the settlements of one turn of
  the event loop in one call, in the background, queued while Redis is away).

Rate limits are one TAKE script per request. Losing Redis fails closed: a key with a budget or
a rate limit is refused (STATE_LOST) until Redis answers again, slab or not.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from wattserve.serve.budgets import Charge, Hold, Refusal, held_retry_s, spent_refusal
from wattserve.serve.ledger import KeyRecord
from wattserve.serve.redis_scripts import (
    REHOLD,
    RESERVE,
    SETTLE,
    SETTLE_BATCH,
    SLAB,
    TAKE,
    Settlement,
    batched,
)
from wattserve.serve.state import STATE_LOST, STATE_RECOVERING, SharedState

SLAB_REQUESTS = 64  # a slab asks for this many of the worst case that asked for it
SLAB_MIN_REQUESTS = 8  # a grant of fewer worst cases than this is none: one hold per request
SLAB_SHARE = 8  # a grant takes at most 1/(SLAB_SHARE x live replicas) of the key's free budget
SLAB_RETRY_S = 1.0  # after a refused slab, one hold per request for this long
NOTHING = Charge(0.0, 0.0)


def _wanted(worst: Charge) -> Charge:
    """What a slab asks for: SLAB_REQUESTS of the worst case in hand."""
    return Charge(worst.usd * SLAB_REQUESTS, worst.joules * SLAB_REQUESTS)


def _hold_text(usd: float, joules: float) -> str:
    """A hold's value in a key's holds hash (redis_scripts)."""
    return f"{usd!r} {joules!r}"


def _budget(x: float | None) -> str:
    return "-1" if x is None else repr(float(x))


@dataclass
class Slab:
    """This replica's share of one key's budget: `size` is held for it in Redis; its requests
    in flight hold `used` of it, and `spent` is what settled requests spent from it since the
    last refresh (not yet in Redis). Each is [$, J]."""

    name: str  # its field in the key's holds hash
    budget: tuple[float | None, float | None]  # the key's budgets when the slab was taken
    size: list[float] = field(default_factory=lambda: [0.0, 0.0])
    used: list[float] = field(default_factory=lambda: [0.0, 0.0])
    spent: list[float] = field(default_factory=lambda: [0.0, 0.0])
    holds: int = 0  # requests in flight held in it
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one refresh at a time
    worst: Charge = NOTHING  # the last worst case held from it
    busy: bool = False  # used since the last heartbeat
    exact_until: float = 0.0  # loop time before which it asks Redis for no more
    retired: bool = False  # takes nothing more; given back at the next heartbeat
    ended: bool = False  # see RedisBudgets._end

    def fits(self, c: Charge) -> bool:
        return all(
            b is None or need <= self.size[i] - self.used[i] - self.spent[i]
            for i, (b, need) in enumerate(zip(self.budget, (c.usd, c.joules), strict=True))
        )


class RedisBudgets:
    """The `Budgets` interface over Redis: every replica sees one spend, one set of holds and
    one requests/s bucket per key (this module's docstring says how)."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self._ids = itertools.count(1)
        self._take = state.redis.register_script(TAKE)
        self._reserve = state.redis.register_script(RESERVE)
        self._settle = state.redis.register_script(SETTLE)
        self._slab = state.redis.register_script(SLAB)
        self._rehold = state.redis.register_script(REHOLD)
        # this replica's holds of one request each, held in Redis: hold id -> (key id, its
        # field, its charge); put back if Redis loses them (`rehold`)
        self._live: dict[int, tuple[str, str, Charge]] = {}
        self._start: dict[str, tuple[float, float]] = {}  # key -> ledger's spend at its last use
        self._tasks: set[asyncio.Task[Any]] = set()
        self._batch: list[Settlement] = []  # settlements to send at the next turn of the loop
        self.slabs: dict[str, Slab] = {}  # key id -> this replica's slab of its budget
        self._in_slab: dict[int, Slab] = {}  # hold id -> the slab it is held in
        self._slab_ids = itertools.count(1)
        state.on_beat.append(self.beat)
        state.on_epoch.append(self.rehold)

    async def take_request(self, key: KeyRecord) -> Refusal | None:
        # by the ledger's spend (at most a second old): Redis's, which may be more, refuses
        # the rest at the reservation
        if (done := spent_refusal(key, key.spent_usd, key.spent_j)) is not None:
            return done
        if not key.rps:
            return None
        if not self.state.up:
            return STATE_LOST
        try:
            wait_ms = int(
                await self.state.script(
                    self._take,
                    [self.state.key("rl", key.id)],
                    [repr(key.rps), repr(max(1.0, key.rps))],
                )
            )
        except (RedisError, OSError) as exc:
            return self.state.failed(exc)
        if wait_ms == 0:
            return None
        return Refusal(
            f"key '{key.name}' is over its {key.rps:g} requests/s limit",
            "rate_limit_error",
            "rate_limit_exceeded",
            retry_after_s=wait_ms / 1000,
        )

    async def reserve(self, key: KeyRecord, worst: Charge) -> Hold | Refusal:
        hold = Hold(next(self._ids), key.id, worst)
        if key.budget_usd is None and key.budget_j is None:
            return hold  # nothing to enforce: no shared hold needed
        if not self.state.up:
            return STATE_LOST
        # the ledger's spend as of now (its record is at most a second old), not as of the
        # key's first use: a Redis that lost its data is refilled from it (HSETNX), and the
        # first use's figure forgot what was spent since, which could then be spent again
        self._start[key.id] = (key.spent_usd, key.spent_j)
        if await self._from_slab(key, hold):
            return hold
        return await self._reserve_one(key, hold)

    async def _from_slab(self, key: KeyRecord, hold: Hold) -> bool:
        """Hold `hold` in this replica's slab of the key's budget, refreshing the slab once
        if it is short; False where it cannot (one hold per request then)."""
        budget = (key.budget_usd, key.budget_j)
        slab = self.slabs.get(key.id)
        if slab is None:
            slab = self.slabs[key.id] = Slab(f"{self.state.id}:s{next(self._slab_ids)}", budget)
        elif slab.budget != budget:  # the key's budget changed: this slab goes at the next beat
            slab.retired = True
        if slab.retired:
            return False
        loop = asyncio.get_running_loop()
        asked = False
        while self.slabs.get(key.id) is slab and self.state.up and not slab.retired:
            if slab.lock.locked():  # a refresh in flight: take nothing until it answers
                async with slab.lock:
                    continue
            if slab.fits(hold.charge):
                for i, need in enumerate((hold.charge.usd, hold.charge.joules)):
                    slab.used[i] += need
                slab.holds += 1
                slab.busy, slab.worst = True, hold.charge
                self._in_slab[hold.id] = slab
                return True
            if asked or loop.time() < slab.exact_until:
                return False
            asked = True
            async with slab.lock:
                await self._refresh(key.id, slab, _wanted(hold.charge), hold.charge)
        return False

    async def _refresh(self, key_id: str, slab: Slab, want: Charge, least: Charge) -> None:
        """Write the slab's spend to Redis, hold again what its requests in flight hold, and
        ask for `want` more (none: give back the rest). Call with slab.lock held."""
        keep, flush = tuple(slab.used), tuple(slab.spent)
        start = self._start[key_id]
        n = SLAB_MIN_REQUESTS
        try:
            got = await self.state.script(
                self._slab,
                [self.state.key("spent", key_id), self.state.key("holds", key_id)],
                [
                    self.state.prefix,
                    slab.name,
                    _budget(slab.budget[0]),
                    _budget(slab.budget[1]),
                    *map(repr, flush),
                    *map(repr, keep),
                    repr(want.usd),
                    repr(want.joules),
                    repr(least.usd * n),
                    repr(least.joules * n),
                    repr(SLAB_SHARE * max(1, self.state.replicas)),
                    *map(repr, start),
                ],
            )
            grant = (float(got[0]), float(got[1]))
        except asyncio.CancelledError:  # the request that asked left: the same, unknown
            slab.retired = True
            raise
        except (RedisError, OSError, ValueError, TypeError, IndexError) as exc:
            # whether it ran is unknown: the slab takes nothing more, and the first heartbeat
            # that reaches Redis writes its spend (again, if this call ran: counted twice at
            # worst, never lost), holds its requests in flight and gives back the rest
            self.state.failed(exc)
            slab.retired = True
            return
        for i in range(2):
            slab.spent[i] -= flush[i]
            slab.size[i] = keep[i] + grant[i]
        if grant == (0.0, 0.0):
            slab.exact_until = asyncio.get_running_loop().time() + SLAB_RETRY_S

    def _end(self, key_id: str, slab: Slab, write: bool = True) -> None:
        """Stop using a slab (at shutdown): settle its spend against its field (unless
        `write` is False: Redis holds nothing for it), and its requests in flight (none,
        normally) each on its own when they end."""
        if self.slabs.get(key_id) is slab:
            del self.slabs[key_id]
        slab.ended = True
        if write:
            self._queue(key_id, slab.name, Charge(*slab.spent))
        slab.spent = [0.0, 0.0]
        slab.size = [0.0, 0.0]

    async def beat(self) -> None:
        """At each heartbeat: write every slab's spend; give back slabs not used since the
        last one (and those of keys whose budget changed). One call per slab, pipelined."""
        await asyncio.gather(*(self._beat(k, s) for k, s in list(self.slabs.items())))

    async def _beat(self, key_id: str, slab: Slab) -> None:
        if slab.lock.locked():
            return  # refreshed now anyway
        if not (slab.busy or slab.holds or any((*slab.size, *slab.spent))):
            del self.slabs[key_id]  # never granted, nothing to write
            return
        keep = slab.busy and not slab.retired
        async with slab.lock:
            want = _wanted(slab.worst) if keep else NOTHING
            await self._refresh(key_id, slab, want, slab.worst)
        slab.busy = False
        if not keep and not slab.holds and self.slabs.get(key_id) is slab:
            del self.slabs[key_id]

    async def _reserve_one(self, key: KeyRecord, hold: Hold) -> Hold | Refusal:
        worst, start = hold.charge, self._start[key.id]
        try:
            got = await self.state.script(
                self._reserve,
                [self.state.key("spent", key.id), self.state.key("holds", key.id)],
                [
                    self.state.prefix,
                    self._field(hold),
                    _budget(key.budget_usd),
                    _budget(key.budget_j),
                    repr(worst.usd),
                    repr(worst.joules),
                    repr(start[0]),
                    repr(start[1]),
                ],
            )
        except asyncio.CancelledError:
            # the client left while Redis answered: the hold may be there, and nothing would
            # ever settle it (it counted against the budget for the replica's life)
            self._queue(key.id, self._field(hold), NOTHING)
            raise
        except (RedisError, OSError) as exc:  # it may have run too: given back when Redis is
            self._queue(key.id, self._field(hold), NOTHING)
            return self.state.failed(exc)
        if int(got[0]) == 1:
            self._live[hold.id] = (key.id, self._field(hold), worst)
            return hold
        if int(got[0]) == 2:
            return STATE_RECOVERING
        unit, spent, held = int(got[1]), float(got[2]), float(got[3])
        budget = key.budget_usd if unit == 1 else key.budget_j
        assert budget is not None
        need = worst.usd if unit == 1 else worst.joules
        left = max(0.0, budget - spent - held)
        what = f"${budget:g}" if unit == 1 else f"{budget:g} J energy"

        def amt(v: float) -> str:
            return f"${v:.3g}" if unit == 1 else f"{v:.3g} J"

        return Refusal(
            f"key '{key.name}' has {amt(left)} of its {what} budget left (spent {amt(spent)}, "
            f"{amt(held)} held by requests in flight on all replicas, in slabs too); this "
            f"request may cost up to {amt(need)}",
            "insufficient_quota",
            "insufficient_quota",
            retry_after_s=held_retry_s(budget, spent, held, need),
        )

    def settle(self, hold: Hold, actual: Charge) -> Charge:
        charge = Charge(min(actual.usd, hold.charge.usd), min(actual.joules, hold.charge.joules))
        self._end_hold(hold, charge)
        return charge

    def release(self, hold: Hold) -> None:
        self._end_hold(hold, NOTHING)

    def _end_hold(self, hold: Hold, charge: Charge) -> None:
        if hold.key_id not in self._start:
            return  # a key without a budget: nothing shared
        self._live.pop(hold.id, None)
        slab = self._in_slab.pop(hold.id, None)
        if slab is not None and not slab.ended:  # settled here, written at its next refresh
            slab.holds -= 1
            for i, (need, cost) in enumerate(
                ((hold.charge.usd, charge.usd), (hold.charge.joules, charge.joules))
            ):
                slab.used[i] = max(0.0, slab.used[i] - need) if slab.holds else 0.0
                slab.spent[i] += cost
            return
        if slab is not None and charge == NOTHING:
            return  # its slab ended (see _end): nothing to write for it
        self._queue(hold.key_id, self._field(hold), charge)

    def _field(self, hold: Hold) -> str:
        return f"{self.state.id}:{hold.id}"

    def _queue(self, key_id: str, field: str, charge: Charge) -> None:
        """Settle the hold `field` of a key at `charge`, in the next turn's SETTLE call."""
        keys = [self.state.key("spent", key_id), self.state.key("holds", key_id)]
        args = [field, repr(charge.usd), repr(charge.joules), *map(repr, self._start[key_id])]
        self._batch.append((keys, args))
        if len(self._batch) == 1:  # the first of this turn: send them all at the next
            task = asyncio.get_running_loop().create_task(self._send())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        batch, self._batch = self._batch, []
        for i, (_, keys, args) in enumerate(batched(batch)):
            if self.state.up and not self.state.pending:
                try:
                    await self.state.script(self._settle, keys, args)  # EVALSHA: not resent
                    continue
                except (RedisError, OSError) as exc:
                    self.state.lost(exc)
            # replayed in order when Redis returns
            self.state.pending.extend(batch[i * SETTLE_BATCH :])
            return

    async def rehold(self) -> None:
        """Redis lost its data (or went back to an older snapshot) while this replica held
        parts of budgets there (redis_scripts.EPOCH): put back its requests' holds and its
        slabs, as they were, and drop its own holds a snapshot kept that it no longer has,
        one call per key. Until 2026-12-06 they were gone, and another replica could reserve
        the same money again while they ran. Raises RedisError where Redis does not answer
        (the next heartbeat puts them back then)."""
        by_key: dict[str, list[str]] = {}
        for key_id, name, charge in self._live.values():
            by_key.setdefault(key_id, []).extend((name, _hold_text(charge.usd, charge.joules)))
        for key_id, slab in self.slabs.items():
            if not slab.ended and any(slab.size):
                by_key.setdefault(key_id, []).extend((slab.name, _hold_text(*slab.size)))
        for key_id in self._start:
            by_key.setdefault(key_id, [])  # its stale holds go
        await asyncio.gather(
            *(
                self._rehold(
                    keys=[self.state.key("spent", k), self.state.key("holds", k)],
                    args=[f"{self.state.id}:", *map(repr, self._start[k]), *fields],
                )
                for k, fields in by_key.items()
            )
        )

    async def drain(self) -> None:
        """At shutdown: wait for settlements in flight, write every slab's spend and give
        the slabs back."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for key_id, slab in list(self.slabs.items()):
            async with slab.lock:
                await self._refresh(key_id, slab, NOTHING, NOTHING)
            if not slab.ended:  # its requests in flight (none, normally) settle one by one
                self._end(key_id, slab, write=any((*slab.size, *slab.spent)))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
