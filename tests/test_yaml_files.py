"""Every YAML file a user names (fleets, workloads, sites, hardware) is read by core/yamlio.py:
what an attacker or a slip of the keyboard writes first is an error naming file and line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from wattserve.core.fleet import load_fleet
from wattserve.core.workload import load_workload
from wattserve.errors import ConfigError

FLEET = (
    "sites:\n  dc: {kind: datacenter}\n"
    "deployments:\n  g: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}\n"
)


def _bomb(field: str) -> str:
    """'Billion laughs': ten levels of nine aliases each, 9^10 values once expanded."""
    text = "x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, 10):
        text += f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text + f"{field}: *a9\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    w = tmp_path / "w.yaml"
    w.write_text("generator: {kind: poisson, rate_rps: 1, duration_s: 10}\n" + _bomb("policy"))
    f = tmp_path / "f.yaml"
    f.write_text(FLEET + _bomb("name"))
    for load in (lambda: load_workload(w, default_model="llama-3.1-8b"), lambda: load_fleet(f)):
        start = time.monotonic()
        with pytest.raises(ConfigError, match="expands to more than 1,000,000 values"):
            load()
        assert time.monotonic() - start < 5  # was minutes and gigabytes in an error message


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(FLEET + "  g: {site: dc, model: llama-3.1-8b, hardware: a100-sxm-80gb}\n")
    with pytest.raises(ConfigError, match=r"f.yaml:5.*'g' is given twice \(first on line 4\)"):
        load_fleet(f)
    merged = tmp_path / "m.yaml"  # a merge key's values may be overridden: not a duplicate
    merged.write_text(
        "sites:\n  base: &b {kind: datacenter, power_cap_w: 100}\n"
        "  dc:\n    <<: *b\n    power_cap_w: 5000\n"
        "deployments:\n  g: {site: dc, model: llama-3.1-8b, hardware: h100-sxm}\n"
    )
    assert load_fleet(merged).sites["dc"].power_cap_w == 5000


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1" + "0" * 400, "too large"),
        (".inf", "finite"),
        ("-.inf", "finite"),
        (".nan", "NaN|finite"),
    ],
)
def test_numbers_must_be_finite(tmp_path: Path, value: str, message: str) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(FLEET.replace("{kind: datacenter}", f"{{kind: datacenter, power_cap_w: {value}}}"))
    with pytest.raises(ConfigError, match=message):
        load_fleet(f)


def test_deep_nesting_is_an_error(tmp_path: Path) -> None:
    w = tmp_path / "w.yaml"
    w.write_text("generator: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_workload(w, default_model="llama-3.1-8b")


def _merge_bomb() -> str:
    """Merge keys of merge keys: PyYAML copies every merged pair, repeats included, so each
    level held 50 times the last (100 x 50^29 pairs at the top)."""
    text = "x0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(100)) + "}\n"
    for i in range(1, 30):
        text += f"x{i}: &m{i}\n  <<: [" + ", ".join([f"*m{i - 1}"] * 50) + f"]\n  y{i}: 1\n"
    return text


def test_a_merge_key_bomb_is_read_at_once(tmp_path: Path) -> None:
    """Each key is kept once as merges merge, so the levels stay small (the file is then
    refused for its unknown fields); merges that copy past a million values are refused."""
    w = tmp_path / "w.yaml"
    w.write_text("generator: {kind: poisson, rate_rps: 1, duration_s: 10}\n" + _merge_bomb())
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"'workload\.x0': unknown field"):
        load_workload(w, default_model="llama-3.1-8b")
    assert time.monotonic() - start < 5  # was hours
    wide = "x0: &m0 {" + ", ".join(f"k{i}: 1" for i in range(5000)) + "}\n"
    w.write_text(wide + "x1: {<<: [" + ", ".join(["*m0"] * 300) + "]}\n")
    with pytest.raises(ConfigError, match="merge keys copy more than 1,000,000 values") as err:
        load_workload(w, default_model="llama-3.1-8b")
    assert (err.value.path, err.value.line) == (str(w), 2)
    assert time.monotonic() - start < 10


def test_merge_keys_still_merge_with_each_key_once(tmp_path: Path) -> None:
    """The first mapping a merge lists wins over later ones, the mapping's own keys over all."""
    f = tmp_path / "f.yaml"
    f.write_text(
        "sites:\n"
        "  a: &a {kind: datacenter, power_cap_w: 1000, pue: 1.5}\n"
        "  b: &b {kind: edge, power_cap_w: 200, carbon_g_per_kwh: 7}\n"
        "  c: {<<: [*a, *b]}\n"
        "  d:\n    <<: [*b, *a]\n    power_cap_w: 300\n"
        "deployments:\n  g: {site: c, model: llama-3.1-8b, hardware: h100-sxm}\n"
    )
    sites = load_fleet(f).sites
    assert (sites["c"].kind, sites["c"].power_cap_w, sites["c"].pue) == ("datacenter", 1000, 1.5)
    assert sites["c"].carbon_g_per_kwh == 7
    assert (sites["d"].kind, sites["d"].power_cap_w, sites["d"].pue) == ("edge", 300, 1.5)


@pytest.mark.parametrize("value", ["10:00", "6_00", "0b1001011000", "01130", "1_000.5", "190:20.5"])
def test_a_number_only_yaml_1_1_reads_is_an_error_not_a_misread(tmp_path: Path, value: str) -> None:
    """YAML 1.1 reads `10:00` as 600 (base 60), `01130` as 600 (octal), `6_00` as 600: a cap of
    `10:00` was 600 W without a word. YAML 1.2 and the CSV readers take none of them."""
    f = tmp_path / "f.yaml"
    f.write_text(FLEET.replace("{kind: datacenter}", f"{{kind: datacenter, power_cap_w: {value}}}"))
    with pytest.raises(ConfigError, match=r"only in YAML 1\.1") as err:
        load_fleet(f)
    assert err.value.line == 2 and err.value.path == str(f)


@pytest.mark.parametrize(
    ("value", "watts"), [("600", 600), ("0x258", 600), ("6e2", 600), ("0.6e3", 600)]
)
def test_plain_numbers_still_read(tmp_path: Path, value: str, watts: float) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(FLEET.replace("{kind: datacenter}", f"{{kind: datacenter, power_cap_w: {value}}}"))
    assert load_fleet(f).sites["dc"].power_cap_w == watts
