"""`plan` and workload loading against hostile input (probeA findings 5-9, 16, 18, 26-28, 31,
34): one line naming the file, line and field or the flag, never a traceback or a silent wrong
plan."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve import plan
from wattserve.cli.app import app
from wattserve.core.traces import MAX_ARRIVAL_S, read_trace
from wattserve.core.workload import load_workload, stream_workload
from wattserve.errors import ConfigError
from wattserve.plan.capacity import VERSION, CapacityCache

WORKLOAD = "generator: {kind: poisson, rate_rps: 2, duration_s: 30, prompt_tokens: 500, output_tokens: 100}\n"  # noqa: E501


def _workload(tmp_path: Path, text: str = WORKLOAD, name: str = "w.yaml") -> Path:
    w = tmp_path / name
    w.write_text(text)
    return w


def _plan(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["plan", "--capacity", "analytic", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def _one_line_error(stderr: str, *names: str) -> None:
    assert "Traceback" not in stderr
    lines = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, stderr
    for name in names:
        assert name in lines[0], (name, lines[0])


# -- 5: infinite limits ---------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--power-cap", "--budget-usd-per-h"])
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_limits_must_be_positive_and_finite(tmp_path: Path, flag: str, value: str) -> None:
    """`--objective throughput --power-cap inf` was an OverflowError in the program's bounds."""
    w = _workload(tmp_path)
    code, _, err = _plan(
        "--hardware", "l4", "--workload", str(w), "--objective", "throughput", flag, value
    )
    assert code == 2
    _one_line_error(err, f"'{flag}'", "finite")


def test_a_power_cap_past_any_real_site_is_refused(tmp_path: Path) -> None:
    """1e308 W was accepted and printed as a 309-digit cap that broke the table."""
    w = _workload(tmp_path)
    code, _, err = _plan("--hardware", "l4", "--workload", str(w), "--power-cap", "1e308")
    assert code == 2
    _one_line_error(err, "'--power-cap'", "at most 1e+12 W")


# -- 6, 26, 27: --available and --hardware --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("l4=²", "hw=count"),  # str.isdigit() took it, int() did not: a ValueError
        ("l4=٣", "hw=count"),
        ("l4=" + "9" * 5000, "hw=count"),
        ("=3", "hw=count"),
        ("l4", "hw=count"),
        ("l4=1,l4=50", "twice"),
        ("h100-sxmm=2", "unknown hardware 'h100-sxmm'"),
        ("", "names no devices"),  # was taken as no limit, where --hardware '' is refused
        (" , ", "names no devices"),
    ],
)
def test_available_is_parsed_strictly(tmp_path: Path, value: str, says: str) -> None:
    code, _, err = _plan(
        "--hardware", "l4", "--workload", str(_workload(tmp_path)), "--available", value
    )
    assert code == 2
    _one_line_error(err, "'--available'", says)


@pytest.mark.parametrize("value", [",,,", " , ", ""])
def test_hardware_that_names_no_device_is_a_usage_error(tmp_path: Path, value: str) -> None:
    """`--hardware ,,,` ended "infeasible ... add hardware" (exit 3)."""
    code, _, err = _plan("--workload", str(_workload(tmp_path)), "--hardware", value)
    assert code == 2
    _one_line_error(err, "'--hardware'")


# -- 7, 8, 9: the capacity cache ------------------------------------------------------------


def test_cache_that_is_not_a_regular_file_or_nests_too_deep_is_refused(tmp_path: Path) -> None:
    w = str(_workload(tmp_path))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # was read without end: a hang
    # a pipe: refused as an output since 2026-12-07 (no process reads it), before its read
    for cache, says in ((deep, "nested too deeply"), (fifo, "a pipe that no process reads")):
        code, _, err = _plan("--hardware", "l4", "--workload", w, "--cache", str(cache))
        assert code == 2
        _one_line_error(err, "'--cache'", str(cache), says)
    code, _, err = _plan("--hardware", "l4", "--workload", w, "--cache", "/dev/zero")
    assert code == 2
    _one_line_error(err, "'--cache'", "not a regular file")


