"""`wattserve bench` against real servers on loopback: the gateway, the package's fake backend,
a server that is not OpenAI's, nothing at all, and a gateway killed mid-run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import Result as Result_
from serving import FAST_FLEET, gateway
from typer.testing import CliRunner

from wattserve.bench import BenchOptions
from wattserve.bench import run_bench as replay_bench
from wattserve.bench.client import Result as BenchResult
from wattserve.bench.client import take_usage
from wattserve.bench.prompts import Calibration, fit
from wattserve.cli.app import app
from wattserve.core.workload import load_workload
from wattserve.errors import BenchError
from wattserve.serve.net import free_port

_FIELDS = (
    "duration completed failed total_input_tokens total_output_tokens request_throughput "
    "request_goodput output_throughput total_token_throughput mean_ttft_ms median_ttft_ms "
    "p99_ttft_ms mean_tpot_ms median_tpot_ms p99_tpot_ms mean_itl_ms median_itl_ms p99_itl_ms "
    "mean_e2el_ms median_e2el_ms p99_e2el_ms input_lens output_lens ttfts itls errors"
)
VLLM_FIELDS = _FIELDS.split()


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattserve", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mooncake(path: Path, rows: list[tuple[int, int, int]]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"timestamp": t, "input_length": i, "output_length": o, "hash_ids": [1]})
            + "\n"
            for t, i, o in rows
        )
    )
    return path


@contextlib.contextmanager
def process(*cmd: str, ready: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(ready, timeout=1)
                break
            assert time.monotonic() < deadline, f"{cmd} did not start"
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with gateway(tmp_path_factory.mktemp("gw"), FAST_FLEET, "--policy", "least_loaded") as s:
        yield s


def test_mooncake_rows_are_read_in_milliseconds(tmp_path: Path) -> None:
    trace = mooncake(tmp_path / "m.jsonl", [(0, 100, 10), (1500, 200, 20)])
    with trace.open("a") as f:
        f.write('{"timestamp": 9, "input_length": 2.5, "output_length": 3}\n')
        f.write('{"timestamp": 9, "input_length": 3}\n')
    wl = load_workload(trace, default_model="m")
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in wl.requests] == [
        (0.0, 100, 10),
        (1.5, 200, 20),
    ]
    assert [row for row, _ in wl.bad_rows] == [3, 4]
    assert "whole numbers" in wl.bad_rows[0][1] and "output_length" in wl.bad_rows[1][1]


def test_prompt_calibration_inverts_the_servers_count() -> None:
    cal = fit([(16, 18), (144, 146)])  # the gateway: 4 characters a token, "user: " in front
    assert cal.measured and cal.slope == 1.0 and cal.offset == 2.0
    assert cal.words_for(100) == 98 and cal.words_for(1) == 1
    assert fit([(16, 8), (144, 8)]) == Calibration()  # a server that counts nothing


def test_counts_the_gateway_guessed_are_not_taken_as_counts() -> None:
    res = BenchResult(0, 0, 0.0, 100, 10)
    usage = {"prompt_tokens": 130, "completion_tokens": 9}
    take_usage(res, {**usage, "wattserve": {"prompt_tokens_estimated": True}})
    assert res.usage_prompt_tokens is None and res.input_len == 100  # nominal, not the guess
    assert res.output_len == 9  # counted in the stream's chunks, as bench counts them
    take_usage(res, {**usage, "wattserve": {"prompt_tokens_estimated": False}})
    assert res.usage_prompt_tokens == 130
    take_usage(res := BenchResult(0, 0, 0.0, 100, 10), {**usage, "wattserve": "junk"})
    assert res.usage_prompt_tokens == 130 and res.backend is None  # another server's field


def test_bench_against_the_gateway(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = [(i * 40, 40 + 7 * i, 3 + i % 5) for i in range(16)]
    trace = mooncake(tmp_path / "m.jsonl", rows)
    out, report = tmp_path / "r.json", tmp_path / "r.html"
    r = bench(
        "--url", server.url, "--trace", str(trace), "--out", str(out), "--report", str(report),
        "--carbon-g-per-kwh", "dc=400", "--carbon-g-per-kwh", "300", "--seed", "3",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Successful requests:" in r.stdout and "Traceback" not in r.stderr
    res = json.loads(out.read_text())
    assert all(k in res for k in VLLM_FIELDS)
    assert res["completed"] == 16 and res["failed"] == 0
    # exact lengths: prompts built to the count, outputs held to max_tokens
    assert res["input_lens"] == [i for _, i, _ in rows]
    assert res["output_lens"] == [o for _, _, o in rows]
    assert res["total_output_tokens"] == sum(o for _, _, o in rows)
    # the emulated engines' prompt counts are the gateway's guess (marked so): not a count to
    # size prompts by
    assert not res["prompt_calibration"]["measured"] and res["exact_output"]
    assert any("prompt lengths are nominal" in n for n in res["notes"])
    assert 0 < res["median_ttft_ms"] <= res["p99_ttft_ms"] and res["mean_itl_ms"] > 0
    assert res["ttft_s"]["p50"] == pytest.approx(res["median_ttft_ms"] / 1e3)
    assert res["usd_per_mtok"] > 0 and res["energy_j_per_token"] > 0 and res["gco2"] > 0
    assert sum(d["share"] for d in res["deployments"].values()) == pytest.approx(1.0)
    assert set(res["sites"]) <= {"dc", "edge"} and res["slo_attainment"] == 1.0
    page = report.read_text()
    assert "uPlot" in page and "ws-chart" in page and "Time to first token" in page


def test_bench_fake_backend_closed_loop_without_streaming(tmp_path: Path) -> None:
    port = free_port()
    csv = tmp_path / "azure.csv"
    csv.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        + "".join(f"2023-11-16 18:15:{i:02d}.000000,{100 + i},{5}\n" for i in range(40))
        + "2023-11-16 18:16:00.000000,x,5\n"
    )
    with process(
        sys.executable, "-m", "wattserve.serve.fake", "--port", str(port),
        ready=f"http://127.0.0.1:{port}/v1/models",
    ):  # fmt: skip
        r = bench(
            "--url", f"http://127.0.0.1:{port}/v1", "--trace", str(csv), "--request-rate", "inf",
            "--concurrency", "4", "--no-stream", "--max-requests", "30", "--json",
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["completed"] == 30 and res["max_concurrency"] == 4 and res["request_rate"] == "inf"
    assert res["mean_ttft_ms"] is None and res["mean_e2el_ms"] > 0  # no stream, no TTFT
    assert res["total_output_tokens"] == 60  # the fake's own usage: 2 tokens each
    assert res["usd_per_mtok"] is None and res["deployments"] == {}
    assert "1 malformed trace rows skipped" in r.stderr and "line 42" in r.stderr


def test_unreachable_url_is_one_clear_line(tmp_path: Path) -> None:
    trace = mooncake(tmp_path / "m.jsonl", [(0, 10, 2)])
    r = bench("--url", f"http://127.0.0.1:{free_port()}", "--trace", str(trace))
    assert r.returncode == 2 and "cannot reach" in r.stderr and "Traceback" not in r.stderr
    assert "/v1: connection refused" in r.stderr  # the reason, not aiohttp's repr


def test_a_server_that_is_not_openai(tmp_path: Path) -> None:
    trace = mooncake(tmp_path / "m.jsonl", [(0, 10, 2)])
    port = free_port()
    with process(
        sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
        "--directory", str(tmp_path), ready=f"http://127.0.0.1:{port}/",
    ):  # fmt: skip
        r = bench("--url", f"http://127.0.0.1:{port}", "--trace", str(trace))
        assert r.returncode == 2 and "OpenAI-compatible" in r.stderr, r.stderr
        r = bench("--url", f"http://127.0.0.1:{port}", "--trace", str(trace), "--model", "x")
        assert r.returncode == 2 and "probe request" in r.stderr and "http_501" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--request-rate", "-1"], "--request-rate"),
        (["--rate-scale", "nan"], "--rate-scale"),
        (["--api-key-env", "WATTSERVE_NO_SUCH_VARIABLE"], "--api-key-env"),
        (["--carbon-g-per-kwh", "dc=lots"], "--carbon-g-per-kwh"),
        (["--carbon-g-per-kwh", "1e308"], "--carbon-g-per-kwh"),  # a 300-digit gCO2 figure
        (["--carbon-g-per-kwh", "a=1,a=2"], "--carbon-g-per-kwh"),  # was site 'a=1,a' = 2
        (["--carbon-g-per-kwh", "=5"], "--carbon-g-per-kwh"),  # was every site's figure
        (["--carbon-g-per-kwh", "dc=\u0661\u0662"], "--carbon-g-per-kwh"),  # Arabic-Indic 12
        (["--endpoint", "embeddings"], "--endpoint"),
    ],
)
def test_bad_flags_name_the_flag(tmp_path: Path, args: list[str], field: str) -> None:
    trace = mooncake(tmp_path / "m.jsonl", [(0, 10, 2)])
    r = bench("--url", "http://127.0.0.1:9", "--trace", str(trace), *args)
    assert r.returncode == 2 and field in r.stderr and "Traceback" not in r.stderr


def test_a_trace_with_only_bad_rows(tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text('{"timestamp": 1}\nnot json\n')
    r = bench("--url", "http://127.0.0.1:9", "--trace", str(trace))
    assert r.returncode == 2 and "no usable requests (2 malformed rows" in r.stderr


def served(url: str) -> float:
    """Requests the gateway has answered, from its /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("wattserve_requests_total{")
    )


