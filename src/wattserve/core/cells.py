"""Table cells shared by the text reports (plan, simulate): a figure in its format, or a dash
where it is unknown, padded to the same width so the columns stay aligned."""

from __future__ import annotations

import math


def cell(value: float | None, fmt: str) -> str:
    """`value` formatted with `fmt` (e.g. '8.2f'), or '-' right-aligned to fmt's width when
    it is None or not finite."""
    if value is None or not math.isfinite(value):
        width = fmt.split(".")[0].lstrip("<>^=+- ,")
        return "-".rjust(int(width) if width.isdigit() else 0)
    return format(value, fmt)