def _good_cache(tmp_path: Path) -> tuple[Path, dict[str, dict[str, object]]]:
    """A cache an earlier plan wrote, and its entries."""
    w = str(_workload(tmp_path))
    cache = tmp_path / "c.json"
    code, _, err = _plan("--hardware", "l4", "--workload", w, "--cache", str(cache))
    assert code == 0, err
    entries = json.loads(cache.read_text())["entries"]
    assert entries
    return cache, entries


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_rps", None),
        ("rate_rps", "fast"),
        ("rate_rps", 1e9),  # was a plan of no devices at $0.00/h
        ("rate_rps", -3.0),
        ("rate_rps", 0.0),  # a zero rate with no reason: no measurement writes that
        ("rate_rps", True),
        ("rate_rps", 10**400),
        ("peak_power_w", -1e6),  # was a table row of -5000000 peak W
        ("avg_power_w", float("nan")),
        ("joules_per_request", float("inf")),
        ("reason", 3),
        ("extra", 1.0),
    ],
)
def test_damaged_cache_entries_are_measured_again(
    tmp_path: Path, field: str, value: object
) -> None:
    """Entries with valid keys but wrong values were trusted (tracebacks, nonsense plans)."""
    cache, entries = _good_cache(tmp_path)
    w = str(tmp_path / "w.yaml")
    code, fresh, _ = _plan("--hardware", "l4", "--workload", w, "--json")
    assert code == 0
    damaged = {k: {**v, field: value} for k, v in entries.items()}
    cache.write_text(json.dumps({"version": VERSION, "entries": damaged}))
    code, out, err = _plan("--hardware", "l4", "--workload", w, "--cache", str(cache), "--json")
    assert code == 0, err
    assert "Traceback" not in err
    assert err.count("warning:") == 1 and "damaged" in err and str(cache) in err
    got, want = json.loads(out), json.loads(fresh)
    assert got["replicas"] == want["replicas"] and got["usd_per_h"] == pytest.approx(
        want["usd_per_h"]
    )
    assert got["capacity_cache"]["misses"] == len(entries)
    rebuilt = CapacityCache.load(cache)  # the entries measured again replace the damaged
    assert rebuilt.dropped == 0 and len(rebuilt.entries) == len(entries)


def test_a_failed_plan_creates_no_cache_file(tmp_path: Path) -> None:
    w = _workload(tmp_path, "generator: {kind: poisson, rate_rps: -1}\n")
    cache = tmp_path / "new.json"
    code, _, _ = _plan("--hardware", "l4", "--workload", str(w), "--cache", str(cache))
    assert code == 2 and not cache.exists()


# -- 16: outputs that would overwrite inputs ------------------------------------------------


def test_out_and_report_never_overwrite_an_input_or_each_other(tmp_path: Path) -> None:
    w = _workload(tmp_path)
    sites = tmp_path / "s.yaml"
    sites.write_text("sites:\n  dc: {kind: datacenter, power_cap_w: 100000}\n")
    cache = tmp_path / "c.json"
    cache.write_text('{"version": 1, "entries": {}}')
    before = {p: p.read_text() for p in (w, sites, cache)}
    base = ["--hardware", "l4", "--workload", str(w), "--sites", str(sites), "--cache", str(cache)]
    for flag in ("--out", "--report"):
        for target in (w, sites, cache):
            code, _, err = _plan(*base, flag, str(target))
            assert code == 2
            _one_line_error(err, f"'{flag}'", "input")
    x = tmp_path / "x.yaml"
    code, _, err = _plan(*base, "--out", str(x), "--report", str(x))
    assert code == 2
    _one_line_error(err, "'--report'", "--out")
    assert not x.exists()
    assert {p: p.read_text() for p in before} == before
    # nor the trace a workload file names, nor a hardware file the sites file names
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"arrival_s": 0, "prompt_tokens": 100, "output_tokens": 10}\n')
    w.write_text("trace: t.jsonl\n")
    hw = tmp_path / "hw.yaml"
    hw.write_text("devices: {}\n")
    sites.write_text(f"hardware_files: [{hw.name}]\n" + before[sites])
    for target in (trace, hw):
        code, _, err = _plan(*base, "--out", str(target))
        assert code == 2
        _one_line_error(err, "'--out'", "input")
    assert hw.read_text() == "devices: {}\n" and trace.read_text().startswith('{"arrival_s"')


