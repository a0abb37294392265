"""How much of each device fits inside a power envelope.

A group (one configuration's tp * pp devices) is provisioned at its peak step power times the
PUE (host overhead and cooling): `groups = floor(envelope / (peak_power_w * pue))`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from wattserve.rank.rows import Row


def groups_within(envelope_w: float, group_power_w: float, pue: float) -> int:
    """The most groups whose facility power stays within the envelope."""
    facility_w = group_power_w * pue
    if facility_w <= 0:
        return 0
    n = math.floor(envelope_w / facility_w)
    while n > 0 and n * group_power_w * pue > envelope_w:
        # floating-point rounding must never put the total over the envelope; past 2**52 a
        # step of one would not change the product, so the step is a relative one there
        n = n - 1 if n < 2**52 else math.floor(n * (1 - 2**-40))
    return n


def with_envelope(row: Row, envelope_w: float, pue: float) -> Row:
    """`row` with how many of its groups fit in `envelope_w`, and their tokens/s and $/h."""
    if row.peak_power_w is None or row.tokens_per_s is None:
        return row
    n = groups_within(envelope_w, row.peak_power_w, pue)
    usd_h = row.usd_per_hour
    return replace(
        row,
        envelope_groups=n,
        envelope_tokens_per_s=n * row.tokens_per_s,
        envelope_usd_per_hour=None if usd_h is None else n * usd_h,
    )
