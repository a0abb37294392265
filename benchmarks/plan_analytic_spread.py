"""plan --capacity analytic against --capacity simulated for classes whose lengths spread.

`benchmarks/plan_analytic.py` compares fixed-length shapes; this plans
`examples/workload-multisite.yaml` (lognormal prompts and outputs, sigma 0.5-0.8) on the given
devices both ways and prints, for every option and class, the two capacities and their ratio.
The simulated capacities take minutes; `--cache FILE` keeps them between runs (plan's own
capacity cache). Run: python benchmarks/plan_analytic_spread.py [--dtype bf16] [--hardware l4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wattserve.plan.api import plan
from wattserve.plan.capacity import CapacityCache

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--hardware", default="l4")
    ap.add_argument("--cache", type=Path)
    args = ap.parse_args()
    caps: dict[tuple[str, str], dict[str, float]] = {}
    for method in ("analytic", "simulated"):
        cache = CapacityCache()
        if method == "simulated" and args.cache is not None and args.cache.exists():
            cache = CapacityCache.load(args.cache)
        start = time.perf_counter()
        p = plan(
            ROOT / "examples" / "workload-multisite.yaml",
            sites=ROOT / "examples" / "sites-two-dc-edge.yaml",
            hardware=args.hardware.split(","),
            dtypes=tuple(args.dtype.split(",")),  # type: ignore[arg-type]
            capacity=method,  # type: ignore[arg-type]
            cache=cache,
            compare_with_single=False,
        )
        print(f"plan --capacity {method}: {time.perf_counter() - start:.1f} s")
        if method == "simulated" and args.cache is not None:
            cache.save(args.cache)
        for o in p.problem.options:
            for q, c in o.caps.items():
                caps.setdefault((o.name, p.problem.flows[q].label), {})[method] = c.rate_rps
    ratios = []
    for (option, flow), v in sorted(caps.items()):
        a, s = v.get("analytic", 0.0), v.get("simulated", 0.0)
        ratio = a / s if s > 0 else float("nan")
        if s > 0:
            ratios.append(ratio)
        print(f"{option:48s} {flow:34s} analytic {a:7.3f} simulated {s:7.3f} {ratio:5.2f}x")
    print(f"analytic / simulated over {len(ratios)}: {min(ratios):.2f}-{max(ratios):.2f}x")


if __name__ == "__main__":
    main()
