"""`simulate --requests-out`: one JSON line per request, and `compare` pairing it with a real
replay request by request."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from wattserve.bench.client import Result
from wattserve.bench.compare import paired, per_request, records_result
from wattserve.bench.metrics import summarize
from wattserve.core.fleet import load_fleet
from wattserve.core.records import RequestRecord, parse_record
from wattserve.core.workload import SLO, Request, Workload, load_workload
from wattserve.simulate import simulate

REPO = Path(__file__).resolve().parent.parent
HETERO = REPO / "examples" / "fleet-hetero.yaml"
FIELDS = {
    "id", "row", "policy", "arrival_s", "admitted_s", "first_token_s", "end_s",
    "prompt_tokens", "output_tokens", "target", "site", "preemptions", "status", "reason",
    "ttft_s", "tpot_s", "e2e_s",
}  # fmt: skip


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattserve", *args], capture_output=True, text=True, timeout=300
    )


def trace_file(tmp_path: Path) -> Path:
    """20 requests for the fleet's model and one for a model no deployment serves."""
    lines = [
        {"arrival_s": 0.05 * i, "prompt_tokens": 200 + 10 * i, "output_tokens": 1 + 3 * i}
        for i in range(20)
    ]
    lines.insert(7, {"arrival_s": 0.33, "prompt_tokens": 10, "output_tokens": 5, "model": "x"})
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in lines))
    return path


