"""Session 40's fixes from a probe, over real sockets and the real CLI: `serve
--default-max-tokens`, the output a request that sets no limit is held to (it was fixed at 256:
a chat client that sends no max_tokens had every answer cut at 256 tokens, with no way for the
operator to change it); the 400 of a request no replica's KV cache can hold, which blamed the
prompt; `serve --port 0`, which never said its port; and `plan --sites` with deployments, which
it ignored silently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serving import FAST_FLEET, gateway


def _completion_tokens(url: str, **limit: int) -> tuple[int, str]:
    body = {"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "hi"}], **limit}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    return out["usage"]["completion_tokens"], out["choices"][0]["finish_reason"]


def test_a_request_without_a_limit_is_held_to_the_gateways_default(tmp_path: Path) -> None:
    with gateway(tmp_path, FAST_FLEET, "--default-max-tokens", "7") as s:
        assert _completion_tokens(s.url) == (7, "length")  # emulated: runs to its limit
        assert _completion_tokens(s.url, max_tokens=3) == (3, "length")  # the client's wins
        assert _completion_tokens(s.url, max_completion_tokens=4) == (4, "length")
    with gateway(tmp_path, FAST_FLEET, name="gw2") as s:
        assert _completion_tokens(s.url)[0] == 256  # the default, as before


def test_a_default_that_is_no_count_is_refused_naming_the_flag(tmp_path: Path) -> None:
    for bad in ("0", "-5", "nan", "1e9", "many"):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "wattserve",
                "serve",
                "--default-max-tokens",
                bad,
                "--port",
                "0",
                "--db",
                str(tmp_path / "x.db"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 2, (bad, p.returncode, p.stderr)
        assert "--default-max-tokens" in p.stderr, (bad, p.stderr)
        assert "Traceback" not in p.stderr


TIGHT_FLEET = """\
name: tight
sites:
  dc: {kind: datacenter}
deployments:
  h100:
    site: dc
    model: llama-3.1-8b
    hardware: h100-sxm
    gpu_memory_utilization: 0.2