# -- 18: tiny rates and absurd arrival times ------------------------------------------------


@pytest.mark.parametrize("rate", [1e-7, 1e-5, 0.5])
def test_a_class_with_a_positive_rate_gets_a_replica(tmp_path: Path, rate: float) -> None:
    """At 1e-7 req/s the load was under HiGHS's tolerance: 0 devices, $0.00/h, share 1.0."""
    w = _workload(
        tmp_path,
        f"generator: {{kind: poisson, rate_rps: {rate}, duration_s: {min(1e9, 300 / rate)}, "
        "prompt_tokens: 500, output_tokens: 100}\n",
    )
    p = plan(w, hardware=["l4"], capacity="analytic")
    assert sum(p.replicas.values()) >= 1 and p.usd_per_h > 0
    assert sum(p.solution.rates.values()) == pytest.approx(p.problem.flows[0].rate_rps)


def test_trace_arrivals_must_be_finite_offsets_within_bounds(tmp_path: Path) -> None:
    t = tmp_path / "t.jsonl"
    rows = [-1e308, 1e308, MAX_ARRIVAL_S * 2, 1.7e9, 5.0, 10.0]
    t.write_text(
        "".join(
            json.dumps({"arrival_s": a, "prompt_tokens": 9, "output_tokens": 9}) + "\n"
            for a in rows
        )
    )
    good, bad = read_trace(t)
    assert [r.arrival_s for r in good] == [5.0, 10.0]
    assert [line for line, _ in bad] == [1, 2, 3, 4]
    assert "at most" in bad[1][1]
    t.write_text('{"arrival_s": 1e308, "prompt_tokens": 9, "output_tokens": 9}\n')
    w = _workload(tmp_path, "trace: t.jsonl\n")
    code, _, err = _plan("--hardware", "l4", "--workload", str(w))
    assert code == 2
    _one_line_error(err, str(w), "malformed")


def test_azure_rows_past_the_span_limit_are_malformed(tmp_path: Path) -> None:
    t = tmp_path / "a.csv"
    t.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.68,10,10\n"
        "2023-11-16 18:15:47.68,10,10\n"
        "9999-11-16 18:15:47.68,10,10\n"
    )
    good, bad = read_trace(t)
    assert len(good) == 2 and [line for line, _ in bad] == [4]


def test_generator_duration_is_bounded(tmp_path: Path) -> None:
    w = _workload(tmp_path, "generator: {kind: poisson, rate_rps: 1e-300, duration_s: 1e300}\n")
    with pytest.raises(ConfigError, match=r"generator\.duration_s"):
        load_workload(w, default_model="llama-3.1-8b")


# -- 28: a class's model ----------------------------------------------------------------------


def test_class_model_path_is_relative_to_the_workload_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wattserve.core.modelspec import _builtin  # the shipped 8B config, as a user's file

    spec = Path(str(_builtin.__wrapped__.__code__.co_filename)).parent.parent
    config = spec / "data" / "models" / "llama-3.1-8b.json"
    folder = tmp_path / "relmodel"
    folder.mkdir()
    (folder / "cfg.json").write_text(config.read_text())
    _workload(folder, WORKLOAD + "classes: [{model: cfg.json}]\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = _plan("--hardware", "l4", "--workload", "relmodel/w.yaml")
    assert code == 0, err


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("gpt-17", "unknown model 'gpt-17'"),
        ("../../../../etc/passwd", "not valid JSON"),
        ("missing.json", "no such file"),
    ],
)
def test_class_model_errors_name_the_file_line_and_field(
    tmp_path: Path, model: str, says: str
) -> None:
    w = _workload(tmp_path, WORKLOAD + f"classes:\n  - name: a\n  - model: {model}\n")
    code, _, err = _plan("--hardware", "l4", "--workload", str(w))
    assert code == 2
    _one_line_error(err, f"{w}:4", "'classes[1].model'", says)


