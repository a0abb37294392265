"""Whether a PerfModel's figures are plausible: one rule for a fleet's replicas (refused to run
on them), estimate and rank (which say so)."""

from __future__ import annotations

from wattserve.core.perf import PerfModel

# The slowest real engine decodes a token in seconds (Llama 3.1 405B in bf16 on one CPU, about
# 4 s); a step of minutes comes from a broken figure, and a simulation would then account its
# power second by second for months.
MAX_LEAST_STEP_S = 60.0


def implausible_step(pm: PerfModel) -> str:
    """Why `pm`'s figures are broken ("" when they are not): its least step, one decode token
    of one sequence, past MAX_LEAST_STEP_S. A fleet's replica refuses to run on them; estimate
    and rank say so (they had printed a 41,722,830 ms TPOT from a calibration's terms at the
    ends of their ranges without a word)."""
    least = pm.decode_step(1, 1).time_s
    if least <= MAX_LEAST_STEP_S:  # (NaN is broken too: call it where no figure is missing)
        return ""
    return (
        f"one decode step of one sequence would take {least:.3g} s on "
        f"{pm.deployment.hardware.id} (at most {MAX_LEAST_STEP_S:g} s): a figure of the "
        "device or a calibration term is out of range"
    )
