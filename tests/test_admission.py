"""The one admission path: `simulate` and `serve` decide alike from the same state, and the
admission function, the governor, the emulated backend and the router's retry exclusions
behave as documented (in-process, with the package's FakeBackend)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from wattserve.core.admission import admit
from wattserve.core.clock import ManualClock
from wattserve.core.engine import Seq
from wattserve.core.fleet import Fleet, load_fleet
from wattserve.core.governor import PowerGovernor
from wattserve.core.policy import BUILTIN, make_policy
from wattserve.core.targets import EnginePool, HostedPool
from wattserve.core.workload import SLO, Request, Workload
from wattserve.errors import UpstreamError, WattserveError
from wattserve.serve.backends.base import Backend, Built, GenRequest
from wattserve.serve.backends.emulated import PROMISE_S, EmulatedBackend
from wattserve.serve.fake import FakeBackend
from wattserve.serve.router import Placement, Router
from wattserve.simulate.simulator import Simulation

REPO = Path(__file__).resolve().parent.parent
HETERO = REPO / "examples" / "fleet-hetero.yaml"
SLOS = {"default": SLO(ttft_s=2.0, tpot_s=0.2)}


def requests(n: int) -> list[Request]:
    out = []
    for i in range(n):
        origin = ("edge-sf", "dc-east", None)[i % 3]
        out.append(Request(i, 0.0, 100 + 37 * (i % 11), 20 + 13 * (i % 7), "llama-3.1-8b", origin))
    return out


def mechanisms(policy: str, fleet: Fleet) -> tuple[Simulation, Router]:
    sim = Simulation(fleet, Workload([], SLOS), make_policy(policy), exact=True)
    router = Router(fleet, make_policy(policy), clock=ManualClock())  # the simulator's t = 0
    router.view.slos = sim.view.slos  # the gateway's SLO comes per request; here the same
    return sim, router


def step_all(sim: Simulation, router: Router, now: float) -> None:
    """Run one engine step on every replica of both mechanisms, the same way, after what
    each does first: give back the power promised to idle replicas' first steps."""
    sim._kick_new()
    for backend in _engine_backends(router):
        backend.release_promise()
    pairs = zip(sim.engines, [b.engine for b in _engine_backends(router)], strict=True)
    for a, b in pairs:
        for e in (a, b):
            plan, _ = e.next_plan(now)
            if plan is not None:
                e.start(plan)
                e.complete(plan.end_s)


def _engine_backends(router: Router) -> list[EmulatedBackend]:
    return [b for b in router.backends.values() if isinstance(b, EmulatedBackend)]


@pytest.mark.parametrize("binding", [False, True], ids=["free", "governor-binding"])
@pytest.mark.parametrize("policy", sorted(BUILTIN))
def test_simulate_and_serve_decide_alike(policy: str, binding: bool) -> None:
    fleet = load_fleet(HETERO)
    sim, router = mechanisms(policy, fleet)
    assert [e.name for e in sim.engines] == [b.name for b in _engine_backends(router)]
    if binding:  # both datacenter and edge sites within a few watts of their caps
        for gov in (sim.gov, router.gov):
            for site in ("dc-east", "edge-sf"):
                acct = gov.account(site)
                assert acct.cap_w is not None
                gov.change(site, 0.0, acct.cap_w - acct.power_w - 5.0)
    outcomes = []
    for i, req in enumerate(requests(60)):
        a = sim.admit(req)
        b = router.admit(req, set())
        if isinstance(b, Placement):
            assert a.target is not None, (i, b.target.name)
            assert a.target.name == b.target.name, i
            sim_pool, serve_pool = a.target, b.target
            if isinstance(sim_pool, EnginePool):
                assert isinstance(serve_pool, EnginePool)
                assert isinstance(b.backend, EmulatedBackend)
                replica = sim_pool.replica_for(req)
                assert replica.name == b.backend.engine.name
                sim._promise(sim_pool, replica)  # as the router's bind did (Simulation._place)
                replica.submit(Seq(req))
                b.backend.engine.submit(Seq(req))
            sim_pool.add(1)
            serve_pool.add(1)
            outcomes.append(b.target.name)
        else:
            assert a.target is None
            assert a.refusal == b, i
            outcomes.append(b)
        if i % 5 == 4:
            step_all(sim, router, now=0.0)
    if binding:
        assert "power" in outcomes  # the governor did bind, and both refused alike
    assert len({o for o in outcomes if o != "power"}) >= 1


