"""How `calibrate`'s fit time grows with the deployments its rows name.

A file of many models, tensor-parallel degrees and formats on one device (a sweep, or Vidur-style
profiles) is fitted like a file of one deployment, but each evaluation of the model during the
fit builds a step model per deployment. This prints the fit's seconds for the same number of
rows spread over few and over many deployments.

The rows' seconds are the uncalibrated model's own predictions with 10% log-normal noise and a
1.2x slowdown: this measures speed, not accuracy (docs/accuracy.md is the accuracy record).

Run: python benchmarks/calibrate_deployments.py [--device h100-sxm] [--deployments 1 17 40]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import time

from wattserve.calibrate.fit import fit_calibration
from wattserve.calibrate.measurements import Measurement
from wattserve.calibrate.rows import predict_seconds, step_row
from wattserve.core.catalog import Catalog, load_catalog
from wattserve.core.params import default_params
from wattserve.errors import WattserveError

MODELS = (
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.2-1b",
    "mistral-7b",
    "mixtral-8x7b",
    "qwen1.5-moe-a2.7b",
    "qwen2.5-0.5b",
    "qwen2.5-7b",
    "qwen3-8b",
    "qwen3-14b",
    "qwen3-30b-a3b",
    "qwen3-32b",
    "smollm2-135m",
)
SHAPES = (  # phase, batch, prompt tokens, context tokens
    ("decode", 1, 0, 1024),
    ("decode", 32, 0, 1024),
    ("prefill", 1, 512, 512),
)


def rows_for(catalog: Catalog, hw_id: str, deployments: int, rng: random.Random) -> list:
    """Up to `deployments` deployments on `hw_id` (those the catalog's models can run every
    shape of) with SHAPES rows each, seconds as in the module docstring."""
    hw = catalog.device(hw_id)
    out: list[Measurement] = []
    made = 0
    for model, tp, dtype in itertools.product(MODELS, (1, 2, 4, 8), ("bf16", "fp8")):
        if made == deployments:
            break
        rows = []
        for phase, batch, prompt, context in SHAPES:
            m = Measurement(
                model, hw.id, tp, tp, dtype, phase, batch, prompt, context, 1.0, None, line=0
            )
            try:
                r = step_row(m, hw, "bench", {}, {})
            except WattserveError:
                break
            seconds = float(predict_seconds([r], default_params(hw))[0])
            noisy = seconds * 1.2 * math.exp(rng.gauss(0.0, 0.1))
            rows.append(
                Measurement(model, hw.id, tp, tp, dtype, phase, batch, prompt, context, noisy, None)
            )
        if len(rows) == len(SHAPES):
            out.extend(rows)
            made += 1
    return [
        Measurement(**{**{f: getattr(m, f) for f in m.__slots__}, "line": i + 2})
        for i, m in enumerate(out)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="h100-sxm")
    ap.add_argument("--deployments", type=int, nargs="+", default=[1, 10, 40])
    args = ap.parse_args()
    catalog = load_catalog()
    for n in args.deployments:
        rows = rows_for(catalog, args.device, n, random.Random(7))
        made = len(rows) // len(SHAPES)
        start = time.perf_counter()
        _, reports = fit_calibration(rows, catalog, source="bench")
        seconds = time.perf_counter() - start
        rep = reports[0]
        print(
            f"{made:4d} deployments, {len(rows):4d} rows: fit {seconds:7.2f} s; "
            f"fitted {', '.join(rep.fitted) or 'nothing'}; "
            f"{rep.mean_abs_pct:.1f}% in sample"
        )


if __name__ == "__main__":
    main()