def test_trace_row_model_error_names_the_row(tmp_path: Path) -> None:
    t = tmp_path / "t.jsonl"
    t.write_text(
        '{"arrival_s": 1, "prompt_tokens": 500, "output_tokens": 100}\n'
        '{"arrival_s": 2, "prompt_tokens": 500, "output_tokens": 100, "model": "nope"}\n'
    )
    code, _, err = _plan("--hardware", "l4", "--workload", str(t))
    assert code == 2
    _one_line_error(err, f"{t}:2", "'model'", "unknown model 'nope'")
    t.write_text('{"arrival_s": 1, "prompt_tokens": 500, "output_tokens": 100}\n')
    code, _, err = _plan("--hardware", "l4", "--workload", str(t), "--model", "nope2")
    assert code == 2
    _one_line_error(err, "'--model'", "nope2")


# -- 31: too high a total of class rates ----------------------------------------------------


def test_class_rates_too_high_name_the_class_and_read_as_numbers(tmp_path: Path) -> None:
    w = _workload(tmp_path, "classes:\n  - {rate_rps: 1}\n  - {rate_rps: 1e300}\n")
    with pytest.raises(ConfigError) as exc:
        load_workload(w, default_model="llama-3.1-8b")
    assert exc.value.field == "classes[1].rate_rps" and exc.value.line == 3
    assert len(str(exc.value)) < 300 and "6e+301" in str(exc.value)
    w = _workload(tmp_path, "generator: {rate_rps: 1e7, duration_s: 3}\n")
    with pytest.raises(ConfigError, match="30,000,000 requests") as exc:
        load_workload(w, default_model="llama-3.1-8b")
    assert exc.value.field == "generator.rate_rps"


# -- 34: plan streams a generator's requests ------------------------------------------------


def test_stream_gives_the_requests_load_workload_holds(tmp_path: Path) -> None:
    w = _workload(
        tmp_path,
        "generator: {kind: gamma, rate_rps: 40, duration_s: 30, cv: 3,\n"
        "  prompt_tokens: {dist: lognormal, mean: 800, sigma: 1}}\n"
        "classes:\n  - {weight: 2, origins: {a: 1, b: 2}, local_only: 0.3}\n"
        "  - {weight: 1, output_tokens: {dist: uniform, min: 5, max: 500}}\n",
    )
    held = load_workload(w, default_model="llama-3.1-8b", seed=7)
    head, stream = stream_workload(w, default_model="llama-3.1-8b", seed=7)
    assert head.requests == [] and list(stream) == held.requests
    assert head.duration_s == held.duration_s == 30


def test_the_same_seed_gives_the_same_requests_as_before(tmp_path: Path) -> None:
    """The draws stay in the order a seed always gave: arrivals, then each request's lengths,
    then its class, origin and residency (as the loader did before it streamed)."""
    w = _workload(
        tmp_path,
        "generator: {kind: poisson, rate_rps: 5, duration_s: 4,\n"
        "  prompt_tokens: {dist: uniform, min: 1, max: 1000}}\n"
        "classes:\n  - {weight: 1, origins: {a: 1, b: 1}, local_only: 0.5}\n  - {weight: 3}\n",
    )
    rng = random.Random(3)
    times = []
    t = 0.0
    while (t := t + rng.expovariate(5.0)) < 4:
        times.append(t)
    prompts = [(rng.randint(1, 1000), 128)[0] for _ in times]
    want = []
    for t, p in zip(times, prompts, strict=True):
        x = rng.random() * 4
        first = x - 1 < 0
        origin = ("a" if rng.random() * 2 - 1 < 0 else "b") if first else None
        local = rng.random() < (0.5 if first else 0.0)
        want.append((t, p, "class0" if first else "class1", origin, local))
    got = load_workload(w, default_model="llama-3.1-8b", seed=3).requests
    assert [(r.arrival_s, r.prompt_tokens, r.cls, r.origin, r.local_only) for r in got] == want