def test_admission_excludes_powered_out_targets_and_says_why() -> None:
    fleet = load_fleet(HETERO)
    sim = Simulation(fleet, Workload([], SLOS), make_policy("slo"))
    for site in ("dc-east", "edge-sf"):
        acct = sim.gov.account(site)
        assert acct.cap_w is not None
        sim.gov.change(site, 0.0, acct.cap_w - acct.power_w)  # exactly at the cap
    req = Request(0, 0.0, 200, 50, "llama-3.1-8b", "edge-sf", local_only=True)
    adm = sim.admit(req)
    assert adm.target is None and adm.refusal == "power"
    assert sim.view.exclude == {"jetson"}  # the only target it may use was refused
    # without residency the hosted API (no governed power) takes it
    free = Request(1, 0.0, 200, 50, "llama-3.1-8b", "edge-sf")
    adm = sim.admit(free)
    assert adm.target is not None and adm.target.name == "groq-8b"
    assert sim.view.exclude <= {"h100", "a100", "jetson"}  # any it tried first was refused


def test_admission_reports_outage_when_the_link_is_down() -> None:
    fleet = load_fleet(HETERO)
    sim = Simulation(fleet, Workload([], SLOS), make_policy("slo"))
    sim.now = 1900.0  # inside the edge-sf <-> dc-east outage window
    jetson = sim.targets["jetson"]
    gov = sim.gov
    acct = gov.account("edge-sf")
    assert acct.cap_w is not None
    gov.change("edge-sf", 1900.0, acct.cap_w - acct.power_w)  # the local site is full
    groq = sim.targets["groq-8b"]
    assert isinstance(groq, HostedPool) and groq.bucket is not None
    groq.bucket.tokens = 0.0  # and the hosted API's rate limit is spent
    groq.bucket.t = 1900.0
    adm = sim.admit(Request(0, 1900.0, 200, 50, "llama-3.1-8b", "edge-sf"))
    assert adm.target is None
    assert adm.refusal == "power"  # power first: waiting for it may help
    assert adm.cut_by_outage
    gov.change("edge-sf", 1900.0, acct.base_w - acct.power_w)  # power back: the outage alone
    adm = sim.admit(Request(1, 1900.0, 200, 50, "llama-3.1-8b", "edge-sf"))
    assert adm.target is not None and adm.target.name == jetson.name


def test_admission_takes_a_rate_limit_token_and_binds() -> None:
    fleet = load_fleet(HETERO)
    sim = Simulation(fleet, Workload([], SLOS), make_policy("cost"))
    groq = sim.targets["groq-8b"]
    assert isinstance(groq, HostedPool) and groq.bucket is not None
    before = groq.bucket.tokens
    refused: list[str] = []

    def bind(target: object) -> object | None:
        name = getattr(target, "name", "")
        if name != "groq-8b":
            refused.append(name)
            return None
        return target

    req = Request(0, 0.0, 100, 10, "llama-3.1-8b", "dc-east")
    adm = admit(req, 0.0, sim.policy, sim.view, sim.gov, bind)
    assert adm.target is groq and adm.bound is groq
    assert groq.bucket.tokens == before - 1.0
    assert set(refused) == sim.view.exclude - {"groq-8b"}


