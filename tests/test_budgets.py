"""Budgets as reservations (wattserve.serve.budgets): the rules, with a manual clock; the
stretch of a capped site's steps that a hold scales its time-priced dollars by; what an
emulated engine bills each request (its shares of the steps' device time)."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from wattserve.core.fleet import parse_fleet
from wattserve.core.policy import make_policy
from wattserve.core.workload import Request
from wattserve.core.yamlio import load_yaml_text
from wattserve.serve.backends.base import Finish, GenRequest
from wattserve.serve.backends.emulated import EmulatedBackend
from wattserve.serve.budgets import HEADROOM, Charge, Hold, LocalBudgets, Refusal, worst_case
from wattserve.serve.ledger import KeyRecord
from wattserve.serve.router import Router
from wattserve.serve.stretch import MAX_STRETCH, StepStretch


def key(**kw: float | None) -> KeyRecord:
    fields: dict[str, float | None] = {"budget_usd": None, "budget_j": None, "rps": None}
    fields.update(kw)
    return KeyRecord("k1", "alice", False, spent_usd=0.0, spent_j=0.0, **fields)  # type: ignore[arg-type]


def reserve(b: LocalBudgets, k: KeyRecord, worst: Charge) -> Hold | Refusal:
    """Admission is async (a shared state backend may await Redis); run one call."""
    return asyncio.run(b.reserve(k, worst))


def take(b: LocalBudgets, k: KeyRecord) -> Refusal | None:
    return asyncio.run(b.take_request(k))


def test_holds_count_against_the_budget_until_settled() -> None:
    b, k = LocalBudgets(), key(budget_usd=1.0)
    first = reserve(b, k, Charge(0.6, 0.0))
    assert isinstance(first, Hold)
    refused = reserve(b, k, Charge(0.6, 0.0))  # 0.4 left while the first is in flight
    assert isinstance(refused, Refusal) and refused.code == "insufficient_quota"
    assert "$0.4 of its $1 budget left" in refused.message
    assert b.settle(first, Charge(0.1, 0.0)) == Charge(0.1, 0.0)
    assert isinstance(reserve(b, k, Charge(0.6, 0.0)), Hold)  # 0.9 left now


def test_a_request_is_never_billed_more_than_it_held() -> None:
    b, k = LocalBudgets(), key(budget_j=100.0)
    hold = reserve(b, k, Charge(0.0, 40.0))
    assert isinstance(hold, Hold)
    assert b.settle(hold, Charge(0.0, 55.0)) == Charge(0.0, 40.0)
    assert b.spent["k1"] == [0.0, 40.0] and b.held["k1"] == [0.0, 0.0, 0]


def test_nothing_is_held_once_every_hold_ended() -> None:
    # subtracting floats left ~1e-19 held with nothing in flight (found by a probe): a refusal
    # then named "$2.71e-19 held by requests in flight" and gave a Retry-After that won't help
    b, k = LocalBudgets(), key(budget_usd=1.0)
    holds = [reserve(b, k, Charge(c, 0.0)) for c in (0.1, 0.2, 0.3)]
    for h in holds:
        assert isinstance(h, Hold)
        b.settle(h, Charge(0.05, 0.0))
    assert b.held["k1"] == [0.0, 0.0, 0]
    refused = reserve(b, k, Charge(0.9, 0.0))  # 0.85 left
    assert isinstance(refused, Refusal) and refused.retry_after_s is None
    assert "$0 held" in refused.message


def test_release_charges_nothing_and_a_hold_ends_once() -> None:
    b, k = LocalBudgets(), key(budget_usd=1.0)
    hold = reserve(b, k, Charge(1.0, 0.0))
    assert isinstance(hold, Hold)
    b.release(hold)
    assert b.spent["k1"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="already settled"):
        b.settle(hold, Charge(1.0, 0.0))


def test_a_spent_budget_refuses_even_a_free_request() -> None:
    b = LocalBudgets()
    k = key(budget_usd=1.0)
    k.spent_usd = 1.0
    assert isinstance(reserve(b, k, Charge(0.0, 0.0)), Refusal)


def test_rate_limit_is_a_token_bucket() -> None:
    now = [0.0]
    b, k = LocalBudgets(clock=lambda: now[0]), key(rps=2.0)
    assert take(b, k) is None and take(b, k) is None  # burst of 2
    refused = take(b, k)
    assert refused is not None and refused.code == "rate_limit_exceeded"
    now[0] = 0.5  # one more token after half a second
    assert take(b, k) is None and take(b, k) is not None


# -- the stretch of a capped engine's steps --------------------------------------------------


def test_the_stretch_is_one_where_no_step_waited() -> None:
    st = StepStretch()
    assert st.ratio == 1.0  # no step yet
    for i in range(1000):
        st.add(i * 0.003, 0.0021, 0.0021)
    assert st.ratio == 1.0


def test_the_stretch_is_the_recent_ratio_of_held_to_full_power_time() -> None:
    st = StepStretch(half_life_s=10.0)
    st.add(0.0, 1.0, 1.0)  # ran at once
    st.add(1.0, 1.0, 4.0)  # waited 3 s for power first
    assert st.ratio == pytest.approx(5.0 / 2.0, rel=0.05)  # the first weighs a bit less
    # a long wait on one engine while another runs many short steps: time weighs, not steps
    st = StepStretch()
    st.add(10.0, 0.002, 10.0)
    for _ in range(5000):
        st.add(10.0, 0.002, 0.002)
    assert st.ratio == pytest.approx(20.0 / 10.002, rel=1e-3)
    # the past fades: ten half-lives of steps that did not wait later, it is nearly 1
    st.add(110.0, 1.0, 1.0)
    assert 1.0 < st.ratio < 1.01


@pytest.mark.parametrize(
    ("t", "model_s", "held_s"),
    [
        (math.nan, 1.0, 2.0),
        (math.inf, 1.0, 2.0),
        (0.0, math.nan, 2.0),
        (0.0, -1.0, 2.0),
        (0.0, 0.0, 2.0),
        (0.0, 1.0, math.inf),
        (0.0, 1.0, -5.0),
        (0.0, 1e308, 1e308),
        (0.0, 1e-300, 1e300),
        (-1e308, 1.0, 1e6),
    ],
)
def test_hostile_step_figures_keep_the_stretch_bounded(
    t: float, model_s: float, held_s: float
) -> None:
    st = StepStretch()
    for _ in range(3):
        st.add(t, model_s, held_s)
        assert 1.0 <= st.ratio <= MAX_STRETCH
    st.add(1e308, 1.0, 1.0)  # and steps after them still count
    assert 1.0 <= st.ratio <= MAX_STRETCH and math.isfinite(st.ratio)


def test_the_hold_scales_time_priced_dollars_by_the_stretch() -> None:
    target = SimpleNamespace(
        backends=(SimpleNamespace(usd_per_s=0.01),),
        predict=lambda req: (1.0, 0.1, 5.0, 0.002),  # 1 s + 10 x 0.1 s: 2 s; 5 J; $0.002
    )
    req = Request(0, 0.0, 100, 10, "m")
    plain = Charge(HEADROOM * (0.002 + 0.01 * 2.0), HEADROOM * 5.0)
    for no_stretch in (1.0, 0.5, 0.0, -3.0, math.nan, math.inf):
        assert worst_case(target, req, no_stretch) == plain
    assert worst_case(target, req) == plain
    stretched = worst_case(target, req, 3.0)
    assert stretched.usd == pytest.approx(HEADROOM * (0.002 + 0.01 * 2.0 * 3.0))
    assert stretched.joules == plain.joules  # joules are the steps', however long they wait


# -- what an emulated engine bills: its shares of the steps' device time -------------------

CAPPED = """\
name: capped
sites:
  dc: {kind: datacenter, power_cap_w: 500}
