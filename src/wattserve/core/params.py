"""The calibratable terms of the performance and power model, and the calibration file.

Defaults are wattserve's assumptions (stated in docs/model.md), not catalog figures; a
calibration fitted to measurements replaces them per hardware.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from wattserve.core.coverage import Coverage, is_whole, outside_note
from wattserve.core.hardware import ID_RULE, Hardware, is_plain_id
from wattserve.core.textfile import parse_json, read_text, replacing
from wattserve.errors import CalibrationError, ConfigError, closest, field_key, in_any_case


@dataclass(frozen=True, slots=True)
class EngineParams:
    """Efficiencies, engine overheads and the power curve for one kind of hardware.

    Times are in seconds. `power_k_*` scale how compute and memory utilisation drive the
    dynamic part of power; `idle_fraction` is used only when the catalog has no idle_w.
    """

    eff_compute: float = 0.6
    eff_memory: float = 0.8
    # the share of one direction of the links an all-reduce's bus bandwidth reaches: NCCL's
    # ring on H100 NVLink, about 370 of the 450 GB/s each way (NVIDIA/nccl-tests#212); A100
    # 200-230 of 300 (nccl-tests#149). (0.7 of both directions until 2026-12-05: docs/model.md)
    eff_comm: float = 0.8
    # a GPU engine's step: its scheduler, input preparation and sampling (0.3 ms), then each
    # layer's dozen kernels at a few microseconds each, CUDA graphs or not (30 us): fitted on an
    # H200 the layers cost 37 us and the step 0.08 ms in an engine with no scheduler
    # (docs/model.md)
    overhead_step_s: float = 3.0e-4
    overhead_layer_s: float = 3.0e-5
    overhead_seq_s: float = 5.0e-6
    overhead_collective_s: float = 1.0e-5
    # small GEMMs (docs/model.md): each GEMM costs as if its output had gemm_pad_elems more
    # elements (the wave of tiles a GPU runs whatever the rows), and each GEMM kernel takes at
    # least gemm_latency_s (launch, fill, drain); 0: off, the defaults until measurements
    # calibrate them
    gemm_pad_elems: float = 0.0
    gemm_latency_s: float = 0.0
    # the pad of an MoE's grouped expert kernels, a kernel of its own (vLLM's fused_moe, not
    # cuBLAS): fitted only from MoE rows, so that they do not move the dense GEMMs' pad, which
    # MoE rows cannot tell apart from it (docs/model.md); 0: the dense GEMMs' pad
    gemm_pad_expert_elems: float = 0.0
    # attention's work (its FLOPs over the context and its KV-cache reads) takes attn_factor
    # times what the same FLOPs and bytes take in the GEMMs (docs/model.md): attention kernels
    # reach their own share of the peaks (FlashAttention/FlashDecoding on GPUs, ggml's attention
    # on CPUs); 1: as the GEMMs, the default until measurements at several contexts calibrate it
    attn_factor: float = 1.0
    # an MoE's grouped expert kernels reach eff_expert of the dense GEMMs' FLOP rate and
    # bandwidth, and each MoE layer's routing (top-k, sorting by expert, the combine) costs
    # overhead_moe_layer_s (docs/model.md); 1 and 0, as vLLM's fused MoE on an H100, until
    # rows of an MoE model calibrate them
    eff_expert: float = 1.0
    overhead_moe_layer_s: float = 0.0
    # the elementwise kernels between a layer's GEMMs (norms, residual adds, rotary, the gated
    # activation) move elementwise_factor times the bytes vLLM's fused kernels do
    # (stepbasis.elementwise_bytes_per_token, docs/model.md); an engine of unfused kernels
    # moves more
    elementwise_factor: float = 1.0
    # an engine setting, not fitted: 1 where the engine computes the LM head for every token
    # it processes (llama-cpp-python's server, whose logits_all is on by default and which
    # `profile` times so), 0 where only each sequence's sampled token (vLLM, llama.cpp's own
    # server): docs/model.md
    logits_all: float = 0.0
    memory_utilization: float = 0.9
    # the power curve's slopes (docs/model.md): a compute-bound step at the default efficiency
    # draws its TDP (1.7 x 0.6), a memory-bound one 72% of the dynamic range (0.9 x 0.8); set on
    # an H200's measured steps and checked on ML.ENERGY's H100 and B200 runs (docs/accuracy.md)
    power_k_compute: float = 1.7
    power_k_memory: float = 0.9
    idle_fraction: float = 0.15
    source: str = "wattserve defaults (docs/model.md)"

    def with_updates(self, **changes: Any) -> EngineParams:
        return replace(self, **changes)


def moved_terms(p: EngineParams, moe: bool = True) -> list[str]:
    """The terms that are off or neutral by default, where a calibration set them, as
    phrases; the MoE ones only with `moe` (the model is an MoE, or the caller lists all)."""
    moved = []
    if p.gemm_pad_elems:
        moved.append(f"GEMM pad {p.gemm_pad_elems:.3g} output elements")
    if p.gemm_latency_s:
        moved.append(f"GEMM kernel floor {p.gemm_latency_s * 1e6:.3g} us")
    if p.attn_factor != 1.0:
        moved.append(f"attention x{p.attn_factor:.3g}")
    if p.elementwise_factor != 1.0:
        moved.append(f"elementwise kernels x{p.elementwise_factor:.3g}")
    if p.logits_all:
        moved.append("the LM head on every token (logits_all)")
    if moe and p.eff_expert != 1.0:
        moved.append(f"MoE expert kernels at {p.eff_expert:.3g} of the dense rates")
    if moe and p.gemm_pad_expert_elems:
        moved.append(f"MoE expert kernels' GEMM pad {p.gemm_pad_expert_elems:.3g} output elements")
    if moe and p.overhead_moe_layer_s:
        moved.append(f"MoE routing {p.overhead_moe_layer_s * 1e6:.3g} us per layer")
    return moved


# Dataflow parts compiled ahead of time (weights pinned in SRAM or in a compute array) run a
# static graph with no per-step Python scheduler and a short chip-to-chip hop; their per-layer
# latency is unpublished: 10 us, no kernel launches (the published one-user rates of
# docs/accuracy.md hold at it). CPUs have no kernel-launch cost but reach a smaller share of
# their peaks.
_DATAFLOW = EngineParams(
    overhead_step_s=2.0e-4,
    overhead_layer_s=1.0e-5,
    overhead_seq_s=5.0e-6,
    overhead_collective_s=2.0e-6,
    source="wattserve defaults for SRAM/compute-in-memory dataflow parts (docs/model.md)",
)
# every efficiency 1 and every cost 0: the least time a step's own work can take (calibrate
# refuses rows faster than a tenth of it; the unit tests' ideal engine)
DATASHEET_PEAKS = EngineParams(
    eff_compute=1.0,
    eff_memory=1.0,
    eff_comm=1.0,
    overhead_step_s=0.0,
    overhead_layer_s=0.0,
    overhead_seq_s=0.0,
    overhead_collective_s=0.0,
    elementwise_factor=0.0,
    source="the datasheet peaks",
)
_GPU = EngineParams()  # one object: estimate's caches find it by identity, not by comparing fields
_CPU = EngineParams(
    eff_compute=0.5,
    eff_memory=0.7,
    overhead_step_s=5.0e-4,
    overhead_layer_s=5.0e-6,
    source="wattserve defaults for CPUs (docs/model.md)",
)

MIN_MEMORY_SHARE = 0.01  # of a device's memory for an engine: 1e-320 would overflow capacities

# What a calibration file may hold, per term: (lowest, highest, lowest excluded). Wider than
# calibrate's fit bounds (calibrate/terms.py BOUNDS, which every fitted file is inside) so that
# hand-set terms have room, but physical: an efficiency of 1e-308 or an overhead of 1e308 s
# would turn every figure behind it into infinity. Costs may be 0 (off).
RANGES: dict[str, tuple[float, float, bool]] = {
    "eff_compute": (0.001, 1.0, False),
    "eff_memory": (0.001, 1.0, False),
    "eff_comm": (0.001, 1.0, False),
    "overhead_step_s": (0.0, 60.0, False),
    "overhead_layer_s": (0.0, 1.0, False),
    "overhead_seq_s": (0.0, 1.0, False),
    "overhead_collective_s": (0.0, 1.0, False),
    "gemm_pad_elems": (0.0, 1.0e10, False),
    "gemm_latency_s": (0.0, 1.0, False),
    "gemm_pad_expert_elems": (0.0, 1.0e10, False),
    "attn_factor": (0.0, 100.0, True),  # attention free, or a hundred times the GEMMs'
    "eff_expert": (0.001, 1.0, False),  # times eff_compute or eff_memory: at most the peaks
    "overhead_moe_layer_s": (0.0, 1.0, False),
    "elementwise_factor": (0.0, 100.0, False),  # 0: fused into the GEMMs
    "logits_all": (0.0, 1.0, False),
    "memory_utilization": (MIN_MEMORY_SHARE, 1.0, False),
    "power_k_compute": (0.0, 100.0, False),
    "power_k_memory": (0.0, 100.0, False),
    "idle_fraction": (0.001, 1.0, False),  # 1e-320 of TDP: a denormal idle draw
}


def check_memory_share(value: object, field: str = "gpu_memory_utilization") -> float:
    """vLLM's `gpu_memory_utilization`: a number in [0.01, 1], else ConfigError naming `field`
    (a share of 1e-320 would make every capacity behind it overflow)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not MIN_MEMORY_SHARE <= value <= 1
    ):
        raise ConfigError(f"must be in [{MIN_MEMORY_SHARE:g}, 1], got {value!r:.40}", field=field)
    return float(value)


