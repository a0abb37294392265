"""Catalog ids that could pass for others (a hostile-input probe, session 44): a device named
as a hosted provider (`groq-cloud`) had hidden the provider from `estimate` and `catalog
show`, and rank's hosted-API row was computed from the device; `my-npu` and `MY-NPU` in one
file left the last in force, even for `--hardware my-npu`; `"h100-sxm "` printed as a second
h100-sxm with figures of its own; and 24,000 devices of YAML aliases (300 KB) kept rank busy
for 100 s. Each is now refused, naming the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_hostile_catalog import _catalog_error

from wattserve import load_catalog
from wattserve.core.catalog import MAX_CATALOG_ENTRIES

FIGURES = (
    "    name: Z\n    vendor: Acme\n    category: asic\n    software: plugin\n"
    "    maturity: pilot\n    source: datasheet\n    memory_gb: 80\n"
    "    mem_bw_gbps: 3000\n    peak_tflops: {bf16: 900}\n    tdp_w: 700\n"
)


def device(entry_id: str) -> str:
    return f"  {entry_id}:\n{FIGURES}"


@pytest.mark.parametrize("entry_id", ["groq-cloud", "GROQ-CLOUD"])
def test_a_device_named_as_a_hosted_provider_is_refused(tmp_path: Path, entry_id: str) -> None:
    err = _catalog_error(tmp_path, "devices:\n" + device(entry_id))
    assert err.line == 2 and err.field == f"devices.{entry_id}"
    assert "is also a hosted provider's id" in str(err)


def test_a_provider_named_as_a_device_is_refused(tmp_path: Path) -> None:
    text = (
        "providers:\n  H100-SXM:\n    hardware: h100-sxm\n    source: pricing page\n"
        "    models:\n      llama-3.1-8b: {usd_per_mtok_input: 0.1, usd_per_mtok_output: 0.2}\n"
    )
    err = _catalog_error(tmp_path, text)
    assert err.field == "providers.H100-SXM" and "is also a hosted device's id" in str(err)


def test_one_id_in_two_cases_in_one_file_is_refused(tmp_path: Path) -> None:
    err = _catalog_error(tmp_path, "devices:\n" + device("my-npu") + device("MY-NPU"))
    assert err.line == 13 and err.field == "devices.MY-NPU"
    assert "'MY-NPU' and 'my-npu' (line 2) are one id in two cases" in str(err)


@pytest.mark.parametrize("entry_id", ['"h100-sxm "', '" h100-sxm"'])
def test_an_id_padded_with_spaces_is_refused(tmp_path: Path, entry_id: str) -> None:
    err = _catalog_error(tmp_path, "devices:\n" + device(entry_id))
    assert err.line == 2 and "not beginning or ending with a space" in str(err)


def test_a_catalog_of_too_many_entries_is_refused_at_once(tmp_path: Path) -> None:
    def aliased(n: int) -> str:  # one device and n - 1 aliases of it
        return "devices:\n  d0: &a\n" + FIGURES + "".join(f"  d{i}: *a\n" for i in range(1, n))

    built_in = load_catalog()
    room = MAX_CATALOG_ENTRIES - len(built_in.devices) - len(built_in.providers)
    err = _catalog_error(tmp_path, aliased(room + 1))
    assert f"at most {MAX_CATALOG_ENTRIES:,}" in str(err)
    ok = tmp_path / "ok.yaml"
    ok.write_text(aliased(room))
    assert len(load_catalog([ok]).devices) == len(built_in.devices) + room