deployments:
  gpus: {site: dc, model: llama-3.2-1b, hardware: h100-sxm, replicas: 2}
"""


def test_time_shares_add_up_to_the_engines_device_time_under_a_cap() -> None:
    """Two H100s under a cap that fits about one step at a time: steps wait for power (or are
    slowed), and each request is billed its equal share of every step it was in, including
    the wait. The shares add up to the engines' device time; the stretch shows the waits."""
    fleet = parse_fleet(load_yaml_text(CAPPED, "capped.yaml"), "capped.yaml")
    usd_per_s, usd_per_j = fleet.deployments[0].cost.billable()
    assert usd_per_s > 0 and usd_per_j == 0  # rented: dollars are time alone
    router = Router(fleet, make_policy("least_loaded"))
    engines = [b for b in router.backends.values() if isinstance(b, EmulatedBackend)]
    assert len(engines) == 2

    async def one(backend: EmulatedBackend, i: int) -> Finish:
        greq = GenRequest(f"r{i}", "chat", "llama-3.2-1b", {}, 30 + 40 * (i % 3), 8 + 24 * (i % 4))
        async for ev in backend.generate(greq):
            if isinstance(ev, Finish):
                return ev
        raise AssertionError("no Finish")

    async def run() -> list[Finish]:
        for b in engines:
            await b.start()
        try:
            return await asyncio.gather(*(one(engines[i % 2], i) for i in range(24)))
        finally:
            for b in engines:
                await b.stop()

    finishes = asyncio.run(run())
    billed_s = sum((f.usd or 0.0) / usd_per_s for f in finishes)
    device_s = sum(b.device_s for b in engines)
    assert billed_s == pytest.approx(device_s, rel=1e-9)
    busy_s = sum(b.engine.busy_s for b in engines)  # the steps' time, slowed where capped
    assert device_s >= busy_s
    assert max(b.stretch() for b in engines) > 1.0  # the cap bound: steps waited or slowed
    assert router.gov.account("dc").peak_w <= 500.0 + 1e-6


