"""Orchestrates `wattserve profile`: micro-benchmarks, synthetic forward passes, power, fit.

Writes, into the output folder: hardware.yaml (the measured machine as a catalog entry, when
it is not already in the catalog), measurements.csv (the calibrate format) and calibration.json.
`run_profile` checks the folder and `--threads` before measuring anything, measures into a
private staging folder, and writes the output folder's files only once the whole run has
succeeded, all of them written before any replaces the one before it (`publish`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import stat
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from wattserve.calibrate.fit import FitReport, fit_calibration
from wattserve.calibrate.measurements import Measurement, write_measurements
from wattserve.calibrate.output import calibration_text, printable
from wattserve.core.catalog import Catalog, load_catalog
from wattserve.core.hardware import Hardware
from wattserve.core.modelspec import load_model
from wattserve.core.params import Calibration
from wattserve.core.textfile import replacing
from wattserve.errors import CalibrationError, ConfigError, WattserveError
from wattserve.profile import micro
from wattserve.profile.backends import NumpyBackend, TorchBackend
from wattserve.profile.decoder import Backend, SyntheticDecoder
from wattserve.profile.gpus import catalog_gpu
from wattserve.profile.power import NvmlMeter, PowerMeter, RaplMeter, steady_watts

Log = Callable[[str], None]

# (model, prefill cases (batch, prompt), decode cases (batch, context))
Plan = list[tuple[str, list[tuple[int, int]], list[tuple[int, int]]]]

CPU_PLAN: Plan = [
    ("smollm2-135m", [(1, 64), (1, 256), (4, 128)], [(1, 128), (4, 256), (16, 512), (1, 1024)]),
    ("qwen2.5-0.5b", [(1, 64)], [(1, 128), (4, 256)]),
]
GPU_PLAN: Plan = [
    ("llama-3.2-1b", [(1, 128), (1, 1024), (8, 512)], [(1, 512), (16, 512), (64, 1024)]),
    (
        "llama-3.1-8b",
        [(1, 512), (4, 1024), (16, 512)],
        [(1, 512), (8, 1024), (32, 512), (64, 2048)],
    ),
]
# seconds of back-to-back steps whose energy gives a GPU case's watts (steady_watts): half
# the grid's window (benchmarks/gpu_grid.py), about 7 s more over the 13 cases
GPU_ENERGY_WINDOW_S = 0.5


@dataclass
class ProfileResult:
    """What one device's profile measured and fitted."""

    hardware: Hardware
    measurements: list[Measurement]
    calibration: Calibration
    reports: list[FitReport]
    power: str
    micro: dict[str, float]
    files: dict[str, Path] = field(default_factory=dict)


def cpu_name() -> str:
    """This machine's processor, as /proc/cpuinfo names it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return platform.processor() or platform.machine()  # no /proc: not Linux
    return platform.processor() or platform.machine()


def memory_gb() -> float:
    """This machine's physical memory, GB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def _yaml_text(text: str, limit: int) -> str:
    """`text` as a YAML double-quoted scalar of one line of printable text (`printable`):
    JSON's string form, which YAML reads as it is once no control character is left. Python's
    repr was no YAML for a name holding both quotes, and wrote a backslash twice."""
    return json.dumps(printable(text, limit), ensure_ascii=False)


def hardware_yaml(
    hw_id: str, name: str, category: str, dtype: str, figures: dict[str, float], source: str
) -> str:
    """A one-device hardware file (docs/hardware-file.md) for measured figures. `name` and
    `source` (what the machine calls its processor, its host name) are written as one line of
    printable text each; an empty name is the id."""
    lines = [
        "# Written by `wattserve profile`: figures measured on this machine.",
        "devices:",
        f"  {hw_id}:",
        f"    name: {_yaml_text(name.strip() or hw_id, 200)}",
        "    vendor: local",
        f"    category: {category}",
        "    software: pytorch-native",
        "    maturity: production",
        f"    year: {dt.date.today().year}",
        f"    source: {_yaml_text(source, 1000)}",
    ]
    peak = figures.pop("peak_tflops")
    lines.append(f"    peak_tflops: {{{dtype}: {peak:.6g}}}")
    lines += [f"    {k}: {v:.6g}" for k, v in figures.items()]
    return "\n".join(lines) + "\n"