def test_plan_does_not_hold_a_generators_requests(tmp_path: Path) -> None:
    """1M generated requests took 14 s and 390 MB, 19M 215 s and 6 GB: each was a Request
    held twice (once more with its origin cleared). Now they stream into the flows."""
    import tracemalloc

    small = _workload(
        tmp_path, "generator: {kind: poisson, rate_rps: 20, duration_s: 10}\n", "s.yaml"
    )
    plan(small, hardware=["l4"], capacity="analytic", compare_with_single=False)  # imports
    w = _workload(tmp_path, "generator: {kind: poisson, rate_rps: 2000, duration_s: 100}\n")
    tracemalloc.start()
    p = plan(w, hardware=["l4"], capacity="analytic", compare_with_single=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert p.problem.flows[0].rate_rps == pytest.approx(2000, rel=0.01)
    assert peak < 40e6  # 200k requests: about 48 bytes each kept, not hundreds


@pytest.mark.parametrize("name", ['""', '"  "', '"a\\u0000b"', '"a\\nb"', f'"{"x" * 201}"'])
def test_a_site_name_that_is_not_printable_text_is_refused(tmp_path: Path, name: str) -> None:
    """An empty site name was planned and written into a fleet file that nothing could load;
    a NUL went through to the YAML written."""
    sites = tmp_path / "sites.yaml"
    sites.write_text(f"sites:\n  {name}: {{kind: datacenter}}\n")
    code, _, err = _plan(
        "--workload", str(_workload(tmp_path)), "--sites", str(sites), "--hardware", "l4",
        "--out", str(tmp_path / "out.yaml"),
    )  # fmt: skip
    assert code == 2 and "is not a name" in err and "sites.yaml:2" in err, err
    assert not (tmp_path / "out.yaml").exists()


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        ("links:\n  - {between: [dc, dd], outages: 5}", "links[0].outages", "a list"),
        ("links:\n  - {between: [dc, dd], outages: true}", "links[0].outages", "a list"),
        ("links:\n  - {between: [{a: 1}, dd]}", "links[0].between", "two sites"),
        ("links:\n  - {between: [[1], dd]}", "links[0].between", "two sites"),
        (f"  de: {{available: {{l4: {10**4000}}}}}", "sites.de.available", "1,000,000,000"),
    ],
)
def test_a_sites_file_of_the_wrong_shapes_names_the_field(
    tmp_path: Path, entry: str, field: str, says: str
) -> None:
    """Outages that are no list and a link end that is no name were TypeErrors, and a count
    of 10**4000 devices an OverflowError in the solver's bounds: tracebacks all."""
    sites = tmp_path / "sites.yaml"
    sites.write_text(f"sites:\n  dc: {{kind: datacenter}}\n  dd: {{kind: datacenter}}\n{entry}\n")
    code, _, err = _plan(
        "--workload", str(_workload(tmp_path)), "--sites", str(sites), "--hardware", "l4"
    )
    assert code == 2
    _one_line_error(err, "sites.yaml:", f"'{field}'", says)


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        ("hardware_files: [1]", "fleet.hardware_files", "got 1"),
        ("hardware_files: [null]", "fleet.hardware_files", "got None"),
        ('hardware_files: ["a\\0b.yaml"]', "fleet.hardware_files", "'a\\x00b.yaml'"),
        ('hardware_files: ["~nosuchuser0x7f/h.yaml"]', "fleet.hardware_files", "no home folder"),
        (
            "deployments:\n  d: {site: dc, model: llama-3.1-8b, hardware: l4, "
            'calibration: "c\\0.json"}',
            "deployments.d.calibration",
            "path of a file",
        ),
        (
            "deployments:\n  d: {site: dc, model: [1], hardware: l4}",
            "deployments.d.model",
            "expected text",
        ),
    ],
)
def test_a_file_a_sites_file_names_is_text_that_can_be_a_path(
    tmp_path: Path, entry: str, field: str, says: str
) -> None:
    """A number or null in hardware_files was a TypeError, a NUL a ValueError and an unknown
    ~user a RuntimeError, all tracebacks; `model: [1]` named its file and field twice."""
    sites = tmp_path / "sites.yaml"
    sites.write_text(f"sites:\n  dc: {{kind: datacenter}}\n{entry}\n")
    code, _, err = _plan(
        "--workload", str(_workload(tmp_path)), "--sites", str(sites), "--hardware", "l4"
    )
    assert code == 2
    _one_line_error(err, "sites.yaml:", f"'{field}'", says)
    assert err.count("sites.yaml") == 1, err


