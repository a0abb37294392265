"""Hostile hardware files, YAML and flags of `catalog`, `estimate` and `rank`: each is one error
line naming the file, line and field (or the flag), never a traceback or a silent wrong result."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve import ConfigError, UnknownNameError, load_catalog, load_model
from wattserve.cli.app import app
from wattserve.cli.common import parse_watts
from wattserve.core.deployment import Deployment
from wattserve.core.figures import Figure
from wattserve.core.memory import MAX_BATCH, memory_fit
from wattserve.core.params import EngineParams
from wattserve.core.yamlio import MAX_NODES, MAX_YAML_BYTES, load_yaml_file, load_yaml_text
from wattserve.rank.api import rank

HEAD = (
    "devices:\n"
    "  z:\n"
    "    category: gpu\n"
    "    software: plugin\n"
    "    maturity: pilot\n"
    "    source: datasheet\n"
)
DEVICE = (
    HEAD + "    memory_gb: 80\n"
    "    mem_bw_gbps: 3000\n"
    "    peak_tflops: {bf16: 900}\n"
    "    tdp_w: 700\n"
)
PROVIDER = (
    "providers:\n"
    "  api:\n"
    "    hardware: z\n"
    "    source: pricing page\n"
    "    models:\n"
    "      llama-3.1-8b: {usd_per_mtok_input: 0.1, usd_per_mtok_output: 0.2}\n"
)


def _catalog_error(tmp_path: Path, text: str) -> ConfigError:
    f = tmp_path / "hw.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_catalog([f])
    assert err.value.path == str(f)
    return err.value


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


# -- the YAML reader every file goes through -------------------------------------------------


@pytest.mark.parametrize(
    "number", ["1" * 5000, "0x" + "f" * 5000, "-" + "9" * 4301], ids=["dec", "hex", "neg"]
)
def test_an_integer_past_4300_digits_is_an_error_with_its_line(number: str) -> None:
    with pytest.raises(ConfigError, match=r"w.yaml:2: a number of more than 4,300 digits"):
        load_yaml_text(f"a: 1\nseed: {number}\n", "w.yaml")
    assert load_yaml_text(f"seed: {'9' * 4300}\n", "w.yaml")["seed"] == int("9" * 4300)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\ufffe"])
def test_a_character_yaml_does_not_allow_is_an_error_with_its_line(char: str) -> None:
    with pytest.raises(ConfigError, match=r"^w.yaml:3: not valid YAML: character #x") as err:
        load_yaml_text(f"a: 1\nb: 2\nc: x{char}\n", "w.yaml")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("first", "second"), [("1.0", "1.00"), ("16", "0x10"), ("1000.0", "1e3")])
def test_a_key_that_reads_as_a_number_written_otherwise_is_refused(first: str, second: str) -> None:
    """`1.00`, `0x10`, `1e3` had been the keys '1.0', '16', '1000.0': an SLO class a trace row
    named `1e3` was not found (and two such spellings of one number were one key twice)."""
    with pytest.raises(ConfigError, match=rf"w.yaml:3: the key '{second}' reads as the number"):
        load_yaml_text(f"slos:\n  {first}: a\n  {second}: b\n", "w.yaml")
    with pytest.raises(ConfigError, match=r"w.yaml:3: '1.0' is given twice \(first on line 2\)"):
        load_yaml_text("slos:\n  1.0: a\n  '1.0': b\n", "w.yaml")
    assert load_yaml_text("a:\n  1: x\n  1.0: y\n", "w.yaml")["a"] == {"1": "x", "1.0": "y"}
    assert load_yaml_text(f"a:\n  '{second}': x\n", "w.yaml")["a"] == {second: "x"}  # quoted


def test_a_file_of_a_million_values_is_refused_in_seconds(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"  # 2 MB: it took 40 s and 690 MB to read before the limit
    big.write_text(DEVICE + "notes_list: [" + "1," * 990_000 + "1]\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"big.yaml:11: more than {MAX_NODES:,} values"):
        load_yaml_file(big)
    assert time.monotonic() - start < 15
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * MAX_YAML_BYTES + "\na: 1\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"huge\.yaml: larger than 4 MiB"):
        load_yaml_file(huge)
    with pytest.raises(ConfigError, match="larger than 4 MiB"):
        load_yaml_text(huge.read_text(), str(huge))
    assert time.monotonic() - start < 2


# -- hardware files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("    memory_gb: 1" + "0" * 400, "z.memory_gb"),
        ("    sram_mb: 1" + "0" * 400, "z.sram_mb"),
        ("    peak_tflops: {fp8: 1" + "0" * 400 + "}", "z.peak_tflops.fp8"),
        ("    memory_gb: 1e308", "z.memory_gb"),
        ("    tdp_w: 1e7", "z.tdp_w"),
        ("    usd_per_hour: {value: 1e300, source: s}", "z.usd_per_hour"),
        ("    idle_w: -1", "z.idle_w"),
        ("    mem_bw_gbps: 1e-300", "z.mem_bw_gbps"),
    ],
    ids=["mem-400-digits", "sram-400-digits", "peak-400-digits", "1e308", "10-MW", "price",
         "negative", "1e-300"],
)  # fmt: skip
def test_a_figure_out_of_its_physical_range_is_refused(
    tmp_path: Path, line: str, field: str
) -> None:
    err = _catalog_error(tmp_path, HEAD + line + "\n")
    assert err.field == field and err.line == 7
    assert "must be between" in str(err) and len(str(err)) < 200


def test_figures_at_their_limits_give_an_answer_not_a_crash(tmp_path: Path) -> None:
    f = tmp_path / "hw.yaml"
    limits = (
        "    memory_gb: 1e5\n    mem_bw_gbps: 1e6\n    sram_mb: 1e7\n    sram_bw_gbps: 1e9\n"
        "    tdp_w: 1e6\n    idle_w: 1e6\n    usd_per_hour: 1e5\n    list_price_usd: 1e9\n"
        "    interconnect_gbps: 1e7\n    peak_tflops: {bf16: 1e7, fp8: 1e7, int8: 1e7}\n"
    )
    floor = (
        "    memory_gb: 1e-6\n    mem_bw_gbps: 1e-6\n    tdp_w: 1e-6\n"
        "    peak_tflops: {bf16: 1e-6}\n"
    )
    head = "  {}:\n    category: gpu\n    software: plugin\n    maturity: pilot\n    source: s\n"
    f.write_text("devices:\n" + head.format("big") + limits + head.format("small") + floor)
    cat = load_catalog([f])
    ranking = rank("llama-3.1-8b", hardware=["big", "small"], catalog=cat, power_envelope_w=1e9)
    assert {r.hardware for r in ranking.rows} | {x.hardware for x in ranking.excluded} == {
        "big",
        "small",
    }
    code, out = _cli(
        "estimate", "--model", "llama-3.1-8b", "--hardware", "big", "--hardware-file", str(f)
    )
    assert code == 0, out


def test_idle_power_above_the_tdp_is_refused(tmp_path: Path) -> None:
    """Power runs from idle up to TDP: an idle of 1 MW on a 700 W part gave 396 kW."""
    err = _catalog_error(tmp_path, DEVICE + "    idle_w: 701\n")
    assert (err.field, err.line) == ("z.idle_w", 11) and "above the TDP" in str(err)
    f = tmp_path / "ok.yaml"
    f.write_text(DEVICE + "    idle_w: 700\n")
    assert load_catalog([f]).device("z").value("idle_w") == 700


@pytest.mark.parametrize(("memory_gb", "max_batch"), [(math.inf, MAX_BATCH), (math.nan, 0)])
def test_memory_fit_of_non_finite_figures_is_not_a_crash(memory_gb: float, max_batch: int) -> None:
    hw = load_catalog().device("h100-sxm")  # figures made in code skip the file's bounds
    absurd = dataclasses.replace(
        hw, figures={**hw.figures, "memory_gb": Figure(value=memory_gb, source="test")}
    )
    dep = Deployment(load_model("llama-3.1-8b"), absurd)
    fit = memory_fit(dep, EngineParams(), batch=1, seq_tokens=1024, workspace_tokens=1024)
    assert fit.max_batch == max_batch and fit.fits == (max_batch > 0)


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("    idle_w: {value: 90, source: s, verified: 'false'}\n", "z.idle_w.verified", "true"),
        ("    year: twenty\n", "z.year", "a year"),
        ("    year: true\n", "z.year", "a year"),
        ("    name: [a, b]\n", "z.name", "expected text"),
        ("    vendor: {x: 1}\n", "z.vendor", "expected text"),
        ("    notes: 7\n", "z.notes", "expected text"),
        ("    idle_w: {value: 90, source: s, sorce: t}\n", "z.idle_w.sorce", "unknown field"),
    ],
)
def test_fields_of_the_wrong_type_are_refused(
    tmp_path: Path, text: str, field: str, says: str
) -> None:
    err = _catalog_error(tmp_path, DEVICE + text)
    assert err.field == field and err.line == 11 and says in str(err)


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        (PROVIDER + "    modls: {}\n", "api.modls", 7),
        (PROVIDER + "      llama-3.1-70b: {usd_per_mtok_ouptut: 1}\n", "usd_per_mtok_ouptut", 7),
        (PROVIDER + "providrs: {}\n", "providrs", 7),
        (PROVIDER.replace("source: pricing page", "source: [a]"), "api.source", 4),
        (PROVIDER + "    maturity: alpha\n", "api.maturity", 7),
        (DEVICE.replace("category: gpu", "category: quantum"), "z.category", 3),
        (DEVICE.replace("    category: gpu\n", ""), "z.category", 3),
        (DEVICE.replace("software: plugin", "software: cuda"), "z.software", 4),
        (DEVICE.replace("maturity: pilot", "maturity: alpha"), "z.maturity", 5),
    ],
)
def test_typos_and_bad_choices_name_the_entry_and_field(
    tmp_path: Path, text: str, field: str, line: int
) -> None:
    err = _catalog_error(tmp_path, text)
    assert err.field is not None and err.field.endswith(field) and err.line == line


def test_a_provider_where_a_device_is_needed_says_so(tmp_path: Path) -> None:
    cat = load_catalog()
    with pytest.raises(ConfigError, match="'groq-cloud' is a hosted provider, not a device"):
        cat.device("groq-cloud")
    with pytest.raises(ConfigError, match="'h100-sxm' is a device, not a hosted provider"):
        cat.provider("h100-sxm")
    with pytest.raises(UnknownNameError, match="Did you mean: h100-sxm"):
        cat.device("h100-sxn")
    code, out = _cli("rank", "--edge", "--hardware", "groq-cloud")
    assert code == 2 and "is a hosted provider, not a device" in out


# -- flags of catalog, estimate and rank ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["catalog", "--maturity", "alpha"], "--maturity"),
        (["catalog", "--min-memory-gb", "nan"], "--min-memory-gb"),
        (["catalog", "--min-memory-gb", "inf"], "--min-memory-gb"),
        (["catalog", "--min-memory-gb", "-1"], "--min-memory-gb"),
        (["estimate", "--model", "llama-3.1-8b", "--hardware", "l4", "--pue", "0.01"], "--pue"),
        (["estimate", "--model", "llama-3.1-8b", "--hardware", "l4", "--pue", "1e308"], "--pue"),
        (["rank", "--model", "llama-3.1-8b", "--pue", "0.5"], "--pue"),
        (["rank", "--model", "llama-3.1-8b", "--pue", "1e308"], "--pue"),
        (["rank", "--model", "llama-3.1-8b", "--power-envelope", "1mw"], "--power-envelope"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(args: list[str], flag: str) -> None:
    code, out = _cli(*args)
    assert code == 2 and flag in out, out


@pytest.mark.parametrize(
    ("text", "watts"),
    [
        ("1MW", 1e6),
        ("1Mw", 1e6),
        ("500 kW", 5e5),
        ("500kw", 5e5),
        ("2GW", 2e9),
        ("2.5e6", 2.5e6),
        ("1TW", 1e12),
    ],
)
def test_power_units_are_read_case_sensitively(text: str, watts: float) -> None:
    assert parse_watts(text, "--power-envelope") == watts


@pytest.mark.parametrize(
    ("text", "says"),
    [("1mw", "m is milli"), ("1mW", "m is milli"), ("1e308GW", "too large"), ("1M", "not a power")],
)
def test_ambiguous_or_absurd_powers_are_refused(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        parse_watts(text, "--power-envelope")
    assert err.value.field == "--power-envelope"


def test_rank_report_may_not_overwrite_its_inputs(tmp_path: Path) -> None:
    f = tmp_path / "h.yaml"
    f.write_text(DEVICE)
    code, out = _cli(
        "rank", "--model", "llama-3.1-8b", "--hardware", "z", "--hardware-file", str(f),
        "--report", str(f),
    )  # fmt: skip
    assert code == 2 and "--report" in out and "is an input" in out
    assert f.read_text() == DEVICE


def test_a_file_s_id_in_another_case_replaces_the_built_in_entry(tmp_path: Path) -> None:
    """`H100-SXM:` in a hardware file left the built-in h100-sxm in force for `--hardware
    h100-sxm` (ids are read in any case), and rank listed both."""
    f = tmp_path / "hw.yaml"
    f.write_text(DEVICE.replace("  z:", "  H100-SXM:"))
    cat = load_catalog([f])
    assert cat.device("h100-sxm").id == "H100-SXM" and "h100-sxm" not in cat.devices
    assert cat.device("h100-sxm").value("mem_bw_gbps") == 3000  # the file's (built-in: 3,350)


@pytest.mark.parametrize("bad_id", ["my npu\\u0000", "a\\nb", "x" * 201])
def test_an_id_that_is_not_plain_text_is_refused(tmp_path: Path, bad_id: str) -> None:
    """A NUL or a newline in an id was taken, and printed raw in later errors."""
    err = _catalog_error(tmp_path, DEVICE.replace("  z:", f'  "{bad_id}":'))
    assert "printable text" in str(err) and err.field == "devices"


def test_a_provider_s_unknown_model_or_hardware_is_refused(tmp_path: Path) -> None:
    """Both were taken without a word: an offer of a model no request can name, a provider
    running on a device no catalog holds."""
    err = _catalog_error(tmp_path, DEVICE + PROVIDER.replace("llama-3.1-8b", "not-a-model"))
    assert err.field == "api.models.not-a-model" and "unknown model" in str(err)
    err = _catalog_error(tmp_path, DEVICE + PROVIDER.replace("hardware: z", "hardware: nope"))
    assert err.field == "api.hardware" and "unknown hardware 'nope'" in str(err)
    f = tmp_path / "ok.yaml"  # a model id in another case is the model
    f.write_text(DEVICE + PROVIDER.replace("llama-3.1-8b", "Llama-3.1-8B"))
    assert "llama-3.1-8b" in load_catalog([f]).provider("api").offers


def test_a_provider_offering_one_model_twice_in_two_cases_is_refused(tmp_path: Path) -> None:
    """`Llama-3.1-8B:` under `llama-3.1-8b:` replaced its prices without a word."""
    twice = PROVIDER + "      Llama-3.1-8B: {usd_per_mtok_input: 9, usd_per_mtok_output: 9}\n"
    err = _catalog_error(tmp_path, DEVICE + twice)
    assert err.field == "api.models.Llama-3.1-8B" and "given twice" in str(err)
    assert err.line == twice.count("\n") + DEVICE.count("\n")


def test_a_free_hosted_api_costs_zero_per_token_not_unknown(tmp_path: Path) -> None:
    f = tmp_path / "hw.yaml"
    f.write_text(DEVICE + PROVIDER.replace("0.1", "0").replace("0.2", "0"))
    code, out = _cli("estimate", "--model", "llama-3.1-8b", "--hardware", "api",
                     "--hardware-file", str(f))  # fmt: skip
    assert code == 0 and "$ per 1M out tokens: 0 (per-token)" in out, out


@pytest.mark.parametrize("name", ["nvidia-h100", "nvidia/h100", "NVIDIA H100", "H100"])
def test_a_vendors_prefix_still_finds_the_device(name: str) -> None:
    """A vendor's name before the part (as NVML and cloud consoles write it) had no
    suggestion at all: 'See `wattserve catalog`'."""
    with pytest.raises(UnknownNameError) as err:
        load_catalog().device(name)
    assert err.value.suggestions[:1] == ["h100-sxm"], err.value.suggestions