def _measure(
    hw_id: str,
    backend: Backend,
    plan: Plan,
    meter: PowerMeter | None,
    log: Log,
    window_s: float = 0.0,
) -> list[Measurement]:
    """Time each case of `plan`; with a meter, its watts over the timed samples, or with
    `window_s`, over that long a run of back-to-back steps (steady_watts)."""
    rows: list[Measurement] = []
    for model_id, prefills, decodes in plan:
        spec = load_model(model_id)
        log(f"  {model_id}: building synthetic weights ({spec.total_params / 1e6:.0f}M params)")
        dec = SyntheticDecoder(spec, backend)
        cases = [("prefill", b, n) for b, n in prefills] + [("decode", b, n) for b, n in decodes]
        for phase, batch, n in cases:
            if phase == "prefill":
                step, repeats = dec.prefill_step(batch, n), 3
            else:
                step, repeats = dec.decode_step(batch, n), 5
            step, _ = dec.recorded(step)  # recorded before the meter starts: only steps count
            watts: float | None = None
            if meter is None:
                seconds = dec.time_step(step, repeats)
            elif window_s:
                seconds = dec.time_step(step, repeats)
                watts = steady_watts(step, backend.sync, meter, seconds, window_s)[0]
            else:  # the meter over the timed samples
                meter.start()
                seconds = dec.time_step(step, repeats)
                watts = meter.stop()
            log(
                f"    {phase:7} batch {batch:3} tokens {n:5}: {seconds * 1e3:9.2f} ms"
                + ("" if watts is None else f"  {watts:6.1f} W")
            )
            rows.append(
                Measurement(
                    model=model_id,
                    hardware=hw_id,
                    count=1,
                    tensor_parallel=1,
                    dtype=backend.dtype,  # type: ignore[arg-type]
                    phase=phase,  # type: ignore[arg-type]
                    batch=batch,
                    prompt_tokens=n,
                    context_tokens=n,
                    seconds=seconds,
                    watts=watts,
                    line=len(rows) + 2,
                )
            )
        dec.release()
    return rows


def _finish(
    hw: Hardware,
    rows: list[Measurement],
    catalog: Catalog,
    out: Path,
    tag: str,
    power: str,
    figures: dict[str, float],
    logits_all: bool = False,
) -> ProfileResult:
    csv_name, calib_name = output_names(tag, None)
    csv_path = out / csv_name
    write_measurements(csv_path, rows)
    try:
        calibration, reports = fit_calibration(
            rows, catalog, source=csv_path.name, logits_all=logits_all
        )
    except ConfigError as exc:
        raise _refused_case(exc, rows) from None
    calib_path = out / calib_name  # in the staging folder: read back before it is written
    calib_path.write_text(calibration_text(calibration), encoding="utf-8")
    return ProfileResult(
        hw,
        rows,
        calibration,
        reports,
        power,
        figures,
        {"measurements": csv_path, "calibration": calib_path},
    )


def _refused_case(exc: ConfigError, rows: list[Measurement]) -> CalibrationError:
    """A measured case the fit refuses, named by its case: the error named its line in the
    staged measurements file, which is removed with the rest of the failed run."""
    case = next((m for m in rows if m.line == exc.line), None)
    what = (
        "a measured case"
        if case is None
        else f"the {case.phase} of {case.batch} x {case.context_tokens} tokens"
    )
    busy = (
        " (another process on the cores slows steps this much: profile again when the "
        "machine is idle)"
        if exc.field == "seconds"
        else ""
    )
    return CalibrationError(f"{what}: {exc.detail}; nothing was written{busy}")


# RAPL's package power limits summed over the sockets, as a CPU's tdp_w: a laptop part's is a
# few watts, a server socket's at most about 500 W, eight sockets 4 kW. A limit read as -1 uW or
# 2^32 W (a counter's sentinel) is no TDP, and a tdp_w past the catalog's bounds stopped the
# whole profile at its start.
MIN_CPU_TDP_W = 1.0
MAX_CPU_TDP_W = 10_000.0


