"""Power leases over a real redis-server and real gateway processes (wattserve.serve.leases):
a busy replica takes most of a site's headroom from idle ones; under load on every replica the
leases in Redis and the emulated draw stay within the cap; a killed replica's lease is released
within its TTL; losing Redis keeps the last lease."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis_server import redis_server
from serving import Server
from test_scale_out_gateways import replicas
from test_serve_reliability import SMALL, ask

from wattserve.core.governor import PowerGovernor
from wattserve.serve.leases import PowerLeases

IDLE_W = 210.0  # 2 x H100 SXM idle (the catalog's figure), drawn by every replica on its own
HEADROOM_W = 500.0
# A third of the headroom (167 W) is less than one request adds to an idle H100 (about 190 W
# for this model's decode, 345 W for a 128-token prefill, under the power curve of 2026-12-04;
# the headroom was 650 W against about 290 W before): with an even split no replica could
# serve; with leases a busy one takes it, two can serve at once, three cannot.


def tight(headroom_w: float) -> str:
    return f"""
sites:
  dc: {{kind: datacenter, power_cap_w: {IDLE_W + headroom_w:g}}}
deployments:
  gpus: {{site: dc, model: {SMALL}, hardware: h100-sxm, replicas: 2}}
"""


TIGHT = tight(HEADROOM_W)


def leases(r: redis.Redis) -> dict[str, float]:
    """Granted lease by replica id, as Redis holds it."""
    raw: dict[bytes, bytes] = r.hgetall("ws:lease:dc")  # type: ignore[assignment]
    return {k.decode(): float(v.split()[0]) for k, v in raw.items()}


def replica_id(s: Server) -> str:
    return str(httpx.get(f"{s.url}/health").json()["state"]["replica"])


def dynamic_w(s: Server) -> float:
    return float(httpx.get(f"{s.url}/v1/fleet").json()["sites"]["dc"]["power_w"]) - IDLE_W


@contextlib.contextmanager
def watching(check: Callable[[], None]) -> Iterator[None]:
    """Run `check` every 10 ms in a thread until the block ends; re-raise its first failure."""
    stop = threading.Event()
    failed: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                check()
            except BaseException as exc:  # reported in the test's thread
                failed.append(exc)
                return
            time.sleep(0.01)

    t = threading.Thread(target=loop)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
    if failed:
        raise failed[0]


def load(
    urls: list[str],
    clients: int,
    seconds: float,
    done: threading.Event | None = None,
    codes: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """`clients` threads asking the replicas in turn for `seconds` (or until `done` is set):
    (replica, status) of each answer, appended to `codes` as they come when given."""
    end = time.monotonic() + seconds
    codes = [] if codes is None else codes

    def client(i: int) -> None:
        while time.monotonic() < end and not (done and done.is_set()):
            codes.append((i % len(urls), ask(urls[i % len(urls)], 48).status_code))

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return codes


# A busy replica's lease grows while its admissions are refused for power; the engine steps of
# admitted requests that wait for power do not ask (serve.leases), so it can settle below the
# whole headroom with an idle replica still holding some: "most" is 60%, 1.8 even shares.
MOST = 0.6


def test_a_busy_replica_takes_most_of_the_cap_from_idle_ones(tmp_path: Path) -> None:
    with redis_server() as srv, replicas(tmp_path, TIGHT, 3, "--state", srv.url) as servers:
        r = redis.Redis.from_url(srv.url)
        busy = servers[0]
        me = replica_id(busy)
        load([s.url for s in servers[1:]], 16, 3.0)  # the others take most of the headroom
        time.sleep(1.5)  # and go idle
        assert leases(r)[me] < 0.5 * HEADROOM_W
        peak = [0.0, 0.0]  # the busy replica's largest lease and draw
        done = threading.Event()

        def check() -> None:
            held = leases(r)
            assert sum(held.values()) <= HEADROOM_W + 1e-3, held
            peak[0] = max(peak[0], held.get(me, 0.0))
            peak[1] = max(peak[1], dynamic_w(busy))
            if peak[0] >= MOST * HEADROOM_W and peak[1] >= HEADROOM_W / 2:
                done.set()

        # 32 clients: more work than the headroom allows (with 16 the replica needed 400-460 W
        # of the 650 W, and its lease ended at 445-460 W in 3 of about 30 runs, 2026-12-03)
        with watching(check):  # a few seconds here; 30 s at most on a loaded machine
            codes = {c for _, c in load([busy.url], 32, 30.0, done)}
        assert codes <= {200, 429} and 200 in codes
        # the idle replicas returned what they held: it drew far more than an even share
        assert peak[0] >= MOST * HEADROOM_W, peak
        assert HEADROOM_W / 2 <= peak[1] <= HEADROOM_W + 1e-6, peak


def test_leases_and_draw_stay_within_the_cap_under_load_on_every_replica(
    tmp_path: Path,
) -> None:
    """Under load on all three replicas, the leases and the draws stay within the headroom.
    650 W here: three requests' decodes (about 570 W) fit at once, so each replica can serve
    while the others do (at 500 W the third waits for a lease the two busy ones keep, and
    whether it ever serves within the test's seconds is timing: 1 of 3 runs it did not)."""
    room = 650.0
    roomy = tight(room)
    with redis_server() as srv, replicas(tmp_path, roomy, 3, "--state", srv.url) as servers:
        r = redis.Redis.from_url(srv.url)
        ids = [replica_id(s) for s in servers]
        peak = [0.0, 0.0]  # largest sum of leases, of draws
        snapshots = [0, 0]  # checks made, of which the leases did not move during the reads
        done = threading.Event()
        start = time.monotonic()
        codes: list[tuple[int, int]] = []

        def check() -> None:
            before = leases(r)
            held = sum(before.values())
            assert held <= room + 1e-3
            fleets = [httpx.get(f"{s.url}/v1/fleet").json()["sites"]["dc"] for s in servers]
            drawn = sum(f["power_w"] - IDLE_W for f in fleets)
            snapshots[0] += 1
            # The draws are read one replica after another. A replica's cap grows only after
            # Redis granted it and shrinks before Redis is told, and Redis goes on counting
            # what the steps started under a larger lease still draw until they end (a draw
            # may pass the replica's lowered cap meanwhile, not what Redis counts for it). So
            # when no lease in Redis moved during the reads, each draw is within its replica's
            # lease there and their sum within the headroom; otherwise a lease may have
            # passed from one replica to another between two reads.
            if leases(r) == before:
                snapshots[1] += 1
                for rid, f in zip(ids, fleets, strict=True):  # power_w: 3 decimals
                    assert f["power_w"] - IDLE_W <= before.get(rid, 0.0) + 1e-3, (rid, f, before)
                assert drawn <= room + 3e-3, fleets
            served = {i for i, c in list(codes) if c == 200}
            if snapshots[1] >= 5 and time.monotonic() - start >= 8.0 and len(served) == 3:
                # 8 s of load, enough consistent snapshots and an answer from each replica
                # (a busy host stretched the first two; with a fixed 8 s, 1 run in a full
                # check beside four other jobs ended before the third replica had served)
                done.set()
            peak[0], peak[1] = max(peak[0], held), max(peak[1], drawn)

        with watching(check):
            load([s.url for s in servers], 24, 60.0, done, codes)
        assert {c for _, c in codes} <= {200, 429}, codes
        assert {i for i, c in codes if c == 200} == {0, 1, 2}  # each replica served
        assert peak[1] > 0 and snapshots[1] >= 5, snapshots


def test_a_killed_replicas_lease_is_released_within_its_ttl(tmp_path: Path) -> None:
    ttl_s = 2.0
    with (
        redis_server() as srv,
        replicas(tmp_path, TIGHT, 2, "--state", srv.url, "--state-ttl", str(ttl_s)) as (a, b),
    ):
        r = redis.Redis.from_url(srv.url)
        dead = replica_id(a)
        load([a.url], 16, 4.0)  # `a` takes most of the headroom...
        assert leases(r)[dead] >= 0.5 * HEADROOM_W
        a.kill()  # ... and dies holding it
        killed = time.monotonic()
        while dead in leases(r):
            # within the TTL, plus one heartbeat of the survivor (whose script drops it)
            assert time.monotonic() - killed <= ttl_s + 1.0 + 1.5, leases(r)  # 1.5 s: slack
            time.sleep(0.05)
        codes = load([b.url], 16, 4.0)  # the survivor may now take the whole headroom
        assert (0, 200) in codes
        assert leases(r)[replica_id(b)] > HEADROOM_W - 0.5 * HEADROOM_W


def test_losing_redis_keeps_the_last_lease(tmp_path: Path) -> None:
    # a TTL long enough that the leases are not yet dropped (3/4 of it) while this test looks
    with (
        redis_server() as srv,
        replicas(tmp_path, TIGHT, 2, "--state", srv.url, "--state-ttl", "60") as (a, b),
    ):
        for s in (a, b):  # each holds a lease (granted when it joined or by the other)
            assert ask(s.url, 4).status_code == 200
        time.sleep(1.5)  # a heartbeat settles what each holds
        before = [httpx.get(f"{s.url}/health").json()["state"]["power_leases_w"] for s in (a, b)]
        assert all(x["dc"] > 0 for x in before)
        srv.stop()
        deadline = time.monotonic() + 15
        while any(httpx.get(f"{s.url}/health").json()["state"]["up"] for s in (a, b)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert all(ask(s.url, 4).status_code == 200 for s in (a, b))  # within its lease
        after = [httpx.get(f"{s.url}/health").json()["state"]["power_leases_w"] for s in (a, b)]
        assert after == before
        assert sum(x["dc"] for x in after) <= HEADROOM_W + 1e-3


def lease_here(s: Server) -> float:
    return float(httpx.get(f"{s.url}/health").json()["state"]["power_leases_w"]["dc"])


def test_a_replica_cut_off_from_redis_drops_its_lease_before_redis_could_give_it_away(
    tmp_path: Path,
) -> None:
    """Redis counts a replica it has not heard from for a TTL as gone and may give its lease to
    the others (who may still reach it: a partition). So a replica drops its leases 3/4 of a
    TTL after the last heartbeat Redis took, stops admitting at the capped site, and rejoins
    and takes power again when Redis answers."""
    ttl_s = 2.0
    with (
        redis_server() as srv,
        replicas(
            tmp_path, TIGHT, 2, "--state", srv.url, "--state-ttl", str(ttl_s), "--max-wait", "0.2"
        ) as (a, b),
    ):
        assert ask(a.url, 4).status_code == 200 and lease_here(a) > 0
        srv.stop()
        lost = time.monotonic()
        while lease_here(a) > 0 or lease_here(b) > 0:
            # 3/4 of the TTL after the last heartbeat (at most a third of a TTL before `lost`)
            assert time.monotonic() - lost <= 0.75 * ttl_s + 1.5, "leases kept"  # 1.5 s: slack
            time.sleep(0.05)
        fleet = httpx.get(f"{a.url}/v1/fleet").json()["sites"]["dc"]
        assert fleet["power_cap_w"] == IDLE_W  # the idle draw and no lease
        r = ask(a.url, 4)
        assert r.status_code == 429 and "power" in r.text, r.text
        srv.start()  # Redis is back (empty): both rejoin and take power again as they need it
        deadline = time.monotonic() + 15
        while not all(httpx.get(f"{s.url}/health").json()["state"]["up"] for s in (a, b)):
            assert time.monotonic() < deadline, "not up again after Redis returned"
            time.sleep(0.1)
        # Redis came back empty: nothing is granted in the new epoch's window (3 s at this TTL:
        # redis_scripts.EPOCH); then a refusal for power asks for more lease, and a try soon
        # after is admitted
        for s in (a, b):
            deadline = time.monotonic() + 10
            while ask(s.url, 4).status_code != 200:
                assert time.monotonic() < deadline, "no lease after Redis returned"
                time.sleep(0.1)
            assert lease_here(s) > 0
        r = redis.Redis.from_url(srv.url)
        assert sum(leases(r).values()) <= HEADROOM_W + 1e-3


def test_a_busy_replica_gives_back_down_to_its_even_share_when_others_are_short(
    tmp_path: Path,
) -> None:
    """A replica that draws its whole lease, above its even share, must still give back to
    one that is short: keeping what it draws starved a replica whose engine steps waited for
    power behind two busy ones for a minute (a CI failure of
    test_site_cap_and_key_budget_hold_over_three_replicas)."""
    from wattserve.core.fleet import load_fleet
    from wattserve.core.policy import make_policy
    from wattserve.serve.leases import PowerLeases
    from wattserve.serve.router import Router
    from wattserve.serve.state import SharedState

    headroom = 300.0  # the figures below are for this headroom
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(tight(headroom))
    router = Router(load_fleet(fleet_file), make_policy("least_loaded"))
    state = SharedState("redis://127.0.0.1:1/0", replica_id="busy")  # never connected
    state.replicas = 3
    leases = PowerLeases(router, state)
    lease = leases.sites["dc"]
    acct = router.gov.sites["dc"]
    even = headroom / 3
    lease.joined, lease.lease_w = True, 250.0
    acct.power_w = acct.base_w + 250.0  # drawing all of it
    router.targets["gpus"].add(4)  # requests in flight: busy
    lease.owed_w = 60.0  # another replica is short by this much
    assert leases._want("dc", lease, headroom) == pytest.approx(190.0)
    lease.lease_w = 190.0
    assert leases._want("dc", lease, headroom) == pytest.approx(130.0)
    lease.lease_w = 130.0
    assert leases._want("dc", lease, headroom) == pytest.approx(even)  # not below it
    lease.lease_w, lease.owed_w = even, 60.0
    assert leases._want("dc", lease, headroom) == pytest.approx(even)
    router.targets["gpus"].add(-4)  # idle: down to what it draws
    acct.power_w = acct.base_w
    assert leases._want("dc", lease, headroom) == pytest.approx(even - 60.0)


def stand_in_leases(
    client: Any, rid: str, busy: bool, room: float, idle: float, replicas: int
) -> tuple[PowerLeases, PowerGovernor]:
    """One replica's PowerLeases at site `dc` (headroom `room` over `idle`) over a stand-in
    router and shared state (the governor is the real one), against `client`'s Redis."""
    import asyncio
    import types

    gov = PowerGovernor({"dc": idle + room})
    gov.add_base("dc", idle)
    router = types.SimpleNamespace(
        fleet=types.SimpleNamespace(sites={"dc": types.SimpleNamespace(power_cap_w=idle + room)}),
        targets={"t": types.SimpleNamespace(site="dc", outstanding=busy)},
        gov=gov,
        clock=lambda: 0.0,
        power_changed=asyncio.Condition(),
    )
    state = types.SimpleNamespace(
        redis=client, caps={}, replicas=replicas, key=lambda *_: "ws:lease:dc", prefix="ws:",
        id=rid,
    )  # fmt: skip
    return PowerLeases(router, state), gov  # type: ignore[arg-type]


def test_a_shrinking_replica_keeps_what_it_still_draws_counted_and_gives_back_once(
    tmp_path: Path,
) -> None:
    """Against the real script in a real Redis, three replicas' PowerLeases over a stand-in
    router (the governor is the real one): a busy replica drawing its whole lease gives part of
    it back; Redis counts what its running steps still draw until its next call (else another
    replica could start steps on power still drawn), and the part is given back once, not
    again at the next heartbeat (it was: twice what was owed, left unused)."""
    import asyncio

    import redis.asyncio as aioredis

    room, idle = 650.0, 210.0

    async def scenario(url: str) -> list[tuple[float, float, float]]:
        client = aioredis.Redis.from_url(url)

        def replica(rid: str, busy: bool) -> tuple[PowerLeases, PowerGovernor]:
            return stand_in_leases(client, rid, busy, room, idle, 3)

        await client.set("ws:epoch", "e")  # as the replicas' first heartbeat sets it
        for rid in "ABC":  # live: each replica's heartbeat key
            await client.set(f"ws:replica:{rid}", 1)
        (a, ga), (b, _), (c, _) = replica("A", True), replica("B", True), replica("C", False)
        for p in (a, b, c):
            await p._ask("dc")  # join: even shares
        a.sites["dc"].demand_w = 300
        await a._ask("dc")
        c.sites["dc"].owed_w = 1e3  # idle: gives back what it does not draw
        await c._ask("dc")
        a.sites["dc"].demand_w = 300
        await a._ask("dc")  # A: 433 W of the 650
        ga.change("dc", 0, a.sites["dc"].lease_w)  # A draws its whole lease
        b.sites["dc"].demand_w = 100
        await b._ask("dc")  # B is short by 100 W: unmet demand
        out = []
        for _ in range(3):
            await a.renew()  # A's heartbeat: returns 100 W, still drawing 433
            held = {k.decode(): float(v.split()[0]) for k, v in
                    (await client.hgetall("ws:lease:dc")).items()}  # fmt: skip
            out.append((a.sites["dc"].lease_w, held["A"], sum(held.values())))
            drawn = ga.sites["dc"].power_w - idle  # its running steps end within the second
            ga.change("dc", 0, min(drawn, a.sites["dc"].lease_w) - drawn)
            b.sites["dc"].demand_w = 100 if b.sites["dc"].lease_w < 316 else 0
            await b._ask("dc")
        await client.aclose()
        return out

    with redis_server() as srv:
        rounds = asyncio.run(scenario(srv.url))
    # A held 433 W and gives back B's 100: 333 here at once, while Redis counts the 433 its
    # running steps still draw until its next call, then 333
    assert [(round(lease), round(held)) for lease, held, _ in rounds] == [
        (333, 433),
        (333, 333),
        (333, 333),  # given back once: it went on to 233 when the handover was owed twice
    ], rounds
    assert all(total <= room + 1e-3 for _, _, total in rounds), rounds
