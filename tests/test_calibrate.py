"""Calibration: the CSV reader's errors, and recovery of known terms from measurements."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from wattserve import (
    ConfigError,
    Deployment,
    EngineParams,
    estimate,
    fit_calibration,
    load_calibration,
    load_catalog,
    load_model,
    read_measurements,
)
from wattserve.calibrate.fit import fit_hardware
from wattserve.calibrate.measurements import COLUMNS, Measurement, write_measurements
from wattserve.calibrate.rows import StepRow, step_row
from wattserve.core.params import Calibration, default_params
from wattserve.core.perf import PerfModel
from wattserve.errors import CalibrationError

HEADER = ",".join(COLUMNS)
REPO = Path(__file__).resolve().parent.parent

# A "true" H100 engine that differs from the defaults, standing in for a real one.
TRUTH = EngineParams(
    eff_compute=0.72,
    eff_memory=0.86,
    overhead_step_s=0.6e-3,
    overhead_layer_s=14e-6,
    overhead_seq_s=9e-6,
    power_k_compute=1.2,
    power_k_memory=0.75,
    idle_fraction=0.11,
)


def _measure(
    model: str, phase: str, batch: int, tokens: int, tp: int = 1, noise: random.Random | None = None
) -> Measurement:
    hw = load_catalog().device("h100-sxm")
    pm = PerfModel(Deployment(load_model(model), hw, tp=tp), TRUTH)
    cost = pm.prefill(batch, tokens) if phase == "prefill" else pm.decode_step(batch, tokens)
    jitter = 1.0 + (noise.uniform(-0.02, 0.02) if noise else 0.0)
    return Measurement(
        model,
        "h100-sxm",
        tp,
        tp,
        "bf16",
        phase,
        batch,
        tokens,  # type: ignore[arg-type]
        tokens,
        cost.time_s * jitter,
        cost.power_w / tp * jitter,
    )


def test_fit_recovers_held_out_points_within_ten_percent() -> None:
    rng = random.Random(7)
    train = [
        _measure("llama-3.1-8b", "prefill", 1, 128, noise=rng),
        _measure("llama-3.1-8b", "prefill", 1, 2048, noise=rng),
        _measure("llama-3.1-8b", "prefill", 8, 512, noise=rng),
        _measure("llama-3.1-8b", "decode", 1, 512, noise=rng),
        _measure("llama-3.1-8b", "decode", 32, 1024, noise=rng),
        _measure("llama-3.1-8b", "decode", 128, 512, noise=rng),
        _measure("llama-3.2-1b", "prefill", 4, 256, noise=rng),
        _measure("llama-3.2-1b", "decode", 1, 256, noise=rng),
        _measure("llama-3.2-1b", "decode", 64, 2048, noise=rng),
    ]
    calib, reports = fit_calibration(train, load_catalog())
    assert reports[0].mean_abs_pct < 3.0
    held_out = [
        _measure("llama-2-13b", "prefill", 2, 1024),
        _measure("llama-2-13b", "decode", 16, 3000),
        _measure("qwen2.5-7b", "decode", 256, 700),
        _measure("llama-3.1-8b", "prefill", 32, 128),
        _measure("llama-3.1-8b", "decode", 4, 8000),
        _measure("llama-3.1-70b", "decode", 8, 1024, tp=4),
        _measure("llama-3.1-70b", "prefill", 1, 1024, tp=4),
    ]
    for m in held_out:
        e = estimate(
            m.model,
            "h100-sxm",
            tp=m.tensor_parallel,
            batch=m.batch,
            prompt_tokens=m.prompt_tokens,
            context=m.context_tokens,
            calibration=calib,
        )
        predicted = e.prefill_s if m.phase == "prefill" else e.decode_step_s
        assert predicted == pytest.approx(m.seconds, rel=0.10), m
        watts = (e.prefill_cost if m.phase == "prefill" else e.decode_cost).power_w / m.count  # type: ignore[union-attr]
        assert watts == pytest.approx(m.watts, rel=0.10), m


def test_calibration_round_trips_through_json(tmp_path: Path) -> None:
    train = [
        _measure("llama-3.1-8b", ph, b, t)
        for ph, b, t in [
            ("prefill", 1, 512),
            ("prefill", 4, 1024),
            ("decode", 1, 512),
            ("decode", 64, 512),
            ("decode", 16, 2048),
        ]
    ]
    csv_path = tmp_path / "m.csv"
    write_measurements(csv_path, train)
    rows = read_measurements(csv_path)
    assert len(rows) == 5 and rows[0].line == 2
    calib, _ = fit_calibration(rows, load_catalog(), source="m.csv")
    out = tmp_path / "c.json"
    calib.save(out)
    again = load_calibration(out)
    assert again.params["h100-sxm"].eff_memory == pytest.approx(calib.params["h100-sxm"].eff_memory)
    assert "mean_abs_pct" in json.loads(out.read_text())["hardware"]["h100-sxm"]["fit_error"]
    before = estimate("llama-3.1-8b", "h100-sxm", batch=64)
    after = estimate("llama-3.1-8b", "h100-sxm", batch=64, calibration=out)
    assert after.tpot_s != before.tpot_s
    assert after.calibration.startswith("calibrated from m.csv")


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("llama-3.1-8b,h100-sxm,1,1,bf16,prefil,1,128,128,0.01,", "phase"),
        ("llama-3.1-8b,h100-sxm,1,1,bf17,prefill,1,128,128,0.01,", "dtype"),
        ("llama-3.1-8b,h100-sxm,3,2,bf16,prefill,1,128,128,0.01,", "count"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,one,128,128,0.01,", "batch"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,128,128,-1,", "seconds"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,128,128,,300", "seconds"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,128,128,0.01,hot", "watts"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,128,128,0.01,1e-300", "watts"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,128,128,0.01,1e308", "watts"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,128,128,1e308,", "seconds"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,100000000000000000000,128,128,0.01,", "batch"),
        # the prompt is part of a decode step's context
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,5000,1000,0.01,", "context_tokens"),
    ],
)
def test_malformed_csv_names_file_line_and_field(tmp_path: Path, row: str, field: str) -> None:
    f = tmp_path / "bad.csv"
    good = "llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,128,128,0.01,"
    f.write_text(f"{HEADER}\n{good}\n{row}\n")
    with pytest.raises(ConfigError) as err:
        read_measurements(f)
    assert (err.value.path, err.value.line, err.value.field) == (str(f), 3, field)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,,4310000000000000000000,0.01,", "context_tokens"),
        # past the window is no longer refused as such (a RoPE-scaled engine runs it), but
        # 200,000 tokens prefilled in 10 ms is under a tenth of what the FLOPs take
        ("llama-3.1-8b,h100-sxm,1,1,bf16,prefill,1,200000,,0.01,", "seconds"),
        ("llama-3.1-8b,h100-sxm,3,3,bf16,decode,8,,512,0.01,", "tensor_parallel"),
        # SRAM-only parts hold the weights in SRAM: 141 GB on one 230 MB chip
        ("llama-3.1-70b,groq-lpu,1,1,bf16,decode,1,,1000,0.01,", "count"),
        ("llama-3.1-70b,cerebras-wse3,1,1,bf16,decode,1,,1000,0.01,", "count"),
        # a KV cache of 1M sequences at 100k tokens: petabytes
        ("llama-3.1-8b,h100-sxm,1,1,bf16,decode,1048576,,100000,0.009,380", "batch"),
    ],
)
def test_rows_no_engine_could_have_run_are_refused_with_their_line(
    tmp_path: Path, row: str, field: str
) -> None:
    """A context of 10^21 tokens, or a TP degree that does not split its heads: the
    fit names the line and field instead of fitting nonsense (or failing in the optimiser)."""
    f = tmp_path / "bad.csv"
    good = "llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,128,128,0.01,"
    f.write_text(f"{HEADER}\n{good}\n{row}\n")
    with pytest.raises(ConfigError) as err:
        fit_calibration(read_measurements(f), load_catalog(), source=str(f))
    assert (err.value.path, err.value.line, err.value.field) == (str(f), 3, field)


def test_a_kv_dtype_column_says_the_cache_format_a_run_used(tmp_path: Path) -> None:
    """Int8 weights imply a 16-bit cache, but engines often keep it in fp8: a row whose
    16-bit cache would not fit says so and names the column, which makes it fit."""
    f = tmp_path / "m.csv"
    rows = [
        "llama-3.1-70b,h100-sxm,1,1,int8,decode,16,,3000,0.05,600,{}",
        "llama-3.1-70b,h100-sxm,1,1,int8,decode,8,,3000,0.045,600,fp8",
    ]
    f.write_text("\n".join([f"{HEADER},kv_dtype", *rows]).format("") + "\n")
    with pytest.raises(ConfigError, match=r"taken as bf16.*kv_dtype column") as err:
        fit_calibration(read_measurements(f), load_catalog(), source=str(f))
    assert (err.value.line, err.value.field) == (2, "batch")
    f.write_text("\n".join([f"{HEADER},kv_dtype", *rows]).format("fp8") + "\n")
    ms = read_measurements(f)
    assert [m.kv_format for m in ms] == ["fp8", "fp8"]
    fit_calibration(ms, load_catalog(), source=str(f))
    out = tmp_path / "again.csv"
    write_measurements(out, ms)  # the optional column comes back where a row sets it
    assert out.read_text().splitlines()[0].endswith(",kv_dtype")
    assert read_measurements(out) == ms
    f.write_text(f"{HEADER},kv_dtype\n{rows[0].format('int3')}\n")
    with pytest.raises(ConfigError, match="not a dtype") as err:
        read_measurements(f)
    assert err.value.field == "kv_dtype"


def test_missing_column_and_unknown_hardware(tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("model,hardware,seconds\nx,y,1\n")
    with pytest.raises(ConfigError, match="missing column"):
        read_measurements(f)
    f.write_text(f"{HEADER}\nllama-3.1-8b,h100,1,1,bf16,decode,1,128,128,0.01,\n")
    with pytest.raises(ConfigError, match="h100-sxm") as err:
        fit_calibration(read_measurements(f), load_catalog(), source=str(f))
    assert err.value.line == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": True, "hardware": {"h100-sxm": {}}}, "version"),  # True == 1 in Python
        ({"hardware": {"h100-sxm": {"fit_error": {"bogus": 1}}}}, "hardware.h100-sxm.fit_error"),
        (
            {"hardware": {"h100-sxm": {"fitted": ["eff_compute", "eff_compute"]}}},
            "hardware.h100-sxm.fitted",
        ),
        ({"hardware": {"h100-sxm": {"source": "x" * 1001}}}, "hardware.h100-sxm.source"),
        ({"hardware": {"h100-sxm": {"source": "a\nb"}}}, "hardware.h100-sxm.source"),
    ],
)
def test_a_calibration_s_other_fields_are_read_strictly(
    tmp_path: Path, body: dict[str, object], field: str
) -> None:
    """Each was taken: `version: true`, an unknown fit_error key, a term fitted twice, and a
    source of 10 MB or with newlines, which estimate printed whole on its engine-terms line."""
    f = tmp_path / "c.json"
    f.write_text(json.dumps(body))
    with pytest.raises(ConfigError) as err:
        load_calibration(f)
    assert err.value.field == field


def test_calibration_terms_out_of_range_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"hardware": {"h100-sxm": {"eff_compute": 0}}}))
    with pytest.raises(ConfigError, match=r"in \[0.001, 1\]") as err:
        load_calibration(f)
    assert err.value.field == "hardware.h100-sxm.eff_compute"
    # each in range on its own type, but past anything physical: every figure behind them inf
    for term, bad in (
        ("eff_compute", 1e-308),
        ("overhead_step_s", 1e308),
        ("gemm_latency_s", 2),
        ("memory_utilization", 1e-320),  # rank overflowed on it
        ("eff_expert", 0),  # expert work would take forever
        ("eff_expert", 1e308),
        ("overhead_moe_layer_s", -1e-5),
        ("overhead_moe_layer_s", 5),
        ("idle_fraction", 1e-320),  # printed as an idle draw of 0 W
        ("elementwise_factor", -1),
        ("elementwise_factor", 1e9),
        ("logits_all", 2),  # a setting: 0 or 1 (or a share between)
    ):
        f.write_text(json.dumps({"hardware": {"h100-sxm": {term: bad}}}))
        with pytest.raises(ConfigError, match="must be a number in") as err:
            load_calibration(f)
        assert err.value.field == f"hardware.h100-sxm.{term}"
    f.write_text(json.dumps({"hardware": {"h100-sxm": {"gemm_pad_elems": 0, "eff_comm": 1}}}))
    assert load_calibration(f).params["h100-sxm"].eff_comm == 1.0  # off and ideal: allowed
    for bad in (0, -1, 1e9, "2", True):  # json.dumps writes no NaN or inf a reader would keep
        f.write_text(json.dumps({"hardware": {"h100-sxm": {"attn_factor": bad}}}))
        with pytest.raises(ConfigError, match=r"in \(0, 100\]") as err:
            load_calibration(f)
        assert err.value.field == "hardware.h100-sxm.attn_factor"
    f.write_text('{"hardware": {"h100-sxm": {"attn_factor": NaN}}}')
    with pytest.raises(ConfigError, match="attn_factor"):
        load_calibration(f)


def test_a_calibration_fitted_under_the_earlier_step_model_is_refused(tmp_path: Path) -> None:
    """A file calibrate wrote before 2026-12-04's step model (no elementwise_factor) fitted
    its overheads to cover the elementwise kernels and the per-token LM head the model now
    counts: used as is, it would count them twice. It is refused, saying to calibrate again; a
    hand-written entry of a few terms is not."""
    f = tmp_path / "c.json"
    old = {"eff_memory": 0.85, "overhead_step_s": 2e-4, "fitted": ["eff_memory"], "kept": []}
    f.write_text(json.dumps({"version": 1, "hardware": {"h100-sxm": old}}))
    with pytest.raises(ConfigError, match="calibrate again") as err:
        load_calibration(f)
    assert err.value.field == "hardware.h100-sxm"
    f.write_text(
        json.dumps({"version": 1, "hardware": {"h100-sxm": {**old, "elementwise_factor": 1}}})
    )
    assert load_calibration(f).params["h100-sxm"].eff_memory == 0.85
    f.write_text(json.dumps({"hardware": {"h100-sxm": {"eff_memory": 0.85}}}))
    assert load_calibration(f).params["h100-sxm"].eff_memory == 0.85


def _row(phase: str, batch: int, tokens: int, seconds: float) -> Measurement:
    return Measurement(
        "llama-3.1-8b",
        "h100-sxm",
        1,
        1,
        "bf16",
        phase,
        batch,
        tokens,
        tokens,
        seconds,
        None,  # type: ignore[arg-type]
    )


def _defaults_time(phase: str, batch: int, tokens: int) -> float:
    pm = PerfModel(
        Deployment(load_model("llama-3.1-8b"), load_catalog().device("h100-sxm")), EngineParams()
    )
    return (
        pm.prefill(batch, tokens) if phase == "prefill" else pm.decode_step(batch, tokens)
    ).time_s


def test_one_row_keeps_the_defaults_and_says_so() -> None:
    calib, [report] = fit_calibration([_row("decode", 8, 512, 0.02)], load_catalog())
    assert report.fitted == () and report.params.eff_memory == EngineParams().eff_memory
    assert any("1 row" in w and "defaults kept" in w for w in report.warnings)
    assert calib.terms["h100-sxm"][0] == ()


def test_rows_of_one_shape_keep_the_defaults() -> None:
    rows = [_row("decode", 8, 512, t) for t in (0.02, 0.021, 0.5)]
    _, [report] = fit_calibration(rows, load_catalog())
    assert report.fitted == ()
    assert any("one shape" in w for w in report.warnings)


def test_noise_around_the_defaults_is_not_fitted() -> None:
    """Rows the defaults already predict, with noise no term can explain: no fit beats the
    defaults on held-out rows, so they are kept (the fit never makes predictions worse)."""
    rng = random.Random(3)
    shapes = [
        ("prefill", 1, 512),
        ("prefill", 4, 2048),
        ("decode", 1, 512),
        ("decode", 32, 1024),
        ("decode", 128, 256),
        ("decode", 8, 4096),
    ]
    rows = [
        _row(ph, b, t, _defaults_time(ph, b, t) * rng.choice((0.9, 1.1))) for ph, b, t in shapes
    ]
    _, [report] = fit_calibration(rows, load_catalog())
    assert (
        report.loo_mean_abs_pct is None
        or report.loo_mean_abs_pct >= report.default_mean_abs_pct * 0.97
        or report.fitted
    )
    assert report.mean_abs_pct <= report.default_mean_abs_pct + 1e-9


def test_a_clear_bandwidth_shortfall_is_fitted_and_recorded(tmp_path: Path) -> None:
    """Decode rows 30% slower than the defaults: eff_memory is fitted, the rest kept, and the
    calibration file says which is which."""
    shapes = [
        ("decode", 1, 512),
        ("decode", 8, 1024),
        ("decode", 32, 512),
        ("decode", 64, 2048),
        ("decode", 4, 256),
    ]
    rows = [_row(ph, b, t, _defaults_time(ph, b, t) * 1.3) for ph, b, t in shapes]
    calib, [report] = fit_calibration(rows, load_catalog())
    assert "eff_memory" in report.fitted and report.loo_mean_abs_pct is not None
    assert report.loo_mean_abs_pct < report.default_mean_abs_pct / 3
    out = tmp_path / "c.json"
    calib.save(out)
    entry = json.loads(out.read_text())["hardware"]["h100-sxm"]
    assert "eff_memory" in entry["fitted"] and "overhead_layer_s" in entry["kept"] + entry["fitted"]
    assert load_calibration(out).terms["h100-sxm"] == calib.terms["h100-sxm"]


def test_a_step_faster_than_the_datasheet_allows_is_refused(tmp_path: Path) -> None:
    # 1 ns for a decode step of the 8B: a unit slip, not a measurement (it had been fitted,
    # with a 176,935,811% error in the report)
    f = tmp_path / "m.csv"
    write_measurements(f, [_row("decode", 64, 2048, 1e-9), _row("decode", 1, 512, 0.008)])
    with pytest.raises(ConfigError, match="datasheet peaks: no engine ran") as err:
        fit_calibration(read_measurements(f), load_catalog())
    assert (err.value.line, err.value.field) == (2, "seconds")


def test_the_moe_terms_are_fitted_only_from_moe_rows(tmp_path: Path) -> None:
    """An H200's measured steps (tests/data/gpu_grid_h200_2026-12-04/run4): dense rows leave
    the MoE terms out of the fit (neither fitted nor kept: nothing there identifies them);
    two MoE rows among six fit each MoE layer's routing, and the file records it."""
    data = Path(__file__).parent / "data" / "gpu_grid_h200_2026-12-04" / "run4"
    rows = read_measurements(data / "measurements.csv")
    pick = {("decode", 1, 2048), ("decode", 64, 2048)}
    chosen = [
        m
        for m in rows
        if (m.phase, m.batch, m.context_tokens) in pick
        and m.model in ("llama-3.1-8b", "llama-3.2-1b", "qwen1.5-moe-a2.7b")
    ]
    dense = [m for m in chosen if not m.model.startswith("qwen")]
    _, [report] = fit_calibration(dense, load_catalog())
    assert not {"eff_expert", "overhead_moe_layer_s"} & set(report.fitted + report.kept)
    calib, [report] = fit_calibration(chosen, load_catalog())
    assert "overhead_moe_layer_s" in report.fitted and "eff_expert" in report.kept
    routing = calib.params["h200-sxm"].overhead_moe_layer_s
    assert 2e-5 < routing < 2e-4  # tens of microseconds a layer: a handful of kernels
    calib.save(tmp_path / "c.json")
    again = load_calibration(tmp_path / "c.json")
    assert again.params["h200-sxm"].overhead_moe_layer_s == pytest.approx(routing)


