"""The Lua scripts of the shared budgets and rate limits (wattserve.serve.shared_budgets), each
atomic in Redis and on Redis's clock.

A key's state is two hashes: `spent:<key>` (its spend `usd` and `j`, and the running sum of
its holds `held_usd` and `held_j`) and `holds:<key>` (one field per hold, "<$> <J>"). A hold's
field is `<replica>:<n>` for one request's hold and `<replica>:s<n>` for a slab (a share of
the budget that a replica reserves its requests from itself). The holds of a replica whose
heartbeat key has expired stop counting and are charged in full, a slab's and a request's
alike: the spend they stood for may never reach Redis (until 2026-12-06 a request's hold was
dropped uncharged, and a replica stopped while Redis was away, its settlements queued, let
the key spend $1.90 of $1). Each such charge is kept in the spend hash (`dead:<field>`), so
that a replica alive after all (Redis away past the heartbeat's TTL, a partition) settling the
hold later takes the full charge back and adds the real one.
"""

from __future__ import annotations

from collections.abc import Iterator

# A token bucket on Redis's clock: KEYS[1] the bucket hash; ARGV rate/s, burst.
# Returns 0 when a token was taken, else the milliseconds until one is free.
# Waits and the bucket's TTL are at most 1e13 ms (317 years): Lua writes a number from 1e14
# up as "1e+14", which PEXPIRE refuses, and a rate under 1e-308 makes them infinite; either
# failed the script, and a failed script counts as Redis lost (every keyed request refused).
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local most_ms = 1e13
local b = redis.call('HMGET', KEYS[1], 'tokens', 't')
local tokens, last = tonumber(b[1]) or burst, tonumber(b[2]) or now
if now > last then tokens = math.min(burst, tokens + (now - last) * rate) end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.min(math.ceil((1 - tokens) / rate * 1000), most_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.min(math.ceil(burst / rate * 1000) + 1000, most_ms))
return wait
"""

# What every budget script reads through: values written by another program or a hand
# (redis-cli) are not trusted to be numbers. A spend that is not a finite number >= 0 is set to
# the ledger's; a sum of holds that is not a finite number is set so high that the next
# reservation it would refuse sums the live holds again; a hold that is not two finite
# numbers >= 0 is dropped. Before, a planted "nan" spend let a key spend three times its
# budget (Lua compares nothing with NaN), and HINCRBYFLOAT's refusal of it failed every
# settlement after it, which counted as Redis lost: every keyed request refused.
_CHECKED = """
local UNKNOWN_HELD = 1e300
local function finite(v)
  if v == nil or v ~= v or v == math.huge or v == -math.huge then return nil end
  return v
end
local function spend(key, field, floor)
  local v = finite(tonumber(redis.call('HGET', key, field)))
  if v == nil or v < 0 then
    redis.call('HSET', key, field, floor)
    return tonumber(floor)
  end
  return v