def test_the_server_dies_mid_run(tmp_path: Path) -> None:
    trace = mooncake(tmp_path / "m.jsonl", [(i * 50, 30, 4) for i in range(120)])
    out = tmp_path / "r.json"
    with gateway(tmp_path, FAST_FLEET, name="dying") as s:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wattserve", "bench", "--url", s.url, "--trace", str(trace),
             "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while served(s.url) < 12 and time.monotonic() < deadline:  # probes, then some requests
            time.sleep(0.1)
        s.kill()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    res = json.loads(out.read_text())
    assert res["completed"] > 5 and res["failed"] > 0
    assert res["completed"] + res["failed"] + res["not_sent"] == 120
    assert "stopped early: the server stopped answering" in stderr
    assert "requests failed" in stderr and "connect" in res["errors_by_kind"]
    assert "Successful requests:" in stdout


def test_the_server_refuses_mid_run(tmp_path: Path) -> None:
    from wattserve.serve.ledger import Ledger

    ledger = Ledger(tmp_path / "refusing.db")
    user, admin = ledger.create_key("user"), ledger.create_key("ops", admin=True)
    ledger.close()
    trace = mooncake(tmp_path / "m.jsonl", [(i * 50, 30, 4) for i in range(200)])
    out = tmp_path / "r.json"
    with gateway(tmp_path, FAST_FLEET, name="refusing") as s:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wattserve", "bench", "--url", s.url, "--trace", str(trace),
             "--out", str(out), "--api-key-env", "WS_BENCH_KEY"],
            env={**os.environ, "WS_BENCH_KEY": user},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while served(s.url) < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
        for target in ("fast", "edge-small"):  # nothing left to serve: the gateway refuses
            r = httpx.post(
                f"{s.url}/v1/fleet",
                json={"action": "drain", "target": target},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert r.status_code == 200, r.text
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    res = json.loads(out.read_text())
    assert res["completed"] >= 5 and res["failed"] > 0 and res["not_sent"] == 0
    assert any(k.startswith("http_5") for k in res["errors_by_kind"]), res["errors_by_kind"]
    assert "requests failed" in stderr and res["stopped"] is None


def test_carbon_from_the_server_or_from_the_flag() -> None:
    from wattserve.bench.client import Result
    from wattserve.bench.metrics import summarize
    from wattserve.core.workload import SLO

    def done(i: int, carbon_g: float | None) -> Result:
        r = Result(i, i, 0.0, 10, 3, ok=True, ttft_s=0.01, e2e_s=0.05, backend="a/0", site="dc")
        r.energy_j, r.carbon_g, r.usage_completion_tokens = 36.0, carbon_g, 3
        return r

    slos = {"default": SLO()}
    served = summarize([done(0, 0.5), done(1, 0.25)], 1.0, slos)
    assert served["gco2"] == 0.75 and "usage.wattserve.carbon_g" in served["gco2_note"]
    flagged = summarize([done(0, 0.5), done(1, 0.25)], 1.0, slos, {"dc": 100.0})
    assert flagged["gco2"] == pytest.approx(72 / 3.6e6 * 100)  # the flag overrides
    unknown = summarize([done(0, None)], 1.0, slos)
    assert unknown["gco2"] is None and unknown["energy_j"] == 36.0
    # a misspelt site: the note names it rather than advise the flag that was given
    typo = summarize([done(0, None)], 1.0, slos, {"dc-wes": 400.0})
    assert typo["gco2"] is None
    note = typo["gco2_note"]
    assert "no intensity for dc" in note and "dc-wes, a site no answer came from" in note, note


@contextlib.contextmanager
def silent_port() -> Iterator[tuple[socket.socket, str]]:
    """A port that takes connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def run_bench(*args: str) -> Result_:
    return CliRunner().invoke(app, ["bench", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "inf"], "field '--timeout': must be a positive finite number"),
        (["--timeout", "1e9"], "field '--timeout': must be a positive number of at most 86400"),
        (["--ttft-slo", "inf"], "field '--ttft-slo': must be a positive finite number"),
        (["--url", "http://127.0.0.1:99999"], "the port must be a number from 1 to 65535"),
        (["--url", "http://:80"], "field '--url': 'http://:80' names no host"),
        (["--out", "{tmp}"], "field '--out': cannot write {tmp}: a folder"),
        (["--out", "{tmp}/no/r.json"], "field '--out': cannot write {tmp}/no/r.json: no folder"),
        (["--report", "/dev/full"], "field '--report': cannot write /dev/full: not a regular"),
        (["--out", "{tmp}/m.jsonl"], "field '--out': {tmp}/m.jsonl is an input"),
        (["--out", "{tmp}/r", "--report", "{tmp}/r"], "field '--report': {tmp}/r is also --out"),
        (["--trace", "{tmp}/fifo"], "{tmp}/fifo, field '--trace': not a regular file"),
        # a schedule that would wait, in effect, forever (it used to)
        (["--request-rate", "1e-300"], "field '--request-rate': the last request would be sent"),
        # (refused with the trace: its arrivals stretched past the 1e9 s a workload may span)
        (["--rate-scale", "1e-320"], "field '--rate-scale': stretches row 2's arrival to inf s"),
        # the resolver's UnicodeError was a traceback; /v1 went after a query
        (["--url", "http://a..b"], "the host 'a..b' is not a host name"),
        (["--url", f"http://{'a' * 64}.invalid"], "is not a host name"),
        (["--url", "http://127.0.0.1:1?x=1#f"], "without a ?query or #fragment"),
    ],
)
def test_bad_flags_are_refused_before_anything_is_sent(
    tmp_path: Path, args: list[str], message: str
) -> None:
    trace = mooncake(tmp_path / "m.jsonl", [(0, 10, 2), (1000, 10, 2)])
    os.mkfifo(tmp_path / "fifo")
    with silent_port() as (sock, url):
        r = run_bench("--url", url, "--trace", str(trace), *(a.format(tmp=tmp_path) for a in args))
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection was made
            sock.accept()
    assert r.exit_code == 2 and message.format(tmp=tmp_path) in r.stderr, r.stderr


def test_a_port_that_never_answers(tmp_path: Path) -> None:
    trace = mooncake(tmp_path / "m.jsonl", [(0, 10, 2)])
    with silent_port() as (_, url):
        start = time.monotonic()
        r = run_bench("--url", url, "--trace", str(trace), "--timeout", "0.5")
        assert r.exit_code == 2 and f"{url}/v1/models did not answer within 0.5 s" in r.stderr
        # the model list is asked with its own short timeout, not the requests' (600 s here)
        opts = BenchOptions(url=url, timeout_s=600.0, probe_timeout_s=0.3)
        with pytest.raises(BenchError, match=r"did not answer within 0\.3 s"):
            replay_bench(load_workload(trace, default_model="m"), opts)
    assert time.monotonic() - start < 10


def test_sigterm_before_the_run_is_like_ctrl_c(tmp_path: Path) -> None:
    trace = mooncake(tmp_path / "m.jsonl", [(0, 10, 2)])
    with silent_port() as (sock, url):
        proc = subprocess.Popen(
            [sys.executable, "-m", "wattserve", "bench", "--url", url, "--trace", str(trace)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        sock.settimeout(30)
        conn, _ = sock.accept()  # bench is waiting for /v1/models
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        conn.close()
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_full_stdout_is_one_line(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trace = mooncake(tmp_path / "m.jsonl", [(0, 10, 2)])
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            [sys.executable, "-m", "wattserve", "bench", "--url", server.url, "--trace",
             str(trace), "--json"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    assert p.returncode == 1 and "No space left on device" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr


def test_host_names_that_resolve_are_taken_as_aiohttp_encodes_them() -> None:
    """The IDNA 2003 codec refused some hosts that aiohttp (yarl, IDNA 2008) resolves."""
    from wattserve.bench.run import check_url

    for url in ("http://\u0645\u062b\u0627\u06441.com", "http://b\u00fccher.de:9",
                "http://[::1]:9", "http://localhost.:8000", "http://my_host:1"):  # fmt: skip
        check_url(url)