_DECODE_SHAPES = [(1, 512), (8, 1024), (32, 512), (64, 2048), (4, 256)]


def test_power_keeps_its_defaults_with_too_few_watts_and_warns_when_implausible() -> None:
    """Two rows with watts cannot fit a power term and check it: the curve is kept. Watts under
    the idle draw are fitted with a warning; watts no device can draw (20 W: under half an idle
    H100's) are refused when the rows load (test_calibrate_input.py), and where a caller builds
    the rows itself they push the fitted terms far past their priors, and calibrate says the
    model cannot describe them rather than passing the fit off as physics."""
    rows = [
        dataclasses.replace(
            _row("decode", b, t, _defaults_time("decode", b, t)), watts=500.0 if i < 2 else None
        )
        for i, (b, t) in enumerate(_DECODE_SHAPES)
    ]
    _, [report] = fit_calibration(rows, load_catalog())
    assert report.params.power_k_memory == EngineParams().power_k_memory
    assert any("2 rows with watts" in n and "kept" in n for n in report.notes)
    assert {"power_k_compute", "power_k_memory", "idle_fraction"} <= set(report.kept)
    cool = [
        dataclasses.replace(_row("decode", b, t, _defaults_time("decode", b, t)), watts=90.0)
        for b, t in _DECODE_SHAPES
    ]
    _, [report] = fit_calibration(cool, load_catalog())
    # says what is wrong with the rows: under the (assumed) idle draw of an H100
    assert any("fewer watts per device than h100-sxm's idle" in w for w in report.warnings)
    hw = load_catalog().device("h100-sxm")
    loaded = [step_row(m, hw, "m.csv") for m in cool]

    def drawing(watts: float) -> list[StepRow]:
        return [dataclasses.replace(r, m=dataclasses.replace(r.m, watts=watts)) for r in loaded]

    report = fit_hardware(drawing(20.0), hw, "m.csv")
    assert any("power: fitted" in n for n in report.notes)
    assert "idle_fraction" in report.fitted  # the calibration file records it as fitted
    assert any("idle_fraction fitted" in w for w in report.warnings), report.warnings
    # watts the curve cannot follow (0.002 W: a unit error) are fitted at the terms' bounds and
    # miss by orders of magnitude: a warning with the size of the miss, not only the bounds
    report = fit_hardware(drawing(0.002), hw, "m.csv")
    assert any("the power curve misses the measured watts by" in w for w in report.warnings)


