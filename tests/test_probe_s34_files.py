"""The files `calibrate` and `profile` write are files wattserve reads back: a calibration
that calibrate reported as written is one `--calibration` loads (whatever the measurements
file was called, however many models or devices its rows named), a hardware entry profile
wrote loads whatever this machine calls its processor, and the profile folder is found
wherever the cache variable points (relative, `~`) or said plainly why not (no home)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve.calibrate import fit_calibration, read_measurements
from wattserve.calibrate.output import calibration_text
from wattserve.cli.app import app
from wattserve.core.catalog import load_catalog
from wattserve.core.coverage import MAX_MODELS
from wattserve.core.params import (
    MAX_ENTRIES,
    MAX_SOURCE,
    Calibration,
    EngineParams,
    load_calibration,
)
from wattserve.errors import CalibrationError, ConfigError
from wattserve.profile import run as profile_run
from wattserve.profile.power import RaplMeter
from wattserve.profile.run import default_profile_dir, hardware_yaml

REPO = Path(__file__).resolve().parent.parent
LLAMA = REPO / "tests" / "data" / "llama_cpp_logits_all"
SMOLLM2 = REPO / "src" / "wattserve" / "data" / "models" / "smollm2-135m.json"
HEADER = "model,hardware,count,tensor_parallel,dtype,phase,batch,prompt_tokens,context_tokens,"
HEADER += "seconds,watts\n"


def _calibrate(measurements: Path, out: Path) -> tuple[int, str, str]:
    args = ["calibrate", str(measurements), "--hardware-file", str(LLAMA / "local-cpu.yaml")]
    result = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "name",
    [
        "new\nline.csv",  # one line of text, or every reader refused the `source`
        "esc\x1b[2J.csv",
        "rtl\u202emarks.csv",
        os.fsdecode(b"latin1-\xff.csv"),  # a byte no UTF-8 names: a lone surrogate in JSON
    ],
)
def test_a_calibration_of_a_measurements_file_of_any_name_loads(tmp_path: Path, name: str) -> None:
    # the calibration's source line quoted the path as it was: calibrate said "wrote ...,
    # apply it with --calibration", and --calibration refused the file it wrote
    csv = tmp_path / name
    shutil.copy(LLAMA / "measurements.csv", csv)
    code, _, err = _calibrate(csv, tmp_path / "c.json")
    assert code == 0, err
    calib = load_calibration(tmp_path / "c.json")
    source = calib.params["local-cpu"].source
    assert source.isprintable() and source.startswith("calibrated from ")


def test_a_calibration_of_a_measurements_file_deep_in_folders_loads(tmp_path: Path) -> None:
    folder = tmp_path.joinpath(*["d" * 200] * 5)  # a path over the source's 1,000 characters
    folder.mkdir(parents=True)
    shutil.copy(LLAMA / "measurements.csv", folder / "m.csv")
    code, _, err = _calibrate(folder / "m.csv", tmp_path / "c.json")
    assert code == 0, err
    source = load_calibration(tmp_path / "c.json").params["local-cpu"].source
    assert len(source) <= MAX_SOURCE and source.endswith("/m.csv (8 rows)")


def _rows_naming(models: list[Path], tmp_path: Path) -> Path:
    """A measurements file whose rows name `models` (copies of SmolLM2's config), in turn."""
    lines = (LLAMA / "measurements.csv").read_text().splitlines()[1:]
    rows = [lines[i % len(lines)].replace("smollm2-135m", str(m), 1) for i, m in enumerate(models)]
    csv = tmp_path / "m.csv"
    csv.write_text(HEADER + "\n".join(rows) + "\n")
    return csv


def test_a_calibration_of_rows_naming_a_long_model_file_loads(tmp_path: Path) -> None:
    # a config file's name is its model's id: 240 characters, where a calibration's
    # `measured.models` holds ids of at most 200
    model = tmp_path / ("a" * 240 + ".json")
    shutil.copy(SMOLLM2, model)
    code, _, err = _calibrate(_rows_naming([model] * 8, tmp_path), tmp_path / "c.json")
    assert code == 0, err
    (ids,) = [c.models for c in load_calibration(tmp_path / "c.json").measured.values()]
    assert len(ids) == 1 and len(ids[0]) <= 200 and ids[0].isprintable()


def test_a_calibration_of_rows_of_more_models_than_it_lists_loads(tmp_path: Path) -> None:
    models = []
    for i in range(MAX_MODELS + 1):
        models.append(tmp_path / f"m{i}.json")
        shutil.copy(SMOLLM2, models[-1])
    code, out, err = _calibrate(_rows_naming(models, tmp_path), tmp_path / "c.json")
    assert code == 0, err
    (ids,) = [c.models for c in load_calibration(tmp_path / "c.json").measured.values()]
    assert len(ids) == MAX_MODELS and ids[-1] == "and 2 more"
    assert "and 2 more" in out  # the report's `measured:` line says how many it left out


def test_rows_of_more_devices_than_a_calibration_holds_are_refused_before_the_fit(
    tmp_path: Path,
) -> None:
    entry = (LLAMA / "local-cpu.yaml").read_text().split("devices:\n", 1)[1]
    hw = tmp_path / "many.yaml"
    hw.write_text(
        "devices:\n"
        + "".join(entry.replace("local-cpu:", f"cpu-{i}:") for i in range(MAX_ENTRIES + 1))
    )
    row = (LLAMA / "measurements.csv").read_text().splitlines()[1]
    csv = tmp_path / "m.csv"
    csv.write_text(
        HEADER + "".join(row.replace("local-cpu", f"cpu-{i}") + "\n" for i in range(1001))
    )
    # since 2026-12-07 a catalog holds at most 1,000 devices and providers, built-in ones
    # included, so the hardware file is refused before any row is read against it
    with pytest.raises(ConfigError, match="at most 1,000") as err:
        fit_calibration(read_measurements(csv), load_catalog([hw]), source=str(csv))
    assert err.value.path == str(hw) and "rank searches every one" in str(err.value)
    out = tmp_path / "c.json"
    result = CliRunner().invoke(
        app, ["calibrate", str(csv), "--hardware-file", str(hw), "-o", str(out)]
    )
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.count("\n") == 1 and "at most 1,000" in result.stderr


def test_a_calibration_no_reader_takes_is_never_written() -> None:
    # the net under every check above: a text that does not read back is an error, not a file
    catalog = load_catalog([LLAMA / "local-cpu.yaml"])
    calib = fit_calibration(read_measurements(LLAMA / "measurements.csv"), catalog)[0]
    assert '"local-cpu"' in calibration_text(calib)
    params = calib.params["local-cpu"].with_updates(source="two\nlines")
    broken = Calibration(params={"local-cpu": params}, fit_error=calib.fit_error)
    with pytest.raises(CalibrationError, match=r"hardware\.local-cpu\.source"):
        calibration_text(broken)


@pytest.mark.parametrize(
    "name",
    [
        'It\'s a "quoted" CPU',  # Python's repr of it was no YAML: the profile stopped there
        "back\\slash",  # repr doubled it
        "tab\there\x1b[2J",  # repr wrote '\t' and '\x1b' as text
        "next\x85line\u2028",
        "",
    ],
)
def test_the_hardware_entry_profile_writes_loads_whatever_the_cpu_is_called(
    tmp_path: Path, name: str
) -> None:
    figures = {"peak_tflops": 0.2, "mem_bw_gbps": 20.0, "memory_gb": 16.0}
    text = hardware_yaml("local-cpu", name, "cpu", "fp32", figures, f"measured on {name}")
    path = tmp_path / "local-cpu.yaml"
    path.write_text(text, encoding="utf-8")
    hw = load_catalog([path]).device("local-cpu")
    # printable text as it is, a control or invisible character as '?', no name as the id
    shown = "".join(c if c.isprintable() else "?" for c in name.strip())
    assert hw.name == (shown or "local-cpu")
    assert hw.figures["mem_bw_gbps"].source == "measured on " + "".join(
        c if c.isprintable() else "?" for c in name
    )
    assert hw.value("mem_bw_gbps") == 20.0


def _rapl_tree(root: Path, limit_uw: int) -> Path:
    """A sysfs RAPL tree of one package zone whose power limit reads `limit_uw`."""
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text("1000\n")
    (zone / "constraint_0_max_power_uw").write_text(f"{limit_uw}\n")
    return root


@pytest.mark.parametrize("limit_uw", [-1, 2**32 * 10**6])
def test_a_power_limit_no_cpu_has_is_left_out_of_the_entry(tmp_path: Path, limit_uw: int) -> None:
    # RAPL's limit read as -1 uW or 2^32 W made a tdp_w the catalog refuses: no profile ran
    meter, _ = RaplMeter.open(_rapl_tree(tmp_path, limit_uw))
    assert meter is not None
    said: list[str] = []
    assert profile_run.cpu_tdp_w(meter, said.append) is None
    assert any("RAPL" in line and "left out" in line for line in said)


def test_a_sane_power_limit_is_kept(tmp_path: Path) -> None:
    meter, _ = RaplMeter.open(_rapl_tree(tmp_path, 65_000_000))
    assert profile_run.cpu_tdp_w(meter, lambda _: None) == 65.0
    path = tmp_path / "local-cpu.yaml"
    figures = {"peak_tflops": 0.2, "mem_bw_gbps": 20.0, "memory_gb": 8.0, "tdp_w": 65.0}
    path.write_text(profile_run.hardware_yaml("local-cpu", "cpu", "cpu", "fp32", figures, "t"))
    assert load_catalog([path]).device("local-cpu").value("tdp_w") == 65.0


def test_a_relative_cache_folder_is_the_same_folder_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the demo fleet named `relcache/profile/calibration-local.json`, which its loader took
    # relative to the fleet's own temporary folder: `serve` refused to start
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WATTSERVE_CACHE_DIR", "relcache")
    assert default_profile_dir() == tmp_path / "relcache" / "profile"
    monkeypatch.setenv("WATTSERVE_CACHE_DIR", "~/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_profile_dir() == tmp_path / "home" / "cache" / "profile"


def test_no_home_and_no_cache_variable_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a service user without a home (no HOME, no passwd entry): RuntimeError, a traceback
    def homeless() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("WATTSERVE_CACHE_DIR", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(homeless))
    with pytest.raises(ConfigError, match="no home folder") as err:
        default_profile_dir()
    assert err.value.field == "WATTSERVE_CACHE_DIR"


def _demo_fleet(folder: Path) -> str:
    """The serve demo's fleet text for a gateway started in `folder`, loaded as serve loads
    it (the local model is installed wherever these tests run: the `local` extra)."""
    from wattserve.core.fleet import load_fleet
    from wattserve.serve.demo import demo_fleet_yaml

    folder.mkdir()
    fleet = folder / "demo-fleet.yaml"
    fleet.write_text(demo_fleet_yaml(folder), encoding="utf-8")
    load_fleet(fleet)
    return fleet.read_text(encoding="utf-8")


def _shared_profile(cache: Path, hardware: str) -> Path:
    folder = cache / "profile"
    folder.mkdir(parents=True)
    (folder / "local-cpu.yaml").write_text(hardware, encoding="utf-8")
    calibration = Calibration(params={"local-cpu": EngineParams()})
    (folder / "calibration-local.json").write_text(calibration_text(calibration))
    return folder


@pytest.mark.parametrize("name", ["sp #x: y", "bad" + os.fsdecode(b"\xff") + "byte"])
def test_the_demo_names_a_cache_folder_of_any_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # the calibration's path went into the demo fleet unquoted: a folder 'sp #x: y' was read
    # as 'sp' (the rest a YAML comment), and a byte no UTF-8 names stopped the fleet's loader;
    # the calibration is copied beside the demo's hardware entry now
    cache = tmp_path / name
    figures = {"peak_tflops": 0.2, "mem_bw_gbps": 20.0, "memory_gb": 8.0}
    _shared_profile(cache, hardware_yaml("local-cpu", "cpu", "cpu", "fp32", figures, "t"))
    monkeypatch.setenv("WATTSERVE_CACHE_DIR", str(cache))
    assert "calibration: calibration-local.json" in _demo_fleet(tmp_path / "gw")
    assert (tmp_path / "gw" / "calibration-local.json").is_file()


def test_a_damaged_shared_hardware_entry_is_left_out_with_its_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a damaged local-cpu.yaml in the profile stopped serve's demo, naming the copy in its temp
    # folder; now it is measured again, and the calibration fitted against the damaged entry's
    # figures is not applied to the new ones
    _shared_profile(tmp_path / "cache", "devices: [\n")
    monkeypatch.setenv("WATTSERVE_CACHE_DIR", str(tmp_path / "cache"))
    text = _demo_fleet(tmp_path / "gw")
    assert "calibration:" not in text and "hardware: local-cpu" in text