def test_governor_fast_path_and_account() -> None:
    gov = PowerGovernor({"dc": 1000.0, "free": None})
    gov.add_base("dc", 400.0)

    class Draw:
        max_marginal_w = 500.0

        def __init__(self, w: float) -> None:
            self.w, self.asked = w, 0

        def marginal_power_w(self) -> float:
            self.asked += 1
            return self.w

    small = Draw(100.0)
    assert gov.admits("dc", small) and small.asked == 0  # 600 W of room >= 500 W: no prediction
    gov.change("dc", 1.0, 450.0)  # 850 W: 150 W of room
    assert gov.admits("dc", small) and small.asked == 1
    assert not gov.admits("dc", Draw(200.0))
    assert gov.admits("free", Draw(1e9))
    acct = gov.account("dc")
    assert acct.peak_w == 850.0
    acct.change(3.0, -450.0)  # 2 s at 850 W
    assert acct.power_w == 400.0 and acct.last_t == 3.0
    off = PowerGovernor({"dc": 1.0}, enforce=False)
    assert off.admits("dc", Draw(1e9))


def test_a_step_waiting_for_power_goes_before_a_new_one_unless_it_cannot_fit() -> None:
    """The rule simulate and serve's engines share (PowerGovernor.may_start)."""
    gov = PowerGovernor({"dc": 1000.0})
    gov.add_base("dc", 400.0)
    gov.change("dc", 0.0, 300.0)  # 300 W of the 600 W above idle taken
    assert gov.may_start("dc", 200.0, None)  # fits, nothing waits
    assert not gov.may_start("dc", 400.0, None)  # does not fit
    assert not gov.may_start("dc", 200.0, 250.0)  # the waiting step fits: it goes first
    assert gov.may_start("dc", 200.0, 350.0)  # it cannot fit yet: the new step passes it
    gov.set_cap("dc", 2000.0, 1.0)  # a cap change lets waiting steps try again from then
    assert gov.account("dc").ready_t == 1.0 and not gov.may_start("dc", 200.0, 350.0)


def test_emulated_backend_reserves_and_releases_step_power() -> None:
    fleet = load_fleet(HETERO)
    router = Router(fleet, make_policy("least_loaded"))
    backend = router.backends["h100/0"]
    assert isinstance(backend, EmulatedBackend)
    gov = router.gov
    base = gov.account("dc-east").power_w
    seen: list[float] = []

    async def run() -> list[str]:
        await backend.start()
        pieces: list[str] = []
        greq = GenRequest("r", "chat", "llama-3.1-8b", {}, 64, 8)
        async for ev in backend.generate(greq):
            seen.append(gov.account("dc-east").power_w)
            if hasattr(ev, "text"):
                pieces.append(ev.text)
        await backend.stop()
        return pieces

    pieces = asyncio.run(run())
    assert len(pieces) == 8
    assert max(seen) > base  # steps drew power above the idle floor while running
    assert gov.account("dc-east").power_w == pytest.approx(base)  # all of it released


STALL_FLEET = """\
name: promise
sites:
  dc: {kind: datacenter, power_cap_w: 1000}
deployments:
  h100:
    site: dc
    model: llama-3.1-8b
    hardware: h100-sxm
    replicas: 2
    max_num_seqs: 1
"""


def _two_replicas(tmp_path: Path) -> tuple[Router, Built]:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(STALL_FLEET)
    router = Router(load_fleet(fleet_file), make_policy("least_loaded"))
    return router, router.built["h100"]


def test_replicas_promised_power_in_one_turn_do_not_wait_for_each_other(tmp_path: Path) -> None:
    """Two requests bound in one turn to the two idle replicas under a cap that lets one step
    run at a time: each replica gave back only its own promise and told no one, so the first
    step waited on the second's promise, and the second behind the first, until the 5 s
    timeout re-checked (first tokens at 5.04 and 5.08 s; now a step apart)."""
    router, built = _two_replicas(tmp_path)
    req = Request(0, 0.0, 1252, 3, "llama-3.1-8b")

    async def run() -> list[float]:
        for b in built.backends:
            await b.start()
        t0 = time.monotonic()

        async def first_token(backend: Backend) -> float:
            greq = GenRequest("r", "chat", "llama-3.1-8b", {"max_tokens": 3}, 1252, 3)
            async for _ in backend.generate(greq):
                return time.monotonic() - t0
            raise AssertionError("no token")

        tasks = []
        for _ in range(2):  # bound, then submitted, before either replica's loop runs
            backend = built.bind(req, set())
            assert backend is not None
            tasks.append(asyncio.ensure_future(first_token(backend)))
            await asyncio.sleep(0)
        got = await asyncio.gather(*tasks)
        for b in built.backends:
            await b.stop()
        return got

    assert max(asyncio.run(run())) < 1.0
    assert router.gov.account("dc").reserved_w == pytest.approx(0.0)