"""


def test_a_request_the_kv_cache_cannot_hold_is_refused_saying_so(tmp_path: Path) -> None:
    """A 2-token prompt asking for 2,000 tokens on a replica whose cache holds 528: the 400
    said the replica 'cannot fit a 2-token prompt in its KV cache' (a probe, 2026-12-06); it
    now gives simulate's reason, with the cache's size, and the output asked for."""
    from wattserve.core.fleet import load_fleet

    fleet = tmp_path / "f.yaml"
    fleet.write_text(TIGHT_FLEET)
    tokens = load_fleet(fleet).deployments[0].kv_blocks * 16
    with gateway(tmp_path, TIGHT_FLEET) as s:
        body = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{s.url}/v1/chat/completions", json=body | {"max_tokens": 2000})
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert f"exceed the KV cache ({tokens} tokens)" in message, message
        assert "up to 2000 output tokens" in message, message
        ok = httpx.post(f"{s.url}/v1/chat/completions", json=body | {"max_tokens": 8}, timeout=60)
        assert ok.status_code == 200, ok.text


def test_port_0_serves_on_a_free_port_and_says_which(tmp_path: Path) -> None:
    """`serve --port 0` printed 'try: curl http://127.0.0.1:0/...', and nothing said which
    port the kernel had picked (a probe found it with ss)."""
    import re
    import signal

    fleet = tmp_path / "f.yaml"
    fleet.write_text(FAST_FLEET)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattserve", "serve", "--fleet", str(fleet), "--port", "0",
         "--db", str(tmp_path / "x.db")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = 0
        for line in proc.stdout:  # the try: line comes once the gateway listens
            if m := re.search(r"curl http://127\.0\.0\.1:(\d+)/", line):
                port = int(m.group(1))
                break
        assert port > 0, port
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)  # and closes its stdout


def test_plan_says_it_does_not_read_a_sites_files_deployments(tmp_path: Path) -> None:
    """A sites file with deployments (gpu_memory_utilization 0.2) planned as if at 0.9,
    silently (a probe, 2026-12-06): plan now says it does not read them."""
    sites = tmp_path / "sites.yaml"
    sites.write_text(TIGHT_FLEET)
    workload = tmp_path / "w.yaml"
    workload.write_text(
        "generator: {kind: poisson, duration_s: 60}\nclasses:\n"
        "  - {name: chat, model: llama-3.1-8b, rate_rps: 1, prompt_tokens: 200, "
        "output_tokens: 50}\n"
    )
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", "plan", "--workload", str(workload), "--sites",
         str(sites), "--hardware", "h100-sxm", "--capacity", "analytic"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "its deployments (h100) are not read" in p.stderr, p.stderr


def test_an_output_file_that_is_also_standard_output_is_refused(tmp_path: Path) -> None:
    """`simulate --json > X --requests-out X` replaced X with the request lines, and the JSON
    printed went to the file it had replaced; exit 0 (a probe, 2026-12-06)."""
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"arrival_s": 0, "prompt_tokens": 100, "output_tokens": 10}\n')
    fleet = tmp_path / "f.yaml"
    fleet.write_text(FAST_FLEET)
    out = tmp_path / "x.json"

    def simulate_into(requests_out: Path) -> subprocess.CompletedProcess[str]:
        with out.open("w") as stdout:  # simulate --json ... > out
            return subprocess.run(
                [sys.executable, "-m", "wattserve", "simulate", "--fleet", str(fleet), "--trace",
                 str(trace), "--json", "--requests-out", str(requests_out)],
                stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120,
            )  # fmt: skip

    p = simulate_into(out)
    assert p.returncode == 2, p.stderr
    assert "--requests-out" in p.stderr and "standard output" in p.stderr, p.stderr
    other = tmp_path / "requests.jsonl"  # another file: as before
    p = simulate_into(other)
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text()) and other.read_text().count("\n") == 1
    p = simulate_into(Path("/dev/stdout"))  # standard output asked for by name: as before
    assert p.returncode == 0, p.stderr


def test_a_request_given_up_on_its_replica_names_the_replica(tmp_path: Path) -> None:
    """simulate --requests-out: a request placed on a replica and given up there at the queue
    limit had no target in its record (a probe's 140 such records), so which replica it
    waited on was not known; refusals before placement still name none."""
    fleet = tmp_path / "f.yaml"
    fleet.write_text(
        "name: q\nsites:\n  dc: {kind: datacenter}\ndeployments:\n  one:\n    site: dc\n"
        "    model: llama-3.1-8b\n    hardware: l4\n    max_num_seqs: 2\n"
    )
    rows = [{"arrival_s": i * 0.01, "prompt_tokens": 3000, "output_tokens": 50} for i in range(30)]
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.jsonl"
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", "simulate", "--fleet", str(fleet), "--trace",
         str(trace), "--max-queue", "3", "--requests-out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    gave_up = [r for r in records if r["reason"].startswith("no first token within")]
    before = [r for r in records if r["reason"].startswith("on every backend")]
    assert gave_up and before, records
    assert all((r["target"], r["site"]) == ("one/0", "dc") for r in gave_up), gave_up
    assert all(r["target"] is None for r in before)


@pytest.mark.parametrize("value", ["0", "-0.1", "0.005", "1.5", ".nan", "'0.9'", "null", "true"])
def test_a_fleets_memory_share_out_of_range_says_the_range(tmp_path: Path, value: str) -> None:
    """0 said 'must be positive', -0.1 'must be non-negative', 0.005 'must be in [0.01, 1]':
    one rule, one message, as the CLI's flag gives it."""
    from wattserve.core.fleet import load_fleet
    from wattserve.errors import ConfigError

    fleet = tmp_path / "f.yaml"
    fleet.write_text(
        TIGHT_FLEET.replace("gpu_memory_utilization: 0.2", f"gpu_memory_utilization: {value}")
    )
    with pytest.raises(ConfigError, match=r"gpu_memory_utilization.*must be in \[0\.01, 1\]"):
        load_fleet(fleet)


def test_estimate_json_says_the_memory_share_it_used() -> None:
    """rank --json gave its gpu_memory_utilization; estimate --json did not (a probe)."""
    from wattserve import estimate

    assert estimate("llama-3.1-8b", "h100-sxm").to_dict()["gpu_memory_utilization"] == 0.9
    e = estimate("llama-3.1-8b", "h100-sxm", gpu_memory_utilization=0.5)
    assert e.to_dict()["gpu_memory_utilization"] == 0.5
    assert estimate("llama-3.1-8b", "groq-cloud").to_dict()["gpu_memory_utilization"] is None


def test_estimate_says_when_its_calibration_predicted_unseen_rows_badly() -> None:
    """calibrate warns when the held-out error of what it writes is over 15%; estimate then
    applied those terms without a word (a probe's fit, 35% held out, gave TPOT 663 ms)."""
    from dataclasses import replace

    from wattserve import estimate
    from wattserve.core.catalog import load_catalog
    from wattserve.core.params import Calibration, default_params

    hw = load_catalog().device("h100-sxm")
    terms = replace(default_params(hw), source="calibrated from x.csv (12 rows)")

    def calibration(held_out: float) -> Calibration:
        return Calibration(
            params={"h100-sxm": terms},
            fit_error={"h100-sxm": {"rows": 12, "loo_mean_abs_pct": held_out}},
        )

    bad = estimate("llama-3.1-8b", "h100-sxm", calibration=calibration(35.2))
    (note,) = [a for a in bad.assumptions if "not fitted on" in a]
    assert "35.2% mean error (over 15%)" in note, note
    good = estimate("llama-3.1-8b", "h100-sxm", calibration=calibration(9.0))
    assert not [a for a in good.assumptions if "not fitted on" in a]
    kept = Calibration(  # nothing fitted: no held-out error, the kept defaults 44% off
        params={"h100-sxm": terms}, fit_error={"h100-sxm": {"rows": 3, "mean_abs_pct": 44.0}}
    )
    notes = estimate("llama-3.1-8b", "h100-sxm", calibration=kept).assumptions
    assert [a for a in notes if "miss its own rows by 44.0%" in a], notes
    other = estimate("llama-3.1-8b", "a100-sxm-80gb", calibration=calibration(35.2))
    assert not [a for a in other.assumptions if "not fitted on" in a]  # not its terms


def test_rank_says_when_a_devices_calibration_predicted_unseen_rows_badly() -> None:
    from dataclasses import replace

    from wattserve import rank
    from wattserve.core.catalog import load_catalog
    from wattserve.core.params import Calibration, default_params

    hw = load_catalog().device("h100-sxm")
    calib = Calibration(
        params={"h100-sxm": replace(default_params(hw), source="calibrated from x.csv")},
        fit_error={"h100-sxm": {"rows": 12, "loo_mean_abs_pct": 35.2}},
    )
    notes = rank("llama-3.1-8b", hardware="h100-sxm,a100-sxm-80gb", calibration=calib).notes
    assert [n for n in notes if "h100-sxm predicted the rows it was not fitted on" in n], notes


def _calibrate_warnings(csv: Path, tmp_path: Path) -> list[str]:
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", "calibrate", str(csv), "-o", str(tmp_path / "c.json")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return [line for line in (p.stdout + p.stderr).splitlines() if "WARNING" in line]


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "measurements-h100-70b.csv"


def test_calibrate_names_a_row_far_from_the_rest(tmp_path: Path) -> None:
    """A row 75x its neighbours' speed (under the 100x refusal) moved eff_compute from 0.6 to
    0.2 with only the generic held-out warning (a probe): the row is now named."""
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    assert "0.020047" in lines[3]
    lines[3] = lines[3].replace("0.020047", "1.5")
    bad = tmp_path / "o.csv"
    bad.write_text("".join(lines))
    warned = [w for w in _calibrate_warnings(bad, tmp_path) if "lie far from" in w]
    assert len(warned) == 1 and "line(s) 4 lie far" in warned[0], warned
    assert not [w for w in _calibrate_warnings(EXAMPLE, tmp_path) if "lie far" in w]


def test_calibrate_names_repeats_of_one_shape_that_disagree(tmp_path: Path) -> None:
    """Three rows of one shape at 1x, 1x and 3x got only the generic held-out warning."""
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    again = lines[1]  # the first row, measured again, the same
    fields = lines[1].rstrip("\n").split(",")
    header = lines[0].rstrip("\n").split(",")
    fields[header.index("seconds")] = repr(3 * float(fields[header.index("seconds")]))
    twice = tmp_path / "twice.csv"
    twice.write_text("".join(lines) + again + ",".join(fields) + "\n")
    n = len(lines)
    warned = [w for w in _calibrate_warnings(twice, tmp_path) if "measure one shape" in w]
    assert len(warned) == 1, warned
    assert f"lines 2, {n + 1}, {n + 2} measure one shape but differ by 3.0x" in warned[0], warned


def test_calibrate_shows_the_path_it_wrote_escaped(tmp_path: Path) -> None:
    """The line after a calibration sent the -o path's escape codes to the terminal raw."""
    odd = tmp_path / "o\x1b[31m\n.json"
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", "calibrate", str(EXAMPLE), "-o", str(odd)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert odd.exists() and "\x1b" not in p.stdout and "o\\x1b[31m\\n.json" in p.stdout


def test_estimate_says_when_its_figures_make_a_step_of_minutes() -> None:
    """A calibration's terms at the ends of their ranges gave TPOT 41,722,830 ms and no word
    from estimate, while simulate refused the same terms (a probe): estimate now says what a
    fleet's replica says, with the same rule (core.plausible.implausible_step)."""
    from dataclasses import replace

    from wattserve import estimate
    from wattserve.core.catalog import load_catalog
    from wattserve.core.params import Calibration, default_params

    hw = load_catalog().device("h100-sxm")
    broken = replace(default_params(hw), gemm_latency_s=1.0, source="edited by hand")
    e = estimate("llama-3.1-8b", "h100-sxm", calibration=Calibration(params={"h100-sxm": broken}))
    (note,) = [a for a in e.assumptions if "one decode step of one sequence" in a]
    assert "(at most 60 s)" in note, note
    assert not [
        a for a in estimate("llama-3.1-8b", "h100-sxm").assumptions if "one decode step" in a
    ]


def test_rank_says_when_a_calibrations_terms_make_a_step_of_minutes() -> None:
    """rank put such a device in its table (TPOT 129 s under a loose SLO) without a word (a
    review): its notes now say what estimate says."""
    from dataclasses import replace

    from wattserve import rank
    from wattserve.core.catalog import load_catalog
    from wattserve.core.params import Calibration, default_params

    hw = load_catalog().device("h100-sxm")
    broken = replace(default_params(hw), gemm_latency_s=1.0, source="edited by hand")
    calib = Calibration(params={"h100-sxm": broken})
    r = rank("llama-3.1-8b", hardware="h100-sxm", calibration=calib, slo_ttft_s=1e4, slo_tpot_s=1e4)
    assert [n for n in r.notes if "one decode step of one sequence" in n], r.notes


@pytest.mark.parametrize(
    ("phase", "prompt", "context", "field"),
    [("decode", "100", "", "context_tokens"), ("prefill", "", "200", "prompt_tokens")],
)
def test_a_row_without_the_field_its_phase_needs_says_which(
    tmp_path: Path, phase: str, prompt: str, context: str, field: str
) -> None:
    """It said "expected a whole number in ASCII digits, got ''" (a probe)."""
    csv = tmp_path / "m.csv"
    csv.write_text(
        "model,hardware,count,tensor_parallel,dtype,phase,batch,prompt_tokens,context_tokens,"
        f"seconds,watts\nllama-3.1-8b,h100-sxm,1,1,bf16,{phase},1,{prompt},{context},0.01,\n"
    )
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", "calibrate", str(csv), "-o", str(tmp_path / "c.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert f"field '{field}': a {phase} row needs its {field}" in p.stderr, p.stderr


def test_port_0_on_every_interface_binds_them_all() -> None:
    """`--host '' --port 0` failed (getaddrinfo of '') where a fixed port listens everywhere."""
    import socket

    from wattserve.cli.serve_cmd import _bind_any_port

    sock = _bind_any_port("", 8)
    try:
        host, port = sock.getsockname()[:2]
        assert port > 0 and host in ("::", "0.0.0.0"), (host, port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            assert client.getpeername()[1] == port  # IPv4 reaches it too
    finally:
        sock.close()


def test_a_memory_reason_without_activations_does_not_count_them() -> None:
    """An SRAM part holds no activation workspace in this model: its reason said '0.0 GB of
    activations (a step of 8192 tokens)'."""
    from wattserve import estimate

    e = estimate("llama-3.1-8b", "groq-lpu", pp=100, batch=1000)
    assert not e.fits and "free beside the weights;" in e.reason, e.reason
