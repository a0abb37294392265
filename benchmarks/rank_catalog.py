"""How long `rank` takes for one model over the whole catalog on one core.

The full search: every device built in (40 on 2026-12-06), every dtype each has a peak for,
every layout it allows, the largest batch within the SLO found by bisection, and the hosted APIs.
Target (issue #10): under 1 s. Run: python benchmarks/rank_catalog.py [MODEL ...]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from wattserve import load_catalog, load_model
from wattserve.estimate.api import clear_caches
from wattserve.rank import rank


def main(models: list[str], repeats: int = 5) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    catalog = load_catalog()  # read once per process, like the CLI
    for model in models:
        load_model(model)
        cold, warm = [], []
        for _ in range(repeats):
            clear_caches()  # each cold run builds every layout and PerfModel again
            start = time.perf_counter()
            result = rank(model, catalog=catalog)
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            rank(model, catalog=catalog)
            warm.append(time.perf_counter() - start)
        print(
            f"rank {model}: {len(catalog.devices)} devices and {len(catalog.providers)} hosted "
            f"APIs, {len(result.rows)} ranked, {len(result.excluded)} excluded: "
            f"median {statistics.median(cold):.3f} s "
            f"(best {min(cold):.3f} s; PerfModels cached: {statistics.median(warm):.3f} s) "
            "on one core; target < 1 s"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "mixtral-8x7b"])
