"""Which of a profile's rounds predicts the replays (issue #12 items 5 and 8): each recorded
sim-to-real run (tests/data/sim_to_real_runs: runs L-T of docs/fidelity.md, 2026-12-04 and -05,
this project's 2-vCPU VM, the real llama.cpp engine) re-fitted from its own profile's rounds
kept as the median and as the fastest, both windows simulated again under today's code, and
each cell compared with the replays that run measured (direct and through the gateway).

Nothing is measured here: the timings are the runs' (`profile.txt`: three rounds of every
case; bench's result files, their per-token gaps left out; runs S and T, whose profiles kept
the fastest round, printed their rounds too). The hardware entry of each run is
rebuilt from the matmul rate and copy bandwidth its profile printed. Run P reused run O's
profile. The gateway replays of L-N and O ran fewer tokens than asked (the `min_tokens` fault
fixed in run P, docs/fidelity.md), so the direct replays are the fair test before P.

Run: python benchmarks/profile_rounds.py [--runs L,M,...]   (about 20 s)
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from wattserve.bench.compare import compare
from wattserve.bench.results import load
from wattserve.calibrate.fit import fit_calibration
from wattserve.calibrate.measurements import Measurement
from wattserve.core.catalog import load_catalog
from wattserve.core.fleet import load_fleet
from wattserve.core.records import RequestRecord
from wattserve.core.workload import load_workload
from wattserve.profile.run import hardware_yaml
from wattserve.simulate import simulate

sys.path.insert(0, str(Path(__file__).parent))
from sim_to_real import FLEET, MAX_QUEUE_S, TARGETS, WINDOWS  # this directory

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "sim_to_real_runs"
RUNS = ("L", "M", "N", "O", "P", "Q", "R", "S", "T")
PROFILE_OF = {"P": "O"}  # run P simulated from run O's profile, as written
ESTIMATORS: dict[str, Callable[[Sequence[float]], float]] = {
    "median": statistics.median,
    "fastest": min,
}
CELLS = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")
ROW = re.compile(r"^ {4}(prefill|decode)\s+tokens\s+(\d+):\s+([\d.]+) ms$", re.M)
FIGURES = re.compile(r"fp32 matmul ([\d.]+) GFLOPS, copy bandwidth ([\d.]+) GB/s")


def rounds(profile: str) -> dict[tuple[str, int], list[float]]:
    """Seconds of every round of every case, as the profile printed them."""
    out: dict[tuple[str, int], list[float]] = {}
    for m in ROW.finditer(profile):
        out.setdefault((m[1], int(m[2])), []).append(float(m[3]) / 1e3)
    return out


def simulated(run: str, estimator: str, tmp: Path) -> dict[str, Path]:
    """Fit the run's profile with `estimator`, simulate each window; the requests files."""
    text = (DATA / PROFILE_OF.get(run, run) / "profile.txt").read_text()
    found = FIGURES.search(text)
    assert found is not None, f"run {run}: no matmul/copy figures in its profile"
    hw = tmp / f"{run}-{estimator}-cpu.yaml"
    figures = {
        "peak_tflops": float(found[1]) / 1e3,
        "mem_bw_gbps": float(found[2]),
        "memory_gb": 25.0,
    }
    source = f"wattserve profile, tests/data/sim_to_real_runs/{run}/profile.txt"
    hw.write_text(hardware_yaml("local-cpu", "AMD EPYC (recorded)", "cpu", "fp32", figures, source))
    catalog = load_catalog([hw])
    keep = ESTIMATORS[estimator]
    rows = [
        Measurement(
            model="smollm2-135m",
            hardware="local-cpu",
            count=1,
            tensor_parallel=1,
            dtype="w4a16",
            phase=phase,  # type: ignore[arg-type]  # "prefill" or "decode", by ROW
            batch=1,
            prompt_tokens=n,
            context_tokens=n,
            seconds=keep(ts),
            watts=None,
            line=i,
        )
        for i, ((phase, n), ts) in enumerate(sorted(rounds(text).items()), start=2)
    ]
    calib, _ = fit_calibration(rows, catalog, logits_all=True)
    cal = tmp / f"{run}-{estimator}-cal.json"
    cal.write_text(calib.dumps())
    fleet_path = tmp / f"{run}-{estimator}-fleet.yaml"
    fleet_path.write_text(FLEET.format(hardware=hw, calibration=cal))
    out = {}
    for name, w in WINDOWS.items():
        fleet = load_fleet(fleet_path)
        wl = load_workload(DATA / f"{name}.jsonl", default_model="smollm2-135m",
                           rate_scale=w.rate_scale)  # fmt: skip
        records: list[RequestRecord] = []
        simulate(fleet, wl, "least_loaded", max_queue_s=MAX_QUEUE_S, on_request=records.append)
        path = out[name] = tmp / f"{run}-{estimator}-{name}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r.as_json()) + b"\n" for r in records))
    return out


def cells(run: str, estimator: str, tmp: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(window, path) -> the relative error of each cell, (simulated - measured) / measured."""
    sims = simulated(run, estimator, tmp)
    out: dict[tuple[str, str], dict[str, float]] = {}
    for name, sim in sims.items():
        b = load(sim).figures
        for path in ("direct", "gateway"):
            a = load(DATA / run / f"{name}-{path}.json").figures
            rows = {r["metric"]: r["error"] for r in compare(a, b)}
            out[name, path] = {c: rows[c] for c in CELLS}
    return out


def met(metric: str, err: float) -> bool:
    return abs(err) <= TARGETS["p50" if "p50" in metric else "p99"]


def table(runs: Sequence[str]) -> dict[str, Any]:
    """Every run's cells under each estimator, and the totals."""
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            results[run] = {e: cells(run, e, Path(tmp)) for e in ESTIMATORS}
    return results


def totals(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per estimator: cells met (all, direct) and the heavy window's direct TTFT p50 errors."""
    out: dict[str, dict[str, Any]] = {
        e: {"all": 0, "direct": 0, "heavy_ttft": []} for e in ESTIMATORS
    }
    for by_estimator in results.values():
        for e, cells_ in by_estimator.items():
            for (window, path), errs in cells_.items():
                n = sum(met(c, v) for c, v in errs.items())
                out[e]["all"] += n
                out[e]["direct"] += n if path == "direct" else 0
                if (window, path) == ("heavy", "direct"):
                    out[e]["heavy_ttft"].append(errs["ttft_p50_s"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=",".join(RUNS))
    args = ap.parse_args()
    runs = args.runs.split(",")
    results = table(runs)
    print("| run | window | path | kept | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        for e in ESTIMATORS:
            for (window, path), errs in results[run][e].items():
                shown = [f"{100 * v:+.1f}%" + ("" if met(c, v) else " (missed)")
                         for c, v in errs.items()]  # fmt: skip
                print(f"| {run} | {window} | {path} | {e} | " + " | ".join(shown) + " |")
    cells_all = 16 * len(runs)
    for e, t in totals(results).items():
        heavy = t["heavy_ttft"]
        print(
            f"{e}: {t['all']} of {cells_all} cells met, {t['direct']} of {cells_all // 2} on "
            f"the direct replays; heavy direct TTFT p50 mean |error| "
            f"{100 * statistics.mean(map(abs, heavy)):.1f}% (signed "
            f"{100 * statistics.mean(heavy):+.1f}%)"
        )


if __name__ == "__main__":
    main()
