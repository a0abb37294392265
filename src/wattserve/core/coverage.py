"""What a calibration measured on one device, and which predictions lie outside it.

A calibration's terms are fitted on a few steps of a few models; predictions for steps like
them are what its held-out error vouches for. Elsewhere the fitted terms are extrapolated: on
the H200 grid (docs/accuracy.md) six steps of an 8B and an MoE predicted the steps of models of
7-14B to about 3%, and made the prefill of models 10-60x smaller 1-12 points worse than no
calibration. So the calibration file records the span of its rows (`measured`), and
`estimate` and `rank` say when a prediction lies more than SPAN times beyond it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wattserve.core.dtypes import DTYPES
from wattserve.errors import ConfigError, field_key

SPAN = 2.0  # a figure more than twice past the measured range is outside it
MAX_MODELS = 100  # model ids listed in one entry's `measured`
MAX_LAYOUTS = 64  # tensor-parallel degrees, or weight formats, listed there

Span = tuple[float, float]
UNMEASURED = "unmeasured: "  # marks a phase no row ran, in Coverage.outside's list


def is_whole(v: object) -> bool:
    """A JSON number that is a whole number (8 or 8.0; not a bool, 1.5, NaN or infinity)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return isinstance(v, int) or (math.isfinite(v) and v.is_integer())


def _span(values: Iterable[float]) -> Span | None:
    xs = list(values)
    return (min(xs), max(xs)) if xs else None


def _outside(value: float, span: Span | None) -> bool:
    return span is not None and not span[0] / SPAN <= value <= span[1] * SPAN


def _fmt(span: Span, unit: str = "", spec: str = ",.0f") -> str:
    lo, hi = (format(x, spec) for x in span)
    return f"{lo}{unit}" if lo == hi else f"{lo}-{hi}{unit}"


