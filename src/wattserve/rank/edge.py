"""The edge view: for each edge module and compute-in-memory part, the largest catalog model it
can hold at all (one device, batch 1, in the dtype that fits it best: the formats it has a peak
for, and 4-bit weights, which is how models of a few billion parameters run on 8-64 GB modules:
llama.cpp's Q4, GPTQ and AWQ) and its tokens/s per watt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from wattserve.core.catalog import Catalog
from wattserve.core.configs import (
    SINGLE_DEVICE_CATEGORIES,
    SearchSpace,
    candidate_dtypes,
    four_bit,
)
from wattserve.core.cost import CostAssumptions
from wattserve.core.modelspec import builtin_model_ids, fits_context, load_model
from wattserve.core.params import Calibration
from wattserve.estimate.api import Estimate, estimate


@dataclass(frozen=True, slots=True)
class EdgeRow:
    """The largest model `hardware` holds (None when none does, `reason` says why)."""

    hardware: str
    name: str
    category: str
    model: str | None
    params_b: float | None
    dtype: str | None
    tokens_per_s: float | None
    power_w: float | None
    tokens_per_s_per_w: float | None
    reason: str
    unknown: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["unknown"] = list(self.unknown)
        return out


def _per_watt(e: Estimate) -> float | None:
    if e.output_tokens_per_s is None or not e.power_w:
        return None
    return e.output_tokens_per_s / e.power_w


def edge_view(
    catalog: Catalog,
    *,
    prompt_tokens: int,
    output_tokens: int,
    hardware: Sequence[str] = (),
    calibration: Calibration | None = None,
    costs: CostAssumptions | None = None,
) -> list[EdgeRow]:
    """One row per edge/compute-in-memory device of `catalog` (or of `hardware` among them),
    most tokens/s per watt first; devices that hold no model last."""
    calib = calibration if calibration is not None else Calibration()
    cost = costs if costs is not None else CostAssumptions()
    models = sorted(
        (
            spec
            for spec in map(load_model, builtin_model_ids())
            if fits_context(spec.max_context, prompt_tokens, output_tokens)
        ),
        key=lambda m: m.total_params,
        reverse=True,
    )
    rows = []
    for hw in catalog.devices.values():
        if hw.category not in SINGLE_DEVICE_CATEGORIES or (hardware and hw.id not in hardware):
            continue
        dtypes = candidate_dtypes(hw, SearchSpace())
        if dtypes and four_bit(hw) not in dtypes:
            dtypes = (*dtypes, four_bit(hw))
        best: Estimate | None = None
        why = ""
        for spec in models:
            fitting = []
            for d in dtypes:
                e = estimate(
                    spec,
                    hw.id,
                    tp=1,
                    pp=1,
                    dtype=d,
                    prompt_tokens=prompt_tokens,
                    output_tokens=output_tokens,
                    calibration=calib,
                    catalog=catalog,
                    costs=cost,
                )
                if e.fits:
                    fitting.append(e)
                else:
                    why = e.reason  # the last refusal: the smallest model's
            if fitting:
                best = max(fitting, key=lambda e: _per_watt(e) or 0.0)
                break
        if best is None:
            if not models:  # the lengths asked for fit no catalog model's context window
                reason = (
                    f"no catalog model's context window holds {prompt_tokens} + "
                    f"{output_tokens} tokens"
                )
            else:
                reason = why or f"{hw.id} has no peak for bf16, fp8, int8 or int4"
            rows.append(
                EdgeRow(hw.id, hw.name, hw.category, None, None, None, None, None, None, reason)
            )
            continue
        spec = load_model(best.model)
        rows.append(
            EdgeRow(
                hw.id,
                hw.name,
                hw.category,
                best.model,
                spec.total_params / 1e9,
                best.dtype,
                best.output_tokens_per_s,
                best.power_w,
                _per_watt(best),
                f"largest catalog model it holds in {best.dtype}",
                best.missing,
            )
        )
    rows.sort(key=lambda r: (r.model is None, -(r.tokens_per_s_per_w or 0.0)))
    return rows