def test_one_line_per_request_with_what_happened(tmp_path: Path) -> None:
    trace = trace_file(tmp_path)
    out = tmp_path / "requests.jsonl"
    p = cli("simulate", "--fleet", str(HETERO), "--trace", str(trace), "--model",
            "llama-3.1-8b", "--requests-out", str(out), "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == summary["requests"] == 21
    assert all(set(o) == FIELDS for o in lines)
    by_row = {o["row"]: o for o in lines}
    assert sorted(by_row) == list(range(1, 22))  # the trace's lines
    refused = by_row[8]
    assert refused["status"] == "rejected" and refused["reason"] == "no deployment serves x"
    assert refused["ttft_s"] is None and refused["target"] is None
    done = [o for o in lines if o["status"] == "ok"]
    assert len(done) == summary["completed"] == 20
    for o in done:
        assert o["arrival_s"] <= o["first_token_s"] <= o["end_s"]
        assert o["ttft_s"] == pytest.approx(o["first_token_s"] - o["arrival_s"])
        assert o["e2e_s"] == pytest.approx(o["end_s"] - o["arrival_s"])
        assert o["target"].split("/")[0] in summary["deployments"] or o["admitted_s"] is None
        if o["output_tokens"] == 1:
            assert o["tpot_s"] is None
    for metric in ("ttft_s", "tpot_s", "e2e_s"):  # the same requests as the summary's figures
        values = [o[metric] for o in done if o[metric] is not None]
        for q in (50, 99):
            assert float(np.percentile(values, q)) == pytest.approx(summary[metric][f"p{q}"])
    engines = [o for o in done if o["admitted_s"] is not None]
    assert engines and all(o["arrival_s"] <= o["admitted_s"] <= o["first_token_s"] for o in engines)


def test_compare_reads_the_requests_file_and_pairs_by_trace_row(tmp_path: Path) -> None:
    trace = trace_file(tmp_path)
    sim_json, sim_lines = tmp_path / "sim.json", tmp_path / "sim.jsonl"
    p = cli("simulate", "--fleet", str(HETERO), "--trace", str(trace), "--model",
            "llama-3.1-8b", "--requests-out", str(sim_lines), "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    sim_json.write_text(p.stdout)
    # a "measurement" of the same requests, 20% slower than simulated, one of them failed
    recs = [json.loads(line) for line in sim_lines.read_text().splitlines()]
    results = []
    for i, o in enumerate(sorted(recs, key=lambda o: o["id"])):
        r = Result(o["id"], o["row"], o["arrival_s"], o["prompt_tokens"], o["output_tokens"])
        if o["status"] == "ok":
            r.ok, r.ttft_s, r.e2e_s = True, 1.2 * o["ttft_s"], 1.2 * o["e2e_s"]
            r.usage_completion_tokens = o["output_tokens"]
        else:
            r.fail("http_404", "no such model")
        if i == 3:
            r.fail("timeout", "no answer")
        results.append(r)
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps({"tool": "wattserve bench", **summarize(results, 10.0, {"default": SLO()})})
    )
    c = cli("compare", str(bench), str(sim_lines), "--json")
    assert c.returncode == 0, c.stderr
    data = json.loads(c.stdout)
    assert data["b"]["kind"] == "requests"
    pairs = {r["metric"]: r for r in data["per_request"]}
    assert pairs["ttft_s"]["pairs"] == 19 and pairs["ttft_s"]["by"] == "trace row"
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        assert pairs[metric]["median_error"] == pytest.approx(1 / 1.2 - 1)
    rows = {r["metric"]: r for r in data["rows"]}
    assert rows["completed"]["b"] == 20 and rows["failed"]["b"] == 1
    # the requests file's percentiles are the simulation's own
    j = cli("compare", str(sim_json), str(sim_lines), "--json")
    for r in json.loads(j.stdout)["rows"]:
        if r["metric"].endswith(("_p50_s", "_p99_s")):
            assert r["b"] == pytest.approx(r["a"]), r
    text = cli("compare", str(bench), str(sim_lines)).stdout
    assert "paired by trace row" in text and "tpot_s" in text


def test_requests_pair_by_position_without_trace_rows() -> None:
    recs = [
        RequestRecord(i, 0, float(i), 10, 3, first_token_s=i + 0.1, end_s=i + 0.3) for i in range(5)
    ]
    other = [
        RequestRecord(i, 0, float(i), 10, 3, first_token_s=i + 0.2, end_s=i + 0.5) for i in range(5)
    ]
    rows = {r["metric"]: r for r in paired(per_request(records_result(recs)),
                                           per_request(records_result(other)))}  # fmt: skip
    assert rows["ttft_s"]["by"] == "position" and rows["ttft_s"]["pairs"] == 5
    assert rows["ttft_s"]["median_error"] == pytest.approx(1.0)
    assert rows["tpot_s"]["median_error"] == pytest.approx(0.5)


def test_hosted_and_power_refused_requests_are_written(tmp_path: Path) -> None:
    fleet = load_fleet(HETERO)
    reqs = [Request(i, 0.01 * i, 300, 50, "llama-3.1-8b", row=i + 1) for i in range(400)]
    got: list[RequestRecord] = []
    report, _ = simulate(fleet, Workload(reqs, {"default": SLO()}), "slo", on_request=got.append)
    assert len(got) == len(reqs) == len({r.row for r in got})
    assert sum(r.status == "ok" for r in got) == report["completed"] == len(reqs)
    assert not any("cap_note" in site for site in report["sites"].values())  # caps that admit
    served = {n for n, d in report["deployments"].items() if d["requests"]}
    assert {r.target.split("/")[0] for r in got if r.target} == served
    hosted = [r for r in got if r.target == "groq-8b"]
    assert len(hosted) == report["deployments"]["groq-8b"]["requests"] > 0
    for r in hosted:
        assert r.site == "groq" and r.arrival_s <= r.admitted_s <= r.first_token_s <= r.end_s  # type: ignore[operator]
    # a cap under what one busy H100 draws: every request waits for power, then is refused
    tight = tmp_path / "tight.yaml"
    tight.write_text(
        "sites:\n  dc: {kind: datacenter, power_cap_w: 300}\n"
        "deployments:\n  h100: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}\n"
    )
    got = []
    report, _ = simulate(
        load_fleet(tight), Workload(reqs[:50], {"default": SLO()}), "least_loaded",
        max_wait_s=0.5, on_request=got.append,
    )  # fmt: skip
    assert len(got) == 50 and report["rejected"] == 50
    assert all(
        (r.status, r.reason, r.end_s, r.target) == ("rejected", "site power cap", None, None)
        for r in got
    )
    # and the report says why: the cap leaves less above idle than one request adds
    note = report["sites"]["dc"]["cap_note"]
    assert "leaves" in note and "on h100: no request can start there" in note, note


def test_a_cap_note_names_the_models_that_cannot_start(tmp_path: Path) -> None:
    # the MoE on the A100 would fit under 500 W, the 8B on the H100 would not: the requests
    # for the 8B are all refused, and the note says which model and why
    fleet = tmp_path / "two.yaml"
    fleet.write_text(
        "sites:\n  dc: {kind: datacenter, power_cap_w: 500}\n"
        "deployments:\n"
        "  h100: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}\n"
        "  moe: {site: dc, model: qwen1.5-moe-a2.7b, hardware: a100-sxm-80gb}\n"
    )
    reqs = [Request(i, 0.01 * i, 300, 50, "llama-3.1-8b", row=i + 1) for i in range(20)]
    report, _ = simulate(
        load_fleet(fleet), Workload(reqs, {"default": SLO()}), "least_loaded", max_wait_s=0.5
    )
    assert report["rejected"] == 20
    assert report["deployments"]["h100"] == {"share": 0.0, "requests": 0, "output_tokens": 0}
    note = report["sites"]["dc"]["cap_note"]
    assert "for llama-3.1-8b adds" in note and "on h100" in note, note
    assert note.endswith("no request for llama-3.1-8b can start there"), note


def test_fast_and_exact_write_the_same_requests() -> None:
    fleet = load_fleet(HETERO)
    wl = REPO / "examples" / "workload-conv.yaml"
    runs = []
    for exact in (False, True):
        got: list[RequestRecord] = []
        simulate(
            fleet, load_workload(wl, default_model="llama-3.1-8b", duration_s=60), "cost",
            exact=exact, on_request=got.append,
        )  # fmt: skip
        runs.append({r.id: r for r in got})
    fast, exact = runs
    assert fast.keys() == exact.keys()
    for i, r in fast.items():
        assert (r.status, r.target) == (exact[i].status, exact[i].target)
        if r.status == "ok":
            assert r.ttft_s == pytest.approx(exact[i].ttft_s, rel=1e-6, abs=1e-9)
            assert r.e2e_s == pytest.approx(exact[i].e2e_s, rel=1e-6, abs=1e-9)


def test_a_requests_file_that_cannot_be_written_is_an_error_naming_the_flag(
    tmp_path: Path,
) -> None:
    p = cli("simulate", "--fleet", str(HETERO), "--trace",
            str(REPO / "examples" / "workload-synthetic.yaml"), "--duration", "10",
            "--requests-out", str(tmp_path / "missing" / "r.jsonl"))  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and "--requests-out" in p.stderr and "missing" in p.stderr


def test_a_requests_file_that_is_an_input_or_fills_the_disk_is_an_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
    trace.write_text(text)
    fleet = tmp_path / "f.yaml"
    fleet.write_text(HETERO.read_text())
    for target in (trace, fleet):  # writing it would have emptied the input before reading it
        p = cli("simulate", "--fleet", str(fleet), "--trace", str(trace),
                "--requests-out", str(target))  # fmt: skip
        assert p.returncode == 2 and "is an input" in p.stderr and "--requests-out" in p.stderr
    assert trace.read_text() == text and fleet.read_text() == HETERO.read_text()
    if Path("/dev/full").exists():
        p = cli("simulate", "--fleet", str(fleet), "--trace", str(trace),
                "--requests-out", "/dev/full")  # fmt: skip
        assert p.returncode == 2 and "Traceback" not in p.stderr and "--requests-out" in p.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": 0, "row": 1, "status": "ok", "arrival_s": -1}', "arrival_s"),
        ('{"id": 0, "row": 1, "status": "lost"}', "status"),
        ('{"id": "a", "row": 1, "status": "ok"}', "'id'"),
        ("[1]", "not a JSON object"),
    ],
)
def test_bad_lines_of_a_requests_file(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_record(json.loads(line))


def test_compare_names_the_bad_line_of_a_requests_file(tmp_path: Path) -> None:
    good = RequestRecord(0, 1, 0.0, 10, 3, first_token_s=0.1, end_s=0.3, policy="p").as_json()
    bad = tmp_path / "r.jsonl"
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "end_s": "soon"}) + "\n")
    p = cli("compare", str(bad), str(bad))
    assert p.returncode == 2 and f"{bad}:2" in p.stderr and "end_s" in p.stderr
    assert "Traceback" not in p.stderr
    bad.write_text(json.dumps(good) + "\n{oops\n")
    p = cli("compare", str(bad), str(bad))
    assert p.returncode == 2 and f"{bad}:2" in p.stderr and "Traceback" not in p.stderr


