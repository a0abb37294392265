"""Numeric formats for weights, KV cache and compute, and their sizes."""

from __future__ import annotations

from typing import Literal, get_args

from wattserve.errors import ConfigError

Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
DTYPES: tuple[Dtype, ...] = get_args(Dtype)

BYTES_PER_ELEMENT: dict[Dtype, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}

# Which peak to use for matrix work whose weights are stored in a dtype, in order of preference.
# fp16 and bf16 run at the same rate on every catalogued device; int4 weights are commonly
# dequantised to int8 or 16-bit operands (weight-only quantisation).
COMPUTE_PEAK_ORDER: dict[Dtype, tuple[Dtype, ...]] = {
    "fp32": ("fp32",),
    "bf16": ("bf16", "fp16"),
    "fp16": ("fp16", "bf16"),
    "fp8": ("fp8",),
    "int8": ("int8",),
    "int4": ("int4", "int8", "bf16", "fp16"),
}


def parse_dtype(value: str, field: str = "dtype") -> Dtype:
    """Return `value` as a Dtype, or raise ConfigError listing the accepted ones."""
    lowered = value.strip().lower()
    for d in DTYPES:
        if lowered == d:
            return d
    raise ConfigError(f"'{value}' is not a dtype; use one of {', '.join(DTYPES)}", field=field)
