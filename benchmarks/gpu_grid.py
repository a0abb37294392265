"""One GPU, one call: a grid of prefill and decode steps with NVML energy (#12 item 3(c)).

Times wattserve's synthetic decoder (src/wattserve/profile: each model's exact shapes, random
weights, nothing downloaded) on one GPU in bf16 for four models: two dense sizes
(llama-3.1-8b, llama-3.2-1b), a model about 10x smaller (smollm2-135m) and an MoE
(qwen1.5-moe-a2.7b, 60 experts, top-4, routed by a random router). Every step runs as a CUDA
graph where PyTorch can record it (the MoE's experts as one grouped multiply per weight;
where that multiply is missing, an expert loop that runs eagerly); prefill attention is
PyTorch's fused kernel, and decode takes the faster of two attentions, both timed.

Order, so that a short budget still yields what the analysis needs: the six training points
(of the first model, llama-3.1-8b), then a few points of every model and phase, then the rest
of the grid. `--models` measures other built-in models instead (held out from a calibration
fitted on another run: gpu_grid_report.py --calibrate-on). A case
whose estimated cost would overrun `--budget-s` is skipped and listed. Results are rewritten
after every case, so a run stopped early leaves what it measured.

Writes into `--out` (default $OUT): measurements.csv (calibrate's format: `wattserve
calibrate` reads it as is), grid.json (every case's samples, spread and energy; device,
clocks, driver and versions; idle power; what was skipped and why) and summary.txt.
Then `python benchmarks/gpu_grid_report.py DIR` calibrates on six points and reports
held-out errors per shape group (docs/accuracy.md, "An NVIDIA H200").

    python benchmarks/gpu_grid.py --out $OUT --budget-s 400     # on a GPU
    python benchmarks/gpu_grid.py --out $OUT --budget-s 260 --models qwen2.5-7b,qwen3-14b
    python benchmarks/gpu_grid.py --device cpu --smoke --out /tmp/grid   # the pipeline, seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
if (SRC / "wattserve").is_dir():  # this checkout's own code, installed or not (a bare GPU box)
    sys.path.insert(0, str(SRC))
try:
    from wattserve.calibrate.measurements import Measurement, write_measurements
    from wattserve.core.catalog import Catalog, load_catalog
    from wattserve.core.deployment import Deployment
    from wattserve.core.hardware import Hardware
    from wattserve.core.modelspec import ModelSpec, builtin_model_id, load_model
    from wattserve.core.params import default_params
    from wattserve.core.perf import PerfModel
    from wattserve.profile import micro
    from wattserve.profile.decoder import out_of_memory
    from wattserve.profile.gpus import catalog_gpu
    from wattserve.profile.power import NvmlMeter, steady_watts
    from wattserve.profile.run import hardware_yaml
except ImportError as exc:
    sys.exit(f"MISSING: Python package {exc.name!r}, which wattserve needs; nothing measured")

# role -> model; the first is the one the analysis calibrates on
MODELS = {
    "large": "llama-3.1-8b",
    "small": "llama-3.2-1b",
    "tiny": "smollm2-135m",
    "moe": "qwen1.5-moe-a2.7b",
}
SMOKE_MODELS: dict[str, dict[str, Any]] = {
    "large": {"hidden_size": 256, "num_hidden_layers": 2, "intermediate_size": 512},
    "small": {"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 128},
    "moe": {
        "model_type": "qwen2_moe",
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "intermediate_size": 256,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 64,
        "shared_expert_intermediate_size": 128,
    },
}


@dataclass(frozen=True)
class Grid:
    """The shapes: (batch, prompt) prefills and (batch, context) decodes, and the training
    points of the `large` model: three decodes and three prefills."""

    prefill_batches: tuple[int, ...]
    prompts: tuple[int, ...]
    max_prefill_tokens: int
    decode_batches: tuple[int, ...]
    contexts: tuple[int, ...]
    train: tuple[tuple[str, int, int], ...]
    first: tuple[tuple[str, int, int], ...]  # a few points of every model, before the rest


GPU_GRID = Grid(
    prefill_batches=(1, 4, 16),
    prompts=(128, 512, 2048, 4096),
    max_prefill_tokens=32768,
    decode_batches=(1, 4, 16, 64, 128),
    contexts=(512, 2048, 8192),
    train=(
        ("decode", 1, 2048),
        ("decode", 16, 2048),
        ("decode", 64, 2048),
        ("prefill", 1, 128),
        ("prefill", 1, 512),
        ("prefill", 1, 2048),
    ),
    first=(("decode", 1, 512), ("decode", 64, 512), ("prefill", 1, 512), ("prefill", 4, 2048)),
)
SMOKE_GRID = Grid(
    prefill_batches=(1, 2),
    prompts=(16, 64),
    max_prefill_tokens=128,
    decode_batches=(1, 4),
    contexts=(32, 128),
    train=(
        ("decode", 1, 64),
        ("decode", 2, 64),
        ("decode", 4, 64),
        ("prefill", 1, 16),
        ("prefill", 1, 32),
        ("prefill", 1, 48),
    ),
    first=(("decode", 1, 32), ("prefill", 1, 16)),
)


@dataclass
class Case:
    tier: int  # 0: training points, 1: a few of every model, 2: the rest
    role: str
    phase: str
    batch: int
    tokens: int  # prompt (prefill) or context (decode)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.role, self.phase, self.batch, self.tokens)


def plan(grid: Grid, models: dict[str, str] = MODELS) -> list[Case]:
    """Every case once, in the order they run (see the module docstring); the first model
    gives the training points."""
    cases = [Case(0, next(iter(models)), *t) for t in grid.train]
    cases += [Case(1, role, *t) for role in models for t in grid.first]
    for role in models:
        cases += [Case(2, role, "decode", b, c) for c in grid.contexts for b in grid.decode_batches]
        cases += [
            Case(2, role, "prefill", b, p)
            for p in grid.prompts
            for b in grid.prefill_batches
            if b * p <= grid.max_prefill_tokens
        ]
    seen: set[tuple[str, str, int, int]] = set()
    out = []
    for c in cases:
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out


def _write_config(out: Path, name: str, config: dict[str, Any]) -> str:
    """Write a config.json under out/models; its path relative to `out` (the CSV's model)."""
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "models" / f"{name}.json").write_text(json.dumps(config, indent=2) + "\n")
    return f"models/{name}.json"


