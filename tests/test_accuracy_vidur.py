"""The GEMM part of a decoder layer against published GPU measurements (Vidur's profiles).

Data: tests/data/vidur_linear_layers.csv, a subset of microsoft/vidur's H100 and A100 profiles
(MIT License): the summed kernel times of the four GEMMs of one Llama-2-7B / Llama-2-70B layer
for 1 to 4,096 rows at TP1 and TP4. They are kernel times, so the prediction compared is the
roofline part of a step (max of compute and memory time), without overheads or all-reduces.

Calibrate on few, predict the rest, with calibrate's own term selection (forward selection by
leave-one-out error, `wattserve.calibrate.fit.select_terms`) over the terms that act on kernel
time (eff_compute, eff_memory, gemm_pad_elems, gemm_latency_s; overheads and all-reduces lie
outside kernel times): six points of one device, then the other points of that device.
Two calibration sets: six row counts of one shape (H100, Llama-2-7B, TP1), and three row
counts at each of two TP degrees of that model (two transfer sizes per kernel, which is what
tells the memory ramp, gemm_latency_s, from eff_memory: docs/model.md).
`python tests/test_accuracy_vidur.py` prints the tables in docs/accuracy.md.
"""

from __future__ import annotations

import csv
import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wattserve import Deployment, EngineParams, PerfModel, load_catalog, load_model
from wattserve.calibrate.fit import TermChoice, select_terms

DATA = Path(__file__).parent / "data" / "vidur_linear_layers.csv"
HW = {"h100": "h100-sxm", "a100": "a100-sxm-80gb"}
CANDIDATES = ("eff_compute", "eff_memory", "gemm_pad_elems", "gemm_latency_s")
# (model, tp, rows) on H100: one shape, six row counts
ONE_SHAPE = tuple(("llama-2-7b", 1, t) for t in (1, 32, 128, 512, 2048, 4096))
# the same model at two TP degrees: 3 row counts each (kernels of two sizes)
TWO_SIZES = tuple(("llama-2-7b", tp, t) for tp in (1, 4) for t in (1, 512, 4096))
# another such split, kept in the printout: the result depends on which rows are measured
TWO_SIZES_OTHER = tuple(("llama-2-7b", 1, t) for t in (1, 128, 2048)) + tuple(
    ("llama-2-7b", 4, t) for t in (32, 512, 4096)
)


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    device: str
    model: str
    tp: int
    tokens: int
    ms: float

    @property
    def seconds(self) -> float:
        return self.ms * 1e-3


def rows() -> list[Row]:
    with DATA.open() as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    return [
        Row(r["device"], r["model"], int(r["tp"]), int(r["num_tokens"]), float(r["ms_per_layer"]))
        for r in csv.DictReader(lines)
    ]


def predict_ms(device: str, model: str, tp: int, tokens: int, params: EngineParams) -> float:
    """Roofline milliseconds of one layer's GEMMs: compute and memory time of a two-layer
    model minus a one-layer one (what a step spends outside its layers, such as the LM head,
    cancels), then the larger of the two."""
    hw = load_catalog().device(HW[device])
    costs = [
        PerfModel(
            Deployment(
                dataclasses.replace(
                    load_model(model), num_layers=n, vocab_size=1, tied_embeddings=True
                ),
                hw,
                tp=tp,
            ),
            params,
        ).step(tokens, 0.0, 0.0, 1)
        for n in (1, 2)
    ]
    compute = costs[1].compute_s - costs[0].compute_s
    memory = costs[1].memory_s - costs[0].memory_s
    return max(compute, memory) * 1e3


def predict(rs: Sequence[Row], params: EngineParams) -> np.ndarray:
    return np.array([predict_ms(r.device, r.model, r.tp, r.tokens, params) * 1e-3 for r in rs])


def fit_on_few(
    data: list[Row], train: tuple[tuple[str, int, int], ...]
) -> tuple[TermChoice, list[str]]:
    """calibrate's term selection on the H100 rows named in `train`."""
    points = [r for r in data if r.device == "h100" and (r.model, r.tp, r.tokens) in train]
    assert len(points) == len(train) == 6
    return select_terms(points, EngineParams(), CANDIDATES, predict)


def regime(tokens: int) -> str:
    return "rows <= 32" if tokens <= 32 else ("64-512 rows" if tokens <= 512 else ">= 1024 rows")


Groups = dict[tuple[str, str], tuple[float, float | None, int]]


