"""Expert parallelism (vLLM's --enable-expert-parallel): whole experts across the tp devices,
the step waiting for the busiest device (docs/model.md).

The load formulas are checked against a Monte Carlo of the routing itself (uniform top-k over
the experts, each device holding E/R of them): the process the formulas describe, not their
own output. How real routers depart from uniform is not in these checks (docs/model.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wattserve import Deployment, EngineParams, PerfModel, load_catalog, load_model
from wattserve.cli.app import app
from wattserve.core.fleet import load_fleet
from wattserve.core.perf import decode_run, run_lines
from wattserve.errors import ConfigError
from wattserve.estimate import estimate

H100 = load_catalog().device("h100-sxm")


def ep_model(name: str, tp: int, params: EngineParams | None = None) -> PerfModel:
    dep = Deployment(load_model(name), H100, tp=tp, expert_parallel=True)
    return PerfModel(dep, params or EngineParams())


def routed(rng: np.random.Generator, tokens: int, experts: int, k: int, ranks: int, trials: int):  # type: ignore[no-untyped-def]
    """Busiest device's assignments and distinct experts read, averaged over `trials`."""
    load, read = 0.0, 0.0
    local = experts // ranks
    for _ in range(trials):
        chosen = np.argsort(rng.random((tokens, experts)), axis=1)[:, :k]  # k distinct
        load += np.bincount((chosen // local).ravel(), minlength=ranks).max()
        used = np.zeros(experts, bool)
        used[chosen.ravel()] = True
        read += used.reshape(ranks, local).sum(axis=1).max()
    return load / trials, read / trials


@pytest.mark.parametrize(
    ("name", "tp"),
    [("qwen3-30b-a3b", 2), ("qwen3-30b-a3b", 4), ("qwen3-30b-a3b", 8), ("mixtral-8x7b", 4)],
)
def test_busiest_device_matches_a_monte_carlo_of_uniform_routing(name: str, tp: int) -> None:
    pm = ep_model(name, tp)
    m = load_model(name)
    rng = np.random.default_rng(7)
    for tokens in (2, 16, 128):
        load, read = routed(rng, tokens, m.num_experts, m.experts_per_token, tp, 400)
        assert pm.busiest_load(tokens) == pytest.approx(load, rel=0.06)
        assert pm.experts_read(tokens) / tp == pytest.approx(read, rel=0.06)
    # past a few hundred tokens every device is busy with about an even share
    assert pm.busiest_load(4096) / (4096 * m.experts_per_token / tp) < 1.05


def test_the_busiest_device_slows_decode_and_an_even_split_does_not() -> None:
    tp_only = PerfModel(Deployment(load_model("qwen3-30b-a3b"), H100, tp=4), EngineParams())
    ep = ep_model("qwen3-30b-a3b", 4)
    for batch in (1, 8, 64):
        plain, spread = tp_only.decode_step(batch, 1000), ep.decode_step(batch, 1000)
        assert spread.time_s > plain.time_s  # it reads more than a quarter of the experts
        assert spread.bytes == pytest.approx(plain.bytes)  # the bytes moved are the same
        assert spread.flops == pytest.approx(plain.flops)
    # the imbalance fades with the batch: at 256 tokens nearly every expert of every device
    big = ep.decode_step(256, 1000).time_s / tp_only.decode_step(256, 1000).time_s
    assert big < 1.01
    # one device: nothing to balance
    one = Deployment(load_model("qwen3-30b-a3b"), H100, tp=1, expert_parallel=True)
    flat = Deployment(load_model("qwen3-30b-a3b"), H100, tp=1)
    assert PerfModel(one, EngineParams()).decode_step(8, 500) == PerfModel(
        flat, EngineParams()
    ).decode_step(8, 500)


def test_a_run_of_decode_steps_sums_to_the_steps_one_by_one() -> None:
    for params in (EngineParams(), EngineParams(gemm_pad_elems=1e6, eff_compute=0.05)):
        pm = ep_model("qwen3-30b-a3b", 4, params)
        for seqs in (1, 16, 128):
            lines = run_lines(pm, seqs, seqs * 1001.0)
            stepped = sum(pm.decode_step(seqs, 1000 + j).time_s for j in range(25))
            assert decode_run(pm, lines, 25)[0] == pytest.approx(stepped, rel=1e-9)
            assert pm.step_time(seqs, seqs * 1001.0, seqs * 1001.0, seqs) == pytest.approx(
                pm.decode_step(seqs, 1000).time_s, rel=1e-12
            )


def test_whole_experts_pay_the_wave_pad_at_full_width() -> None:
    params = EngineParams(gemm_pad_elems=1e6)
    tp = PerfModel(Deployment(load_model("qwen3-30b-a3b"), H100, tp=4), params)
    ep = ep_model("qwen3-30b-a3b", 4, params)
    m = load_model("qwen3-30b-a3b")
    # each device's grouped expert kernels: K of d + f_e/tp split, d + f_e whole
    ratio = (m.hidden_size + m.expert_intermediate_size) / (
        m.hidden_size + m.expert_intermediate_size / 4
    )
    assert ep.expert_pad_s / tp.expert_pad_s == pytest.approx(ratio)
    # the experts' row blocks are the same work either way, on the same devices
    for t in (1, 64, 4096):
        assert ep.gemm_pad_s(t) - ep.expert_pad_s == pytest.approx(
            tp.gemm_pad_s(t) - tp.expert_pad_s, rel=1e-12
        )


@pytest.mark.parametrize(
    ("model", "tp", "value", "says"),
    [
        ("llama-3.1-8b", 4, True, "dense model"),
        ("mixtral-8x7b", 4, "true", "true or false"),
        ("qwen1.5-moe-a2.7b", 8, True, "60 experts do not divide by 8"),
    ],
)
def test_a_layout_that_cannot_place_whole_experts_is_refused(
    model: str, tp: int, value: object, says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        Deployment(load_model(model), H100, tp=tp, expert_parallel=value)  # type: ignore[arg-type]
    assert err.value.field == "expert_parallel"
    with pytest.raises(ConfigError, match=says) as err:
        estimate(model, "h100-sxm", tp=tp, expert_parallel=value)  # type: ignore[arg-type]
    assert err.value.field == "expert_parallel"


def test_the_command_line_and_its_json() -> None:
    runner = CliRunner()
    args = ["estimate", "--model", "qwen3-30b-a3b", "--hardware", "h100-sxm", "--tp", "4"]
    out = runner.invoke(app, [*args, "--batch", "8", "--expert-parallel", "--explain"])
    assert out.exit_code == 0, out.output
    assert "whole experts over tp (EP)" in out.output
    assert "the busiest device takes" in out.output
    one = runner.invoke(app, [*args[:-2], "--expert-parallel"])  # tp 1: nothing to spread
    assert one.exit_code == 0 and "EP (no effect at tp 1)" in one.output, one.output
    js = runner.invoke(app, [*args, "--expert-parallel", "--json"])
    assert '"expert_parallel": true' in js.output
    bad = runner.invoke(
        app, ["estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--expert-parallel"]
    )
    assert bad.exit_code != 0 and "--expert-parallel" in bad.output and "dense" in bad.output
    assert "Traceback" not in bad.output


FLEET = """\
sites:
  dc: {{power_cap_w: 100000}}
deployments:
  moe:
    site: dc
    model: {model}
    hardware: h100-sxm
    tp: 4
    expert_parallel: {value}
"""


def test_fleet_files_take_the_flag_and_name_its_line(tmp_path: Path) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text(FLEET.format(model="qwen3-30b-a3b", value="true"))
    dep = load_fleet(f).deployments[0].deployment
    assert dep.expert_parallel is True
    for model, value, says in (
        ("qwen3-30b-a3b", '"true"', "expected true or false"),
        ("qwen3-30b-a3b", "1", "expected true or false"),
        ("llama-3.1-8b", "true", "dense model"),
    ):
        f.write_text(FLEET.format(model=model, value=value))
        with pytest.raises(ConfigError, match=says) as err:
            load_fleet(f)
        assert err.value.field == "deployments.moe.expert_parallel"
        assert err.value.line == 9


def test_more_stages_than_layers_is_refused_on_dram_parts_only() -> None:
    with pytest.raises(ConfigError, match="at most 32 pipeline stages") as err:
        estimate("llama-3.1-8b", "h100-sxm", pp=1_000_000)
    assert err.value.field == "pp"
    groq = estimate("llama-2-70b", "groq-lpu")  # SRAM chips as the weights fill: 668 > 80
    assert groq.pp > 80 and groq.fits
    with pytest.raises(ConfigError, match="model id") as err:
        estimate("", "h100-sxm")
    assert err.value.field == "model"
