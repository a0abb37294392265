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
from wattserve.core.modelspec import builtin_model_ids
from wattserve.core.yamlio import Fields, LineDict, shown
from wattserve.errors import ConfigError, MissingFigureError, UnknownNameError

# an id is printed in tables and errors, and written back: plain text, as a name
MAX_ID_CHARS = 200
ID_RULE = f"printable text of 1 to {MAX_ID_CHARS} characters, not beginning or ending with a space"


def is_plain_id(text: str) -> bool:
    """Whether `text` can be a catalog id: printable, not blank, at most MAX_ID_CHARS, and
    not padded with spaces (`"h100-sxm "` printed as a second h100-sxm in every table, with
    figures of its own, and `--hardware` could not name it: it strips what it reads)."""
    return (
        bool(text.strip())
        and text == text.strip()
        and len(text) <= MAX_ID_CHARS
        and text.isprintable()
    )


Category = Literal["gpu", "asic", "wafer-scale", "compute-in-memory", "edge-module", "cpu"]
Software = Literal["pytorch-native", "plugin", "vendor-sdk"]
Maturity = Literal["prototype", "pilot", "production"]
MemoryKind = Literal["dram", "sram", "cim", "unknown"]

CATEGORIES: tuple[str, ...] = get_args(Category)
SOFTWARE: tuple[str, ...] = get_args(Software)
MATURITY: tuple[str, ...] = get_args(Maturity)
# least to most mature, for --require-software and --min-maturity (rank and plan alike)
SOFTWARE_ORDER = ("vendor-sdk", "plugin", "pytorch-native")
MATURITY_ORDER = ("prototype", "pilot", "production")


def stack_excluded(
    software: str, maturity: str, require_software: str | None, min_maturity: str | None
) -> str:
    """Why `--require-software` (at least this mature a stack) or `--min-maturity` drops an
    entry, or '' when it passes; a software name outside the order (a hosted API's) passes."""
    if (
        require_software is not None
        and software in SOFTWARE_ORDER
        and SOFTWARE_ORDER.index(software) < SOFTWARE_ORDER.index(require_software)
    ):
        return f"software {software} is less mature than --require-software {require_software}"
    if min_maturity is not None and MATURITY_ORDER.index(maturity) < MATURITY_ORDER.index(
        min_maturity
    ):
        return f"maturity {maturity} is below --min-maturity {min_maturity}"
    return ""