def cpu_tdp_w(meter: RaplMeter | None, log: Log) -> float | None:
    """The CPU's TDP from RAPL's power limit, where one is readable and a CPU's."""
    max_w = meter.max_power_w() if meter is not None else None
    if not max_w:
        return None
    if MIN_CPU_TDP_W <= max_w <= MAX_CPU_TDP_W:
        return max_w
    log(f"  RAPL's power limit reads {max_w:.4g} W, no CPU's: tdp_w left out")
    return None


def _cpu_entry(path: Path, log: Log) -> tuple[Path, dict[str, float], RaplMeter | None, str]:
    """Measure this CPU's fp32 matmul rate and copy bandwidth, open RAPL, and write the
    catalog entry `local-cpu` to `path`; returns it with the figures, meter and power note."""
    log("CPU: measuring matrix-multiply throughput and memory bandwidth")
    tflops = micro.numpy_matmul_tflops()
    gbps = micro.numpy_copy_gbps()
    log(f"  fp32 matmul {tflops * 1e3:.1f} GFLOPS, copy bandwidth {gbps:.1f} GB/s")
    meter, power_note = RaplMeter.open()
    figures = {"peak_tflops": tflops, "mem_bw_gbps": gbps, "memory_gb": memory_gb()}
    if (tdp_w := cpu_tdp_w(meter, log)) is not None:
        figures["tdp_w"] = tdp_w
    log(f"  power: {power_note}")
    source = (
        f"measured by wattserve profile on {platform.node()} ({cpu_name()}, "
        f"{os.cpu_count()} CPUs) {dt.date.today().isoformat()}"
    )
    path.write_text(hardware_yaml("local-cpu", cpu_name(), "cpu", "fp32", dict(figures), source))
    return path, figures, meter, power_note


# A virtual machine's speed swings (docs/fidelity.md run H: 108 GFLOPS at a profile's start,
# about 195 GFLOPS minutes later): when the matmul rate after the timings is this far from the
# one before, the profile says its figures may not be the machine's usual ones.
SPEED_DRIFT = 0.15


def check_speed(before_tflops: float, log: Log) -> float:
    """Measure the matmul rate again after the timings; warn when it moved by more than
    SPEED_DRIFT from `before_tflops`. Returns the new rate."""
    after = micro.numpy_matmul_tflops()
    log(f"  fp32 matmul after the timings: {after * 1e3:.1f} GFLOPS")
    if abs(after / before_tflops - 1) > SPEED_DRIFT:
        log(
            f"  WARNING: this machine's matmul rate moved from {before_tflops * 1e3:.0f} to "
            f"{after * 1e3:.0f} GFLOPS during the profile: its speed was not steady, so these "
            "timings may not be its usual ones; profile again when it is quiet"
        )
    return after


# Rounds of one case further apart than this (slowest over fastest) were not timed on a steady
# machine: llama.cpp's threads wait on each other at every layer, so a core taken by another
# process for a moment makes a step several times slower (a 32-token prefill measured at 0.14 s
# idle took 3.4-5.4 s beside a busy gateway on this 2-vCPU machine).
ROUND_SPREAD = 1.5


def check_rounds(times: dict[tuple[str, int], list[float]], log: Log) -> list[str]:
    """Warn for every case whose rounds disagree by more than ROUND_SPREAD; returns the cases.
    The load average is named, since another process on the cores is the usual cause."""
    unsteady = [
        f"{phase} {n}"
        for (phase, n), ts in times.items()
        if len(ts) > 1 and min(ts) > 0 and max(ts) / min(ts) > ROUND_SPREAD
    ]
    if unsteady:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        log(
            f"  WARNING: rounds of {', '.join(unsteady)} differ by more than "
            f"{ROUND_SPREAD:g}x (load average {load:.1f} on {os.cpu_count()} cores): another "
            "process took the cores, and it may have slowed every round of a case; profile again "
            "on an idle machine"
        )
    return unsteady


