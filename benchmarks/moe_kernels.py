"""The MoE layer taken apart on one GPU (#12 item 4, MoE): routing and the expert kernels.

The H200 grid (tests/data/gpu_grid_h200_2026-12-04) timed wattserve's synthetic MoE 21-52%
slower than docs/model.md predicts, while vLLM's MoE on an H100 (ML.ENERGY) is within 4-13%.
This separates the candidate causes, for the grid's two MoE models (random weights):

- routing: the distinct experts each layer of the synthetic decoder (a few layers of it) touches
  in the grid's steps, against E(1 - (1 - k/E)^T), the uniform top-k expectation the model uses;
- the expert kernels: one MoE layer's expert work for T tokens under uniform top-k routing, as
  the decoder runs it (sort, two grouped multiplies, weighted scatter), the two grouped
  multiplies alone with the weights as the decoder stores them (experts, in, out) and
  transposed (experts, out, in), and a dense multiply reading the same expert bytes. Each is
  recorded as a CUDA graph over `--layers` layers' weights (so that no layer's weights stay in
  cache) and timed as the median of replays: time per layer, distinct experts, bytes, FLOPs,
  effective bandwidth and FLOP rate.

Writes moe_kernels.json and moe_kernels.txt into `--out` (default $OUT).

    python benchmarks/moe_kernels.py --out $OUT                          # on a GPU, ~1-2 min
    python benchmarks/moe_kernels.py --device cpu --smoke --out /tmp/moe   # the pipeline
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
if (SRC / "wattserve").is_dir():  # this checkout's own code, installed or not (a bare GPU box)
    sys.path.insert(0, str(SRC))
try:
    import torch

    from wattserve.core.modelspec import ModelSpec, load_model
    from wattserve.profile.backends import TorchBackend
    from wattserve.profile.decoder import SyntheticDecoder
except ImportError as exc:
    sys.exit(f"MISSING: Python package {exc.name!r}, which this needs; nothing measured")

MODELS = ("qwen1.5-moe-a2.7b", "qwen3-30b-a3b")
TOKENS = (1, 4, 16, 64, 128, 512, 2048, 8192)
# the grid's steps whose routing is counted: (phase, batch, prompt or context tokens)
ROUTING_STEPS = (
    ("prefill", 1, 128),
    ("prefill", 4, 128),
    ("prefill", 1, 512),
    ("prefill", 1, 2048),
    ("decode", 1, 512),
    ("decode", 4, 512),
    ("decode", 16, 512),
    ("decode", 64, 512),
    ("decode", 128, 512),
)


class CountingBackend(TorchBackend):
    """The decoder's backend, counting the distinct experts each top-k choice touches."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.touched: list[int] | None = None

    def topk_last(self, x: Any, k: int) -> tuple[Any, Any]:
        weights, chosen = super().topk_last(x, k)
        if self.touched is not None:
            self.touched.append(int(chosen.unique().numel()))
        return weights, chosen


def expected_touched(spec: ModelSpec, tokens: int) -> float:
    e, k = spec.num_experts, spec.experts_per_token
    return float(e * (1.0 - (1.0 - k / e) ** tokens))


def routing(spec: ModelSpec, device: str, layers: int, steps: Any) -> list[dict[str, Any]]:
    """Distinct experts per layer in the synthetic decoder's steps (eager, `layers` layers)."""
    be = CountingBackend(device)
    dec = SyntheticDecoder(dataclasses.replace(spec, num_layers=layers), be)
    rows = []
    for phase, batch, tokens in steps:
        q, start = (tokens, 0) if phase == "prefill" else (1, tokens)
        toks = be.tokens(batch, q, spec.vocab_size)
        dec.reset_cache(batch, start + q)
        n = batch * q
        row: dict[str, Any] = {"phase": phase, "batch": batch, "tokens": tokens}
        row.update(routed_tokens=n, expected=round(expected_touched(spec, n), 2))
        # the router alone (as the grid's run2 and run3 routed), then with the step's bias
        for name, bias in (("router_only", None), ("with_route_bias", dec.route_bias(n))):
            be.touched = []
            dec.forward(toks, start, bias)
            be.sync()
            row[name], be.touched = be.touched, None
        rows.append(row)
    dec.release()
    return rows