def test_terms_a_file_leaves_out_are_the_hardwares_own_defaults(tmp_path: Path) -> None:
    """An entry without some terms took the GPU defaults for them on a CPU (profile's file with
    eff_compute and overhead_step_s deleted: TTFT 17% and TPOT 18% faster, while the output
    still said 'wattserve defaults for CPUs')."""
    cat = load_catalog()
    cpu = cat.device("epyc-9654")
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"version": 1, "hardware": {"epyc-9654": {"eff_memory": 0.5}}}))
    got = load_calibration(f).params_for(cpu)
    assert got.eff_memory == 0.5
    want = default_params(cpu)
    assert got.eff_compute == want.eff_compute and got.overhead_step_s == want.overhead_step_s
    assert want.eff_compute != EngineParams().eff_compute  # a CPU's are not a GPU's
    calib = load_calibration(f)
    assert calib.params_for(cpu) is calib.params_for(cpu)  # one object: estimate caches by it


def test_calibrate_takes_logits_all_as_profile_does(tmp_path: Path) -> None:
    """profile fits its llama.cpp rows with the LM head on every token; calibrate had no way
    to say so, so calibrating profile's own CSV again wrote logits_all 0 and other terms."""
    from typer.testing import CliRunner

    from wattserve.cli.app import app

    data = REPO / "tests" / "data" / "llama_cpp_logits_all"
    out = tmp_path / "c.json"
    args = ["calibrate", str(data / "measurements.csv"), "--hardware-file",
            str(data / "local-cpu.yaml"), "-o", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, [*args, "--logits-all"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["hardware"]["local-cpu"]["logits_all"] == 1.0
    assert "the LM head on every token (logits_all)" in r.output


def test_an_unknown_column_is_refused_naming_the_one_meant(tmp_path: Path) -> None:
    """A misspelt kv_dtype column was dropped without a word, and the KV cache taken as bf16
    for an fp8 run."""
    f = tmp_path / "m.csv"
    f.write_text(f"{HEADER},kv_dtpye\nllama-3.1-8b,h100-sxm,1,1,fp8,decode,1,,512,0.01,,fp8\n")
    with pytest.raises(
        ConfigError, match=r"unknown column\(s\) 'kv_dtpye' \(did you mean kv_dtype"
    ):
        read_measurements(f)


def test_repeated_rows_are_held_out_together() -> None:
    """The MoE example's six rows listed three times: each row was held out alone while its
    two copies stayed in the fit, so 11 terms were fitted and 0.2% claimed held out (10.3% for
    the six rows). Rows of one shape now leave together."""
    rows = read_measurements(REPO / "examples" / "measurements-h200-moe.csv")
    _, [once] = fit_calibration(rows, load_catalog())
    _, [thrice] = fit_calibration(rows * 3, load_catalog())
    assert once.loo_mean_abs_pct is not None and thrice.loo_mean_abs_pct is not None
    assert thrice.loo_mean_abs_pct > 0.8 * once.loo_mean_abs_pct
    time_terms = [n for n in thrice.fitted if not n.startswith(("power_", "idle_"))]
    assert len(time_terms) <= 5  # k terms need k + 1 distinct shapes, not rows


def test_an_moe_term_fitted_at_its_bound_is_warned_about() -> None:
    """The MoE example with its MoE rows four times slower: eff_expert went to its floor, 5.8
    prior widths from its default, and no warning said so (the check skipped the MoE terms)."""
    rows = [
        dataclasses.replace(m, seconds=m.seconds * 4) if "moe" in m.model or "a3b" in m.model
        else m
        for m in read_measurements(REPO / "examples" / "measurements-h200-moe.csv")
    ]  # fmt: skip
    _, [report] = fit_calibration(rows, load_catalog())
    assert any(w.startswith("eff_expert fitted at its bound") for w in report.warnings)


def test_the_power_curve_reads_each_rows_own_deployment() -> None:
    """Rows of 1, 2 and 4 pipeline stages at the defaults' own watts: the fit used the first
    row's deployment for every row, so it reported 31% power error, fitted both slopes (in one
    row order; not in the other) and predicted these rows 41% low (found by an audit)."""
    hw = load_catalog().device("h100-sxm")
    rows = []
    for count in (1, 2, 4):
        pm = PerfModel(Deployment(load_model("llama-3.1-8b"), hw, pp=count), EngineParams())
        for phase, batch, tokens in (("decode", 1, 512), ("decode", 32, 1024), ("prefill", 8, 512)):
            c = pm.prefill(batch, tokens) if phase == "prefill" else pm.decode_step(batch, tokens)
            rows.append(
                Measurement("llama-3.1-8b", "h100-sxm", count, 1, "bf16", phase, batch, tokens,
                            tokens, c.time_s, c.power_w / count)  # type: ignore[arg-type]
            )  # fmt: skip
    for order in (rows, rows[::-1]):
        _, [report] = fit_calibration(order, load_catalog())
        assert report.power_mean_abs_pct is not None and report.power_mean_abs_pct < 0.1
        assert not {"power_k_compute", "power_k_memory"} & set(report.fitted)


def test_a_term_its_fit_sends_to_its_upper_bound_is_never_selected() -> None:
    """Steps 3 s slower than the defaults: a per-step overhead would need more than its 2 s
    bound. A set whose fit ends at a term's upper bound is not selected (the term stands in for
    something the model does not describe); the report says which were excluded. (Such rows,
    hundreds of times their prediction, are refused when a file loads: test_calibrate_input.py;
    built by a caller, they reach the fit.)"""
    shapes = [(1, 512), (8, 1024), (32, 512), (64, 2048), (4, 256), (16, 4096)]
    hw = load_catalog().device("h100-sxm")
    rows = [
        dataclasses.replace(r, m=dataclasses.replace(r.m, seconds=r.m.seconds + 3.0))
        for r in (step_row(_row("decode", b, t, _defaults_time("decode", b, t)), hw, "m.csv")
                  for b, t in shapes)
    ]  # fmt: skip
    report = fit_hardware(rows, hw, "m.csv")
    assert "overhead_step_s excluded (fitted at its upper bound)" in " ".join(report.notes)
    assert "overhead_step_s" not in report.fitted
    assert report.params.overhead_step_s == EngineParams().overhead_step_s
    assert not any("upper" in w for w in report.warnings)


def test_a_large_held_out_error_warns(tmp_path: Path) -> None:
    rng = random.Random(1)
    shapes = [
        ("decode", 1, 512),
        ("decode", 8, 1024),
        ("decode", 32, 512),
        ("prefill", 2, 2048),
        ("decode", 4, 256),
        ("prefill", 1, 128),
    ]
    rows = [_row(ph, b, t, _defaults_time(ph, b, t) * rng.uniform(0.3, 3.0)) for ph, b, t in shapes]
    _, [report] = fit_calibration(rows, load_catalog())
    if report.loo_mean_abs_pct is not None and report.loo_mean_abs_pct > 15:
        assert any("above 15%" in w for w in report.warnings)
    assert report.mean_abs_pct <= report.default_mean_abs_pct + 1e-9 or report.fitted


def test_calibrate_cli_prints_residuals_and_what_was_kept(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wattserve.cli.app import app

    f = tmp_path / "m.csv"
    f.write_text(f"{HEADER}\nllama-3.1-8b,h100-sxm,1,1,bf16,decode,8,512,512,0.02,\n")
    result = CliRunner().invoke(app, ["calibrate", str(f), "-o", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "defaults kept" in result.output and "WARNING" in result.output
    assert "held-out error" in result.output


def test_a_phase_unused_field_may_be_empty(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text(
        f"{HEADER}\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,prefill,1,512,,0.05,\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,,1024,0.009,\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,,,0.009,\n"
    )
    with pytest.raises(ConfigError) as err:
        read_measurements(f)
    assert (err.value.line, err.value.field) == (4, "context_tokens")
    f.write_text("\n".join(f.read_text().splitlines()[:3]) + "\n")
    prefill, decode = read_measurements(f)
    assert (prefill.prompt_tokens, prefill.context_tokens) == (512, 512)
    assert decode.context_tokens == 1024


def test_a_model_config_path_is_found_next_to_the_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "run"
    (folder / "models").mkdir(parents=True)
    config = {
        "model_type": "llama",
        "hidden_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 1000,
    }
    (folder / "models" / "tiny-2l.json").write_text(json.dumps(config))
    f = folder / "m.csv"
    f.write_text(
        f"{HEADER}\n"
        "models/tiny-2l.json,h100-sxm,1,1,bf16,decode,1,,128,0.0002,\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,8,,1024,0.009,\n"
    )
    monkeypatch.chdir(tmp_path)  # not the CSV's folder
    tiny, builtin = read_measurements(f)
    assert Path(tiny.model) == folder / "models" / "tiny-2l.json"
    assert builtin.model == "llama-3.1-8b"
    _, reports = fit_calibration([tiny, builtin], load_catalog())
    assert reports[0].rows == 2


GOOD_ROW = "llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,128,128,0.01,"


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        (
            f"{HEADER}\ncaf\xe9,h100-sxm,1,1,bf16,decode,8,,431,0.01,\n".encode("latin-1"),
            2,
            "UTF-8",
        ),
        # the field past csv's limit is on line 2 (named line 1 until 2026-12-05)
        (f"{HEADER}\n{'x' * 200_000},h100-sxm,1,1,bf16,decode,8,,431,0.01,\n".encode(), 2, "CSV"),
        (f"{HEADER},model\n{GOOD_ROW},x\n".encode(), 1, "named twice"),
        (f"\ufeff{HEADER}\n{GOOD_ROW}\n{GOOD_ROW}\n".encode(), None, ""),  # a BOM is dropped
    ],
)
def test_a_csv_that_is_not_utf8_csv_is_an_error_with_its_line(
    tmp_path: Path, content: bytes, where: int | None, message: str
) -> None:
    f = tmp_path / "m.csv"
    f.write_bytes(content)
    if where is None:
        assert len(read_measurements(f)) == 2
        return
    with pytest.raises(ConfigError, match=message) as err:
        read_measurements(f)
    assert (err.value.path, err.value.line) == (str(f), where)


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ("llama-3.1-70b,h100-sxm,1000000000,4,bf16,decode,8,,431,0.02,", "count", "stages"),
        ("llama-3.1-405b,h100-sxm,1,1,bf16,decode,8,,431,0.05,", "count", "weights"),
        ("llama-3.1-8b,h100-sxm,1,1,bf16,prefill,4,2048,100,0.2,", "context_tokens", "prompt"),
        ("/dev/zero,h100-sxm,1,1,bf16,decode,8,,431,0.01,", "model", "regular file"),
        (f"{'a' * 300},h100-sxm,1,1,bf16,decode,8,,431,0.01,", "model", "unknown model"),
    ],
)
def test_rows_naming_impossible_runs_or_unreadable_models_are_refused(
    tmp_path: Path, row: str, field: str, message: str
) -> None:
    f = tmp_path / "m.csv"
    f.write_text(f"{HEADER}\n{GOOD_ROW}\n{row}\n")
    with pytest.raises(ConfigError, match=message) as err:
        fit_calibration(read_measurements(f), load_catalog(), source=str(f))
    assert (err.value.line, err.value.field) == (3, field)


def test_a_model_config_nested_too_deeply_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    f = tmp_path / "m.csv"
    f.write_text(f"{HEADER}\ndeep.json,h100-sxm,1,1,bf16,decode,8,,431,0.01,\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        fit_calibration(read_measurements(f), load_catalog(), source=str(f))


def test_a_number_too_long_for_python_to_read_is_an_error(tmp_path: Path) -> None:
    """json.loads refuses integers of more than 4,300 digits with a ValueError, which went
    through as a traceback from a calibration file or a model's config.json."""
    huge = "1" * 5000
    cal = tmp_path / "c.json"
    cal.write_text('{"version": 1, "hardware": {"h100-sxm": {"eff_compute": ' + huge + "}}}")
    with pytest.raises(ConfigError, match="more than 4,300 digits"):
        load_calibration(cal)
    (tmp_path / "m.json").write_text('{"hidden_size": ' + huge + "}")
    f = tmp_path / "m.csv"
    f.write_text(f"{HEADER}\nm.json,h100-sxm,1,1,bf16,decode,8,,431,0.01,\n")
    with pytest.raises(ConfigError, match="more than 4,300 digits"):
        fit_calibration(read_measurements(f), load_catalog(), source=str(f))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ('"fit_error": {"rows": "six"}', "fit_error"),
        ('"overhead_step_s": Infinity', "overhead_step_s"),
        ('"overhead_step_s": 1' + "0" * 400, "overhead_step_s"),
        # a misspelt term would leave its default in place without a word
        ('"eff_memroy": 0.3', "eff_memroy"),
        ('"kept": 5', "kept"),
        ('"fitted": ["eff_memory", "nonsense"]', "fitted"),
        ('"source": {"a": 1}', "source"),
    ],
)
def test_an_edited_calibration_file_is_refused_naming_the_field(
    tmp_path: Path, edit: str, field: str
) -> None:
    f = tmp_path / "c.json"
    f.write_text('{"version": 1, "hardware": {"h100-sxm": {' + edit + "}}}")
    with pytest.raises(ConfigError) as err:
        load_calibration(f)
    assert err.value.field == f"hardware.h100-sxm.{field}"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"version": 2, "hardware": {}}', "version"),
        ('{"version": 1, "hardware": {}, "hardwre": {"h100-sxm": {}}}', "hardwre"),
    ],
)
def test_a_calibration_of_another_version_or_with_unknown_fields_is_refused(
    tmp_path: Path, text: str, field: str
) -> None:
    f = tmp_path / "c.json"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_calibration(f)
    assert err.value.field == field