def profile_cpu(out: Path, quick: bool, log: Log, plan: Plan | None = None) -> ProfileResult:
    """Measure this machine's CPU with NumPy (`plan` overrides the built-in cases) and write
    its files into `out` as it goes (run_profile gives it a staging folder)."""
    hw_path, figures, meter, power_note = _cpu_entry(out / "hardware-cpu.yaml", log)
    catalog = load_catalog([hw_path])
    hw = catalog.device("local-cpu")
    if plan is None:
        plan = CPU_PLAN[:1] if quick else CPU_PLAN
    rows = _measure(hw.id, NumpyBackend(), plan, meter, log)
    check_speed(figures["peak_tflops"], log)
    result = _finish(hw, rows, catalog, out, "cpu", power_note, figures)
    result.files["hardware"] = hw_path
    return result


def default_profile_dir() -> Path:
    """Where `profile` writes and `serve`'s local backend looks: $WATTSERVE_CACHE_DIR/profile,
    else ~/.cache/wattserve/profile; an absolute path (`~` expanded), since the demo fleet
    names the calibration in it from a folder of its own. No home folder and no variable is
    a ConfigError naming the variable."""
    base = os.environ.get("WATTSERVE_CACHE_DIR")
    try:
        folder = Path(base).expanduser() if base else Path.home() / ".cache" / "wattserve"
    except (RuntimeError, KeyError):  # no HOME and no passwd entry: a service's own user
        raise ConfigError(
            "no home folder to keep the profile in: set it to a folder (or give --output)",
            field="WATTSERVE_CACHE_DIR",
        ) from None
    return folder.absolute() / "profile"


LLAMA_FILES = {"hardware": "local-cpu.yaml", "calibration": "calibration-local.json"}


def profile_llama(
    out: Path,
    quick: bool,
    log: Log,
    threads: int | None = None,
    prefills: tuple[int, ...] | None = None,
    decodes: tuple[int, ...] | None = None,
) -> ProfileResult:
    """Time the real llama.cpp engine serving SmolLM2 (see profile/llama.py) and write the
    `local-cpu` hardware entry, the measurements and their calibration into `out` as it goes
    (run_profile gives it a staging folder)."""
    from wattserve.profile import llama
    from wattserve.serve.backends.local import smollm2_gguf

    threads = threads or llama.server_threads()
    hw_path, figures, meter, power_note = _cpu_entry(out / LLAMA_FILES["hardware"], log)
    catalog = load_catalog([hw_path])
    hw = catalog.device("local-cpu")
    log(f"llama.cpp: SmolLM2-135M-Instruct Q4_1 GGUF, {threads} threads, one sequence")
    cases = [
        ("prefill", n) for n in prefills or (llama.QUICK_PREFILLS if quick else llama.PREFILLS)
    ]
    cases += [("decode", n) for n in decodes or (llama.QUICK_DECODES if quick else llama.DECODES)]
    rounds = llama.QUICK_ROUNDS if quick else llama.ROUNDS
    times: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    draws: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    contexts: dict[tuple[str, int], int] = {case: case[1] for case in cases}
    gguf = smollm2_gguf()
    timer = llama.LlamaTimer(gguf, threads)
    try:
        server = llama.ServerDecodeTimer(gguf, threads)
    except BaseException:
        timer.close()
        raise
    log("  prefill: evaluated in-process; decode: tokens as the server streams them")
    try:
        for r in range(rounds):  # every case once per round (see llama.ROUNDS)
            if rounds > 1:
                log(f"  round {r + 1} of {rounds}")
            for phase, n in cases:
                if phase == "prefill":
                    if meter is not None:
                        meter.start()
                    seconds = timer.prefill_s(n)
                else:  # the meter starts with the first streamed token: decode only
                    seconds, contexts[phase, n] = server.decode_s(
                        n, None if meter is None else meter.start
                    )
                watts = meter.stop() if meter is not None else None
                log(f"    {phase:7} tokens {contexts[phase, n]:5}: {seconds * 1e3:9.2f} ms")
                times[phase, n].append(seconds)
                if watts is not None:
                    draws[phase, n].append(watts)
    finally:
        server.close()
        timer.close()
    check_speed(figures["peak_tflops"], log)
    check_rounds(times, log)
    rows: list[Measurement] = []
    for phase, n in cases:
        seconds = min(times[phase, n])  # the fastest round: see llama.ROUNDS
        watts = statistics.median(draws[phase, n]) if draws[phase, n] else None
        tokens = contexts[phase, n]
        if rounds > 1:
            log(f"    {phase:7} tokens {tokens:5}: {seconds * 1e3:9.2f} ms (fastest of {rounds})")
        rows.append(
            Measurement(
                model=llama.MODEL,
                hardware="local-cpu",
                count=1,
                tensor_parallel=1,
                dtype="w4a16",
                phase=phase,  # type: ignore[arg-type]
                batch=1,
                prompt_tokens=tokens,
                context_tokens=tokens,
                seconds=seconds,
                watts=watts,
                line=len(rows) + 2,
            )
        )
    # the server computes every token's logits (llama.LOGITS_ALL): the calibration says so
    result = _finish(hw, rows, catalog, out, "local", power_note, figures, llama.LOGITS_ALL)
    result.files["hardware"] = hw_path
    return result


