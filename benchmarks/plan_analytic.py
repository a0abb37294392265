"""plan --capacity analytic against the simulated capacity, configuration by configuration.

The analytic capacity (plan.queueing: prefill steps apart from decode steps, the class's
percentile of TTFT and TPOT) is a few milliseconds; the simulated one bisects on short runs of
the EngineModel that `simulate` and `serve` use (the default, and the reference here). For
each configuration and request shape this prints both, their ratio, and the ratio of the
mean steady state that `--capacity analytic` used until 2026-12-06 (`analytic_rate`, still the
start of the simulated search). Run: python benchmarks/plan_analytic.py
"""

from __future__ import annotations

import time

from wattserve.core.catalog import load_catalog
from wattserve.core.deployment import Deployment
from wattserve.core.fleet import kv_block_count
from wattserve.core.modelspec import load_model
from wattserve.core.params import Calibration
from wattserve.core.perf import perf_model
from wattserve.plan.capacity import Shape, analytic_rate, replica_capacity

CONFIGS = (
    ("l4", "llama-3.1-8b", 2),
    ("l4", "llama-3.1-8b", 1),
    ("a100-sxm-80gb", "llama-3.1-8b", 1),
    ("h100-sxm", "llama-3.1-8b", 1),
    ("h100-sxm", "llama-3.1-70b", 4),
    ("a100-sxm-80gb", "llama-3.1-70b", 4),
)
# prompt, output tokens; TTFT s, TPOT s, the share of requests that must meet both
SHAPES = (
    (1000, 200, 1.0, 0.05, 0.99),
    (500, 100, 1.0, 0.05, 0.9),
    (3000, 500, 5.0, 0.1, 0.9),
    (100, 100, 5.0, 0.12, 0.9),
    (2000, 50, 2.0, 0.03, 0.99),
    (200, 400, 1.0, 0.04, 0.99),
    (3000, 1, 0.5, 0.05, 0.99),  # a one-token answer: TTFT alone
)


def main() -> None:
    cat = load_catalog()
    ratios: list[float] = []
    old: list[float] = []
    print("config                          shape (p/o, TTFT, TPOT, pct)    simulated   analytic"
          "        mean steady state (until 2026-12-06)")  # fmt: skip
    for hw_id, model, tp in CONFIGS:
        hw = cat.device(hw_id)
        dep = Deployment(load_model(model), hw, tp=tp)
        params = Calibration().params_for(hw)
        pm = perf_model(dep, params)
        blocks, _ = kv_block_count(dep, params)
        for p, o, ttft, tpot, pct in SHAPES:
            shape = Shape(model, p, o, ttft, tpot, pct)
            sim = replica_capacity(dep, params, shape, "simulated").rate_rps
            t0 = time.perf_counter()
            ana = replica_capacity(dep, params, shape, "analytic").rate_rps
            ms = (time.perf_counter() - t0) * 1e3
            mean = analytic_rate(pm, blocks, shape)[0]
            head = f"{hw_id} {model} tp{tp}"
            what = f"{p}/{o}, {ttft:g} s, {tpot * 1e3:g} ms, p{pct * 100:g}"
            if sim <= 0:
                print(f"{head:31s} {what:31s} {'none':>9s} {ana:8.2f} req/s ({ms:.0f} ms)")
                continue
            ratios.append(ana / sim)
            old.append(mean / sim)
            print(
                f"{head:31s} {what:31s} {sim:9.2f} {ana:8.2f} {ana / sim:5.2f}x ({ms:3.0f} ms)"
                f"  {mean:8.2f} {mean / sim:5.2f}x"
            )
    print(
        f"analytic / simulated over {len(ratios)} with a capacity: {min(ratios):.2f}-"
        f"{max(ratios):.2f}x (mean steady state: {min(old):.2f}-{max(old):.2f}x)"
    )


if __name__ == "__main__":
    main()
