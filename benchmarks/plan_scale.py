"""plan at scale: the mixed-integer program over device types x sites x request classes.

Targets (issue #11): 40 device types x 6 sites x 10 classes in under 5 s; 200 sites x 40 types
x 20 classes in under 60 s, or HiGHS stops at the time limit and the plan reports its gap to
the LP bound. Run: python benchmarks/plan_scale.py [small|large|both] (default both).

The program is built from real catalog devices (cycled to 40 types, each type its own price),
with capacities per (type, class) drawn once from a seeded RNG around each device's analytic
capacity scale, so that the timing is of the program, not of the capacity search (which is
cached per configuration and class: its cost is printed separately for the real catalog).
Each class comes from one origin site; 20% of classes may not leave it (residency); sites have
power caps; two device types are limited in availability.
"""

from __future__ import annotations

import itertools
import random
import sys
import time

from wattserve.core.catalog import load_catalog
from wattserve.core.deployment import Deployment
from wattserve.core.fleet import Fleet
from wattserve.core.modelspec import load_model
from wattserve.core.params import Calibration
from wattserve.core.sites import Link, Site
from wattserve.core.workload import SLO
from wattserve.plan.api import summarize_solution
from wattserve.plan.capacity import Capacity, CapacityCache, Shape, replica_capacity
from wattserve.plan.milp import solve
from wattserve.plan.problem import Flow, Limits, Option, Problem

LIMIT_S = 60.0


def build(types: int, sites: int, classes: int, seed: int = 0) -> Problem:
    rng = random.Random(seed)
    cat = load_catalog()
    model = load_model("llama-3.1-8b")
    gpus = [h for h in ("h100-sxm", "a100-sxm-80gb", "l40s", "mi300x", "l4", "h200-sxm")]
    site_list = {
        f"s{i}": Site(f"s{i}", "datacenter", rng.uniform(20e3, 80e3), 0.08, 1.3, 300.0)
        for i in range(sites)
    }
    names = list(site_list)
    links = tuple(Link(a, b, rng.uniform(0.01, 0.08)) for a, b in itertools.pairwise(names))
    fleet = Fleet("bench", site_list, links, 0.05, (), ())
    flows = []
    for q in range(classes):
        origin = names[q % sites]
        flows.append(
            Flow(f"c{q}", origin, q % 5 == 0, model.id, rng.uniform(5, 50), 1000, 200, SLO())
        )
    options = []
    for t in range(types):
        hw = cat.device(gpus[t % len(gpus)])
        dep = Deployment(model, hw)
        params = Calibration().params_for(hw)
        price = rng.uniform(0.5, 8.0)
        scale = rng.uniform(2.0, 40.0)
        for s in names:
            caps = {}
            for q, f in enumerate(flows):
                if f.local_only and f.origin != s:
                    continue
                if rng.random() < 0.8:
                    caps[q] = Capacity(scale * rng.uniform(0.5, 1.5), 400.0, 600.0, 100.0, 10.0)
            if caps:
                options.append(Option(f"t{t}-{s}", s, dep, params, price, 0.0, 100.0, 600.0, caps))
    limits = Limits(0.1, None, (("h100-sxm", 400), ("mi300x", 200)))
    return Problem(flows, site_list, fleet, options, [], limits, {}, CapacityCache())


def run(label: str, types: int, sites: int, classes: int, target_s: float) -> None:
    t0 = time.perf_counter()
    p = build(types, sites, classes)
    built = time.perf_counter() - t0
    sol = solve(p, "cost", LIMIT_S)
    total = time.perf_counter() - t0
    plan = summarize_solution(p, sol, "cost")
    gap = "-" if sol.gap is None else f"{sol.gap:.3%}"
    print(
        f"{label}: {types} types x {sites} sites x {classes} classes: {len(p.options)} options, "
        f"status {sol.status}, ${plan.usd_per_h:,.2f}/h, LP/dual bound {sol.bound:,.2f}, "
        f"gap {gap}; build {built:.2f} s, solve {sol.solve_s:.2f} s, total {total:.2f} s "
        f"(target {target_s:.0f} s)"
    )


def capacity_cost() -> None:
    """What the capacity search costs for the real catalog, one class (cold, then cached)."""
    cat = load_catalog()
    model = load_model("llama-3.1-8b")
    shape = Shape(model.id, 1000, 200, 2.0, 0.1, 0.99)
    cache = CapacityCache()
    for method in ("analytic", "simulated"):
        t0 = time.perf_counter()
        n = 0
        for hw_id in ("h100-sxm", "a100-sxm-80gb", "l40s", "mi300x"):
            hw = cat.device(hw_id)
            replica_capacity(
                Deployment(model, hw), Calibration().params_for(hw), shape, method, cache
            )
            n += 1
        cold = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for hw_id in ("h100-sxm", "a100-sxm-80gb", "l40s", "mi300x"):
            hw = cat.device(hw_id)
            replica_capacity(
                Deployment(model, hw), Calibration().params_for(hw), shape, method, cache
            )
        warm = (time.perf_counter() - t0) / n
        print(
            f"capacity ({method}): {cold * 1e3:.1f} ms per (config, class) cold, "
            f"{warm * 1e6:.0f} us cached"
        )


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    capacity_cost()
    if which in ("small", "both"):
        run("small", 40, 6, 10, 5.0)
    if which in ("large", "both"):
        run("large", 40, 200, 20, 60.0)


if __name__ == "__main__":
    main()