end
-- A Redis that came back from an older snapshot (RDB's default persistence) counts less
-- spent than the ledger has recorded: where the ledger's spend passes Redis's spend and holds
-- together, the ledger's is taken (until 2026-12-06 a key spent $1.60 of $1 so). Within them
-- it is not: a charge the ledger wrote before its settlement reached Redis is still held here.
local function at_least_ledger(key, field, held_field, floor)
  local v = finite(tonumber(redis.call('HGET', key, field))) or 0
  local h = finite(tonumber(redis.call('HGET', key, held_field))) or 0
  local f = finite(tonumber(floor))
  if f ~= nil and f > v + math.max(0, h) + 1e-9 then
    redis.call('HSET', key, field, floor)
    return f
  end
  return v
end
-- A hold charged in full as a dead replica's (_LIVE_HOLDS) whose replica was alive after all
-- (Redis away past the heartbeat's TTL, a partition): its settlement takes the full charge
-- back before adding the real one, so the spend counts once (found 2026-12-06).
local function undo_dead(key, field)
  local text = redis.call('HGET', key, 'dead:' .. field)
  if not text then return end
  redis.call('HDEL', key, 'dead:' .. field)
  local u, j = string.match(text, '^(%S+) (%S+)$')
  u, j = finite(tonumber(u)), finite(tonumber(j))
  if u ~= nil and j ~= nil and u >= 0 and j >= 0 then
    redis.call('HINCRBYFLOAT', key, 'usd', string.format('%.17g', -u))
    redis.call('HINCRBYFLOAT', key, 'j', string.format('%.17g', -j))
  end
end
-- Whether the shared state recovers from a loss of its data (EPOCH): its window is open, or
-- its epoch is gone (Redis restarted empty or flushed, and no replica's heartbeat has seen it
-- yet). Nothing is granted then.
local function recovering(prefix)
  return redis.call('EXISTS', prefix .. 'recovering') == 1
    or redis.call('EXISTS', prefix .. 'epoch') == 0
end
local function held_sum(key, field)
  local raw = redis.call('HGET', key, field)
  if not raw then return 0 end
  local v = finite(tonumber(raw))
  if v == nil then
    redis.call('HSET', key, field, string.format('%.17g', UNKNOWN_HELD))
    return UNKNOWN_HELD
  end
  return math.max(0, v)
end
local function hold_of(holds, field, text)
  local u, j = string.match(text, '^(%S+) (%S+)$')
  u, j = finite(tonumber(u)), finite(tonumber(j))
  if u == nil or j == nil or u < 0 or j < 0 then
    redis.call('HDEL', holds, field)
    return nil, nil
  end
  return u, j
end
"""

# Sum a key's live holds again (KEYS[1] spent, KEYS[2] holds, ARGV[1] prefix), dropping those
# of replicas whose heartbeat expired, charging them, and storing the new sums. Leaves the
# sums in held_usd, held_j and the holds charged in dead_usd, dead_j.
_LIVE_HOLDS = """
local held_usd, held_j, dead_usd, dead_j, alive = 0, 0, 0, 0, {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local rid = string.match(all[i], '^(.*):') or ''
  if alive[rid] == nil then  -- each replica's heartbeat key looked up once
    alive[rid] = redis.call('EXISTS', ARGV[1] .. 'replica:' .. rid)
  end
  local u, j = hold_of(KEYS[2], all[i], all[i + 1])  -- nil: not a hold (dropped)
  if u ~= nil and alive[rid] == 0 then
    redis.call('HDEL', KEYS[2], all[i])
    -- a hold's field (<replica>:<n>, a slab's <replica>:s<n>) is charged in full, a slab's and
    -- a request's alike; a field of no hold's form (written by another hand) only dropped
    if string.match(all[i], '^.+:s?%d+$') then
      redis.call('HSET', KEYS[1], 'dead:' .. all[i], all[i + 1])  -- for its late settlement
      dead_usd = dead_usd + u
      dead_j = dead_j + j
    end
  elseif u ~= nil then
    held_usd = held_usd + u
    held_j = held_j + j
  end
end
if dead_usd > 0 or dead_j > 0 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'usd', string.format('%.17g', dead_usd))
  redis.call('HINCRBYFLOAT', KEYS[1], 'j', string.format('%.17g', dead_j))
end
redis.call('HSET', KEYS[1], 'held_usd', string.format('%.17g', held_usd),
           'held_j', string.format('%.17g', held_j))
"""

# KEYS: spent hash, holds hash. ARGV: prefix, hold field, budget $ (-1: none), budget J,
# need $, need J, ledger's spent $, ledger's spent J (the start after Redis lost its data).
# Returns {1} on success, {2} while the shared state recovers (EPOCH: nothing is granted until
# every live replica has put its holds back), else {0, unit (1: $, 2: J), spent, held}.
# The spent hash keeps the sum of the key's holds (held_usd, held_j), added to here and taken
# from by SETTLE, so a reservation costs the same however many are in flight. Holds of
# replicas that died are in that sum until a reservation it would refuse sums the live holds
# again (dropping the dead ones): the answer is the same as summing them every time.
RESERVE = (
    _CHECKED
    + """
if recovering(ARGV[1]) then return {2} end
local spent = {spend(KEYS[1], 'usd', ARGV[7]), spend(KEYS[1], 'j', ARGV[8])}
local budget = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local need = {tonumber(ARGV[5]), tonumber(ARGV[6])}
local function short(held)
  for u = 1, 2 do
    if budget[u] >= 0 then
      local left = budget[u] - spent[u] - held[u]
      if spent[u] >= budget[u] or need[u] > left + 1e-9 then  -- float sums of holds
        return u
      end
    end
  end
  return nil
end
local held = {held_sum(KEYS[1], 'held_usd'), held_sum(KEYS[1], 'held_j')}
spent = {at_least_ledger(KEYS[1], 'usd', 'held_usd', ARGV[7]),
         at_least_ledger(KEYS[1], 'j', 'held_j', ARGV[8])}
local u = short(held)
if u then
"""
    + _LIVE_HOLDS
    + """
  spent = {spent[1] + dead_usd, spent[2] + dead_j}
  held = {held_usd, held_j}
  u = short(held)
  if u then
    return {0, u, tostring(spent[u]), tostring(held[u])}
  end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[5] .. ' ' .. ARGV[6])