def test_a_sites_files_hardware_file_under_home_is_read_as_simulate_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hardware_files: [~/hw.yaml]` loaded (the fleet file expands ~), then plan looked for
    it in a folder named ~ beside the sites file."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (home / "hw.yaml").write_text(
        "devices:\n  my-npu:\n    {category: gpu, software: plugin, maturity: pilot, "
        "source: s, memory_gb: 80, mem_bw_gbps: 3000, peak_tflops: {bf16: 900}, tdp_w: 700, "
        "usd_per_hour: 1}\n"
    )
    sites = tmp_path / "sites.yaml"
    sites.write_text('sites:\n  dc: {kind: datacenter}\nhardware_files: ["~/hw.yaml"]\n')
    out = tmp_path / "plan.yaml"
    code, stdout, err = _plan(
        "--workload", str(_workload(tmp_path)), "--sites", str(sites), "--hardware", "my-npu",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "my-npu" in stdout and str(home / "hw.yaml") in out.read_text()


def test_verify_refuses_an_unknown_policy_naming_the_workload_before_the_work(
    tmp_path: Path,
) -> None:
    """`policy: nosuch` failed only once the plan was made, naming no file; and a latency
    target of 1e308 s in the file was refused naming --slo-ttft, a flag plan does not have."""
    w = _workload(tmp_path, WORKLOAD + "policy: nosuch\n")
    code, _, err = _plan("--workload", str(w), "--hardware", "l4", "--verify")
    assert code == 2
    _one_line_error(err, "w.yaml", "'policy'", "unknown policy 'nosuch'")
    w = _workload(tmp_path, WORKLOAD + "slos:\n  default: {ttft_s: 1e308}\n")
    code, _, err = _plan("--workload", str(w), "--hardware", "l4")
    assert code == 2
    _one_line_error(err, "w.yaml:3", "'slos.default.ttft_s'", "at most 86400 s")


def test_a_request_past_its_models_window_is_left_out_not_the_whole_plan(tmp_path: Path) -> None:
    """One over-long trace row made the whole plan an error naming no file or row (the flow's
    mean went past the window); simulate rejects such a request and carries on, and so does
    plan now, saying which rows it left out. --verify does not replay them: no replica could
    take them, so adding replicas for them never ended a round short."""
    trace = tmp_path / "t.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:47.6805900,10000000,10000000\n"
        "2023-11-16 18:15:48.6805900,300,40\n"
    )
    code, out, err = _plan("--workload", str(trace), "--model", "llama-3.1-8b",
                           "--hardware", "l4", "--verify", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["left_out"] == [
        "1 request(s) for llama-3.1-8b past its context window of 131072 tokens (row 3): an "
        "engine refuses them"
    ]
    assert all(v["met"] for v in result["verify_rounds"][0]["classes"].values())
    gen = _workload(tmp_path, "generator: {rate_rps: 1, duration_s: 10, prompt_tokens: 200000}\n")
    code, _, err = _plan("--workload", str(gen), "--hardware", "l4")
    # counted, and only the first five named: a stream of 20M may all be too long
    _one_line_error(err, "no requests", "10 request(s)", "request 4, ...): an engine refuses")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"time_limit_s": float("nan")}, "--time-limit"),  # scipy only warned
        ({"time_limit_s": 0}, "--time-limit"),
        ({"available": {"h100-sxm": 1.5}}, "--available"),
        ({"available": {"h100-sxm": True}}, "--available"),
        ({"max_rounds": -1}, "--max-rounds"),
        ({"max_rounds": 10**9}, "--max-rounds"),  # each round simulates the whole workload
        ({"headroom": None}, "--headroom"),  # was a TypeError
        ({"capacity": "exact"}, "--capacity"),
    ],
)
def test_the_plan_api_checks_what_the_cli_checks(
    tmp_path: Path, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as err:
        plan(_workload(tmp_path), hardware=["h100-sxm"], **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