def test_calibrate_refuses_an_output_it_cannot_write_before_fitting(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wattserve.cli.app import app

    f = tmp_path / "m.csv"
    f.write_text(f"{HEADER}\n{GOOD_ROW}\n")
    for out in (tmp_path, tmp_path / "no" / "c.json"):
        result = CliRunner().invoke(app, ["calibrate", str(f), "-o", str(out)])
        assert result.exit_code == 2 and "--output" in result.output, result.output
        assert "Traceback" not in result.output


def test_an_estimate_names_the_calibration_that_moved_its_terms() -> None:
    """A calibrated estimate used to read exactly like an uncalibrated one."""
    from wattserve.estimate.explain import summary

    root = Path(__file__).parents[1]
    calib, _ = fit_calibration(
        read_measurements(root / "examples" / "measurements-h100-70b.csv"),
        load_catalog(),
        source="m.csv",
    )
    text = summary(estimate("llama-3.1-70b", "h100-sxm", tp=4, calibration=calib))
    assert "  engine terms:        calibrated from m.csv (6 rows)" in text
    assert "engine terms" not in summary(estimate("llama-3.1-70b", "h100-sxm", tp=4))


def test_an_estimate_says_when_its_calibration_has_no_entry_for_the_hardware(
    tmp_path: Path,
) -> None:
    f = tmp_path / "c.json"
    f.write_text('{"version": 1, "hardware": {"H200-SXM": {"eff_memory": 0.5}}}')
    e = estimate("llama-3.1-8b", "h100-sxm", calibration=f)
    assert "no entry for h100-sxm (it has H200-SXM)" in e.assumptions[0]
    assert e.tpot_s == estimate("llama-3.1-8b", "h100-sxm").tpot_s
    # an entry filed under the id in another case is the device's, as ids are everywhere
    e = estimate("llama-3.1-8b", "h200-sxm", calibration=f)
    assert not e.assumptions or "no entry" not in e.assumptions[0]
    assert e.tpot_s > 1.3 * estimate("llama-3.1-8b", "h200-sxm").tpot_s  # memory at half speed


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("1_000", "batch"),  # int() reads these; no measuring script writes them
        ("+5", "batch"),
        ("\u0661\u0662", "batch"),
        ("1_0.5", "seconds"),
        ("nan", "watts"),
        ("0x10", "count"),
    ],
)
def test_numbers_are_ascii_decimals(tmp_path: Path, value: str, field: str) -> None:
    f = tmp_path / "m.csv"
    cells = dict(zip(COLUMNS, GOOD_ROW.split(","), strict=True))
    cells[field] = value
    f.write_text(f"{HEADER}\n{GOOD_ROW}\n{','.join(cells.values())}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        read_measurements(f)
    assert (err.value.path, err.value.line, err.value.field) == (str(f), 3, field)


def test_a_row_with_more_fields_than_the_header_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW}1,2,3\n")
    with pytest.raises(ConfigError, match="13 fields where the header names 11") as err:
        read_measurements(f)
    assert (err.value.path, err.value.line) == (str(f), 3)