def test_a_promise_waits_for_its_request_and_is_given_back_if_it_never_comes(
    tmp_path: Path,
) -> None:
    """A request from another site reaches its replica a turn after it is placed (a task
    carries it over the link): the promise is held until then, not given back when the
    replica's loop first runs; a request that never comes (its key's budget refused it)
    gives it back after PROMISE_S."""
    router, built = _two_replicas(tmp_path)
    acct = router.gov.account("dc")
    req = Request(0, 0.0, 64, 3, "llama-3.1-8b")

    async def run() -> tuple[float, float, float]:
        for b in built.backends:
            await b.start()
        backend = built.bind(req, set())
        assert isinstance(backend, EmulatedBackend)
        await asyncio.sleep(0.05)  # its loop has run: the request is still on its way
        held = acct.reserved_w
        greq = GenRequest("r", "chat", "llama-3.1-8b", {"max_tokens": 3}, 64, 3)
        async for _ in backend.generate(greq):
            pass
        after = acct.reserved_w
        built.bind(req, set())  # placed, and never sent
        await asyncio.sleep(PROMISE_S + 0.2)
        for b in built.backends:
            await b.stop()
        return held, after, acct.reserved_w

    held, after, abandoned = asyncio.run(run())
    assert held > 0 and after == pytest.approx(0.0) and abandoned == pytest.approx(0.0)


def test_promises_for_requests_that_never_come_do_not_pile_up(tmp_path: Path) -> None:
    """Requests placed and then refused by their key's budget (the gateway refuses after
    placing) never reach their replica. Each promise restarted the wait for them, so such
    requests 0.3 s apart piled promises on one idle replica (713, 1,782, 2,852, 3,921 W) until
    the site's cap was spoken for. The gateway now gives a refused placement's promise back
    (`abandon`), and the rest go back PROMISE_S after the first, however many follow."""
    router, built = _two_replicas(tmp_path)
    acct = router.gov.account("dc")
    req = Request(0, 0.0, 64, 3, "llama-3.1-8b")

    async def run() -> tuple[float, float, list[float]]:
        for b in built.backends:
            await b.start()
        placed = built.bind(req, set())
        assert placed is not None
        promised = acct.reserved_w
        placed.abandon()  # refused for its budget
        await asyncio.sleep(0.05)
        abandoned = acct.reserved_w
        held = []
        for _ in range(4):  # placed every 0.3 s, never sent, never abandoned
            built.bind(req, set())
            await asyncio.sleep(0.3)
            held.append(acct.reserved_w)
        for b in built.backends:
            await b.stop()
        return promised, abandoned, held

    promised, abandoned, held = asyncio.run(run())
    assert promised > 0 and abandoned == pytest.approx(0.0)
    assert max(held) <= 2 * promised + 1e-6, held  # at most the two of one PROMISE_S


