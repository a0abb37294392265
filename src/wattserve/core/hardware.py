"""Hardware and hosted-provider catalog entries, parsed from YAML mappings.

A device's figures live in a dict of `Figure`s keyed by name with units in the name
(`mem_bw_gbps`, `tdp_w`, `peak_tflops_bf16`, ...). A figure the catalog does not give is absent,
never zero: the model asks for it with `Hardware.require` and says what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from wattserve.core.dtypes import COMPUTE_PEAK_ORDER, PEAK_DTYPES, Dtype
from wattserve.core.figures import Figure
from wattserve.core.yamlio import LineDict
from wattserve.errors import ConfigError, MissingFigureError

Category = Literal["gpu", "asic", "wafer-scale", "compute-in-memory", "edge-module", "cpu"]
Software = Literal["pytorch-native", "plugin", "vendor-sdk"]
Maturity = Literal["prototype", "pilot", "production"]
MemoryKind = Literal["dram", "sram", "cim", "unknown"]

CATEGORIES: tuple[str, ...] = get_args(Category)
SOFTWARE: tuple[str, ...] = get_args(Software)
MATURITY: tuple[str, ...] = get_args(Maturity)

# Numeric figures a device entry may carry, with what each means (units in the name).
FIGURE_FIELDS: dict[str, str] = {
    "memory_gb": "device memory (DRAM/HBM) capacity, GB",
    "mem_bw_gbps": "device memory bandwidth, GB/s",
    "sram_mb": "on-chip SRAM, MB",
    "sram_bw_gbps": "on-chip SRAM bandwidth, GB/s",
    "weight_capacity_m": "weights held in a compute-in-memory array, millions",
    "tdp_w": "board/module power limit, W",
    "idle_w": "idle power, W",
    "usd_per_hour": "cloud rental price per device, $/h",
    "list_price_usd": "purchase price per device, $",
    "interconnect_gbps": "device-to-device bandwidth per device, GB/s",
    "interconnect_latency_us": "device-to-device latency per hop, us",
}
PEAK_PREFIX = "peak_tflops_"


@dataclass(frozen=True, slots=True, eq=False)
class Hardware:
    """One kind of device, with every figure traced to a source.

    Compared and hashed by identity: catalogs build each entry once, and the performance
    model caches per entry.
    """

    id: str
    name: str
    vendor: str
    category: Category
    software: Software
    maturity: Maturity
    year: int | None
    memory_type: str
    figures: Mapping[str, Figure] = field(default_factory=dict)
    notes: str = ""

    def value(self, key: str) -> float | None:
        fig = self.figures.get(key)
        return None if fig is None else fig.value

    def require(self, key: str, why: str) -> float:
        """The value of a figure the caller cannot do without, else MissingFigureError."""
        fig = self.figures.get(key)
        if fig is None:
            raise MissingFigureError(
                f"{self.id} has no {key} ({FIGURE_FIELDS.get(key, key)}) in the catalog, "
                f"so {why} cannot be computed. Add it with --hardware-file if you know it."
            )
        return fig.value

    def peak_key(self, dtype: Dtype) -> str | None:
        """The catalog key of the peak used for matrix work on weights of `dtype`."""
        for d in COMPUTE_PEAK_ORDER[dtype]:
            if PEAK_PREFIX + d in self.figures:
                return PEAK_PREFIX + d
        return None

    @property
    def memory_kind(self) -> MemoryKind:
        """Where weights live: device DRAM/HBM, on-chip SRAM only, or a compute-in-memory array."""
        if "memory_gb" in self.figures:
            return "dram"
        if "sram_mb" in self.figures:
            return "sram"
        if "weight_capacity_m" in self.figures:
            return "cim"
        return "unknown"

    def peaks(self) -> dict[str, float]:
        return {
            k.removeprefix(PEAK_PREFIX): f.value
            for k, f in self.figures.items()
            if k.startswith(PEAK_PREFIX)
        }


@dataclass(frozen=True, slots=True)
class ProviderOffer:
    """One model as a hosted API sells it: prices per 1M tokens and a latency profile."""

    model: str
    remote_name: str
    usd_per_mtok_input: Figure | None
    usd_per_mtok_output: Figure | None
    ttft_s: Figure | None
    output_tokens_per_s: Figure | None


@dataclass(frozen=True, slots=True)
class Provider:
    """A hosted inference API priced per token (Groq, Cerebras, Together, ...)."""

    id: str
    name: str
    hardware: str
    base_url: str
    offers: Mapping[str, ProviderOffer]
    maturity: Maturity = "production"
    notes: str = ""


def _figure(raw: Any, default_source: str, where: str, path: str, line: int) -> Figure:
    if isinstance(raw, LineDict):
        if "value" not in raw:
            raise ConfigError("a figure mapping needs 'value'", path=path, line=line, field=where)
        value = _number(raw["value"], where, path, raw.line_of("value"))
        source = str(raw.get("source", default_source) or "")
        if not source:
            raise ConfigError("every figure needs a source", path=path, line=line, field=where)
        return Figure(
            value=value,
            source=source,
            verified=bool(raw.get("verified", True)),
            note=str(raw.get("note", "")),
        )
    if not default_source:
        raise ConfigError(
            "every figure needs a source: give the entry a 'source' or the figure "
            "{value: ..., source: ...}",
            path=path,
            line=line,
            field=where,
        )
    return Figure(value=_number(raw, where, path, line), source=default_source)


# Figures the model divides by or sizes with: zero would be nonsense, not a measurement.
POSITIVE = (
    "memory_gb",
    "mem_bw_gbps",
    "sram_mb",
    "sram_bw_gbps",
    "weight_capacity_m",
    "tdp_w",
    "interconnect_gbps",
    "peak_tflops",
)


def _number(raw: Any, where: str, path: str, line: int) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:
        raise ConfigError(f"expected a number, got {raw!r}", path=path, line=line, field=where)
    key = where.split(".", 1)[-1]
    if any(key.startswith(k) for k in POSITIVE) and raw <= 0:
        raise ConfigError(f"must be positive, got {raw}", path=path, line=line, field=where)
    if raw < 0 or raw == float("inf"):
        raise ConfigError(
            f"must be a finite, non-negative number, got {raw}", path=path, line=line, field=where
        )
    return float(raw)


def _choice(entry: LineDict, key: str, allowed: tuple[str, ...], path: str) -> str:
    value = entry.get(key)
    if value not in allowed:
        raise ConfigError(
            f"must be one of {', '.join(allowed)}, got {value!r}",
            path=path,
            line=entry.line_of(key),
            field=key,
        )
    return str(value)


def parse_hardware(hw_id: str, entry: Any, path: str) -> Hardware:
    """Build a Hardware from one YAML mapping; errors name the file, line and field."""
    if not isinstance(entry, LineDict):
        raise ConfigError("a device entry must be a mapping", path=path, field=hw_id)
    source = str(entry.get("source", "") or "")
    figures: dict[str, Figure] = {}
    known = {"name", "vendor", "category", "software", "maturity", "year", "memory_type"}
    known |= {"source", "notes", "peak_tflops"}
    for key, raw in entry.items():
        if raw is None or key in known:
            continue
        if key not in FIGURE_FIELDS:
            raise ConfigError(
                f"unknown field; expected one of {', '.join(sorted(known | set(FIGURE_FIELDS)))}",
                path=path,
                line=entry.line_of(key),
                field=f"{hw_id}.{key}",
            )
        figures[key] = _figure(raw, source, f"{hw_id}.{key}", path, entry.line_of(key))
    peaks = entry.get("peak_tflops")
    if peaks is None:
        peaks = LineDict()
        peaks.key_lines = {}
    if not isinstance(peaks, LineDict):
        raise ConfigError(
            "peak_tflops must map dtype to dense TFLOPS, e.g. {bf16: 989}",
            path=path,
            line=entry.line_of("peak_tflops"),
            field=f"{hw_id}.peak_tflops",
        )
    for dtype, raw in peaks.items():
        if dtype not in PEAK_DTYPES:
            raise ConfigError(
                f"unknown dtype; use one of {', '.join(PEAK_DTYPES)}",
                path=path,
                line=peaks.line_of(dtype),
                field=f"{hw_id}.peak_tflops.{dtype}",
            )
        if raw is not None:
            where = f"{hw_id}.peak_tflops.{dtype}"
            figures[PEAK_PREFIX + dtype] = _figure(raw, source, where, path, peaks.line_of(dtype))
    year = entry.get("year")
    return Hardware(
        id=hw_id,
        name=str(entry.get("name", hw_id)),
        vendor=str(entry.get("vendor", "")),
        category=_choice(entry, "category", CATEGORIES, path),  # type: ignore[arg-type]
        software=_choice(entry, "software", SOFTWARE, path),  # type: ignore[arg-type]
        maturity=_choice(entry, "maturity", MATURITY, path),  # type: ignore[arg-type]
        year=int(year) if isinstance(year, int) else None,
        memory_type=str(entry.get("memory_type", "")),
        figures=figures,
        notes=str(entry.get("notes", "")),
    )


def parse_provider(pid: str, entry: Any, path: str) -> Provider:
    """Build a Provider from one YAML mapping."""
    if not isinstance(entry, LineDict):
        raise ConfigError("a provider entry must be a mapping", path=path, field=pid)
    source = str(entry.get("source", "") or "")
    offers: dict[str, ProviderOffer] = {}
    models = entry.get("models")
    if not isinstance(models, LineDict) or not models:
        raise ConfigError(
            "a provider needs 'models': a mapping of wattserve model id to prices",
            path=path,
            line=entry.line,
            field=f"{pid}.models",
        )
    for model_id, raw in models.items():
        if not isinstance(raw, LineDict):
            raise ConfigError(
                "must be a mapping", path=path, line=models.line_of(model_id), field=model_id
            )
        src = str(raw.get("source", source) or source)

        def fig(key: str, raw: LineDict = raw, src: str = src, model_id: str = model_id) -> Any:
            if raw.get(key) is None:
                return None
            return _figure(raw[key], src, f"{pid}.{model_id}.{key}", path, raw.line_of(key))

        offers[model_id] = ProviderOffer(
            model=model_id,
            remote_name=str(raw.get("remote_name", model_id)),
            usd_per_mtok_input=fig("usd_per_mtok_input"),
            usd_per_mtok_output=fig("usd_per_mtok_output"),
            ttft_s=fig("ttft_s"),
            output_tokens_per_s=fig("output_tokens_per_s"),
        )
    return Provider(
        id=pid,
        name=str(entry.get("name", pid)),
        hardware=str(entry.get("hardware", "")),
        base_url=str(entry.get("base_url", "")),
        offers=offers,
        maturity=_choice(entry, "maturity", MATURITY, path)  # type: ignore[arg-type]
        if "maturity" in entry
        else "production",
        notes=str(entry.get("notes", "")),
    )