# Numeric figures a device entry may carry, with what each means (units in the name).
FIGURE_FIELDS: dict[str, str] = {
    "memory_gb": "device memory (DRAM/HBM) as the device reports it, decimal GB",
    "mem_bw_gbps": "device memory bandwidth, GB/s",
    "sram_mb": "on-chip SRAM, MB",
    "sram_bw_gbps": "on-chip SRAM bandwidth, GB/s",
    "weight_capacity_m": "weights held in a compute-in-memory array, millions",
    "tdp_w": "board/module power limit, W",
    "idle_w": "idle power, W",
    "usd_per_hour": "cloud rental price per device, $/h",
    "list_price_usd": "purchase price per device, $",
    "interconnect_gbps": (
        "device-to-device bandwidth per device, both directions together (as NVIDIA, AMD and "
        "Google quote it), GB/s"
    ),
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


# The bounds of each figure, in its unit, about 100 times past the largest part built (the
# Cerebras WSE-3: 44 GB of SRAM at 21 PB/s, 125 PFLOPS, 23 kW; 6 TB of CPU memory): a figure
# outside them is a slip or an attack, and would overflow the model's arithmetic to inf or NaN.
LIMITS: dict[str, float] = {
    "memory_gb": 1e5,
    "mem_bw_gbps": 1e6,
    "sram_mb": 1e7,
    "sram_bw_gbps": 1e9,
    "weight_capacity_m": 1e7,
    "tdp_w": 1e6,
    "idle_w": 1e6,
    "usd_per_hour": 1e5,
    "list_price_usd": 1e9,
    "interconnect_gbps": 1e7,
    "interconnect_latency_us": 1e7,
    "peak_tflops": 1e7,
    "usd_per_mtok_input": 1e5,
    "usd_per_mtok_output": 1e5,
    "ttft_s": 3600.0,
    "output_tokens_per_s": 1e7,
}
# Figures the model divides by or sizes with: zero would be nonsense, not a measurement, and so
# would less than a millionth of the unit (a kilobyte, a microwatt).
POSITIVE = (
    "memory_gb",
    "mem_bw_gbps",
    "sram_mb",
    "sram_bw_gbps",
    "weight_capacity_m",
    "tdp_w",
    "interconnect_gbps",
    "peak_tflops",
    "output_tokens_per_s",
)
MIN_POSITIVE = 1e-6
FIGURE_KEYS = {"value", "source", "verified", "note"}
DEVICE_KEYS = {"name", "vendor", "category", "software", "maturity", "year", "memory_type"}
DEVICE_KEYS |= {"source", "notes", "peak_tflops"}
PROVIDER_KEYS = {"name", "hardware", "base_url", "source", "models", "maturity", "notes"}
OFFER_KEYS = {"remote_name", "source", "usd_per_mtok_input", "usd_per_mtok_output"}
OFFER_KEYS |= {"ttft_s", "output_tokens_per_s"}


def _unknown(entry: LineDict, allowed: set[str], where: str, path: str) -> None:
    """Refuse a field not in `allowed` (a typo would otherwise be ignored without a word)."""
    Fields(entry, path, where).check_keys(allowed)


def _text(entry: LineDict, key: str, default: str, where: str, path: str) -> str:
    """A text field, printable (a note may run over lines); null or absent is `default`."""
    return Fields(entry, path, where).optional_text(key, default, lines=key in ("notes", "note"))


def _figure(raw: Any, kind: str, default_source: str, where: str, path: str, line: int) -> Figure:
    """A figure of `kind` (a LIMITS key): a number, or {value, source, verified, note}."""
    if isinstance(raw, LineDict):
        _unknown(raw, FIGURE_KEYS, where, path)
        if "value" not in raw:
            raise ConfigError("a figure mapping needs 'value'", path=path, line=line, field=where)
        value = _number(raw["value"], kind, where, path, raw.line_of("value"))
        source = _text(raw, "source", default_source, where, path)
        if not source:
            raise ConfigError("every figure needs a source", path=path, line=line, field=where)
        return Figure(
            value=value,
            source=source,
            verified=Fields(raw, path, where).flag("verified", True),
            note=_text(raw, "note", "", where, path),
        )
    if not default_source:
        raise ConfigError(
            "every figure needs a source: give the entry a 'source' or the figure "
            "{value: ..., source: ...}",
            path=path,
            line=line,
            field=where,
        )
    return Figure(value=_number(raw, kind, where, path, line), source=default_source)


def _number(raw: Any, kind: str, where: str, path: str, line: int) -> float:
    """A value of a figure of `kind`, within LIMITS (at least MIN_POSITIVE if POSITIVE)."""

    def refuse(why: str) -> ConfigError:
        return ConfigError(why, path=path, line=line, field=where)

    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:
        raise refuse(f"expected a number, got {shown(raw)}")
    low, high = (MIN_POSITIVE if kind in POSITIVE else 0.0), LIMITS[kind]
    if not low <= raw <= high:
        raise refuse(f"must be between {low:g} and {high:g}, got {shown(raw)}")
    return float(raw)


def _choice(entry: LineDict, key: str, allowed: tuple[str, ...], where: str, path: str) -> str:
    value = entry.get(key)
    if value not in allowed:
        got = "missing" if value is None else f"got {shown(value)}"
        raise ConfigError(
            f"must be one of {', '.join(allowed)}; {got}",
            path=path,
            line=entry.line_of(key),
            field=f"{where}.{key}",
        )
    return str(value)


def _year(entry: LineDict, hw_id: str, path: str) -> int | None:
    year = entry.get("year")
    if year is None:
        return None
    if isinstance(year, bool) or not isinstance(year, int) or not 1900 <= year <= 2200:
        raise ConfigError(
            f"expected a year such as 2025, got {shown(year)}",
            path=path,
            line=entry.line_of("year"),
            field=f"{hw_id}.year",
        )
    return year


def parse_hardware(hw_id: str, entry: Any, path: str) -> Hardware:
    """Build a Hardware from one YAML mapping; errors name the file, line and field."""
    if not isinstance(entry, LineDict):
        raise ConfigError("a device entry must be a mapping", path=path, field=hw_id)
    _unknown(entry, DEVICE_KEYS | set(FIGURE_FIELDS), hw_id, path)
    source = _text(entry, "source", "", hw_id, path)
    figures: dict[str, Figure] = {}
    for key, raw in entry.items():
        if raw is not None and key in FIGURE_FIELDS:
            figures[key] = _figure(raw, key, source, f"{hw_id}.{key}", path, entry.line_of(key))
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
            line = peaks.line_of(dtype)
            figures[PEAK_PREFIX + dtype] = _figure(raw, "peak_tflops", source, where, path, line)
    idle, tdp = figures.get("idle_w"), figures.get("tdp_w")
    if idle is not None and tdp is not None and idle.value > tdp.value:
        # power runs from idle up to TDP: an idle above it makes every watt and joule wrong
        raise ConfigError(
            f"idle power {idle.value:g} W is above the TDP of {tdp.value:g} W",
            path=path,
            line=entry.line_of("idle_w"),
            field=f"{hw_id}.idle_w",
        )
    return Hardware(
        id=hw_id,
        name=_text(entry, "name", hw_id, hw_id, path),
        vendor=_text(entry, "vendor", "", hw_id, path),
        category=_choice(entry, "category", CATEGORIES, hw_id, path),  # type: ignore[arg-type]
        software=_choice(entry, "software", SOFTWARE, hw_id, path),  # type: ignore[arg-type]
        maturity=_choice(entry, "maturity", MATURITY, hw_id, path),  # type: ignore[arg-type]
        year=_year(entry, hw_id, path),
        memory_type=_text(entry, "memory_type", "", hw_id, path),
        figures=figures,
        notes=_text(entry, "notes", "", hw_id, path),
    )


def parse_provider(pid: str, entry: Any, path: str) -> Provider:
    """Build a Provider from one YAML mapping."""
    if not isinstance(entry, LineDict):
        raise ConfigError("a provider entry must be a mapping", path=path, field=pid)
    _unknown(entry, PROVIDER_KEYS, pid, path)
    source = _text(entry, "source", "", pid, path)
    offers: dict[str, ProviderOffer] = {}
    models = entry.get("models")
    if not isinstance(models, LineDict) or not models:
        raise ConfigError(
            "a provider needs 'models': a mapping of wattserve model id to prices",
            path=path,
            line=entry.line_of("models"),
            field=f"{pid}.models",
        )
    known = {m.lower(): m for m in builtin_model_ids()}
    for key, raw in models.items():
        where = f"{pid}.models.{key}"
        model_id = known.get(str(key).lower())
        if model_id is None:  # an offer no request could match: it was taken without a word
            raise ConfigError(
                UnknownNameError("model", str(key)[:200], known.values()).args[0],
                path=path,
                line=models.line_of(key),
                field=where,
            )
        if model_id in offers:  # `Llama-3.1-8B:` and `llama-3.1-8b:`: the last won, unsaid
            raise ConfigError(
                f"{model_id} is given twice (in another case)",
                path=path,
                line=models.line_of(key),
                field=where,
            )
        if not isinstance(raw, LineDict):
            raise ConfigError("must be a mapping", path=path, line=models.line_of(key), field=where)
        _unknown(raw, OFFER_KEYS, where, path)
        src = _text(raw, "source", source, where, path) or source

        def fig(key: str, raw: LineDict = raw, src: str = src, where: str = where) -> Any:
            if raw.get(key) is None:
                return None
            return _figure(raw[key], key, src, f"{where}.{key}", path, raw.line_of(key))

        offers[model_id] = ProviderOffer(
            model=model_id,
            remote_name=_text(raw, "remote_name", model_id, where, path),
            usd_per_mtok_input=fig("usd_per_mtok_input"),
            usd_per_mtok_output=fig("usd_per_mtok_output"),
            ttft_s=fig("ttft_s"),
            output_tokens_per_s=fig("output_tokens_per_s"),
        )
    return Provider(
        id=pid,
        name=_text(entry, "name", pid, pid, path),
        hardware=_text(entry, "hardware", "", pid, path),
        base_url=_text(entry, "base_url", "", pid, path),
        offers=offers,
        maturity=_choice(entry, "maturity", MATURITY, pid, path)  # type: ignore[arg-type]
        if "maturity" in entry
        else "production",
        notes=_text(entry, "notes", "", pid, path),
    )