redis.call('HINCRBYFLOAT', KEYS[1], 'held_usd', ARGV[5])
redis.call('HINCRBYFLOAT', KEYS[1], 'held_j', ARGV[6])
return {1}
"""
)

# Settle holds, 5 arguments each: KEYS a spent hash and a holds hash per hold; ARGV per hold:
# hold field, charge $, charge J, ledger's spent $, J. A hold still there leaves the sum of
# holds; one dropped as its replica's (expired) is not in it any more.
SETTLE = (
    _CHECKED
    + """
for i = 1, #KEYS / 2 do
  local spent, holds, a = KEYS[2 * i - 1], KEYS[2 * i], (i - 1) * 5
  local h = redis.call('HGET', holds, ARGV[a + 1])
  if h then
    local u, j = hold_of(holds, ARGV[a + 1], h)
    redis.call('HDEL', holds, ARGV[a + 1])
    held_sum(spent, 'held_usd')
    held_sum(spent, 'held_j')
    if u then
      redis.call('HINCRBYFLOAT', spent, 'held_usd', string.format('%.17g', -u))
      redis.call('HINCRBYFLOAT', spent, 'held_j', string.format('%.17g', -j))
    else  -- the sum held what was there: unknown now
      redis.call('HSET', spent, 'held_usd', string.format('%.17g', UNKNOWN_HELD),
                 'held_j', string.format('%.17g', UNKNOWN_HELD))
    end
  else
    undo_dead(spent, ARGV[a + 1])
  end
  spend(spent, 'usd', ARGV[a + 4])
  spend(spent, 'j', ARGV[a + 5])
  redis.call('HINCRBYFLOAT', spent, 'usd', ARGV[a + 2])
  redis.call('HINCRBYFLOAT', spent, 'j', ARGV[a + 3])
end
return #KEYS / 2
"""
)
SETTLE_BATCH = 256  # settlements per script call at most

Settlement = tuple[list[str], list[str]]  # one hold's SETTLE keys and arguments


def batched(settlements: list[Settlement]) -> Iterator[tuple[int, list[str], list[str]]]:
    """Settlements in SETTLE calls: (how many, keys, arguments) per call."""
    for i in range(0, len(settlements), SETTLE_BATCH):
        part = settlements[i : i + SETTLE_BATCH]
        keys = [k for ks, _ in part for k in ks]
        yield len(part), keys, [a for _, args in part for a in args]


# Refresh a replica's slab of a key's budget: write what was spent from it, hold again what
# its requests in flight hold, and grant more when asked and the budget allows.
# KEYS: spent hash, holds hash. ARGV: 1 prefix, 2 slab field, 3 budget $ (-1: none),
# 4 budget J, 5-6 spent from the slab since the last refresh ($, J), 7-8 held by its requests
# in flight, 9-10 wanted, 11-12 the least grant worth a slab, 13 share (a grant takes at most
# 1/share of what is free), 14-15 ledger's spent (the start after Redis lost its data).
# Returns {granted $, granted J}: both 0 when the budget cannot spare the least, and while the
# shared state recovers (EPOCH).
# The spend is added even when the slab is gone (Redis restarted empty, or this replica was
# counted dead and the slab charged in full): counted twice at worst, never lost.
SLAB = (
    _CHECKED
    + """
