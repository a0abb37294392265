"""How far a sim-to-real p50 moves when the engine runs a few per cent faster or slower
(issue #12 item 8): the elasticity of each window's simulated TTFT and TPOT to the engine's
speed, which bounds how steady a machine must be for one profile to predict a later replay.

It takes the output folder of `benchmarks/sim_to_real.py --out DIR` (its fleet file, its
calibration and its trace windows), makes every engine step `s` times as long (the efficiencies
divided by `s`, the per-step, per-layer, per-sequence and per-kernel costs multiplied by it:
the step time of a one-device engine scales exactly; all-reduces are not scaled), simulates
each window again, and prints each percentile's change against s = 1. Nothing is measured: it
reads what the simulator makes of a speed change.

Run: python benchmarks/sim_speed_sensitivity.py DIR [--scales 0.9,0.95,1.05,1.1]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sim_to_real import MAX_QUEUE_S, WINDOWS  # this directory: on sys.path when run as a script

SCALED_UP = ("overhead_step_s", "overhead_layer_s", "overhead_seq_s", "gemm_latency_s")
SCALED_DOWN = ("eff_compute", "eff_memory")


def scaled(calibration: dict[str, Any], s: float) -> dict[str, Any]:
    """The calibration with every step `s` times as long (compute, memory and overheads)."""
    out = json.loads(json.dumps(calibration))
    for terms in out["hardware"].values():
        for name in SCALED_DOWN:
            terms[name] /= s
        for name in SCALED_UP:
            terms[name] *= s
    return out


def simulate(fleet: Path, trace: Path, rate_scale: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "wattserve", "simulate", "--fleet", str(fleet), "--trace",
           str(trace), "--rate-scale", str(rate_scale), "--json",
           "--max-queue", str(MAX_QUEUE_S)]  # fmt: skip
    result: dict[str, Any] = json.loads(
        subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="the --out folder of benchmarks/sim_to_real.py")
    ap.add_argument("--scales", default="0.9,0.95,1.05,1.1")
    args = ap.parse_args()
    fleet_text = (args.dir / "fleet.yaml").read_text()
    found = re.search(r"calibration: (\S+)", fleet_text)
    if found is None:
        sys.exit(f"{args.dir / 'fleet.yaml'}: no calibration: line")
    calibration = json.loads(Path(found.group(1)).read_text())
    scales = [float(x) for x in args.scales.split(",")]
    print(f"calibration {found.group(1)}; each step s times as long")
    print("| window | s | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, window in WINDOWS.items():
            trace = args.dir / f"{name}.jsonl"
            runs = {}
            for s in [1.0, *scales]:
                cal = Path(tmp) / f"calibration-{s}.json"
                cal.write_text(json.dumps(scaled(calibration, s)))
                fleet = Path(tmp) / f"fleet-{s}.yaml"
                fleet.write_text(fleet_text.replace(found.group(1), str(cal)))
                runs[s] = simulate(fleet, trace, window.rate_scale)
            base = runs[1.0]
            for s in scales:
                cells = []
                for metric in ("ttft_s", "tpot_s"):
                    for p in ("p50", "p99"):
                        v, b = runs[s][metric][p], base[metric][p]
                        cells.append(f"{v:.3g} s, {(v / b - 1) * 100:+.1f}%")
                print(f"| {name} | {s} | " + " | ".join(cells) + " |")
            b = base
            print(
                f"| {name} | 1.0 | {b['ttft_s']['p50']:.3g} s | {b['ttft_s']['p99']:.3g} s | "
                f"{b['tpot_s']['p50']:.3g} s | {b['tpot_s']['p99']:.3g} s |"
            )


if __name__ == "__main__":
    main()
