"""The `wattserve` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattserve", *args], capture_output=True, text=True, timeout=120
    )


def test_estimate_json() -> None:
    p = run(
        "estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--batch", "16", "--json"
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["fits"] is True and d["batch"] == 16 and d["tpot_s"] > 0


def test_estimate_explain_shows_terms_bounds_and_sources() -> None:
    p = run(
        "estimate", "--model", "llama-3.1-70b", "--hardware", "h100-sxm", "--tp", "4", "--explain"
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for term in (
        "compute",
        "memory",
        "comm",
        "overhead",
        "bound by",
        "mem_bw_gbps = 3350",
        "cli99/llm-analysis",
    ):
        assert term in out


def test_explain_names_the_terms_a_calibration_moved(tmp_path: Path) -> None:
    # an MoE calibration's routing term, off by default, is shown where it applies
    calib = tmp_path / "c.json"
    rows = Path(__file__).parents[1] / "examples" / "measurements-h200-moe.csv"
    p = run("calibrate", str(rows), "-o", str(calib))
    assert p.returncode == 0, p.stderr
    assert "MoE routing" in p.stdout and "overhead_moe_layer_s" in p.stdout
    args = ("estimate", "--hardware", "h200-sxm", "--calibration", str(calib), "--explain")
    moe = run(*args, "--model", "qwen3-30b-a3b")
    assert moe.returncode == 0, moe.stderr
    assert "also: " in moe.stdout and "MoE routing" in moe.stdout
    dense = run(*args, "--model", "llama-3.1-8b")
    assert "MoE routing" not in dense.stdout and "GEMM pad" in dense.stdout
    assert "also: " not in run("estimate", "--model", "qwen3-30b-a3b", "--explain").stdout
    assert "no MoE rows" not in moe.stdout  # its rows held an MoE
    # a calibration fitted on dense rows alone says the MoE terms were never weighed
    dense_rows = tmp_path / "dense.csv"
    lines = rows.read_text().splitlines(True)
    dense_rows.write_text("".join(ln for ln in lines if "qwen" not in ln))
    assert run("calibrate", str(dense_rows), "-o", str(tmp_path / "d.json")).returncode == 0
    moe = run(*args[:3], "--calibration", str(tmp_path / "d.json"), "--model", "qwen3-30b-a3b")
    assert "was fitted on no MoE rows" in moe.stdout, moe.stdout


def test_estimate_that_does_not_fit_is_not_an_error() -> None:
    p = run("estimate", "--model", "llama-3.1-405b", "--hardware", "l4", "--json")
    assert p.returncode == 0
    d = json.loads(p.stdout)
    assert d["fits"] is False and d["reason"] and d["tpot_s"] is None


def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    p = run("estimate", "--model", "llama-3.1-8b", "--hardware", "h100")
    assert p.returncode == 2 and "unknown hardware 'h100'" in p.stderr and "h100-sxm" in p.stderr
    assert "Traceback" not in p.stderr
    bad = tmp_path / "m.csv"
    bad.write_text("model,hardware\n")
    p = run("calibrate", str(bad), "-o", str(tmp_path / "c.json"))
    assert p.returncode == 2 and "missing column" in p.stderr and "Traceback" not in p.stderr


def test_estimate_rejects_nan_and_infinite_cost_flags() -> None:
    base = ("estimate", "--model", "llama-3.1-8b", "--hardware", "rtx-4090", "--cost-basis", "own")
    for flag, value in (
        ("--pue", "nan"),
        ("--lifetime-years", "inf"),
        ("--electricity-usd-per-kwh", "nan"),
        ("--electricity-usd-per-kwh", "inf"),
        # finite but absurd: text printed `$ per 1M out tokens: inf` (exit 0) and a 300-digit
        # price; the fleet file's bound is 1,000 $/kWh
        ("--electricity-usd-per-kwh", "1e308"),
        ("--lifetime-years", "1e-300"),
        ("--cost-basis", "lease"),
        ("--batch", "99999999999999999999"),  # printed a KV cache of 8.39e+18 GB
    ):
        p = run(*base, flag, value)
        assert p.returncode == 2 and flag in p.stderr and "Traceback" not in p.stderr, p.stderr
    for flag, value in (("--tp", "4"), ("--dtype", "int4"), ("--gpu-memory-utilization", "0.5")):
        # a hosted API runs the model its own way: each was ignored without a word
        p = run("estimate", "--model", "llama-3.1-8b", "--hardware", "groq-cloud", flag, value)
        assert p.returncode == 2 and flag in p.stderr and "hosted API" in p.stderr, p.stderr
    p = run("rank", "--model", "llama-3.1-8b", "--slo-tpot", "1e308")  # its header said inf ms
    assert p.returncode == 2 and "--slo-tpot" in p.stderr, p.stderr


def test_catalog_and_models() -> None:
    p = run("catalog", "--category", "edge-module", "--json")
    ids = {d["id"] for d in json.loads(p.stdout)}
    assert {"jetson-agx-orin-64gb", "hailo-10h"} <= ids and "h100-sxm" not in ids
    p = run("catalog", "show", "groq-lpu")
    assert "sram_mb" in p.stdout and "public launch coverage" in p.stdout
    upper = run("catalog", "--category", "EDGE-Module", "--maturity", "Production", "--json")
    assert upper.returncode == 0 and {d["id"] for d in json.loads(upper.stdout)} <= ids
    p = run("catalog", "providers", "--json")
    assert any(d["id"] == "groq-cloud" for d in json.loads(p.stdout))
    # a provider's figures as a device's: each with its source, an unknown one said so (it
    # printed Python's `ttft_s=None`)
    p = run("catalog", "show", "groq-cloud")
    assert "None" not in p.stdout and "groq.com/pricing" in p.stdout, p.stdout
    assert any(line.split()[:2] == ["ttft_s", "unknown"] for line in p.stdout.splitlines())
    p = run("models", "--json")
    assert any(d["id"] == "mixtral-8x7b" and d["experts"] == 8 for d in json.loads(p.stdout))


def test_calibrate_writes_a_calibration_that_estimate_applies(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text(
        "model,hardware,count,tensor_parallel,dtype,phase,batch,prompt_tokens,context_tokens,"
        "seconds,watts\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,prefill,1,512,512,0.0190,520\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,prefill,8,1024,1024,0.1420,690\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,512,512,0.00680,310\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,32,1024,1024,0.00910,380\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,128,512,512,0.0135,430\n"
        "llama-3.2-1b,h100-sxm,1,1,bf16,decode,1,512,512,0.00190,\n"
    )
    out = tmp_path / "c.json"
    p = run("calibrate", str(csv), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "held-out error" in p.stdout and out.exists()
    p = run(
        "estimate",
        "--model",
        "llama-3.1-8b",
        "--hardware",
        "h100-sxm",
        "--batch",
        "1",
        "--prompt-tokens",
        "512",
        "--context",
        "512",
        "--calibration",
        str(out),
        "--json",
    )
    d = json.loads(p.stdout)
    assert abs(d["decode_step_s"] - 0.0068) / 0.0068 < 0.10
    assert "m.csv" in d["calibration"]  # fitted from it, or defaults kept against it


def test_serve_on_a_bad_port_or_host_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    # --port 99999 used to listen on 99999 mod 65536 = 34463; a bad host raised a traceback.
    db = str(tmp_path / "l.db")
    p = run("serve", "--port", "99999", "--db", db)
    assert p.returncode == 2 and "--port" in p.stderr and "Traceback" not in p.stderr
    for flag in ("--max-wait", "--max-queue", "--body-timeout"):
        p = run("serve", flag, "nan", "--port", "8000", "--db", db)  # the gateway used to start
        assert p.returncode == 2 and flag in p.stderr and "Traceback" not in p.stderr
    p = run("serve", "--max-wait", "inf", "--port", "8000", "--db", db)  # a wait without end
    assert p.returncode == 2 and "a day" in p.stderr, p.stderr
    p = run("serve", "--host", "999.1.1.1", "--port", "8000", "--db", db)
    assert p.returncode == 2 and "cannot listen on 999.1.1.1:8000" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert "try: curl" not in p.stdout  # the hint comes once it listens, not before failing


def test_keys_refuse_bad_budgets_and_a_ledger_that_is_not_one(tmp_path: Path) -> None:
    db = str(tmp_path / "l.db")
    for flag, value in (("--budget-usd", "-5"), ("--budget-j", "nan"), ("--rps", "0")):
        p = run("keys", "create", "bob", flag, value, "--db", db)  # all used to create a key
        assert p.returncode == 2 and flag in p.stderr and "Traceback" not in p.stderr
    other = tmp_path / "notes.json"
    other.write_text('{"not": "sqlite"}')
    for args in (("usage",), ("keys", "list")):
        p = run(*args, "--db", str(other))  # was a sqlite3.DatabaseError traceback
        assert p.returncode == 2 and "not a wattserve ledger" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr


def test_a_second_live_key_of_one_name_is_refused(tmp_path: Path) -> None:
    """`usage --by key` groups by name: two live keys named alice would be summed as one."""
    db = str(tmp_path / "l.db")
    assert run("keys", "create", "alice", "--db", db).returncode == 0
    p = run("keys", "create", "alice", "--db", db)
    assert p.returncode == 2 and "a key named 'alice' exists" in p.stderr, p.stderr
    key_id = next(k["id"] for k in json.loads(run("keys", "list", "--db", db).stdout))
    assert run("keys", "revoke", key_id, "--db", db).returncode == 0
    assert run("keys", "create", "alice", "--db", db).returncode == 0  # the old one is revoked


def test_small_things_a_new_user_meets(tmp_path: Path) -> None:
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("wattserve ")
    p = run("bench", "--url", "http://127.0.0.1:9/v1/chat/completions", "--trace", "x.jsonl")
    assert p.returncode == 2 and "give the server's base URL" in p.stderr, p.stderr
    data = Path(__file__).parent / "data" / "llama_cpp_2vcpu" / "measurements.csv"
    p = run("calibrate", str(data), "-o", str(tmp_path / "c.json"))
    assert p.returncode == 2 and "pass the local-cpu.yaml it wrote with --hardware-file" in p.stderr


def test_every_command_prints_its_help() -> None:
    """`--help` of every command and subcommand (help text is rich markup: a bracket in it once
    made `serve --help` a traceback)."""
    import typer
    from typer.testing import CliRunner

    from wattserve.cli.app import app

    runner = CliRunner()
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    for name, cmd in getattr(root, "commands", {}).items():  # a group: its commands
        paths.append([name])
        paths += [[name, sub] for sub in getattr(cmd, "commands", {})]
    assert len(paths) > 12
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output, result.exception)
        assert "Usage" in result.output, path


def test_catalog_hardware_file_counts_before_or_after_the_subcommand(tmp_path: Path) -> None:
    hw = tmp_path / "hw.yaml"
    hw.write_text(
        "devices:\n  my-npu:\n    name: Acme NPU 2\n    vendor: Acme\n    category: asic\n"
        "    software: plugin\n    maturity: pilot\n    memory_type: HBM3\n"
        "    source: datasheet\n    memory_gb: 96\n    mem_bw_gbps: 3200\n"
        "providers:\n  my-api:\n    name: My API\n    hardware: my-npu\n"
        "    base_url: https://api.example.com/v1\n    source: pricing page\n    models:\n"
        "      llama-3.1-8b: {remote_name: l8, usd_per_mtok_input: 0.1, "
        "usd_per_mtok_output: 0.2, ttft_s: 0.2, output_tokens_per_s: 400}\n"
    )
    for args in (
        ("catalog", "--hardware-file", str(hw), "show", "my-npu"),
        ("catalog", "show", "my-npu", "--hardware-file", str(hw)),
    ):
        r = run(*args)
        assert r.returncode == 0 and "Acme NPU 2 (my-npu)" in r.stdout, (args, r.stderr)
    r = run("catalog", "--hardware-file", str(hw), "--json", "providers")
    assert r.returncode == 0 and "my-api" in {p["id"] for p in json.loads(r.stdout)}
    r = run("catalog", "--category", "gpu", "show", "h100-sxm")  # a filter with a subcommand
    assert r.returncode == 2 and "--category" in r.stderr and "Traceback" not in r.stderr


def test_a_reader_that_stops_early_is_not_an_error() -> None:
    # `wattserve rank ... | head`: the pipe closes under a long output
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattserve", "rank", "--model", "llama-3.1-8b", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    # a pipe of one page (Linux's F_SETPIPE_SZ), set while the command still imports: its
    # 47 KB cannot all be written before the reader stops (in a 64 KB pipe it could, on a
    # busy host, and the command then exited 0)
    with contextlib.suppress(OSError):
        fcntl.fcntl(proc.stdout.fileno(), 1031, 4096)
    with proc.stdout, proc.stderr:
        proc.stdout.read(10)
        proc.stdout.close()
        err = proc.stderr.read().decode()
    assert proc.wait(120) == 141 and "error" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "verb", [["estimate", "--hardware", "h100-sxm"], ["rank", "--hardware", "h100-sxm"]]
)
def test_a_calibration_term_out_of_physical_range_is_refused_naming_it(
    tmp_path: Path, verb: list[str]
) -> None:
    """1e308 s of step overhead made every time infinite; `--json` raised ValueError from
    json.dump after printing part of the object."""
    calib = tmp_path / "c.json"
    calib.write_text(json.dumps({"hardware": {"h100-sxm": {"overhead_step_s": 1e308}}}))
    p = run(*verb, "--model", "llama-3.1-8b", "--calibration", str(calib), "--json")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert f"{calib}, field 'hardware.h100-sxm.overhead_step_s': must be a number in" in p.stderr


def test_json_output_never_holds_a_non_finite_number(capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever figure came out infinite, --json says where, before writing a byte."""
    from wattserve.cli.common import print_json
    from wattserve.errors import WattserveError

    with pytest.raises(WattserveError, match=r"result's sites\.dc\[1\] came out as inf"):
        print_json({"ok": 1.0, "sites": {"dc": [2.0, float("inf")]}})
    assert capsys.readouterr().out == ""