spend(KEYS[1], 'usd', ARGV[14])
spend(KEYS[1], 'j', ARGV[15])
held_sum(KEYS[1], 'held_usd')
held_sum(KEYS[1], 'held_j')
at_least_ledger(KEYS[1], 'usd', 'held_usd', ARGV[14])
at_least_ledger(KEYS[1], 'j', 'held_j', ARGV[15])
local cur = redis.call('HGET', KEYS[2], ARGV[2])
if not cur then
  undo_dead(KEYS[1], ARGV[2])
end
if cur then
  local u, j = hold_of(KEYS[2], ARGV[2], cur)
  redis.call('HDEL', KEYS[2], ARGV[2])
  if u then
    redis.call('HINCRBYFLOAT', KEYS[1], 'held_usd', string.format('%.17g', -u))
    redis.call('HINCRBYFLOAT', KEYS[1], 'held_j', string.format('%.17g', -j))
  else
    redis.call('HSET', KEYS[1], 'held_usd', string.format('%.17g', UNKNOWN_HELD),
               'held_j', string.format('%.17g', UNKNOWN_HELD))
  end
end
redis.call('HINCRBYFLOAT', KEYS[1], 'usd', ARGV[5])
redis.call('HINCRBYFLOAT', KEYS[1], 'j', ARGV[6])
local budget = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local keep = {tonumber(ARGV[7]), tonumber(ARGV[8])}
local want = {tonumber(ARGV[9]), tonumber(ARGV[10])}
local least = {tonumber(ARGV[11]), tonumber(ARGV[12])}
local share = tonumber(ARGV[13])
local function grants()
  local s = redis.call('HMGET', KEYS[1], 'usd', 'j', 'held_usd', 'held_j')
  local g, any = {0, 0}, false
  for u = 1, 2 do
    if budget[u] >= 0 then
      local free = budget[u] - tonumber(s[u]) - math.max(0, tonumber(s[u + 2]) or 0) - keep[u]
      if free <= 0 then return nil end
      g[u] = math.min(want[u], free / share)
      if g[u] < least[u] then return nil end
      if want[u] > 0 then any = true end
    end
  end
  if any then return g end
  return nil
end
local g = nil
if (want[1] > 0 or want[2] > 0) and not recovering(ARGV[1]) then
  g = grants()
  if g == nil then
"""
    + _LIVE_HOLDS
    + """
    g = grants()
  end
end
g = g or {0, 0}
local total = {keep[1] + g[1], keep[2] + g[2]}
if total[1] > 0 or total[2] > 0 then
  redis.call('HSET', KEYS[2], ARGV[2],
             string.format('%.17g', total[1]) .. ' ' .. string.format('%.17g', total[2]))
  redis.call('HINCRBYFLOAT', KEYS[1], 'held_usd', string.format('%.17g', total[1]))
  redis.call('HINCRBYFLOAT', KEYS[1], 'held_j', string.format('%.17g', total[2]))