def test_calibrate_never_writes_over_its_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wattserve.cli.app import app

    f = tmp_path / "m.csv"
    text = f"{HEADER}\n{GOOD_ROW}\n"
    f.write_text(text)
    hw = tmp_path / "hw.yaml"
    hw.write_text("devices: {}\n")
    for out, extra in ((f, []), (hw, ["--hardware-file", str(hw)])):
        result = CliRunner().invoke(app, ["calibrate", str(f), "-o", str(out), *extra])
        assert result.exit_code == 2 and "is an input" in result.output, result.output
    assert f.read_text() == text and hw.read_text() == "devices: {}\n"
    # nor over a model config.json a row names (a file, or the one in a folder)
    (tmp_path / "m").mkdir()
    config = tmp_path / "m" / "config.json"
    config.write_bytes((REPO / "src/wattserve/data/models/llama-3.1-8b.json").read_bytes())
    for name in ("m/config.json", "m"):
        f.write_text(f"{HEADER}\n{GOOD_ROW.replace('llama-3.1-8b', name, 1)}\n")
        result = CliRunner().invoke(app, ["calibrate", str(f), "-o", str(config)])
        assert result.exit_code == 2 and "is an input" in result.output, result.output
    assert (
        config.read_bytes() == (REPO / "src/wattserve/data/models/llama-3.1-8b.json").read_bytes()
    )