def gpu_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "PyTorch is not installed (pip install 'wattserve[gpu]')"
    if not torch.cuda.is_available():
        return False, "PyTorch sees no CUDA device"
    return True, torch.cuda.get_device_name(0)


def profile_gpu(out: Path, quick: bool, log: Log) -> ProfileResult:
    """Measure GPU 0 through PyTorch (bf16), with NVML power when readable; writes into `out`
    as it goes (run_profile gives it a staging folder)."""
    import torch

    name = torch.cuda.get_device_name(0)
    log(f"GPU: {name}")
    tflops = micro.torch_matmul_tflops("cuda")
    gbps = micro.torch_copy_gbps("cuda")
    log(f"  bf16 matmul {tflops:.1f} TFLOPS, copy bandwidth {gbps:.0f} GB/s")
    meter, power_note = NvmlMeter.open(0)
    log(f"  power: {power_note}")
    figures = {
        "peak_tflops": tflops,
        "mem_bw_gbps": gbps,
        "memory_gb": torch.cuda.get_device_properties(0).total_memory / 1e9,
    }
    # the board's enforced power limit as its TDP: without one, a GPU the catalog does not
    # know had its measured watts thrown away (no power curve can be fitted without a TDP)
    limit = None if meter is None else meter.device_info().get("power_limit_w")
    if isinstance(limit, int | float) and 0 < limit < 1e5:
        figures["tdp_w"] = float(limit)
    catalog = load_catalog()
    hw_id = catalog_gpu(name)
    files: dict[str, Path] = {}
    if hw_id is None:
        hw_path = out / "hardware-gpu.yaml"
        source = f"measured by wattserve profile ({name}) {dt.date.today().isoformat()}"
        hw_path.write_text(hardware_yaml("local-gpu", name, "gpu", "bf16", dict(figures), source))
        catalog = load_catalog([hw_path])
        hw_id = "local-gpu"
        files["hardware"] = hw_path
    else:
        log(f"  matched catalog entry {hw_id}: calibrating its terms against its catalog peaks")
    hw = catalog.device(hw_id)
    plan = GPU_PLAN[:1] if quick else GPU_PLAN
    rows = _measure(hw_id, TorchBackend("cuda"), plan, meter, log, GPU_ENERGY_WINDOW_S)
    result = _finish(hw, rows, catalog, out, "gpu", power_note, figures)
    result.files.update(files)
    return result


# llama.cpp's threads wait for each other at every layer, so threads past the cores only slow a
# step; four per CPU leaves room to try oversubscription while refusing a count that asks the
# engine to start billions of threads (the server took --threads 99999999999 as given).
THREADS_PER_CPU = 4