end
return {string.format('%.17g', g[1]), string.format('%.17g', g[2])}
"""
)


# The shared state's epoch, checked at every heartbeat: KEYS[1] the epoch's name, KEYS[2] the
# recovery window's key, KEYS[3] a counter every call adds one to. ARGV: 1 the epoch this
# replica knows ('' at its start), 2 the highest count it has seen, 3 a name for a new epoch,
# 4 the recovery window (ms), 5 '1' when Redis restarted since this replica's last heartbeat
# (its run_id changed: whatever it restored, from a snapshot or an append-only file written
# once a second, may lack the last holds). A Redis restarted empty or flushed has no epoch; one
# restored from a snapshot older than a replica's last heartbeat has a count below what that
# replica saw. Either way its holds and
# leases in flight are gone (or stale) while the replicas still count on them: a new epoch
# begins, and for the window nothing is granted (RESERVE, SLAB, LEASE), while every live
# replica, at its next heartbeat, finds the epoch changed and puts back what it holds
# (REHOLD, and its lease). A replica at its start that finds no epoch makes one without a
# window (a Redis new to the replicas, or lost with nobody seeing it yet: then the first
# replica that had known the old epoch starts the window, as it finds the new one).
# Returns {epoch, count, the window's ms left (-2: none), '1' when this replica must put its
# holds back, else '0'}.
EPOCH = """
local e = redis.call('GET', KEYS[1])
local n = redis.call('INCR', KEYS[3])
local last = tonumber(ARGV[2])
if e and ARGV[1] ~= '' and e ~= ARGV[1] then
  -- another replica began a new epoch (whatever the count says: it may have moved the count
  -- past its own last one only): put back before anything is granted
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
  return {e, tostring(n), ARGV[4], '1'}
end
if e and n > last and ARGV[5] ~= '1' then  -- the epoch this replica knows, or its first
  return {e, tostring(n), tostring(redis.call('PTTL', KEYS[2])), '0'}
end
-- no epoch, a count gone back, or a restart nobody has seen yet: a new epoch
if n <= last then  -- counted back: a snapshot older than this replica's last heartbeat
  n = redis.call('INCRBY', KEYS[3], last - n + 1)
end
redis.call('SET', KEYS[1], ARGV[3])
if ARGV[1] == '' and e == false then
  return {ARGV[3], tostring(n), '-2', '0'}
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
return {ARGV[3], tostring(n), ARGV[4], '1'}
"""

# Put back what one replica holds of one key's budget after the shared state lost it (EPOCH):
# KEYS spent hash, holds hash; ARGV: 1 the replica's field prefix ('<id>:'), 2-3 the ledger's
# spend ($, J), then per hold its field and "<$> <J>". The spend is at least the ledger's (a
# snapshot lost the settlements made after it; a settlement still queued here is then counted
# twice: conservative, as elsewhere).
# A field of the replica's own that it does not hold any more (a snapshot's stale hold) goes;
# one it holds and Redis lacks is put back, added to the sum of holds. Returns the holds put.
REHOLD = (
    _CHECKED
    + """
for u, field in ipairs({'usd', 'j'}) do  -- at least the ledger's: a snapshot lost spends
  if spend(KEYS[1], field, ARGV[u + 1]) < tonumber(ARGV[u + 1]) then
    redis.call('HSET', KEYS[1], field, ARGV[u + 1])
  end
end
local mine = {}
for i = 4, #ARGV, 2 do mine[ARGV[i]] = ARGV[i + 1] end
local held_usd, held_j = held_sum(KEYS[1], 'held_usd'), held_sum(KEYS[1], 'held_j')
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local f = all[i]
  if mine[f] == nil and string.sub(f, 1, #ARGV[1]) == ARGV[1] then
    local u, j = hold_of(KEYS[2], f, all[i + 1])
    redis.call('HDEL', KEYS[2], f)
    if u then
      held_usd, held_j = held_usd - u, held_j - j
    end
  end
end
local put = 0
for f, v in pairs(mine) do
  if redis.call('HEXISTS', KEYS[2], f) == 0 then
    local u, j = string.match(v, '^(%S+) (%S+)$')
    redis.call('HSET', KEYS[2], f, v)
    held_usd, held_j = held_usd + tonumber(u), held_j + tonumber(j)
    put = put + 1
  end
end
redis.call('HSET', KEYS[1], 'held_usd', string.format('%.17g', math.max(0, held_usd)),
           'held_j', string.format('%.17g', math.max(0, held_j)))
return put
"""
)