@dataclass(frozen=True, slots=True)
class Coverage:
    """The span of one device's calibration rows: the models (their ids and total parameters,
    in billions), the tokens of each prefill step (batch x prompt), and the decode steps'
    batches and contexts. A span is None where no row ran that phase."""

    models: tuple[str, ...]
    params_b: Span
    prefill_tokens: Span | None
    decode_batch: Span | None
    decode_context: Span | None
    # the tensor-parallel degrees and weight formats the rows ran ((): not recorded, a file
    # written before 2026-12-06): a calibration of tp=1 bf16 rows applied at tp=4 or in fp8
    # had said nothing of it, though all-reduces and another format's kernels are in no row
    tensor_parallel: tuple[int, ...] = ()
    dtypes: tuple[str, ...] = ()

    @classmethod
    def of(cls, steps: Iterable[tuple[str, float, str, int, int, int, int, str]]) -> Coverage:
        """From (model id, parameters, phase, batch, prompt, context, tp, dtype) per row."""
        rows = list(steps)
        if not rows:
            raise ValueError("a calibration measured at least one step")
        decode = [r for r in rows if r[2] == "decode"]
        return cls(
            models=tuple(sorted({r[0] for r in rows})),
            params_b=(min(r[1] for r in rows) / 1e9, max(r[1] for r in rows) / 1e9),
            prefill_tokens=_span(r[3] * r[4] for r in rows if r[2] == "prefill"),
            decode_batch=_span(r[3] for r in decode),
            decode_context=_span(r[5] for r in decode),
            tensor_parallel=tuple(sorted({r[6] for r in rows})),
            dtypes=tuple(sorted({r[7] for r in rows})),
        )

    def describe(self) -> str:
        """What was measured, in words: `llama-3.1-8b (8.0B parameters); prefill of 2,048
        tokens; decode at batch 1-64, context 2,048`."""
        parts = [f"{', '.join(self.models)} ({_fmt(self.params_b, 'B', '.3g')} parameters)"]
        parts.append(
            "no prefill"
            if self.prefill_tokens is None
            else f"prefill of {_fmt(self.prefill_tokens)} tokens a step"
        )
        if self.decode_batch is None or self.decode_context is None:
            parts.append("no decode")
        else:
            parts.append(
                f"decode at batch {_fmt(self.decode_batch)}, context {_fmt(self.decode_context)}"
            )
        if self.tensor_parallel:
            tps = ", ".join(map(str, self.tensor_parallel))
            parts.append(f"tp {tps}, {', '.join(self.dtypes)} weights")
        return "; ".join(parts)

    def outside(
        self,
        model: str,
        params: float,
        prefill_tokens: int | None = None,
        decode_batch: int | None = None,
        decode_context: int | None = None,
        tp: int | None = None,
        dtype: str | None = None,
    ) -> list[str]:
        """What of a prediction lies more than SPAN times past the measured span (empty: all
        within), or runs at a tensor-parallel degree or in a weight format no row ran.
        `params`: the model's total parameters; the steps' figures where known."""
        out = []
        if tp is not None and self.tensor_parallel and tp not in self.tensor_parallel:
            out.append(UNMEASURED + f"tp={tp}")
        if dtype is not None and self.dtypes and dtype not in self.dtypes:
            out.append(UNMEASURED + f"{dtype} weights")
        if _outside(params / 1e9, self.params_b):
            out.append(f"{model} ({params / 1e9:.3g}B parameters)")
        if prefill_tokens is not None:
            if self.prefill_tokens is None:
                out.append(UNMEASURED + "prefill")
            elif _outside(prefill_tokens, self.prefill_tokens):
                out.append(f"a prefill of {prefill_tokens:,} tokens")
        if decode_batch is not None:
            if self.decode_batch is None:
                out.append(UNMEASURED + "decode")
            elif _outside(decode_batch, self.decode_batch):
                out.append(f"decode at batch {decode_batch:,}")
        if (
            decode_context is not None
            and self.decode_context is not None
            and _outside(decode_context, self.decode_context)
        ):
            out.append(f"decode at context {decode_context:,}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "params_b": list(self.params_b),
            "prefill_tokens": None if self.prefill_tokens is None else list(self.prefill_tokens),
            "decode_batch": None if self.decode_batch is None else list(self.decode_batch),
            "decode_context": None if self.decode_context is None else list(self.decode_context),
            **(
                {"tensor_parallel": list(self.tensor_parallel), "dtypes": list(self.dtypes)}
                if self.tensor_parallel
                else {}
            ),
        }

    @classmethod
    def from_json(cls, obj: Any, path: str, field: str) -> Coverage:
        """The `measured` object of a calibration file's entry, every field checked."""

        def bad(detail: str, name: str = "") -> ConfigError:
            return ConfigError(detail, path=path, field=f"{field}.{name}" if name else field)

        if not isinstance(obj, dict):
            raise bad("must be an object")
        keys = (
            "models",
            "params_b",
            "prefill_tokens",
            "decode_batch",
            "decode_context",
            "tensor_parallel",
            "dtypes",
        )
        for key in obj:
            if key not in keys:
                raise bad("unknown field", field_key(key))
        models = obj.get("models")
        if (
            not isinstance(models, list)
            or not 0 < len(models) <= MAX_MODELS
            or not all(isinstance(m, str) and 0 < len(m) <= 200 and m.isprintable() for m in models)
        ):
            raise bad(f"must be a list of 1-{MAX_MODELS} model ids", "models")
        if len(set(models)) < len(models):
            twice = next(m for i, m in enumerate(models) if m in models[:i])
            raise bad(f"lists {twice!r:.60} twice; each model id once", "models")

        def span(name: str, optional: bool, whole: bool = True) -> Span | None:
            """[smallest, largest]: billions of parameters, or (`whole`) counts of tokens or
            sequences, whole numbers (a batch of 1.5 was printed as 'decode at batch 2')."""
            v = obj.get(name)
            if v is None and optional:
                return None
            if not (
                isinstance(v, list)
                and len(v) == 2
                and all(
                    not isinstance(x, bool) and isinstance(x, int | float) and 0 < x < 1e15
                    for x in v
                )
                and v[0] <= v[1]
            ):
                kind = "whole numbers of at least 1" if whole else "positive numbers"
                raise bad(f"must be [smallest, largest], two {kind}", name)
            if whole and not all(is_whole(x) for x in v):
                raise bad(f"must be [smallest, largest], two whole numbers, got {v!r:.60}", name)
            return float(v[0]), float(v[1])

        params_b = span("params_b", optional=False, whole=False)
        assert params_b is not None
        decode_batch = span("decode_batch", optional=True)
        decode_context = span("decode_context", optional=True)
        if (decode_batch is None) != (decode_context is None):  # one decode row gives both
            absent = "decode_context" if decode_context is None else "decode_batch"
            raise bad(
                "must be [smallest, largest] where the other decode span is given (both are "
                "null where no row ran decode)",
                absent,
            )
        tps, dtypes = obj.get("tensor_parallel"), obj.get("dtypes")
        if (tps is None) != (dtypes is None):
            raise bad("tensor_parallel and dtypes are given together, or neither", "dtypes")
        if tps is not None and not (
            isinstance(tps, list)
            and 0 < len(tps) <= MAX_LAYOUTS
            and all(is_whole(t) and 1 <= t <= 4096 for t in tps)
            and len(set(tps)) == len(tps)
        ):
            raise bad(f"must be a list of 1-{MAX_LAYOUTS} degrees, each once", "tensor_parallel")
        if dtypes is not None and not (
            isinstance(dtypes, list)
            and 0 < len(dtypes) <= MAX_LAYOUTS
            and all(d in DTYPES for d in dtypes)
            and len(set(dtypes)) == len(dtypes)
        ):
            formats = ", ".join(DTYPES)
            raise bad(f"must be a list of weight formats ({formats}), each once", "dtypes")
        return cls(
            models=tuple(models),
            params_b=params_b,
            prefill_tokens=span("prefill_tokens", optional=True),
            decode_batch=decode_batch,
            decode_context=decode_context,
            tensor_parallel=() if tps is None else tuple(sorted(int(t) for t in tps)),
            dtypes=() if dtypes is None else tuple(sorted(dtypes)),
        )


def outside_note(hw_id: str, cov: Coverage, outside: list[str]) -> str:
    """The sentence estimate and rank print for a prediction outside `cov` (`Coverage.outside`:
    a phase no row ran is marked UNMEASURED)."""
    unmeasured = [o.removeprefix(UNMEASURED) for o in outside if o.startswith(UNMEASURED)]
    past = [o for o in outside if not o.startswith(UNMEASURED)]
    parts = []
    if past:
        parts.append(
            f"{', '.join(past)} {'is' if len(past) == 1 else 'are'} more than {SPAN:g}x past that"
        )
    if unmeasured:
        parts.append(f"no row measured {' or '.join(unmeasured)}")
    return (
        f"the calibration of {hw_id} measured {cov.describe()}: {'; '.join(parts)}; the fitted "
        "terms are extrapolated there (docs/calibration.md)"
    )