def choose_models(
    out: Path, smoke: bool, memory_bytes: float, log: Any, models: dict[str, str] = MODELS
) -> dict[str, tuple[str, ModelSpec]]:
    """role -> (the CSV's model field, spec). A model whose bf16 weights would take more than
    half the device's memory keeps that many layers only, written as its own config."""
    chosen = {}
    for role, model_id in models.items():
        if smoke:
            config = {
                "_wattserve_source": f"gpu_grid --smoke: a tiny stand-in for {model_id}",
                "model_type": "llama",
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 512,
                **SMOKE_MODELS[role],
            }
            ref = _write_config(out, f"smoke-{role}", config)
            chosen[role] = (ref, load_model(str(out / ref)))
            continue
        spec = load_model(model_id)
        weights = spec.weight_bytes("bf16")
        if weights <= memory_bytes / 2:
            chosen[role] = (model_id, spec)
            continue
        layers = max(1, int(spec.num_layers * memory_bytes / 2 / weights))
        text = (resources.files("wattserve") / "data" / "models" / f"{model_id}.json").read_text()
        config = json.loads(text)
        config["num_hidden_layers"] = layers
        config["_wattserve_source"] = (
            f"{config.get('_wattserve_source', model_id)}; gpu_grid kept {layers} of "
            f"{spec.num_layers} layers so that the weights fit this device"
        )
        ref = _write_config(out, f"{model_id}-{layers}layers", config)
        log(f"  {model_id}: {weights / 1e9:.0f} GB of weights: measured with {layers} layers")
        chosen[role] = (ref, load_model(str(out / ref)))
    return chosen


def kv_fits(spec: ModelSpec, case: Case, memory_bytes: float) -> bool:
    """Whether weights, the case's KV cache and a tenth of memory for activations fit."""
    kv = spec.kv_bytes_per_token("bf16") * case.batch * (case.tokens + 1)
    return spec.weight_bytes("bf16") + kv <= 0.9 * memory_bytes


