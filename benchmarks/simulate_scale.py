"""simulate at scale: 1,000,000 synthetic requests over 1,000 devices in 10 sites.

Target (issue #3): under 60 s on one core. Run: python benchmarks/simulate_scale.py [POLICY ...]
(default least_loaded; `all` runs the six built-in policies). It first prints how fast this
machine runs `estimate()` (benchmarks/estimate_throughput.py, 2 s), to read the wall times by:
on a shared VM both vary together (by up to 2.5x between days here: docs/benchmarks.md).
The fleet: 10 sites, each with 50 H100 and 50 A100 engines serving llama-3.1-8b (1,000
single-GPU engines), a power cap per site; Poisson arrivals at 5,000 requests/s from all sites,
lognormal prompt (mean 1,000) and output (mean 200) lengths.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import estimate_throughput  # this directory: on sys.path when run as a script

from wattserve.core.fleet import load_fleet
from wattserve.core.policy import BUILTIN
from wattserve.core.workload import SLO, Request, Workload, synthetic_arrivals
from wattserve.simulate import simulate

SITES = 10
PER_TYPE = 50
REQUESTS = 1_000_000
RATE = 5000.0
CAP_W = 60000


def fleet_yaml() -> str:
    lines = ["name: scale-1000", "sites:"]
    for s in range(SITES):
        lines += [f"  site{s}:", "    kind: datacenter", f"    power_cap_w: {CAP_W}"]
    lines.append("deployments:")
    for s in range(SITES):
        for hw in ("h100-sxm", "a100-sxm-80gb"):
            lines += [
                f"  {hw}-{s}:",
                f"    site: site{s}",
                "    model: llama-3.1-8b",
                f"    hardware: {hw}",
                f"    replicas: {PER_TYPE}",
            ]
    return "\n".join(lines) + "\n"


def workload(seed: int = 0) -> Workload:
    rng = random.Random(seed)
    times = synthetic_arrivals("poisson", RATE, REQUESTS / RATE * 1.01, rng)[:REQUESTS]
    reqs = []
    for i, t in enumerate(times):
        p = max(1, min(8000, round(rng.lognormvariate(6.58, 0.8))))
        o = max(1, min(2000, round(rng.lognormvariate(5.0, 0.8))))
        reqs.append(Request(i, t, p, o, "llama-3.1-8b", f"site{rng.randrange(SITES)}"))
    return Workload(reqs, {"default": SLO()})


def main() -> None:
    estimate_throughput.main(seconds=2.0)  # pins this process to one core
    policies = sys.argv[1:] or ["least_loaded"]
    if policies == ["all"]:
        policies = list(BUILTIN)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet.yaml"
        path.write_text(fleet_yaml())
        fleet = load_fleet(path)
    devices = sum(d.replicas * d.deployment.devices for d in fleet.deployments)
    for policy in policies:
        wl = workload()
        t0 = time.perf_counter()
        report, _ = simulate(fleet, wl, policy)
        wall = time.perf_counter() - t0
        print(
            f"{policy}: {report['requests']:,} requests over {devices} devices in {SITES} sites: "
            f"{wall:.1f} s wall (target < 60 s); completed {report['completed']:,}, "
            f"SLO {report['slo_attainment']:.1%}, {report['engine_steps']:,} engine steps"
        )


if __name__ == "__main__":
    main()