NUMERIC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EngineParams) if f.name != "source")


# what an estimate's `calibration` says when no calibration moved its terms
DEFAULT_SOURCES = frozenset(p.source for p in (_GPU, _CPU, _DATAFLOW))


def default_params(hw: Hardware) -> EngineParams:
    """The uncalibrated terms for a kind of hardware."""
    if hw.memory_kind in ("sram", "cim"):
        return _DATAFLOW
    if hw.category == "cpu":
        return _CPU
    return _GPU


# a calibration whose held-out error is above this is uncertain: calibrate warns as it writes
# it (issue #12 item 1), and estimate says so wherever its terms are used
HELD_OUT_WARN_PCT = 15.0


@dataclass(frozen=True, slots=True)
class Calibration:
    """Fitted EngineParams per hardware id, with the fit error that was measured and, per
    hardware, the time terms the fit moved and those it kept at their defaults."""

    params: dict[str, EngineParams] = field(default_factory=dict)
    fit_error: dict[str, dict[str, float]] = field(default_factory=dict)
    terms: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    # the terms a file gave per entry, where it left some out (a hand-written or edited entry):
    # the rest are the hardware's own defaults (a CPU's, not a GPU's), resolved once per device
    given: dict[str, frozenset[str]] = field(default_factory=dict)
    # what calibrate's rows spanned per hardware id (none in files written before 2026-12-05)
    measured: dict[str, Coverage] = field(default_factory=dict)
    resolved: dict[str, EngineParams] = field(default_factory=dict, compare=False, repr=False)

    def entry_id(self, hw_id: str) -> str | None:
        """The id this calibration files `hw_id`'s terms under: the id itself, or the one
        entry that is the id in another case (`H100-SXM` is what a person types), else None."""
        return hw_id if hw_id in self.params else in_any_case(hw_id, self.params)

    def caution(self, hw_id: str) -> tuple[str, ...]:
        """What a prediction from `hw_id`'s terms should say of their fit: its held-out error
        where it was over HELD_OUT_WARN_PCT, or, where nothing was fitted (nothing held out),
        the kept terms' own error over it (calibrate warned when it wrote them; estimate had
        applied them without a word: a fit 35% off on rows it had not seen)."""
        entry = self.entry_id(hw_id)
        fit = {} if entry is None else self.fit_error.get(entry, {})
        held_out, in_sample = fit.get("loo_mean_abs_pct"), fit.get("mean_abs_pct")
        if held_out is not None and held_out > HELD_OUT_WARN_PCT:
            return (
                f"the calibration of {hw_id} predicted the rows it was not fitted on with "
                f"{held_out:.1f}% mean error (over {HELD_OUT_WARN_PCT:g}%): its terms are "
                "uncertain; measure more shapes (docs/calibration.md)",
            )
        if held_out is None and in_sample is not None and in_sample > HELD_OUT_WARN_PCT:
            return (  # nothing was fitted (nothing held out): the defaults it kept miss its rows
                f"the calibration of {hw_id} kept terms that miss its own rows by "
                f"{in_sample:.1f}% on average (over {HELD_OUT_WARN_PCT:g}%): the model does not "
                "describe that engine's times well (docs/calibration.md)",
            )
        return ()

    def params_for(self, hw: Hardware) -> EngineParams:
        key = hw.id if hw.id in self.params else self.entry_id(hw.id) if self.params else None
        if key is None:
            return default_params(hw)
        found, names = self.params[key], self.given.get(key)
        if names is None:
            return found
        done = self.resolved.get(hw.id)
        if done is None:  # one object per device: estimate's caches find it by identity
            done = self.resolved[hw.id] = default_params(hw).with_updates(
                **{n: getattr(found, n) for n in names}, source=found.source
            )
        return done

    def beyond(
        self,
        hw: Hardware,
        model: str,
        params: float,
        prefill_tokens: int | None = None,
        decode_batch: int | None = None,
        decode_context: int | None = None,
        tp: int | None = None,
        dtype: str | None = None,
    ) -> tuple[str, ...]:
        """The note to print where a prediction lies outside what this calibration measured on
        `hw` (core/coverage.py), or nothing: within it, no record of it, or no term fitted."""
        entry = self.entry_id(hw.id) if self.measured else None
        cov = None if entry is None else self.measured.get(entry)
        if entry is None or cov is None or (entry in self.terms and not self.terms[entry][0]):
            return ()
        out = cov.outside(model, params, prefill_tokens, decode_batch, decode_context, tp, dtype)
        return (outside_note(entry, cov, out),) if out else ()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "hardware": {
                hw_id: {
                    **asdict(p),
                    "fit_error": self.fit_error.get(hw_id, {}),
                    **self._terms_json(hw_id),
                    **(
                        {"measured": self.measured[hw_id].to_json()}
                        if hw_id in self.measured
                        else {}
                    ),
                }
                for hw_id, p in self.params.items()
            },
        }

    def _terms_json(self, hw_id: str) -> dict[str, list[str]]:
        if hw_id not in self.terms:
            return {}
        fitted, kept = self.terms[hw_id]
        return {"fitted": list(fitted), "kept": list(kept)}

    def dumps(self) -> str:
        """The calibration file's text; a term or figure that is NaN or infinite is a
        CalibrationError, not a file that every reader refuses (json writes NaN as is)."""
        data = self.to_json()
        for hw_id, entry in data["hardware"].items():
            where = _non_finite(entry)
            if where is not None:
                raise CalibrationError(
                    f"the calibration of {hw_id} came out with {where[0]} = {where[1]}: "
                    "a fit or an edit went out of range; nothing was written"
                )
        return json.dumps(data, indent=2, allow_nan=False) + "\n"

    def save(self, path: str | Path) -> None:
        text = self.dumps()  # a term out of range is refused before the file is touched
        try:
            with replacing(path) as handle:  # whole or not at all
                handle.write(text.encode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot write the file: {exc.strerror}", path=str(path)) from None


def _non_finite(data: Any, at: str = "") -> tuple[str, float] | None:
    """The first NaN or infinity in a calibration's JSON form (`fit_error.mean_abs_pct`) and
    its value, else None."""
    if isinstance(data, float) and not math.isfinite(data):
        return at or "a value", data
    if isinstance(data, dict):
        items: list[tuple[Any, Any]] = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return None
    for key, value in items:
        found = _non_finite(value, f"{at}.{key}" if at else str(key))
        if found is not None:
            return found
    return None


def _finite(v: Any) -> bool:
    """A real number that a float holds (not a bool, NaN, an infinity or an int past 1e308)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


# what a calibration file's hardware entry holds: the terms, and what calibrate recorded
ENTRY_KEYS = {
    *NUMERIC_FIELDS,
    "source",
    "fit_error",
    "fitted",
    "kept",
    "measured",
    "gemm_half_rows",
}
# hardware entries in one calibration: the built-in catalog has about 40 devices (3,000,000 took
# 36 s to read and estimate printed all their names)
MAX_ENTRIES = 1000


def _known_keys(obj: dict[str, Any], known: set[str], p: Path, at: str) -> None:
    for key in obj:
        if key not in known:
            near = closest(str(key), known)
            raise ConfigError(
                "unknown field" + (f"; did you mean {' or '.join(near)}?" if near else ""),
                path=str(p),
                field=f"{at}{field_key(key)}",
            )


def _check_ids(hardware: dict[str, Any], p: Path) -> None:
    """Each entry's id is printable text of 1 to MAX_ID_CHARS characters, as a catalog id is
    (an escape in one reached the terminal with estimate's `it has ...`; an empty one was
    listed as none), and no id is another's in another case (ids match in any case, so two
    spellings of one would be ambiguous)."""
    folded: dict[str, str] = {}
    for hw_id in hardware:
        if not is_plain_id(hw_id):
            raise ConfigError(
                f"{hw_id!r:.80} is not a hardware id: {ID_RULE}, as `wattserve catalog` lists them",
                path=str(p),
                field="hardware",
            )
        twin = folded.setdefault(hw_id.lower(), hw_id)
        if twin != hw_id:
            raise ConfigError(
                f"{twin!r:.60} and {hw_id!r:.60} are one device id in two cases; keep one",
                path=str(p),
                field=f"hardware.{hw_id}",
            )


MAX_SOURCE = 1000  # characters of a calibration entry's `source`
# what calibrate writes in an entry's fit_error (calibrate.fit.FitReport.as_dict): the rows
# fitted, a whole number of at least one, and errors in percent, none negative
FIT_ERROR_KEYS = frozenset(
    {
        "rows",
        "mean_abs_pct",
        "max_abs_pct",
        "default_mean_abs_pct",
        "loo_mean_abs_pct",
        "loo_max_abs_pct",
        "power_mean_abs_pct",
    }
)
# A calibration file is a few KB (2 KB an entry). The largest calibrate can write, 1,000
# entries with the longest hardware ids, source and model ids it writes, is 3.0 MB, 7.5 MB
# where those are non-ASCII (JSON writes each as \uXXXX). A file past this is refused before
# it is parsed: 60 MB of `[{}, {}, ...]` took 1.5 GB of memory to parse and refuse.
MAX_CALIBRATION_BYTES = 8 << 20


def _fit_error(fe: Any, p: Path, at: str) -> dict[str, float]:
    """An entry's `fit_error`: `rows` a whole number of at least 1, the errors (in percent)
    numbers of at least 0; informational, but printed, so nonsense is refused naming it."""
    if (
        not isinstance(fe, dict)
        or not all(_finite(v) for v in fe.values())
        or not set(fe) <= FIT_ERROR_KEYS
    ):
        raise ConfigError(
            f"must be an object of numbers named {', '.join(sorted(FIT_ERROR_KEYS))}",
            path=str(p),
            field=at,
        )
    for key, v in fe.items():
        if key == "rows" and not (is_whole(v) and v >= 1):
            raise ConfigError(
                f"must be a whole number of at least 1, got {v!r:.40}",
                path=str(p),
                field=f"{at}.{key}",
            )
        if v < 0:
            raise ConfigError(
                f"must be at least 0 (a percentage), got {v!r:.40}",
                path=str(p),
                field=f"{at}.{key}",
            )
    return {str(k): float(v) for k, v in fe.items()}


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration JSON written by `wattserve calibrate` or `wattserve profile`."""
    p = Path(path)
    data = parse_json(read_text(p, MAX_CALIBRATION_BYTES), str(p))
    hardware = data.get("hardware") if isinstance(data, dict) else None
    if not isinstance(hardware, dict):
        raise CalibrationError(
            f"{p}: not a wattserve calibration (no 'hardware' object); "
            "make one with `wattserve calibrate MEASUREMENTS.csv -o CALIB.json`"
        )
    _known_keys(data, {"version", "hardware"}, p, "")
    version = data.get("version", 1)
    if isinstance(version, bool) or version != 1:  # true == 1 in Python, not in the file
        raise ConfigError(
            f"version {data['version']!r:.20} is not one this wattserve reads (1)",
            path=str(p),
            field="version",
        )
    params: dict[str, EngineParams] = {}
    errors: dict[str, dict[str, float]] = {}
    terms: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    given: dict[str, frozenset[str]] = {}
    measured: dict[str, Coverage] = {}
    if len(hardware) > MAX_ENTRIES:
        raise ConfigError(
            f"{len(hardware):,} hardware entries; a calibration holds at most {MAX_ENTRIES:,}",
            path=str(p),
            field="hardware",
        )
    _check_ids(hardware, p)
    for hw_id, entry in hardware.items():
        if not isinstance(entry, dict):
            raise ConfigError("must be an object", path=str(p), field=f"hardware.{hw_id}")
        # a misspelt term would leave its default in place without a word
        _known_keys(entry, ENTRY_KEYS, p, f"hardware.{hw_id}.")
        for name in ("fitted", "kept"):
            listed = entry.get(name, [])
            if (
                not isinstance(listed, list)
                or not all(t in NUMERIC_FIELDS for t in listed)
                or len(set(listed)) < len(listed)
            ):
                raise ConfigError(
                    "must be a list of term names, each once",
                    path=str(p),
                    field=f"hardware.{hw_id}.{name}",
                )
        source = entry.get("source", "")
        # printed on estimate's `engine terms:` line: one line of text (10 MB was printed whole)
        if not isinstance(source, str) or len(source) > MAX_SOURCE or not source.isprintable():
            raise ConfigError(
                f"must be one line of printable text of at most {MAX_SOURCE:,} characters",
                path=str(p),
                field=f"hardware.{hw_id}.source",
            )
        if entry.get("gemm_half_rows"):  # the ramp's earlier form: its value means nothing now
            raise ConfigError(
                "gemm_half_rows was replaced by gemm_pad_elems and gemm_latency_s "
                "(docs/model.md): calibrate again from the measurements",
                path=str(p),
                field=f"hardware.{hw_id}.gemm_half_rows",
            )
        if "fitted" in entry and "elementwise_factor" not in entry:
            # written by calibrate before the step model of 2026-12-04 (the LM head per token,
            # no elementwise kernels): its fitted terms stand in for what the model now counts
            raise ConfigError(
                "no elementwise_factor in an entry calibrate wrote: fitted under the step "
                "model before 2026-12-04 (the LM head charged per token, no elementwise "
                "kernels, docs/model.md), whose terms would count those twice, or edited; "
                "calibrate again from the measurements",
                path=str(p),
                field=f"hardware.{hw_id}",
            )
        values: dict[str, Any] = {}
        for name in NUMERIC_FIELDS:
            if name in entry:
                v = entry[name]
                lo, hi, open_low = RANGES[name]
                if not _finite(v) or not (lo < v <= hi if open_low else lo <= v <= hi):
                    span = f"in ({lo:g}, {hi:g}]" if open_low else f"in [{lo:g}, {hi:g}]"
                    raise ConfigError(
                        f"must be a number {span}, got {v!r:.40}",
                        path=str(p),
                        field=f"hardware.{hw_id}.{name}",
                    )
                values[name] = float(v)
        if len(values) < len(NUMERIC_FIELDS):
            given[hw_id] = frozenset(values)
        values["source"] = str(entry.get("source", f"calibration {p.name}"))
        params[hw_id] = EngineParams(**values)
        errors[hw_id] = _fit_error(entry.get("fit_error", {}), p, f"hardware.{hw_id}.fit_error")
        fitted, kept = entry.get("fitted"), entry.get("kept")
        if isinstance(fitted, list) and isinstance(kept, list):
            terms[hw_id] = (tuple(map(str, fitted)), tuple(map(str, kept)))
        if "measured" in entry:
            measured[hw_id] = Coverage.from_json(
                entry["measured"], str(p), f"hardware.{hw_id}.measured"
            )
    return Calibration(params=params, fit_error=errors, terms=terms, given=given, measured=measured)