def check_threads(threads: int) -> None:
    """Refuse a llama.cpp thread count below 1 or above THREADS_PER_CPU x this machine's CPUs."""
    cpus = os.cpu_count() or 1
    limit = THREADS_PER_CPU * cpus
    if threads < 1:
        raise ConfigError(f"must be at least 1, got {threads}", field="--threads")
    if threads > limit:
        raise ConfigError(
            f"at most {limit} ({THREADS_PER_CPU} x this machine's {cpus} CPUs: llama.cpp's "
            f"threads wait for each other at every layer, so threads past the cores only slow "
            f"it), got {str(threads)[:40]}",
            field="--threads",
        )


def _no_llama_threads(device: str, engine: str) -> None:
    """Refuse --threads where no llama.cpp engine is timed (taken, unused, until 2026-12-07)."""
    timed = (
        "--device gpu times the GPU alone"
        if device == "gpu"
        else "--engine numpy times the NumPy decoder, which runs its own BLAS threads"
        if engine == "numpy"
        else "--engine auto times the NumPy decoder, llama-cpp-python or the SmolLM2 GGUF "
        "not being installed (pip install 'wattserve[local]' for llama.cpp)"
    )
    raise ConfigError(
        f"sets llama.cpp's threads, and no llama.cpp engine is timed: {timed}; drop --threads",
        field="--threads",
    )


def output_names(tag: str, hardware: str | None) -> list[str]:
    """The files a profile tagged `tag` writes (`_finish`), with its hardware entry's."""
    return [f"measurements-{tag}.csv", f"calibration-{tag}.json", *([hardware] if hardware else [])]


def _refuse(message: str) -> ConfigError:
    return ConfigError(message, field="--output")


@contextmanager
def output_folder(out: Path, names: list[str]) -> Iterator[None]:
    """Check, before any measuring, that `out` is a folder that exists and takes new files, or
    can be created, and that none of `names` in it is a folder or another non-file; a missing
    folder is created and removed again (when still empty) if the run inside fails."""
    try:
        out.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's symlink loop
        raise _refuse(f"cannot write into {out!s:.200}: a loop of symbolic links") from None
    missing: list[Path] = []
    folder = out
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    if not folder.is_dir():
        what = "a file, not a folder" if folder.is_file() else "not a folder"
        if folder == out:
            raise _refuse(f"cannot write into {out!s:.200}: {what}")
        raise _refuse(f"cannot create {out!s:.200}: {folder!s:.200} is {what}")
    created: list[Path] = []
    try:
        for new in reversed(missing):
            try:
                new.mkdir()
            except OSError as exc:
                raise _refuse(f"cannot create {out!s:.200}: {exc.strerror}") from None
            created.append(new)
        try:  # as the writes at the end will: a new file beside the old ones (root too)
            fd, probe = tempfile.mkstemp(dir=out, prefix=".wattserve-profile-", suffix=".part")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise _refuse(
                f"cannot write into {out!s:.200}: a new file there fails ({exc.strerror})"
            ) from None
        for name in names:
            _check_target(out / name)
        yield
    except BaseException:
        for new in reversed(created):  # only what this run made, and only while empty
            with suppress(OSError):
                new.rmdir()
        raise