def table(train: tuple[tuple[str, int, int], ...]) -> tuple[TermChoice, list[str], Groups]:
    """Per (device and shape, row regime): mean |error| % uncalibrated and calibrated (H100
    only: a calibration is per device), and the number of points; training points excluded."""
    data = rows()
    choice, trail = fit_on_few(data, train)
    errs: dict[tuple[str, str], list[tuple[float, float | None]]] = defaultdict(list)
    for r in data:
        if r.device == "h100" and (r.model, r.tp, r.tokens) in train:
            continue
        unc = abs(predict_ms(r.device, r.model, r.tp, r.tokens, EngineParams()) / r.ms - 1)
        cal = (
            abs(predict_ms(r.device, r.model, r.tp, r.tokens, choice.params) / r.ms - 1) * 100
            if r.device == "h100"
            else None
        )
        errs[(f"{r.device} {r.model} tp{r.tp}", regime(r.tokens))].append((unc * 100, cal))
    out = {}
    for k, v in errs.items():
        cals = [c for _, c in v if c is not None]
        out[k] = (
            sum(u for u, _ in v) / len(v),
            sum(cals) / len(cals) if cals else None,
            len(v),
        )
    return choice, trail, out


def h100_means(groups: Groups) -> tuple[float, float]:
    """Mean |error| % over the held-out H100 points: uncalibrated, calibrated."""
    h100 = [(u, c or 0.0, n) for k, (u, c, n) in groups.items() if k[0].startswith("h100")]
    total = sum(n for *_, n in h100)
    return sum(u * n for u, _, n in h100) / total, sum(c * n for _, c, n in h100) / total


def worse(groups: Groups) -> dict[tuple[str, str], float]:
    """H100 groups where calibration is worse than no calibration, by how many points."""
    return {k: c - u for k, (u, c, _) in groups.items() if c is not None and c > u}


def test_six_points_of_one_shape_predict_other_shapes_on_that_device() -> None:
    choice, _, groups = table(ONE_SHAPE)
    p = choice.params
    # the ramp (gemm_latency_s) predicts held-out rows worse once each fold is fitted afresh
    # (8.8% against 8.2%): it had been taken on a partly in-sample 6.5% until 2026-12-06
    assert choice.names == ("eff_compute", "gemm_pad_elems")
    assert 0.6 < p.eff_compute <= 0.95 and p.eff_memory == EngineParams().eff_memory
    assert 1.0e5 <= p.gemm_pad_elems <= 1.0e7  # a fraction of a wave of tiles: see fit.py
    unc, cal = h100_means(groups)
    # the target for calibrate-on-few is 10% mean; measured 8.6% (docs/accuracy.md)
    assert cal < 10.0 and unc < 20.0
    # not yet "never worse than uncalibrated on any group": one group, by 0.8 points (with the
    # ramp, three groups of few rows by up to 7.8)
    assert set(worse(groups)) == {("h100 llama-2-70b tp4", "64-512 rows")}
    assert max(worse(groups).values()) < 1.0


def test_six_points_at_two_transfer_sizes_are_never_worse_than_uncalibrated() -> None:
    choice, _, groups = table(TWO_SIZES)
    assert set(choice.names) == set(CANDIDATES)  # the ramp and eff_memory told apart
    assert 0.8 < choice.params.eff_memory <= 0.95
    _, cal = h100_means(groups)
    assert cal < 10.0 and worse(groups) == {}


def _print(title: str, train: tuple[tuple[str, int, int], ...]) -> None:
    choice, trail, groups = table(train)
    p = choice.params
    print(f"\n{title}")
    print("term selection (held-out error): " + "; ".join(trail))
    kept = [n for n in CANDIDATES if n not in choice.names]
    print(
        f"fitted {', '.join(choice.names)}: eff_compute {p.eff_compute:.3f}, "
        f"eff_memory {p.eff_memory:.3f}, gemm_pad_elems {p.gemm_pad_elems:.3g}, "
        f"gemm_latency_s {p.gemm_latency_s * 1e6:.2f} us"
        + (f" (kept at defaults: {', '.join(kept)})" if kept else "")
    )
    unc, cal = h100_means(groups)
    print(f"H100 held out: uncalibrated {unc:.1f}%, calibrated {cal:.1f}% mean")
    bad = worse(groups)
    print(
        "worse than uncalibrated: "
        + (", ".join(f"{a} {b} by {d:.1f} points" for (a, b), d in sorted(bad.items())) or "none")
    )
    if train is TWO_SIZES_OTHER:
        return
    print("| device, shape | rows | points | uncalibrated | calibrated |")
    print("| --- | --- | --- | --- | --- |")
    for (shape, reg), (u, c, n) in sorted(groups.items()):
        if train is TWO_SIZES and not shape.startswith("h100"):
            continue
        print(f"| {shape} | {reg} | {n} | {u:.1f}% | {'-' if c is None else f'{c:.1f}%'} |")


if __name__ == "__main__":
    _print("calibrated on H100 Llama-2-7B TP1 at 1, 32, 128, 512, 2048, 4096 rows", ONE_SHAPE)
    _print("calibrated on H100 Llama-2-7B at 1, 512, 4096 rows, TP1 and TP4", TWO_SIZES)
    _print(
        "calibrated on H100 Llama-2-7B at 1, 128, 2048 rows TP1 and 32, 512, 4096 rows TP4",
        TWO_SIZES_OTHER,
    )
