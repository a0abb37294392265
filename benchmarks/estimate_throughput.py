"""How many `estimate` evaluations per second the Python API sustains on one core.

Target (issue #2): at least 20,000 per second. Run: python benchmarks/estimate_throughput.py
"""

from __future__ import annotations

import itertools
import os
import time

from wattserve import estimate

CASES = list(
    itertools.product(
        ["llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b"],
        ["h100-sxm", "mi300x", "l40s"],
        [1, 8, 64],
        [128, 2048],
    )
)


def main(seconds: float = 3.0) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    for model, hw, batch, prompt in CASES:  # warm the catalog and model caches
        estimate(model, hw, tp=2, batch=batch, prompt_tokens=prompt)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for model, hw, batch, prompt in CASES:
            estimate(model, hw, tp=2, batch=batch, prompt_tokens=prompt, output_tokens=256)
        n += len(CASES)
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    print(
        f"estimate(): {rate:,.0f} evaluations/s on one core "
        f"({elapsed / n * 1e6:.1f} us each, {n} calls); target >= 20,000/s"
    )


if __name__ == "__main__":
    main()