def run_inputs(tmp_path: Path) -> dict[str, Path]:
    """A fleet that reads a hardware file and a calibration, and a workload file that names its
    trace: every file a `simulate` run reads."""
    from wattserve.core.params import Calibration, EngineParams

    files = {
        "hardware": tmp_path / "hw.yaml",
        "calibration": tmp_path / "c.json",
        "fleet": tmp_path / "f.yaml",
        "workload": tmp_path / "w.yaml",
        "trace": tmp_path / "t.jsonl",
    }
    files["hardware"].write_text(
        (REPO / "tests" / "data" / "llama_cpp_server_decode" / "local-cpu.yaml").read_text()
    )
    files["calibration"].write_text(Calibration({"local-cpu": EngineParams()}).dumps())
    files["fleet"].write_text(
        "hardware_files: [hw.yaml]\nsites:\n  edge: {kind: edge}\ndeployments:\n"
        "  smol: {site: edge, model: smollm2-135m, hardware: local-cpu, dtype: w4a16, "
        "max_num_seqs: 1, calibration: c.json}\n"
    )
    files["workload"].write_text("trace: t.jsonl\n")
    files["trace"].write_text(
        "".join(
            json.dumps({"arrival_s": i, "prompt_tokens": 50, "output_tokens": 5}) + "\n"
            for i in range(5)
        )
    )
    return files