def test_a_step_waits_for_power_rather_than_crawl_on_a_sliver_of_a_cap() -> None:
    """A cap that leaves a step less than the site's floor (a shared power lease can be a
    sliver for a moment) makes the step wait; slowing it to 0.01 W would stretch it without
    bound. Once the cap leaves at least the floor, a step too big for it is slowed to fit."""
    fleet = load_fleet(HETERO)
    router = Router(fleet, make_policy("least_loaded"))
    backend = router.backends["h100/0"]
    assert isinstance(backend, EmulatedBackend)
    gov, acct = router.gov, router.gov.account("dc-east")
    acct.cap_w, acct.floor_w = acct.base_w + 0.01, 50.0
    assert not gov.slows("dc-east", 300.0)  # a sliver: wait
    acct.cap_w = acct.base_w + 60.0
    assert gov.slows("dc-east", 300.0) and not gov.slows("dc-east", 40.0)  # 40 W fits
    acct.cap_w = acct.base_w + 0.01

    async def run() -> tuple[int, float]:
        await backend.start()
        greq = GenRequest("r", "chat", "llama-3.1-8b", {}, 64, 8)
        stream = backend.generate(greq).__aiter__()
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.3)
        assert not first.done()  # waiting for power, not crawling at 0.01 W
        acct.cap_w = acct.base_w + 60.0  # a lease of the floor or more: slowed to fit it
        async with router.power_changed:
            router.power_changed.notify_all()
        t0 = time.monotonic()
        n = 0
        async with asyncio.timeout(10):  # a step stretched to the sliver would never end
            await first
            n = 1
            async for _ in stream:
                n += 1
        await backend.stop()
        return n, time.monotonic() - t0

    n, took = asyncio.run(run())
    assert n >= 8 and took < 5.0
    assert acct.power_w == pytest.approx(acct.base_w)


def test_router_excludes_a_target_whose_backends_failed() -> None:
    fleet = load_fleet(HETERO)
    router = Router(fleet, make_policy("least_loaded"))
    good = FakeBackend("fake-b", "dc-east", "llama-3.1-8b")
    bad = FakeBackend("fake-a", "dc-east", "llama-3.1-8b")
    bad.fail = UpstreamError("down", before_first_byte=True)
    assert isinstance(bad.fail, WattserveError)
    # every target but two hosted-like entries bound to fake backends
    for name, backend in (("h100", bad), ("a100", good)):
        built = router.built[name]
        router.built[name] = Built(
            built.target, [backend], lambda req, avoid, b=backend: None if b.name in avoid else b
        )
    router.view.unhealthy = set()
    req = Request(0, 0.0, 100, 10, "llama-3.1-8b", "dc-east", local_only=True)
    first = router.admit(req, set())
    assert isinstance(first, Placement)
    failed = {first.backend.name}
    second = router.admit(req, failed)
    assert isinstance(second, Placement)
    assert second.backend.name != first.backend.name
    third = router.admit(req, {"fake-a", "fake-b"})
    assert third == "none"


def test_serve_does_not_import_simulate() -> None:
    import subprocess

    code = (
        "import sys, wattserve.serve.router, wattserve.serve.app; "
        "print(sorted(m for m in sys.modules if m.startswith('wattserve.simulate')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("policy", [*sorted(BUILTIN), "weighted:latency=1,cost=1"])
def test_ties_rotate_among_identical_targets(tmp_path: Path, policy: str) -> None:
    """Two identical upstreams split the traffic evenly instead of 199:1 (issue #8)."""
    path = tmp_path / "twins.yaml"
    path.write_text(
        "name: twins\nsites:\n  dc: {kind: datacenter}\ndeployments:\n"
        "  a: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}\n"
        "  b: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}\n"
    )
    sim = Simulation(load_fleet(path), Workload([], SLOS), make_policy(policy))
    chosen = []
    for i in range(200):
        adm = sim.admit(Request(i, 0.0, 100, 10, "llama-3.1-8b", "dc"))
        assert adm.target is not None
        chosen.append(adm.target.name)  # not placed: both stay equally good
    assert 80 <= chosen.count("a") <= 120, chosen.count("a")


def test_a_broken_user_policy_is_a_clear_refusal_in_serve_as_in_simulate() -> None:
    """The gateway places through the same wrapper as the simulator: a user's choose() that
    raises leaves the request unplaced with a 503 naming the policy, not a 500 and a
    traceback (tests/test_simulate.py: the same policies in the simulator)."""
    from wattserve.errors import NoBackendAvailable

    router = Router(load_fleet(HETERO), make_policy("test_simulate:Raises"))
    req = Request(0, 0.0, 100, 10, "llama-3.1-8b", "dc-east")
    with pytest.raises(NoBackendAvailable) as err:
        asyncio.run(router.place(req, set()))
    assert err.value.status == 503
    assert "policy raises: choose() raised KeyError('oops')" in err.value.reason
