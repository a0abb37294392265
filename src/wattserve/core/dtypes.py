"""Numeric formats for weights, KV cache and compute, and their sizes.

A weight format says how weights are stored and moved; the compute precision says at which
peak the matrix math runs. For plain formats they are the same. Weight-only quantisation
(GPTQ, AWQ, GGUF Q4/Q8: `w4a16`, `w8a16`) stores weights in 4 or 8 bits and dequantises them
to the activations' 16-bit format inside the matrix multiply, so weights move at their bits
and the math runs at the 16-bit peak; a device with no int4 peak runs them. `w8a8` quantises
activations too (int8 math); `fp8` is W8A8 in fp8.
"""

from __future__ import annotations

from typing import Literal, get_args

from wattserve.errors import ConfigError

Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4", "w4a16", "w8a16", "w8a8"]
DTYPES: tuple[Dtype, ...] = get_args(Dtype)
# Formats a catalog peak or a KV cache can be in (the weight-only schemes are not).
PEAK_DTYPES: tuple[Dtype, ...] = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")

# Bytes per stored element. Group-wise 4-bit schemes (GPTQ/AWQ, group size 128) also store a
# 16-bit scale and zero point per group: 32 bits / 128 weights = 0.25 bit per weight.
BYTES_PER_ELEMENT: dict[Dtype, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "w4a16": 4.25 / 8,
    "w8a16": 1.0,
    "w8a8": 1.0,
}

# Which peak runs matrix work on weights of a format, in order of preference. fp16 and bf16
# run at the same rate on every catalogued device; 16-bit work on a device with only an fp32
# peak (a CPU) runs at that peak. int4 weights use an int4 peak where there is one, else are
# dequantised like w4a16.
COMPUTE_PEAK_ORDER: dict[Dtype, tuple[Dtype, ...]] = {
    "fp32": ("fp32",),
    "bf16": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16", "bf16", "fp32"),
    "fp8": ("fp8",),
    "int8": ("int8",),
    "int4": ("int4", "int8", "bf16", "fp16", "fp32"),
    "w4a16": ("bf16", "fp16", "fp32"),
    "w8a16": ("bf16", "fp16", "fp32"),
    "w8a8": ("int8",),
}


def parse_dtype(value: str, field: str = "dtype", allowed: tuple[Dtype, ...] = DTYPES) -> Dtype:
    """Return `value` as a Dtype, or raise ConfigError listing the accepted ones."""
    lowered = value.strip().lower()
    for d in allowed:
        if lowered == d:
            return d
    raise ConfigError(f"'{value}' is not a dtype; use one of {', '.join(allowed)}", field=field)