def _check_target(path: Path) -> None:
    """Refuse a file the profile will replace when it is a folder, not a regular file, or
    read-only; a missing one (or a dangling link, written through) is fine."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():  # dangling: the write makes the file it names, in its folder
            _check_link_folder(path)
        return
    except OSError as exc:  # a loop of symbolic links
        raise _refuse(f"cannot write {path!s:.200}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise _refuse(
            f"cannot write {path!s:.200}: a folder, not a file (profile writes {path.name} "
            "there; move the folder away or give another --output)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(f"cannot write {path!s:.200}: not a regular file")
    if not os.access(path, os.W_OK):
        raise _refuse(f"cannot write {path!s:.200}: Permission denied")


def _check_link_folder(link: Path) -> None:
    """Refuse a dangling link whose target's folder is missing or takes no new file: the
    write at the end (`replacing`) would fail there after the whole run."""
    folder = Path(os.path.realpath(link)).parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise _refuse(
            f"cannot write {link!s:.200}: a link to {os.readlink(link)!s:.200}, whose folder "
            f"{'takes no new file' if folder.is_dir() else 'does not exist'} (remove the link "
            "or give another --output)"
        )


def publish(results: list[ProfileResult], out: Path) -> None:
    """Copy every result's files into `out`, each through a temporary file beside its target
    (`replacing`). All are written before any is renamed over the file it replaces, so a
    write that fails (a full disk) changes nothing; `files` then names the copies in `out`."""
    moved: list[dict[str, Path]] = []
    try:
        with ExitStack() as stack:
            for result in results:
                moved.append({})
                for key, staged in result.files.items():
                    target = out / staged.name
                    handle = stack.enter_context(replacing(target))
                    handle.write(staged.read_bytes())
                    handle.flush()  # a full disk fails here, before any rename
                    moved[-1][key] = target
    except OSError as exc:
        where = exc.filename or out
        raise _refuse(f"cannot write {where!s:.200}: {exc.strerror or exc}") from None
    for result, files in zip(results, moved, strict=True):
        result.files = files


def run_profile(
    out: Path | None = None,
    device: str = "auto",
    quick: bool = False,
    log: Log = print,
    engine: str = "auto",
    threads: int | None = None,
    plan: Plan | None = None,
) -> list[ProfileResult]:
    """Profile the CPU and/or the GPU (`device`: auto, cpu or gpu). On the CPU, `engine`
    llama times the llama.cpp engine `serve` runs, numpy a synthetic NumPy decoder; auto is
    llama when llama-cpp-python and the SmolLM2 GGUF are installed (`plan` overrides the NumPy
    decoder's cases). `out` defaults to the stable place serve's local backend reads
    (default_profile_dir); its files change only when the whole run succeeds (`publish`).
    A bad `out` or `threads` is a ConfigError before anything is measured."""
    from wattserve.profile.llama import llama_available

    if out is None:  # the default folder: a refusal there names where it came from, not -o
        try:
            return run_profile(default_profile_dir(), device, quick, log, engine, threads, plan)
        except ConfigError as exc:
            if exc.field != "--output":
                raise
            where = "WATTSERVE_CACHE_DIR" if os.environ.get("WATTSERVE_CACHE_DIR") else None
            hint = "" if where else " (~/.cache/wattserve/profile; give --output)"
            raise ConfigError(exc.detail + hint, field=where) from None
    if threads is not None:
        check_threads(threads)
    if engine == "llama" and not llama_available():
        raise WattserveError(
            "cannot profile llama.cpp: install the local extra (pip install 'wattserve[local]')"
        )
    cpu_engine = None
    if device in ("auto", "cpu"):
        llama = engine == "llama" or (engine == "auto" and llama_available())
        cpu_engine = "llama" if llama else "numpy"
    if threads is not None and cpu_engine != "llama":
        _no_llama_threads(device, engine)
    gpu, why = gpu_available() if device in ("auto", "gpu") else (False, "")
    if device == "gpu" and not gpu:
        raise WattserveError(f"cannot profile a GPU: {why}")
    names = []
    if cpu_engine == "llama":
        names += output_names("local", LLAMA_FILES["hardware"])
    elif cpu_engine == "numpy":
        names += output_names("cpu", "hardware-cpu.yaml")
    if gpu:  # `why` is the GPU's name: an entry of its own unless the catalog knows it
        known = catalog_gpu(why) is not None
        names += output_names("gpu", None if known else "hardware-gpu.yaml")
    results = []
    started = time.perf_counter()
    with (
        output_folder(out, names),
        tempfile.TemporaryDirectory(prefix="wattserve-profile-") as staging,
    ):
        staged = Path(staging)
        if cpu_engine == "llama":
            results.append(profile_llama(staged, quick, log, threads))
        elif cpu_engine == "numpy":
            results.append(profile_cpu(staged, quick, log, plan))
        if gpu:
            results.append(profile_gpu(staged, quick, log))
        elif device == "auto":
            log(f"GPU: skipped ({why})")
        publish(results, out)
    log(f"profile took {time.perf_counter() - started:.1f} s")
    return results
