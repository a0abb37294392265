"""A dense decoder layer's GEMMs and elementwise kernels, timed apart on one GPU (#12 item 4).

On the H200 (tests/data/gpu_grid_h200_2026-12-04) the uncalibrated model predicts the prefills
of models with a narrow hidden size (smollm2-135m: 576, qwen2.5-0.5b: 896) 18-22% too fast.
Two explanations fit those steps equally well (docs/accuracy.md, "A GEMM efficiency ramp in the
inner dimension K"): GEMMs whose inner dimension K is small run below the large-GEMM rate (a
hardware ramp), or the engine's unfused elementwise kernels (norms, the gated activation,
residual adds) take the missing time. This times each apart, for the grid's dense models and
row counts from one token to a long prefill, so that one run on a GPU decides:

- each of a layer's four GEMMs (QKV, output, gate and up, down) as the synthetic decoder runs
  them (bf16, `x @ W`), over `--layers` layers' weights so that no weights stay in cache:
  microseconds, TFLOPS, and the share of the large square matmul's rate measured first (if a
  K of 576 reaches about 55% or more of it at thousands of rows, the ramp is wrong);
- the layer's elementwise kernels as the decoder runs them (RMSNorm twice, the gated SiLU,
  two residual adds): microseconds and GB/s.

Each is recorded as a CUDA graph and timed as the median of replays (`moe_kernels.timed`).
Writes gemm_shapes.json and gemm_shapes.txt into `--out` (default $OUT).

    python benchmarks/gemm_shapes.py --out $OUT                          # on a GPU, ~1 min
    python benchmarks/gemm_shapes.py --device cpu --smoke --out /tmp/g   # the pipeline
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moe_kernels import _positive, gated, timed, torch  # this directory; MISSING: without torch

from wattserve.core.modelspec import ModelSpec, load_model
from wattserve.profile.backends import TorchBackend
from wattserve.profile.micro import torch_matmul_tflops

MODELS = ("smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b", "llama-3.1-8b")
TOKENS = (1, 16, 128, 512, 2048, 8192, 32768)


def gemm_shapes(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """A layer's dense GEMMs as (K, N): inputs and outputs per row."""
    d, f, dh = spec.hidden_size, spec.intermediate_size, spec.head_dim
    return {
        "qkv": (d, (spec.num_heads + 2 * spec.num_kv_heads) * dh),
        "o": (spec.num_heads * dh, d),
        "gate_up": (d, 2 * f),
        "down": (f, d),
    }


def one_model(spec: ModelSpec, device: str, layers: int, tokens: Any) -> list[dict[str, Any]]:
    """Every GEMM and elementwise kernel of one layer, at each row count in `tokens`."""
    be = TorchBackend(device)
    shapes = gemm_shapes(spec)
    weights = {g: [be.randn(k, n) * 0.02 for _ in range(layers)] for g, (k, n) in shapes.items()}
    rows = []
    for m in tokens:
        row: dict[str, Any] = {"tokens": m, "gemms": {}, "elementwise": {}}
        for g, (k, n) in shapes.items():
            x = be.randn(m, k)
            ws = weights[g]

            def run(x: Any = x, ws: Any = ws) -> None:
                for w in ws:
                    x @ w

            s, how = timed(be, run)
            per = s / layers
            row["gemms"][g] = {
                "k": k,
                "n": n,
                "us": per * 1e6,
                "tflops": 2.0 * m * k * n / per / 1e12,
                "how": how,
            }
        d, f = spec.hidden_size, spec.intermediate_size
        h, up = be.randn(m, d), be.randn(m, 2 * f)
        elementwise = {
            "rmsnorm": (lambda h=h: be.rmsnorm(h), 2 * m * d),
            "gated_silu": (lambda up=up: gated(up), 3 * m * f),
            "residual_add": (lambda h=h: h + h, 3 * m * d),
        }
        for name, (fn, elems) in elementwise.items():
            s, how = timed(be, fn)
            row["elementwise"][name] = {
                "us": s * 1e6,
                "gb_per_s": elems * h.element_size() / s / 1e9,
                "how": how,
            }
        rows.append(row)
    weights.clear()
    be.free()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gemm_shapes")))
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--layers", type=_positive, default=4, help="layers' weights per timed graph")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes: the pipeline only")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {args.out} is a file, not a folder")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("MISSING: a CUDA device; nothing measured")
    args.out.mkdir(parents=True, exist_ok=True)
    peak = torch_matmul_tflops(args.device, n=256 if args.smoke else 8192)
    doc: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "square_matmul_tflops": peak,
        "models": {},
    }
    lines = [f"{doc['device']}: square matmul {peak:.3g} TFLOPS (the share below is of this)"]
    for model_id in MODELS:
        spec = load_model(model_id)
        if args.smoke:
            spec = dataclasses.replace(
                spec, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2,
                head_dim=16,
            )  # fmt: skip
        started = time.perf_counter()
        rows = one_model(spec, args.device, args.layers, TOKENS[:3] if args.smoke else TOKENS)
        doc["models"][model_id] = {
            "hidden": spec.hidden_size,
            "intermediate": spec.intermediate_size,
            "rows": rows,
            "seconds": round(time.perf_counter() - started, 1),
        }
        lines.append(f"{model_id} (hidden {spec.hidden_size}, FFN {spec.intermediate_size}):")
        lines.append(
            "  rows  | GEMM us (share of the square rate): qkv, o, gate_up, down "
            "| elementwise us: rmsnorm, gated_silu, residual_add"
        )
        for r in rows:
            gemms = ", ".join(
                f"{c['us']:.1f} ({c['tflops'] / peak:.0%})" for c in r["gemms"].values()
            )
            elem = ", ".join(f"{c['us']:.1f}" for c in r["elementwise"].values())
            lines.append(f"  {r['tokens']:<5} | {gemms} | {elem}")
        (args.out / "gemm_shapes.json").write_text(json.dumps(doc, indent=1))
        (args.out / "gemm_shapes.txt").write_text("\n".join(lines) + "\n")
        print("\n".join(lines[-(len(rows) + 2) :]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
