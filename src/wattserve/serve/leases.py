"""Power leases: how gateway replicas share a capped site's power through Redis.

Each replica emulates (or meters) its own engines, so each must hold a part of every capped
site's headroom (the cap minus the devices' idle draw, which every replica pays on its own).
That part is a **lease**: a field per replica in the hash `ws:lease:<site>`, written only by
one Lua script that grants a replica what it asks for as far as the sum of all live replicas'
leases stays within the headroom. The lease sets the replica's local cap (idle draw + lease),
against which the core's PowerGovernor admits as before: admission makes no Redis call.

- **Growing.** When its governor refuses a request for power, a replica asks for more (what
  the admission lacked, at least a step of headroom / LEASE_STEPS), at most every
  GROW_EVERY_S per site. A grant comes from the headroom no one holds; what it asked for and
  did not get is its unmet demand, which the script shows the others.
- **Returning.** At each heartbeat (every second) a replica returns the unmet demand of the
  others that the free headroom does not cover: down to the power it draws when it has no
  request in flight at the site, and down to its even share (headroom / live replicas) when it
  has, even if it draws more (its next steps are then slowed or wait, as under any cap). A
  busy replica thus takes from idle ones what its refused admissions ask for (engine steps
  that wait for power do not ask), and replicas busy at once end at their even shares: none
  is starved by others that keep what they draw.
- **Joining** asks for an even share (granted from the free headroom, the rest as demand);
  and at each heartbeat a replica below its even share tops up from the free headroom no
  other replica asked for, up to that share (LEASE grants a top-up no more, and records no
  demand for it: a replica that joined while another held the headroom had stayed at 0 W
  for good, its requests sent to a hosted API while its own GPUs idled).
- **Passed over.** A request placed past targets that lacked power (router.place: the
  policy's next choice, such as a hosted API, took it) asks at their sites as a refused
  admission does.
- **An ask stays shown** for ASK_HOLD_S until granted, up to the even share (a join's, or
  one for requests short of power), so that the replicas holding the headroom read it.
- **Expiry.** A replica's lease ends when its heartbeat key expires (`--state-ttl`): every
  call of the script drops the leases of replicas whose key is gone.

Safety: a lease shrinks here (the local cap falls) before Redis is told, and grows here only
after Redis granted it, so the power a replica may draw never exceeds what Redis counts for it.
What a shrinking replica's running steps still draw above its new lease stays counted in Redis
until the next call (the steps end within it): the power is given back once no longer drawn.
Losing Redis keeps the last lease (the sum stays within the headroom); nothing is returned or
granted until Redis answers again. But Redis may count a replica it has not heard from for a
TTL as gone and give its lease away (a partition: the others still reach Redis), so a replica
whose last heartbeat Redis took is 3/4 of a TTL old drops its leases (`fence`), before that
can happen, and rejoins when a heartbeat succeeds; the script grants nothing to a replica whose own
heartbeat key has expired.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from wattserve.core.workload import Request

if TYPE_CHECKING:
    from wattserve.serve.state import SharedState

LEASE_STEPS = 8  # a replica grows its lease by at least headroom / LEASE_STEPS at a time
# an ask (a join's even share, or more for requests short of power) stays shown this long
# (three heartbeats) until granted: shown for one call, it was gone at the replica's next
# heartbeat, often before the replica holding the headroom had seen it: three replicas
# started together stayed at [1170, 0, 0] W, and one passed over now and then never got any
ASK_HOLD_S = 3.0
GROW_EVERY_S = 0.05  # at most one request for more lease per site this often (a power wait
# polls as often: serve.router.POWER_POLL_S)

# KEYS[1] the site's lease hash. ARGV: key prefix, replica id, lease wanted (W), headroom (W),
# the most it may be granted while the shared state recovers (W: what it holds or draws; see
# redis_scripts.EPOCH: a Redis flushed had granted one replica 900 W of a 600 W headroom while
# the others still drew on their leases), '1' for a top-up (no more than the free headroom
# less the others' unmet demand, and recorded as wanted no more than granted: two idle
# replicas acting on one second-old figure of spare headroom had each asked for it, and the
# loser's ask, read as demand, took power from a busy replica), and the lease held (W).
# A caller whose own heartbeat key expired is not live: it gets -1 (no lease) until its next
# heartbeat. Otherwise drops the leases of replicas whose heartbeat key expired, grants
# max(0, min(wanted, headroom - the other live leases)) and stores "grant wanted".
# Returns {grant, the others' unmet demand (sum of wanted - granted), the free headroom}
# (as strings: Redis would truncate a Lua number to an integer).
LEASE = """
if redis.call('EXISTS', ARGV[1] .. 'replica:' .. ARGV[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return {'-1', '0', '0'}
end
local others, unmet = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local rid = all[i]
  if rid ~= ARGV[2] then
    if redis.call('EXISTS', ARGV[1] .. 'replica:' .. rid) == 0 then
      redis.call('HDEL', KEYS[1], rid)
    else
      local g, w = string.match(all[i + 1], '^(%S+) (%S+)$')
      g, w = tonumber(g), tonumber(w)
      others = others + g
      if w > g then unmet = unmet + w - g end
    end
  end
end
local room = tonumber(ARGV[4])
local grant = math.max(0, math.min(tonumber(ARGV[3]), room - others))
if redis.call('EXISTS', ARGV[1] .. 'recovering') == 1
    or redis.call('EXISTS', ARGV[1] .. 'epoch') == 0 then  -- put back, no more (EPOCH)
  grant = math.min(grant, tonumber(ARGV[5]))
end
local wanted = tonumber(ARGV[3])
if ARGV[6] == '1' then  -- a top-up: headroom free now that nobody asked for, never demand
  grant = math.max(0, math.min(grant, math.max(tonumber(ARGV[7]), room - others - unmet)))
  wanted = grant
end
redis.call('HSET', KEYS[1], ARGV[2], string.format('%.6f %.6f', grant, wanted))
return {string.format('%.6f', grant), string.format('%.6f', unmet),
        string.format('%.6f', room - others - grant)}
"""
EPS_W = 1e-3


@dataclass
class SiteLease:
    """This replica's lease at one capped site, in watts of dynamic power."""

    lease_w: float = 0.0
    demand_w: float = 0.0  # what refused admissions lacked since the last call
    owed_w: float = 0.0  # others' unmet demand the free headroom did not cover, at the last call
    spare_w: float = 0.0  # free headroom past the others' unmet demand, at the last call
    topup: bool = False  # the lease asked for now is a top-up (LEASE's ARGV[6])
    joined: bool = False  # the first call (asking for an even share) was made
    ask_w: float = 0.0  # the lease last asked for, shown until `ask_until` (ASK_HOLD_S)
    ask_until: float = 0.0
    last_ask: float = -math.inf
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class PowerLeases:
    """This replica's leases, one per capped site; sets the governor's local caps."""

    def __init__(self, router: Any, state: SharedState) -> None:
        self.router = router
        self.state = state
        self.sites = {name: SiteLease() for name in router.fleet.sites}
        self._script = state.redis.register_script(LEASE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_site: dict[str, list[Any]] = {}
        for t in router.targets.values():
            self._by_site.setdefault(t.site, []).append(t)

    def headroom_w(self, site: str) -> float | None:
        """The site's cap (as set at run time, else the fleet file's) minus its idle draw."""
        cap = self.state.caps.get(site, self.router.fleet.sites[site].power_cap_w)
        if cap is None:
            return None
        return max(0.0, float(cap) - float(self.router.gov.sites[site].base_w))

    def floor_w(self, room: float) -> float:
        """The lease a replica with requests in flight asks for at least (`_want`): a step
        is slowed down to fit a lease no smaller than this, and waits for power below it
        (the governor's `floor_w`), so a sliver of a lease never stretches a step."""
        return min(room / LEASE_STEPS, room / max(1, self.state.replicas))

    def apply(self, site: str) -> None:
        """Set the governor's cap for `site` to the idle draw plus this replica's lease."""
        gov = self.router.gov
        acct = gov.sites[site]
        room = self.headroom_w(site)
        cap = None if room is None else acct.base_w + min(self.sites[site].lease_w, room)
        gov.set_cap(site, cap, self.router.clock())
        acct.floor_w = 0.0 if room is None else self.floor_w(room)

    def describe(self) -> dict[str, float]:
        """Leases held, by capped site (what /health shows)."""
        return {
            name: round(s.lease_w, 3)
            for name, s in self.sites.items()
            if self.headroom_w(name) is not None
        }

    def short_of_power(self, req: Request, targets: tuple[str, ...]) -> None:
        """Admission passed over `targets` for power (refusing `req`, or placing it on the
        policy's next choice): note what each of their capped sites lacks and ask for more
        lease there (in the background, at most every GROW_EVERY_S per site). Only theirs:
        a request placed elsewhere would ask at the site that took it, with room to spare."""
        gov = self.router.gov
        now = time.monotonic()
        for name in targets:
            t = self.router.targets[name]
            s = self.sites[t.site]
            room = self.headroom_w(t.site)
            if room is None or s.lease_w >= room - EPS_W:
                continue  # uncapped, or this replica holds the whole headroom already
            acct = gov.sites[t.site]
            lacking = (acct.power_w - acct.base_w) + t.marginal_power_w() - s.lease_w
            s.demand_w = max(s.demand_w, lacking, EPS_W)
            if now - s.last_ask >= GROW_EVERY_S and not s.lock.locked():
                s.last_ask = now
                self._spawn(self._grow(t.site))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _grow(self, site: str) -> None:
        if not self.state.up:
            return  # the last lease stands until Redis answers again
        try:
            await self._ask(site)
        except (RedisError, OSError) as exc:
            self.state.lost(exc)

    async def renew(self) -> None:
        """At every heartbeat: join, grow, return or keep each capped site's lease (see the
        module docstring). Raises RedisError when Redis does not answer."""
        for site in self.sites:
            if self.headroom_w(site) is None:
                continue
            owed = self.sites[site].owed_w
            if await self._ask(site) > EPS_W and owed <= EPS_W:
                await self._ask(site)  # another replica has just asked: return at once

    async def _ask(self, site: str) -> float:
        """One call of the script for `site`; returns the others' demand that this replica
        may have to return (0 when none)."""
        s = self.sites[site]
        async with s.lock:
            room = self.headroom_w(site)
            if room is None:
                return 0.0
            want = self._want(site, s, room)
            if want < s.lease_w:  # shrink here first: never draw more than Redis counts
                s.lease_w = want
                self.apply(site)
            # Redis goes on counting what steps started under the old lease still draw, until
            # they end (the next call gives it back): else another replica could start steps
            # on power this one is still drawing, and the site would pass its cap meanwhile
            acct = self.router.gov.sites[site]
            held = max(want, min(room, acct.power_w - acct.base_w))
            s.demand_w = 0.0
            got = await self._script(
                keys=[self.state.key("lease", site)],
                args=[
                    self.state.prefix,
                    self.state.id,
                    repr(held),
                    repr(room),
                    repr(max(s.lease_w, min(room, acct.power_w - acct.base_w))),
                    "1" if s.topup else "0",
                    repr(s.lease_w),
                ],
            )
            granted = max(0.0, float(got[0]))
            s.lease_w = min(granted, want)
            # what Redis still counts above the lease is given back at the next call: it is
            # not free now, but it is not owed again either (else it would be returned twice)
            pending = granted - s.lease_w
            s.owed_w = max(0.0, float(got[1]) - float(got[2]) - pending)
            s.spare_w = max(0.0, float(got[2]) - float(got[1]))
            s.joined = float(got[0]) >= 0  # else rejoin at the next heartbeat
            self.apply(site)
        # an engine step waiting for power fits now, or may be slowed to fit (emulated backend)
        async with self.router.power_changed:
            self.router.power_changed.notify_all()
        return s.owed_w

    def _want(self, site: str, s: SiteLease, room: float) -> float:
        """The lease to ask for now (see the module docstring)."""
        s.topup = False
        acct = self.router.gov.sites[site]
        used = max(0.0, acct.power_w - acct.base_w)
        busy = any(t.outstanding for t in self._by_site.get(site, ()))
        even = room / max(1, self.state.replicas)
        if busy and s.lease_w < self.floor_w(room):
            s.demand_w = max(s.demand_w, EPS_W)  # requests in flight and almost no power
        now = time.monotonic()
        if not s.joined or s.demand_w > 0:
            want = even if not s.joined else s.lease_w + max(s.demand_w, room / LEASE_STEPS)
            s.ask_w, s.ask_until = min(want, room), now + ASK_HOLD_S
        elif now < s.ask_until and s.lease_w < min(s.ask_w, even) - EPS_W:
            # not yet granted, up to its even share (past it, only asks made afresh count,
            # so a busy replica still gives back down to its share to those short)
            want = min(s.ask_w, even)
        elif s.owed_w > EPS_W:  # others are short: give back down to the even share, or to
            # the draw when idle; keeping what it draws would starve a replica whose steps wait
            keep = even if busy else used
            want = max(min(s.lease_w, keep), s.lease_w - s.owed_w)
        elif s.lease_w < even - EPS_W and s.spare_w > EPS_W:
            # below its even share, it tops up from free headroom nobody asked for (LEASE
            # grants no more): a replica that joined while another held the headroom stayed
            # at 0 W, its requests sent to a hosted API, while 585 W lay free
            want, s.topup = even, True
        else:
            want = s.lease_w
        return min(want, room)

    def fence(self) -> None:
        """Drop every lease here: Redis has not taken a heartbeat for 3/4 of the TTL, so it may
        soon count this replica as gone and give its leases to others. Requests and engine
        steps at capped sites then wait for power until a heartbeat succeeds and the replica
        rejoins (asking for an even share again)."""
        for site, s in self.sites.items():
            s.lease_w, s.demand_w, s.owed_w, s.spare_w, s.joined = 0.0, 0.0, 0.0, 0.0, False
            if self.headroom_w(site) is not None:
                self.apply(site)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