def test_a_step_waiting_for_power_goes_before_a_busy_engines_next_step() -> None:
    """Power a step gives back goes first to the step already waiting for it (as in
    `simulate`): a lone request on one engine is not starved by the other engine's batch
    taking its power back step after step, nor billed its whole run as a wait."""
    fleet = parse_fleet(load_yaml_text(CAPPED, "capped.yaml"), "capped.yaml")
    usd_per_s = fleet.deployments[0].cost.billable()[0]
    router = Router(fleet, make_policy("least_loaded"))
    busy, lone = (b for b in router.backends.values() if isinstance(b, EmulatedBackend))

    async def one(backend: EmulatedBackend, i: int, tokens: int) -> Finish:
        greq = GenRequest(f"r{i}", "chat", "llama-3.2-1b", {}, 20, tokens)
        async for ev in backend.generate(greq):
            if isinstance(ev, Finish):
                return ev
        raise AssertionError("no Finish")

    async def run() -> tuple[Finish, float]:
        for b in (busy, lone):
            await b.start()
        try:
            batch = [asyncio.ensure_future(one(busy, i, 300)) for i in range(8)]
            await asyncio.sleep(0.05)  # the batch runs: every step of it takes the power
            fin = await one(lone, 99, 8)
            left = sum(not f.done() for f in batch)
            await asyncio.gather(*batch)
            return fin, left / len(batch)
        finally:
            for b in (busy, lone):
                await b.stop()

    fin, still_running = asyncio.run(run())
    assert still_running == 1.0  # the lone request ended while the batch was still running
    billed_s = (fin.usd or 0.0) / usd_per_s
    batch_s = busy.engine.busy_s  # the batch's 300 steps at their model time
    assert billed_s < batch_s / 10  # 8 steps and their waits, not the batch's whole run


def test_a_request_that_ends_early_is_billed_its_shares_so_far() -> None:
    """A client that leaves mid-answer pays its shares of the steps it was in, as one that
    stays does: before, the gateway billed it the whole time it ran at the devices' full
    price (budgets.delivered), 8 times its share in a batch of 8."""
    fleet = parse_fleet(load_yaml_text(CAPPED, "capped.yaml"), "capped.yaml")
    usd_per_s = fleet.deployments[0].cost.billable()[0]
    router = Router(fleet, make_policy("least_loaded"))
    engine = next(b for b in router.backends.values() if isinstance(b, EmulatedBackend))

    async def finish(i: int) -> Finish:
        async for ev in engine.generate(GenRequest(f"r{i}", "chat", "llama-3.2-1b", {}, 20, 60)):
            if isinstance(ev, Finish):
                return ev
        raise AssertionError("no Finish")

    async def leave() -> tuple[int, float]:
        events = engine.generate(GenRequest("gone", "chat", "llama-3.2-1b", {}, 20, 60))
        start, n = asyncio.get_running_loop().time(), 0
        async for _ in events:
            n += 1
            if n == 20:
                break
        await events.aclose()  # as the gateway does when the client goes
        return n, asyncio.get_running_loop().time() - start

    async def run() -> tuple[list[Finish], int, float]:
        await engine.start()
        try:
            others = [asyncio.ensure_future(finish(i)) for i in range(7)]
            n, elapsed = await leave()
            return await asyncio.gather(*others), n, elapsed
        finally:
            await engine.stop()

    finishes, n, elapsed = asyncio.run(run())
    measured = engine.left_early("gone")
    assert n == 20 and measured is not None and engine.left_early("gone") is None  # read once
    usd, joules = measured
    assert joules is not None and joules > 0
    billed_s = usd / usd_per_s
    assert 0 < billed_s < elapsed / 3  # its shares, in a batch of 8: not all the time it ran
    total_s = billed_s + sum((f.usd or 0.0) / usd_per_s for f in finishes)
    assert total_s == pytest.approx(engine.device_s, rel=1e-9)  # nothing lost, nothing twice