def test_a_row_the_model_cannot_time_names_the_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wattserve.cli.app import app

    f = tmp_path / "m.csv"  # groq-lpu publishes no interconnect: TP rows cannot be timed
    f.write_text(f"{HEADER}\nllama-3.1-8b,groq-lpu,4,4,bf16,decode,1,128,128,0.01,\n")
    result = CliRunner().invoke(app, ["calibrate", str(f), "-o", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: {f}:2, field 'hardware': cannot model this row" in result.output


def test_rows_of_one_device_in_two_cases_are_one_fit(tmp_path: Path) -> None:
    """Ids match in any case, so rows under h100-sxm and H100-SXM are one device's: they were
    two half fits, and the lookup then took one and ignored the other half of the rows."""
    rows = (Path(__file__).parents[1] / "examples" / "measurements-h100-70b.csv").read_text()
    lines = rows.splitlines()
    mixed = [lines[0]] + [
        line.replace("h100-sxm", "H100-SXM") if i % 2 else line for i, line in enumerate(lines[1:])
    ]
    f = tmp_path / "m.csv"
    f.write_text("\n".join(mixed) + "\n")
    calib, reports = fit_calibration(read_measurements(f), load_catalog(), source=str(f))
    assert list(calib.params) == ["h100-sxm"] and reports[0].rows == 6
    both = tmp_path / "c.json"
    both.write_text('{"hardware": {"h100-sxm": {}, "H100-SXM": {}}}')
    with pytest.raises(ConfigError, match="one device id in two cases") as err:
        load_calibration(both)
    assert err.value.field == "hardware.H100-SXM"


@pytest.mark.parametrize(
    ("row", "line", "says"),
    [
        # a quoted field across two lines: named on line 3 with the value broken over two
        ('"llama-3.1-\n70b",h100-sxm', 2, "holds a line break"),
        ('"llama-3.1-8b,h100-sxm', 2, "never closed"),  # the quote swallowed the rest
        ("llama-3.1-8b,h100-sxm", 2, "fields where the header names"),  # a short row
        ("x" * 200_000 + ",h100-sxm", 2, "not a readable CSV"),  # past csv's field limit
    ],
)
def test_a_broken_csv_row_is_named_on_its_first_line(
    tmp_path: Path, row: str, line: int, says: str
) -> None:
    """Each named the wrong line or the wrong cause: a short row read as 'phase: must be
    prefill or decode', an open quote as 'hardware: must not be empty' on line 7."""
    f = tmp_path / "m.csv"
    f.write_text(",".join(COLUMNS) + "\n" + row + "\n" + "\n".join(["x"] * 4) + "\n")
    with pytest.raises(ConfigError, match=says) as err:
        read_measurements(f)
    assert err.value.line == line, str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "hw_id",
    ["h100\x1b[2J-sxm", "", "   ", "h100-sxm\n", "h100\u202e-sxm", "h" * 201],
)
def test_a_calibration_entry_whose_id_is_no_hardware_id_is_refused(
    tmp_path: Path, hw_id: str
) -> None:
    """An escape in an entry's id reached the terminal with estimate's `(it has ...)`, an
    empty id was listed as `none`, and a megabyte id was printed whole in an error."""
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"version": 1, "hardware": {hw_id: {"eff_memory": 0.7}}}))
    with pytest.raises(ConfigError, match="is not a hardware id") as err:
        load_calibration(f)
    assert err.value.field == "hardware" and str(err.value).isprintable()
    assert len(str(err.value)) < 400