def gated(x: Any) -> Any:
    f = x.shape[-1] // 2
    return torch.nn.functional.silu(x[..., :f]) * x[..., f:]


def timed(be: TorchBackend, fn: Callable[[], Any], samples: int = 7) -> tuple[float, str]:
    """Median seconds of one call of `fn`, recorded as a graph where it can be, and how it
    ran ("graph" or "eager")."""
    try:
        run = be.capture(fn)
        how = "graph"
    except RuntimeError:
        be.sync()
        run, how = fn, "eager"
    run()
    be.sync()
    t0 = time.perf_counter()
    run()
    be.sync()
    once = max(time.perf_counter() - t0, 1e-6)
    reps = max(1, min(200, int(0.02 / once)))
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(reps):
            run()
        be.sync()
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times), how


def kernels(spec: ModelSpec, device: str, layers: int, tokens: Any) -> list[dict[str, Any]]:
    """One MoE layer's expert work for each T in `tokens`, three ways and a dense reference."""
    be = TorchBackend(device)
    e, (d, f) = spec.num_experts, _expert_shape(spec)
    kn = [(be.randn(e, d, 2 * f) * 0.02, be.randn(e, f, d) * 0.02) for _ in range(layers)]
    nk = [(w1.transpose(-2, -1).contiguous(), w2.transpose(-2, -1).contiguous()) for w1, w2 in kn]
    rows = [one_size(be, n, spec, kn, nk) for n in tokens]
    kn.clear()
    nk.clear()
    be.free()
    return rows


def _expert_shape(spec: ModelSpec) -> tuple[int, int]:
    """An expert's hidden and intermediate widths."""
    return spec.hidden_size, spec.expert_intermediate_size or spec.intermediate_size


