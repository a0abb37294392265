from __future__ import annotations

from pathlib import Path

import pytest

from wattserve import ConfigError, UnknownNameError, load_catalog
from wattserve.core.catalog import builtin_catalog
from wattserve.core.hardware import CATEGORIES

REQUIRED = [
    "a100-sxm-80gb",
    "h100-sxm",
    "h100-pcie",
    "h200-sxm",
    "b200",
    "l4",
    "l40s",
    "rtx-4090",
    "mi300x",
    "mi325x",
    "gaudi3",
    "tpu-v5e",
    "tpu-v6e",
    "inferentia2",
    "trainium2",
    "groq-lpu",
    "cerebras-wse3",
    "tenstorrent-n300",
    "qualcomm-ai100-ultra",
    "mythic-m1076",
    "hailo-10h",
    "jetson-agx-orin-64gb",
    "jetson-orin-nano-8gb",
    "apple-m4-max",
    "epyc-9654",
    "xeon-8480",
]


def test_required_devices_and_every_category() -> None:
    cat = builtin_catalog()
    assert len(cat.devices) >= 35
    assert set(REQUIRED) <= set(cat.devices)
    assert {hw.category for hw in cat.devices.values()} == set(CATEGORIES)


def test_every_figure_has_a_source() -> None:
    for hw in builtin_catalog().devices.values():
        assert hw.figures, hw.id
        for key, fig in hw.figures.items():
            assert fig.source.strip(), f"{hw.id}.{key}"
            assert fig.value >= 0


def test_known_figures_match_the_reference_sheet(shared: Path) -> None:
    import csv

    text = (shared / "reference/accelerators_research.csv").read_text().splitlines()
    rows = {r["name"]: r for r in csv.DictReader(text)}
    cat = builtin_catalog()
    h100 = rows["NVIDIA H100 SXM5 80GB"]
    hw = cat.device("h100-sxm")
    assert hw.value("mem_bw_gbps") == float(h100["mem_bw_gbs"])
    assert hw.value("peak_tflops_bf16") == float(h100["bf16_tflops"])
    assert hw.value("tdp_w") == float(h100["tdp_w"])
    mi = rows["AMD Instinct MI300X"]
    # the sheet's 192 GB counts binary gigabytes; the catalog has what the device reports
    # (rocm-smi: 205,822,885,888 bytes, 0.2% under 192 GiB)
    reported = cat.device("mi300x").value("memory_gb")
    assert reported == pytest.approx(float(mi["mem_gb"]) * 2**30 / 1e9, rel=0.005)


def test_unverified_and_unknown_figures_stay_marked() -> None:
    cat = builtin_catalog()
    assert not cat.device("l4").figures["peak_tflops_bf16"].verified
    assert cat.device("hailo-10h").value("mem_bw_gbps") is None  # not published: left out
    assert cat.device("tpu-v5e").value("tdp_w") is None


def test_unknown_hardware_names_closest_matches() -> None:
    with pytest.raises(UnknownNameError) as err:
        builtin_catalog().device("h100")
    assert "h100-sxm" in str(err.value)


def test_providers_are_priced_per_token() -> None:
    cat = builtin_catalog()
    offer = cat.provider("groq-cloud").offers["llama-3.1-8b"]
    assert offer.usd_per_mtok_input is not None and offer.usd_per_mtok_input.value == 0.05
    assert offer.usd_per_mtok_output is not None and offer.usd_per_mtok_output.value == 0.08


def test_user_hardware_file_adds_devices(tmp_path: Path) -> None:
    f = tmp_path / "hw.yaml"
    f.write_text(
        "devices:\n"
        "  my-npu:\n"
        "    name: My NPU\n    vendor: Acme\n    category: asic\n    software: plugin\n"
        "    maturity: prototype\n    source: acme datasheet rev 2\n"
        "    memory_gb: 64\n    mem_bw_gbps: 1000\n    peak_tflops: {bf16: 400}\n    tdp_w: 300\n"
    )
    cat = load_catalog([f])
    assert cat.device("my-npu").value("peak_tflops_bf16") == 400
    assert "h100-sxm" in cat.devices


@pytest.mark.parametrize(
    ("body", "line", "field"),
    [
        (
            "devices:\n  x:\n    category: gpu\n    software: plugin\n    maturity: pilot\n"
            "    source: s\n    memory_gb: lots\n",
            7,
            "x.memory_gb",
        ),
        (
            "devices:\n  x:\n    category: quantum\n    software: plugin\n    maturity: pilot\n",
            3,
            "x.category",
        ),
        (
            "devices:\n  x:\n    category: gpu\n    software: plugin\n    maturity: pilot\n"
            "    memory_gb: 8\n",
            6,
            "x.memory_gb",
        ),  # no source
        (
            "devices:\n  x:\n    category: gpu\n    software: plugin\n    maturity: pilot\n"
            "    source: s\n    peak_tflops: {fp64: 3}\n",
            7,
            "x.peak_tflops.fp64",
        ),
        ("devices:\n  x: [1, 2\n", 3, None),
        (
            "devices:\n  x:\n    category: gpu\n    software: plugin\n    maturity: pilot\n"
            "    source: s\n    mem_bw_gbps: 0\n",
            7,
            "x.mem_bw_gbps",
        ),  # would divide by zero
    ],
)
def test_malformed_hardware_file_names_file_line_field(
    tmp_path: Path, body: str, line: int, field: str | None
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_catalog([f])
    assert err.value.path == str(f)
    assert err.value.line == line
    if field is not None:
        assert err.value.field == field


def test_memory_is_what_the_device_reports_not_its_name() -> None:
    """HBM comes in binary gigabytes: an "80GB" H100 reports 81,559 MiB (85.5 GB) to NVML, and
    vLLM budgets gpu_memory_utilization of that. The H200's figure is held to what this
    repository measured on one (PyTorch's total_memory, tests/data/gpu_grid_h200_2026-12-04)."""
    import json

    from wattserve import estimate

    cat = builtin_catalog()
    grid = Path(__file__).parent / "data" / "gpu_grid_h200_2026-12-04" / "run4" / "grid.json"
    measured = json.loads(grid.read_text())["device"]["memory_gb"]
    assert cat.device("h200-sxm").value("memory_gb") == pytest.approx(measured, rel=0.01)
    assert cat.device("h100-sxm").value("memory_gb") == pytest.approx(81559 * 2**20 / 1e9, 1e-3)
    # Llama-3.1-70B in fp8 on one H100: 70.6 GB of weights in 0.9 x 85.5 GB leave room for 42
    # sequences of 640 tokens; 0.9 x 80 GB left 6
    e = estimate("llama-3.1-70b", "h100-sxm", dtype="fp8", prompt_tokens=512, output_tokens=128)
    assert e.max_batch == 42
