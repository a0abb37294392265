"""Routing targets and the built-in policies' one-pass choices, against naive definitions."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from wattserve.core.engine import EngineModel, Seq
from wattserve.core.fleet import load_fleet
from wattserve.core.perf import lines_steps_within, lines_time, run_lines
from wattserve.core.policy import SLO_MARGIN, TargetView, make_policy, predict_each
from wattserve.core.targets import EnginePool, HostedPool
from wattserve.core.workload import SLO, Request, Workload
from wattserve.serve.targets import UpstreamTarget
from wattserve.simulate.simulator import Simulation

REPO = Path(__file__).resolve().parent.parent


def req(i: int, p: int = 500, o: int = 100, origin: str | None = None) -> Request:
    return Request(i, 0.0, p, o, "llama-3.1-8b", origin)


def fleet_file(tmp_path: Path, replicas: int) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "name: t\nsites:\n  dc:\n    kind: datacenter\ndeployments:\n  h100:\n    site: dc\n"
        f"    model: llama-3.1-8b\n    hardware: h100-sxm\n    replicas: {replicas}\n"
    )
    return path


def sim(fleet_path: Path) -> Simulation:
    return Simulation(
        load_fleet(fleet_path), Workload([], {"default": SLO()}), make_policy("least_loaded")
    )


def run_steps(engine: EngineModel, steps: int, now: float = 0.0) -> float:
    """Drive an engine alone for a number of planned steps or runs."""
    for _ in range(steps):
        plan, _ = engine.next_plan(now)
        if plan is None:
            break
        engine.start(plan)
        now = plan.end_s
        engine.complete(now)
    return now


def test_predict_is_the_four_answers_at_once(tmp_path: Path) -> None:
    s = Simulation(
        load_fleet(REPO / "examples" / "fleet-hetero.yaml"),
        Workload([], {"default": SLO()}),
        make_policy("least_loaded"),
    )
    pools = [t for t in s.targets.values() if isinstance(t, EnginePool)]
    hosted = [t for t in s.targets.values() if isinstance(t, HostedPool)]
    assert pools and hosted
    engine = pools[0].engines[0]
    for i in range(5):
        engine.submit(Seq(req(100 + i, 300 * (i + 1), 50)))
    run_steps(engine, 3)
    upstream = UpstreamTarget(
        "u", "dc", "llama-3.1-8b", [], 0.2, 0.02, lambda r: 7.0, lambda r: 0.001, lambda a, b: 0.0
    )
    targets: list[TargetView] = [*pools, *hosted, upstream]
    for r in (req(1, 2000, 300, "edge"), req(2, 10, 1)):
        for t in targets:
            first = t.predict(r)
            assert first == predict_each(t, r)
            assert t.predict(r) == first  # memoised per request


def test_remaining_output_follows_the_decode_set() -> None:
    s = Simulation(
        load_fleet(REPO / "examples" / "fleet-hetero.yaml"),
        Workload([], {"default": SLO()}),
        make_policy("least_loaded"),
    )
    engine = next(t for t in s.targets.values() if isinstance(t, EnginePool)).engines[0]
    assert engine.remaining_output(0) is None
    outputs = [40, 7, 25, 3, 60]
    seqs = [Seq(req(i, 200, o)) for i, o in enumerate(outputs)]
    for q in seqs:
        engine.submit(q)
    for _ in range(6):  # prefill, then runs that each end at a finish
        run_steps(engine, 1)
        left = sorted(q.req.output_tokens - engine.progress(q)[1] for q in engine.running.values())
        for rank in range(len(outputs) + 2):
            expect = left[min(rank, len(left) - 1)] if left else None
            assert engine.remaining_output(rank) == expect


def test_remaining_output_through_preemption_and_abort() -> None:
    pm = next(iter(sim(REPO / "examples" / "fleet-homogeneous.yaml").targets.values())).perf
    rng = random.Random(3)
    engine = EngineModel("e", pm, kv_blocks=60)  # tight: decodes preempt one another
    seqs = [Seq(req(i, rng.randrange(20, 200), rng.randrange(2, 90))) for i in range(12)]
    for q in seqs:
        engine.submit(q)
    now, checked = 0.0, 0
    for step in range(400):
        if step == 5:
            engine.abort(next(q for q in engine.running.values() if q.decoding))
        if not (engine.running or engine.waiting):
            break
        now = run_steps(engine, 1, now)
        left = sorted(
            q.req.output_tokens - engine.progress(q)[1]
            for q in engine.running.values()
            if q.decoding
        )
        for rank in (0, 1, 3, 50):
            expect = left[min(rank, len(left) - 1)] if left else None
            assert engine.remaining_output(rank) == expect
        checked += bool(left)
    assert engine.preemptions > 0 and checked > 10
    assert not engine.running and not engine.waiting and engine.remaining_output(0) is None


def test_cut_search_counts_steps_ending_before_or_at_a_time() -> None:
    s = Simulation(
        load_fleet(REPO / "examples" / "fleet-hetero.yaml"),
        Workload([], {"default": SLO()}),
        make_policy("least_loaded"),
    )
    pm = next(t for t in s.targets.values() if isinstance(t, EnginePool)).perf
    for seqs, kv0 in ((1, 1000.0), (64, 64 * 3000.0), (256, 256 * 8000.0)):
        lines = run_lines(pm, seqs, kv0)
        steps = 300
        ends = [lines_time(lines, k) for k in range(steps + 1)]
        for k in (1, 2, 17, 150, 299):
            at = ends[k]
            assert lines_steps_within(lines, steps, at) == k
            assert lines_steps_within(lines, steps, at, strict=True) == k - 1
            mid = (ends[k] + ends[k + 1]) / 2
            assert lines_steps_within(lines, steps, mid) == k
            assert lines_steps_within(lines, steps, mid, strict=True) == k
        assert lines_steps_within(lines, steps, ends[-1] * 2) == steps


def test_small_pools_predict_on_their_least_loaded_replica(tmp_path: Path) -> None:
    pool = next(iter(sim(fleet_file(tmp_path, 3)).targets.values()))
    a, b, c = pool.engines
    a.submit(Seq(req(1)))
    c.submit(Seq(req(2)))
    assert pool.next_replica() is b
    b.submit(Seq(req(3)))
    b.submit(Seq(req(4)))
    assert pool.next_replica() is a  # live: the least loaded now


def test_large_pools_draw_a_replica_once_per_placement(tmp_path: Path) -> None:
    pool = next(iter(sim(fleet_file(tmp_path, 8)).targets.values()))
    for e in pool.engines[:4]:
        for i in range(3):
            e.submit(Seq(req(i)))
    to_unloaded = 0
    for i in range(400):
        r = req(i)
        chosen = pool.next_replica()
        assert pool.next_replica() is chosen  # the same until a request is placed
        pool.predict(r)
        assert pool.replica_for(r) is chosen  # placement follows the prediction
        to_unloaded += chosen in pool.engines[4:]
    # the less loaded of two random picks: a loaded replica only when both picks are loaded
    assert to_unloaded / 400 == pytest.approx(0.75, abs=0.07)


@dataclass
class Fixed:
    """A target with fixed predictions."""

    name: str
    ttft: float
    tpot: float
    j: float
    usd_: float
    site: str = "dc"
    load: float = 0.0

    def ttft_s(self, r: Request) -> float:
        return self.ttft

    def tpot_s(self, r: Request) -> float:
        return self.tpot

    def joules(self, r: Request) -> float:
        return self.j

    def usd(self, r: Request) -> float:
        return self.usd_

    def predict(self, r: Request) -> tuple[float, float, float, float]:
        return predict_each(self, r)


class OneSLO:
    def slo(self, r: Request) -> SLO:
        return SLO(ttft_s=1.0, tpot_s=0.05)


@pytest.mark.parametrize("seed", range(30))
def test_one_pass_policies_match_their_definitions(seed: int) -> None:
    rng = random.Random(seed)
    r = req(0, 100, rng.choice([1, 2, 50]))
    values = [0.1, 0.5, 0.8, 1.2]  # few values: ties happen
    cands = [
        Fixed(
            f"t{i}",
            rng.choice(values),
            rng.choice(values) / 10,
            rng.choice([1.0, 2.0, float("inf")]),
            rng.choice([0.0, 0.01]),
        )
        for i in range(rng.randint(1, 7))
    ]

    def latency(t: Fixed) -> float:
        return t.ttft + max(0, r.output_tokens - 1) * t.tpot

    meets = [t for t in cands if t.ttft <= SLO_MARGIN * 1.0 and t.tpot <= SLO_MARGIN * 0.05]
    view = OneSLO()
    assert make_policy("slo").pick(r, view, cands) is min(cands, key=latency)  # type: ignore[arg-type]
    for name, metric in (("energy", lambda t: t.j), ("cost", lambda t: t.usd_)):
        expect = (
            min(meets, key=lambda t: (metric(t), latency(t))) if meets else min(cands, key=latency)
        )
        assert make_policy(name).pick(r, view, cands) is expect, name  # type: ignore[arg-type]