def one_size(
    be: TorchBackend, n: int, spec: ModelSpec, kn: list[Any], nk: list[Any]
) -> dict[str, Any]:
    """One MoE layer's expert work for `n` tokens, with `layers` weight sets stacked as
    (experts, in, out) in `kn` and transposed in `nk`: the variants' time per layer."""
    t, gmm, layers = torch, torch._grouped_mm, len(kn)
    e, k, (d, f) = spec.num_experts, spec.experts_per_token, _expert_shape(spec)
    expert_bytes = 3 * d * f * kn[0][0].element_size()
    h = be.randn(n, d)
    probs = t.rand(n, e, device=be.device, generator=be.gen)
    weights, chosen = t.topk(probs, k, dim=-1)
    weights = weights.to(be.tdtype)
    flat = chosen.reshape(-1)
    order = t.argsort(flat, stable=True)
    counts = t.bincount(flat, minlength=e)
    offs = counts.cumsum(0).to(t.int32)
    hs = h[order // k].contiguous()
    touched = int((counts > 0).sum())
    per_expert = counts[counts > 0].float()
    wcat = be.randn(d, touched * 2 * f) * 0.02
    dcat = be.randn(touched * f, d) * 0.02

    def decoder_path() -> None:  # as SyntheticDecoder runs it (in_out weights)
        for w in kn:
            be.grouped_experts(h, chosen, weights, w, gated)

    def index_add_path() -> None:  # the decoder's path until 2026-12-04: atomic adds
        rows = order // k
        for w1, w2 in kn:
            y = gmm(gated(gmm(h[rows], w1, offs=offs)), w2, offs=offs)
            y = y * weights.reshape(-1)[order][:, None]
            t.zeros_like(h).index_add_(0, rows, y)

    def gmm_kn() -> None:
        for w1, w2 in kn:
            gmm(gated(gmm(hs, w1, offs=offs)), w2, offs=offs)

    def gmm_nk() -> None:
        for w1, w2 in nk:
            up = gmm(hs, w1.transpose(-2, -1), offs=offs)
            gmm(gated(up), w2.transpose(-2, -1), offs=offs)

    def dense_same_bytes() -> None:  # n rows through the touched experts' bytes, dense
        for _ in range(layers):
            gated(h @ wcat) @ dcat

    row: dict[str, Any] = {
        "tokens": n,
        "touched": touched,
        "expected_touched": round(expected_touched(spec, n), 2),
        "rows_per_expert_mean": round(float(per_expert.mean()), 2),
        "rows_per_expert_max": int(per_expert.max()),
        "expert_bytes_read": touched * expert_bytes,
        "flops": 2.0 * n * k * 3 * d * f,
    }
    variants = [("decoder", decoder_path), ("index_add", index_add_path)]
    variants += [("gmm_kn", gmm_kn), ("gmm_nk", gmm_nk)]
    if n <= 128:  # beyond, the dense reference does `touched` times the work: no reference
        variants.append(("dense_same_bytes", dense_same_bytes))
    for name, fn in variants:
        try:
            s, how = timed(be, fn)
            s /= layers
        except RuntimeError as exc:  # a layout or shape the backend refuses
            row[name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
            be.sync()
            continue
        fl = 2.0 * n * 3 * d * f * touched if name == "dense_same_bytes" else row["flops"]
        row[name] = {
            "us": round(s * 1e6, 2),
            "how": how,
            "tb_per_s": round(row["expert_bytes_read"] / s / 1e12, 3),
            "tflops": round(fl / s / 1e12, 2),
        }
    return row


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "moe_kernels")))
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--layers", type=_positive, default=4, help="layers' weights per timed graph")
    ap.add_argument("--routing-layers", type=_positive, default=6)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes: the pipeline only")
    ap.add_argument("--no-routing", dest="routing", action="store_false")
    args = ap.parse_args()
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {args.out} is a file, not a folder")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("MISSING: a CUDA device; nothing measured")
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "models": {},
    }
    lines = []
    for model_id in MODELS:
        spec = load_model(model_id)
        if args.smoke:
            spec = dataclasses.replace(
                spec,
                hidden_size=128,
                intermediate_size=256,
                expert_intermediate_size=64,
                shared_intermediate_size=min(spec.shared_intermediate_size, 128),
                num_heads=4,
                num_kv_heads=2,
                head_dim=32,
                vocab_size=512,
            )
        started = time.perf_counter()
        steps = ROUTING_STEPS[:2] + ROUTING_STEPS[4:6] if args.smoke else ROUTING_STEPS
        route = routing(spec, args.device, args.routing_layers, steps) if args.routing else []
        kern = kernels(spec, args.device, args.layers, TOKENS[:4] if args.smoke else TOKENS)
        doc["models"][model_id] = {
            "experts": spec.num_experts,
            "top_k": spec.experts_per_token,
            "hidden": spec.hidden_size,
            "expert_intermediate": spec.expert_intermediate_size,
            "routing": route,
            "kernels": kern,
            "seconds": round(time.perf_counter() - started, 1),
        }
        lines.append(f"{model_id}: E={spec.num_experts} k={spec.experts_per_token}")
        lines.append(
            "  routing: step, tokens routed, expected distinct experts; per layer: router "
            "only | with the step's route bias"
        )
        for r in route:
            lines.append(
                f"    {r['phase']:7} b{r['batch']:<4} n{r['tokens']:<5} {r['routed_tokens']:6} "
                f"{r['expected']:7}: {r['router_only']} | {r['with_route_bias']}"
            )
        lines.append("  kernels, us per layer (TB/s of the touched experts' bytes):")
        head = "decoder        index_add      gmm_kn         gmm_nk         dense"
        lines.append(f"    T     touched rows/exp   {head}")
        for r in kern:
            cells = []
            for name in ("decoder", "index_add", "gmm_kn", "gmm_nk", "dense_same_bytes"):
                c = r.get(name, {"us": None})
                cells.append(
                    "error"
                    if "error" in c
                    else "-"
                    if c["us"] is None
                    else f"{c['us']:8.1f} ({c['tb_per_s']:.2f})"
                )
            lines.append(
                f"    {r['tokens']:<5} {r['touched']:4}   {r['rows_per_expert_mean']:7.1f}  "
                + "  ".join(cells)
            )
        (args.out / "moe_kernels.json").write_text(json.dumps(doc, indent=1))
        (args.out / "moe_kernels.txt").write_text("\n".join(lines) + "\n")
        print("\n".join(lines[-(len(route) + len(kern) + 4) :]), flush=True)


if __name__ == "__main__":
    main()