def time_step(step: Any, sync: Any, repeats: int, min_sample_s: float) -> dict[str, Any]:
    """Seconds per step: warm-up, then `repeats` samples, each enough back-to-back steps to
    last `min_sample_s` (the mean of a sample is one reading; the median of them is reported)."""
    step()
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    inner = max(1, min(100, math.ceil(min_sample_s / max(first, 1e-6))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    median = statistics.median(samples)
    return {
        "seconds": median,
        "samples_s": samples,
        "steps_per_sample": inner,
        "spread_pct": 100.0 * (max(samples) - min(samples)) / median,
    }


def measure_energy(step: Any, sync: Any, meter: NvmlMeter, seconds: float, window_s: float) -> Any:
    """Run the step back to back for about `window_s`: mean watts and joules per step."""
    watts, steps = steady_watts(step, sync, meter, seconds, window_s)
    return {
        "watts": watts,
        "energy_j_per_step": meter.energy_j / steps,
        "energy_window_s": meter.seconds,
        "energy_steps": steps,
        "energy_source": meter.energy_source,
        "step_s_in_window": meter.seconds / steps,
        **{k: v for k, v in meter.device_info().items() if k in ("sm_clock_mhz", "temperature_c")},
    }


def step_estimate_s(spec: ModelSpec, hw: Hardware, dtype: str, case: Case) -> float | None:
    """The uncalibrated model's seconds for the case's step (None where it cannot say)."""
    pm = PerfModel(Deployment(spec, hw, dtype=dtype), default_params(hw))  # type: ignore[arg-type]
    if pm.missing:
        return None
    if case.phase == "prefill":
        return pm.prefill(case.batch, case.tokens).time_s
    return pm.decode_step(case.batch, case.tokens).time_s


def case_cost_s(step_s: float | None, repeats: int, window_s: float) -> float:
    """Rough seconds a whole case takes (warm-up, samples, energy window), with margin."""
    if step_s is None:
        return 0.0
    work = (3 + repeats) * max(step_s, 0.002) + (window_s + 2 * step_s if window_s else 0.0)
    return 0.3 + 2.0 * work


class Run:
    """One grid run: the device, its meter and what was measured, written as it goes."""

    def __init__(self, args: argparse.Namespace, torch: Any) -> None:
        self.args = args
        self.torch = torch
        self.out: Path = args.out
        self.started = time.perf_counter()
        self.log_lines: list[str] = []
        self.cases: list[Case] = []
        self.meta: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat()}
        self.rows: list[Measurement] = []

    def log(self, text: str) -> None:
        line = f"[{time.perf_counter() - self.started:6.1f}s] {text}"
        print(line, flush=True)
        self.log_lines.append(line)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def free(self) -> None:
        if self.args.device == "cuda":
            self.torch.cuda.empty_cache()

    def write(self) -> None:
        if self.rows:
            write_measurements(self.out / "measurements.csv", self.rows)
        doc = {
            **self.meta,
            "elapsed_s": round(self.elapsed(), 2),
            "cases": [{**asdict(c), "result": c.result} for c in self.cases],
        }
        (self.out / "grid.json").write_text(json.dumps(doc, indent=1) + "\n")
        (self.out / "summary.txt").write_text(summary(doc) + "\n")


def summary(doc: dict[str, Any]) -> str:
    lines = [
        f"gpu_grid {doc['started']}: {doc.get('device', {}).get('name', '?')} "
        f"({doc.get('hardware_id', '?')}), {doc['elapsed_s']:.0f} s of a "
        f"{doc.get('budget_s', 0):.0f} s budget",
        f"power: {doc.get('power', '?')}; idle {doc.get('idle_w') or 'unknown'} W",
        f"micro: {doc.get('micro', {})}",
    ]
    lines += [f"note: {n}" for n in doc.get("notes", [])]
    done = [c for c in doc["cases"] if "seconds" in c["result"]]
    skipped = [c for c in doc["cases"] if "skipped" in c["result"]]
    lines.append(f"{len(done)} cases measured, {len(skipped)} skipped")
    lines.append("tier role   phase    batch tokens      ms  spread    W   J/step  mode")
    for c in doc["cases"]:
        r = c["result"]
        head = f"{c['tier']:4} {c['role']:6} {c['phase']:7} {c['batch']:6} {c['tokens']:6}"
        if "seconds" in r:
            w, j = r.get("watts"), r.get("energy_j_per_step")
            lines.append(
                f"{head} {r['seconds'] * 1e3:8.3f} {r['spread_pct']:6.1f}% "
                + (f"{w:5.0f} {j:8.4f}" if w is not None else "    -        -")
                + f"  {r['mode']}"
            )
        elif "skipped" in r:
            lines.append(f"{head}  skipped: {r['skipped']}")
    return "\n".join(lines)


def _versions(torch: Any) -> dict[str, Any]:
    try:
        commit = subprocess.run(  # "-dirty" where the tree that ran differs from the commit
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "wattserve_commit": commit or "unknown",
    }


def open_device(run: Run) -> tuple[str, Catalog, float, NvmlMeter | None, str]:
    """Micro-benchmarks and the catalog entry; (hardware id, catalog, memory bytes, meter,
    what the meter is or why there is none)."""
    torch, args = run.torch, run.args
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        name, memory = props.name, float(props.total_memory)
        run.meta["device"] = {
            "name": name,
            "memory_gb": memory / 1e9,
            "sms": props.multi_processor_count,
        }
        meter, power = NvmlMeter.open(0)
    else:
        name, memory = platform.processor() or platform.machine(), 64e9
        run.meta["device"] = {"name": f"CPU ({name}, {os.cpu_count()} CPUs)", "memory_gb": 64}
        meter, power = None, "no NVML on the CPU: energy unknown"
    small = args.smoke
    figures = {
        "peak_tflops": micro.torch_matmul_tflops(args.device, n=512 if small else 8192),
        "mem_bw_gbps": micro.torch_copy_gbps(args.device, megabytes=32 if small else 4096),
        "memory_gb": memory / 1e9,
    }
    run.meta["micro"] = {k: round(v, 3) for k, v in figures.items()}
    run.log(f"{name}: {figures['peak_tflops']:.3g} TFLOPS, {figures['mem_bw_gbps']:.0f} GB/s")
    hw_id = catalog_gpu(name)
    catalog = load_catalog()
    if hw_id is None or args.device != "cuda":
        category, hw_id = ("gpu", "local-gpu") if args.device == "cuda" else ("cpu", "local-cpu")
        dtype = "bf16" if args.device == "cuda" else "fp32"
        path = run.out / f"hardware-{category}.yaml"
        source = f"measured by benchmarks/gpu_grid.py ({name}) {dt.date.today().isoformat()}"
        path.write_text(hardware_yaml(hw_id, name, category, dtype, dict(figures), source))
        catalog = load_catalog([path])
        run.meta["hardware_file"] = path.name
    run.meta["hardware_id"] = hw_id
    if meter is not None:
        run.meta["device"].update(meter.device_info())
    return hw_id, catalog, memory, meter, power


def measure(run: Run) -> None:
    args = run.args
    hw_id, catalog, memory, meter, power = open_device(run)
    run.meta["power"] = power
    missing = meter is None and args.device == "cuda"
    run.log(f"{'MISSING: energy (nvidia-ml-py), times only; ' if missing else ''}power: {power}")
    if meter is not None:
        meter.start()
        time.sleep(2.0)
        run.meta["idle_w"] = round(meter.stop(), 1)
        run.meta["idle_source"] = meter.energy_source
        run.log(f"idle: {run.meta['idle_w']} W")
    else:
        run.meta["idle_w"] = None
    from wattserve.profile.backends import TorchBackend
    from wattserve.profile.decoder import SyntheticDecoder

    hw = catalog.device(hw_id)
    models = choose_models(run.out, args.smoke, memory, run.log, args.models)
    run.meta["models"] = {role: ref for role, (ref, _) in models.items()}
    run.cases = plan(SMOKE_GRID if args.smoke else GPU_GRID, args.models)
    window = 0.0 if meter is None else args.energy_window_s
    dtype = "bf16" if args.device == "cuda" else "fp32"
    dec: Any = None
    built = ""
    for case in run.cases:
        ref, spec = models[case.role]
        predicted = step_estimate_s(spec, hw, dtype, case)
        need = case_cost_s(predicted, args.repeats, window)
        if not kv_fits(spec, case, memory):
            case.result = {"skipped": "weights and KV cache would not fit the device's memory"}
        elif run.elapsed() + need > args.budget_s:
            case.result = {"skipped": f"budget: needs about {need:.0f} s"}
        else:
            try:
                if built != case.role:
                    dec = None
                    run.free()
                    run.log(f"building {ref} ({spec.total_params / 1e9:.2f}B params, random)")
                    be = TorchBackend(args.device, seed=0)
                    dec = SyntheticDecoder(spec, be, expert_layout=args.expert_layout)
                    built = case.role
                case.result = run_case(run, dec, case, meter, window)
            except Exception as exc:  # out of memory, a failed kernel: record it and go on
                case.result = {"skipped": f"error: {type(exc).__name__}: {str(exc)[:300]}"}
                dec, built = None, ""
                run.free()
        r = case.result
        if "seconds" in r:
            run.rows.append(
                Measurement(
                    model=ref,
                    hardware=hw_id,
                    count=1,
                    tensor_parallel=1,
                    dtype=dtype,  # type: ignore[arg-type]
                    phase=case.phase,  # type: ignore[arg-type]
                    batch=case.batch,
                    prompt_tokens=case.tokens,
                    context_tokens=case.tokens,
                    seconds=r["seconds"],
                    watts=r.get("watts"),
                    line=len(run.rows) + 2,
                )
            )
            r["csv_line"] = len(run.rows) + 1
            r["predicted_uncalibrated_s"] = predicted
            run.log(
                f"{case.role:5} {case.phase:7} b{case.batch:<4} n{case.tokens:<6} "
                f"{r['seconds'] * 1e3:9.3f} ms ±{r['spread_pct']:.1f}% {r['mode']}"
                + (f" {r['watts']:.0f} W {r['energy_j_per_step']:.4f} J" if "watts" in r else "")
            )
        else:
            run.log(f"skip {case.key}: {r['skipped']}")
        run.write()


def run_case(run: Run, dec: Any, case: Case, meter: NvmlMeter | None, window: float) -> Any:
    """Time one case (and its energy). On a GPU, every step PyTorch can record runs as a CUDA
    graph (a dense model's steps; an MoE's too when its grouped multiply runs), and a decode
    is timed with both decode attentions, the faster kept (an engine picks its kernel)."""
    be = dec.be
    graphs = run.args.graphs and be.device.type == "cuda"

    def make() -> tuple[Any, str]:
        if case.phase == "prefill":
            step = dec.prefill_step(case.batch, case.tokens)
        else:
            step = dec.decode_step(case.batch, case.tokens)
        if not graphs:
            return step, "eager"
        step, how = dec.recorded(step)
        return step, ("cuda-graph" if how == "graph" else how)

    experts = ""
    if dec.spec.is_moe:
        experts = ", experts: " + ("one grouped multiply" if dec.grouped else "a loop")
    variants = ("matmul", "sdpa") if case.phase == "decode" else ()
    timed: dict[str, Any] = {}
    for name in variants:
        be.decode_attention = name
        try:
            step, mode = make()
            timed[name] = time_step(step, be.sync, run.args.repeats, run.args.min_sample_s)
            timed[name]["mode"] = mode
        except RuntimeError as exc:  # a kernel this PyTorch lacks: the other one stands
            if out_of_memory(exc):
                raise
            timed[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    if timed:
        ok = {k: v for k, v in timed.items() if "seconds" in v}
        if not ok:
            raise RuntimeError(f"no decode attention ran: {timed}")
        best = min(ok, key=lambda k: ok[k]["seconds"])
        be.decode_attention = best
        result = dict(ok[best])
        result["decode_attention"] = best
        result["attention_variants_s"] = {
            k: v.get("seconds", v.get("error")) for k, v in timed.items()
        }
        step = make()[0] if meter is not None else None  # the winner again, for its energy
    else:
        step, mode = make()
        result = time_step(step, be.sync, run.args.repeats, run.args.min_sample_s)
        result["mode"] = mode
    result["mode"] += experts
    if meter is not None and step is not None:
        result.update(measure_energy(step, be.sync, meter, result["seconds"], window))
    return result


def print_plan(args: argparse.Namespace, hw: Hardware) -> None:
    memory = (hw.value("memory_gb") or 80.0) * 1e9
    total = 0.0
    for case in plan(GPU_GRID, args.models):
        spec = load_model(args.models[case.role])
        step_s = step_estimate_s(spec, hw, "bf16", case)
        cost = case_cost_s(step_s, args.repeats, args.energy_window_s)
        fits = kv_fits(spec, case, memory)
        total += cost if fits else 0.0
        print(
            f"{case.tier} {case.role:5} {case.phase:7} b{case.batch:<4} n{case.tokens:<6} "
            + (
                f"step {step_s * 1e3:8.2f} ms  case {cost:5.1f} s  total {total:6.0f} s"
                if fits and step_s
                else "does not fit: skipped"
            )
        )


def _model_ids(text: str) -> dict[str, str]:
    """`--models a,b,c`: built-in models (ids or their Hugging Face aliases), each once; the
    built-in id is both role and model."""
    ids = []
    for name in text.split(","):
        model_id = builtin_model_id(name.strip())
        if model_id is None:
            raise argparse.ArgumentTypeError(
                f"{name.strip()!r} is no built-in model (`wattserve models` lists them)"
            )
        ids.append(model_id)
    if len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"{text!r} names a model twice")
    return {model_id: model_id for model_id in ids}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=os.environ.get("OUT"))
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny models and shapes (seconds)")
    ap.add_argument("--budget-s", type=float, default=400.0)
    ap.add_argument("--repeats", type=int, help="samples per case (default 5; smoke 3)")
    ap.add_argument("--min-sample-s", type=float, default=0.01)
    ap.add_argument("--energy-window-s", type=float, default=1.0)
    ap.add_argument("--no-graphs", dest="graphs", action="store_false")
    ap.add_argument(
        "--expert-layout",
        choices=("in_out", "out_in"),
        default="in_out",
        help="how the MoE's stacked expert weights lie in memory (SyntheticDecoder)",
    )
    ap.add_argument(
        "--models",
        type=_model_ids,
        default=MODELS,
        metavar="ID,ID,...",
        help="catalog models to measure instead of the four (the first gives the training "
        "points): held-out models for a calibration fitted on another run",
    )
    ap.add_argument(
        "--plan",
        metavar="HW",
        help="print the cases in order with their estimated cost on "
        "catalog hardware HW (e.g. h200-sxm), measure nothing",
    )
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (3 if args.smoke else 5)
    if args.smoke and args.models is not MODELS:
        ap.error("--smoke measures its own tiny stand-ins: --models does not apply")
    if args.plan:
        print_plan(args, load_catalog().device(args.plan))
        return 0
    if args.out is None:
        print("MISSING: an output folder: pass --out DIR or set $OUT", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import torch
    except ImportError as exc:
        print(f"MISSING: PyTorch ({exc}); nothing measured", file=sys.stderr)
        return 3
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"MISSING: a CUDA device (torch {torch.__version__} sees none)", file=sys.stderr)
        return 4
    run = Run(args, torch)
    run.meta.update(
        smoke=args.smoke,
        budget_s=args.budget_s,
        versions=_versions(torch),
        argv=sys.argv[1:],
        notes=[
            "synthetic decoder (wattserve.profile.decoder): exact shapes, random weights",
            "prefill attention: torch scaled_dot_product_attention (causal)",
            "CUDA graphs for every step where --graphs (default): dense models, and the MoE"
            " when PyTorch's grouped multiply runs on it (else its expert loop, eagerly)",
            "decode attention: grouped matmuls and PyTorch's fused kernel both timed, the"
            " faster kept (decode_attention, attention_variants_s)",
            "MoE: top-k router with a random preference per token outweighing it (even"
            " routing, as trained routers; SyntheticDecoder.route_bias); tokens sorted by"
            " expert, one grouped multiply per weight, reading only the experts chosen;"
            f" expert weights laid out {args.expert_layout}",
            "RMSNorm fused (torch rms_norm); gate and up projections as one matrix",
            "seconds: median of --repeats samples, each the mean of back-to-back steps",
        ],
    )
    torch.manual_seed(0)
    if args.device == "cpu":  # one thread: on a shared CPU, more spin against other jobs
        torch.set_num_threads(1)
    with torch.inference_mode():
        measure(run)
    measured = sum("seconds" in c.result for c in run.cases)
    run.log(f"done: {measured} of {len(run.cases)} cases measured, in {run.elapsed():.0f} s")
    run.write()
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