def test_no_output_replaces_a_file_the_run_reads(tmp_path: Path) -> None:
    """Not only the fleet and the --trace given: the trace a workload file names, the fleet's
    hardware files and calibrations. Each is refused before the run, naming the flag, and is
    left as it was."""
    files = run_inputs(tmp_path)
    before = {k: p.read_bytes() for k, p in files.items()}
    base = ["simulate", "--fleet", str(files["fleet"]), "--trace", str(files["workload"])]
    p = cli(*base, "--requests-out", str(tmp_path / "r.jsonl"))
    assert p.returncode == 0, p.stderr
    for name, path in files.items():
        for flag in ("--requests-out", "--report"):
            p = cli(*base, flag, str(path))
            assert p.returncode == 2 and "is an input" in p.stderr and flag in p.stderr, (name, p)
    assert {k: p.read_bytes() for k, p in files.items()} == before
    # the two outputs in one file: the requests would be lost under the report
    same = str(tmp_path / "out.html")
    p = cli(*base, "--requests-out", same, "--report", same)
    assert p.returncode == 2 and "--report" in p.stderr and "--requests-out" in p.stderr
    assert not Path(same).exists()


def test_every_compared_policy_is_checked_before_any_run_writes(tmp_path: Path) -> None:
    files = run_inputs(tmp_path)
    out = tmp_path / "r.jsonl"
    p = cli("simulate", "--fleet", str(files["fleet"]), "--trace", str(files["trace"]),
            "--compare", "cost,bogus", "--requests-out", str(out))  # fmt: skip
    assert p.returncode == 2 and "bogus" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()  # no file of one policy's lines that would pass for complete


def test_a_run_that_fails_leaves_the_earlier_requests_file_whole(tmp_path: Path) -> None:
    """The lines go to a file beside it, renamed over it when the runs are done."""
    from wattserve.core.textfile import replacing

    out = tmp_path / "r.jsonl"
    out.write_text("earlier\n")
    with pytest.raises(OSError), replacing(out) as fh:
        fh.write(b'{"id": 0}\n')
        raise OSError(28, "No space left on device")
    assert out.read_text() == "earlier\n" and sorted(tmp_path.iterdir()) == [out]
    with replacing(out) as fh:
        fh.write(b"new\n")
    assert out.read_text() == "new\n" and sorted(tmp_path.iterdir()) == [out]


def _write_as_user(path: Path) -> str:
    """`replacing(path)` run as a user permissions stop (`_as_user`)."""
    from wattserve.core.textfile import replacing

    def attempt() -> str:
        try:
            with replacing(path) as fh:
                fh.write(b"new\n")
            return "wrote"
        except PermissionError:
            return "refused"

    return _as_user(attempt)


def _as_user(attempt: Callable[[], str]) -> str:
    """`attempt()` run as a user permissions stop: this one, or nobody when it is root (a
    forked child that drops to uid 65534; the interpreter under /root is not theirs)."""
    import os

    if os.geteuid() != 0:
        return attempt()
    import warnings

    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns of fork() beside threads; the child only
        warnings.simplefilter("ignore", DeprecationWarning)  # writes a file and exits
        pid = os.fork()
    if pid == 0:  # the child: drop to nobody, try, report, leave without pytest's teardown
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, attempt().encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as said:
        return said.read()


def test_an_output_keeps_the_permissions_open_would_give() -> None:
    """A read-only file is refused, not replaced by the rename; a writable file in a folder
    the user may not add to is written in place (no file can go beside it)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="wattserve-perm-"))
    try:
        base.chmod(0o777)  # anyone may add a file here (and rename one over the read-only)
        locked = base / "locked"
        locked.mkdir()
        readonly, inplace = base / "ro.txt", locked / "rw.txt"
        readonly.write_text("kept\n")
        inplace.write_text("old\n")
        readonly.chmod(0o444)
        inplace.chmod(0o666)
        locked.chmod(0o555)
        assert _write_as_user(readonly) == "refused" and readonly.read_text() == "kept\n"
        assert _write_as_user(inplace) == "wrote" and inplace.read_text() == "new\n"
        assert sorted(x.name for x in locked.iterdir()) == ["rw.txt"]
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base)


def test_a_read_only_output_is_refused_before_the_work() -> None:
    """`replacing` refuses a read-only file; plan's --cache (saved after the solve) and every
    --out and --report are checked first, so a finished plan is not thrown away at the end."""
    import shutil
    import tempfile

    from wattserve.cli.common import check_writable
    from wattserve.errors import ConfigError

    base = Path(tempfile.mkdtemp(prefix="wattserve-perm-"))
    try:
        base.chmod(0o777)
        ro = base / "cache.json"
        ro.write_text("{}")
        ro.chmod(0o444)

        def attempt() -> str:
            try:
                check_writable(ro, "--cache")
                return "passed"
            except ConfigError as exc:
                return str(exc)

        assert _as_user(attempt) == f"field '--cache': cannot write {ro}: Permission denied"
    finally:
        shutil.rmtree(base)