def test_an_unknown_key_holding_an_escape_is_named_escaped(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"version": 1, "hardware": {"h100-sxm": {"x\x1b]0;t\x07": 1}}}))
    with pytest.raises(ConfigError, match="unknown field") as err:
        load_calibration(f)
    assert err.value.field == "hardware.h100-sxm.'x\\x1b]0;t\\x07'"
    assert str(err.value).isprintable()


def test_a_calibration_with_a_term_not_a_number_is_never_written(tmp_path: Path) -> None:
    """json writes NaN and Infinity as they are: a file every reader refuses, written
    without a word. Saving it is an error naming the term; the file is not made."""
    for params, errors, term in (
        (EngineParams(eff_memory=float("nan")), {}, "eff_memory"),
        (EngineParams(), {"mean_abs_pct": float("inf")}, "fit_error.mean_abs_pct"),
    ):
        calibration = Calibration(params={"h100-sxm": params}, fit_error={"h100-sxm": errors})
        out = tmp_path / "c.json"
        with pytest.raises(CalibrationError, match=f"h100-sxm came out with {term} = "):
            calibration.save(out)
        assert list(tmp_path.iterdir()) == []


def test_a_held_out_fit_is_not_stuck_at_the_full_fit(tmp_path: Path) -> None:
    """Nine rows around the defaults (each step 0.88-1.12 of what they predict, two models):
    the held-out fits had started from the fit on all rows alone and stopped there, so each
    row left out was predicted by terms fitted on it; the GEMM pad 'held out' 7.25% against
    the defaults' 7.59% and was taken, though fitted without each row it predicts 8.14%. The
    defaults are kept (a session-37 review)."""
    csv = tmp_path / "m.csv"
    csv.write_text(
        "model,hardware,count,tensor_parallel,dtype,phase,batch,prompt_tokens,context_tokens,"
        "seconds,watts\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,prefill,1,128,128,0.00839105,700\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,prefill,1,2048,2048,0.0495687,700\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,prefill,8,512,512,0.112802,700\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,1,512,512,0.00725666,461.2\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,32,1024,1024,0.0100455,522.4\n"
        "llama-3.1-8b,h100-sxm,1,1,bf16,decode,128,512,512,0.011113,637.7\n"
        "llama-3.2-1b,h100-sxm,1,1,bf16,prefill,4,256,256,0.00523278,672.9\n"
        "llama-3.2-1b,h100-sxm,1,1,bf16,decode,1,256,256,0.00157098,338.3\n"
        "llama-3.2-1b,h100-sxm,1,1,bf16,decode,64,2048,2048,0.00409557,453.7\n"
    )
    from wattserve.calibrate.measurements import read_measurements

    _, [report] = fit_calibration(read_measurements(csv), load_catalog())
    time_terms = [t for t in report.fitted if not t.startswith(("power_", "idle_"))]
    assert not time_terms, (report.fitted, report.loo_mean_abs_pct, report.default_mean_abs_pct)
