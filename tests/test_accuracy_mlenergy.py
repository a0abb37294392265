"""`estimate` against the ML.ENERGY Benchmark v3: GPU power, joules per output token and time
between tokens, measured by others on H100 and B200 (vLLM 0.11.1, chat and gpqa).

Data: tests/data/mlenergy_v3.csv, a subset of the ML.ENERGY Leaderboard's data
(ml-energy/leaderboard, Apache-2.0): per configuration (task, model, GPU, tensor parallelism,
max_num_seqs) the steady-state mean batch, mean output length, mean power of all GPUs, joules per
output token and median time between output tokens. Two tasks: chat (LMArena conversations,
outputs of about 400 tokens) with dense Llama-3.1 (8B, 70B, 405B FP8) and Qwen3 (8B, 14B, 32B)
and two MoE models (Qwen3-30B-A3B, Qwen3-235B-A22B bf16 and FP8); gpqa (reasoning, outputs of
about 8,000 tokens, so long contexts) with the Qwen3 models.

What is compared is what `wattserve estimate` computes for the same model, device, TP degree,
dtype and batch (the run's mean batch), at the run's mean output length (`batch_run`: one
prefill, then the decode steps at the mean context):
- `power_w` against the GPUs' mean power, and `energy_j_per_token` against joules per output
  token, for every configuration;
- `tpot_s` (one decode step) against the median time between tokens, only where the median
  step is a decode step: at a mean batch b and mean output L, b / L requests finish a step and
  each new one brings a prefill (vLLM mixes it into a step), so below b = L / 2 most steps carry
  none. Above, the median step carries a prefill and is not what `tpot_s` describes.
`estimate` itself refuses a batch whose every sequence cannot be held at full length; the
benchmark's engine ran them (it holds each at its current length), so the figures are
computed from the same steps without that check.

The benchmark publishes no prompt lengths (LMArena conversations, earlier turns included), so
the prompt is an assumption, PROMPT_TOKENS; `python tests/test_accuracy_mlenergy.py` prints the
tables at 64, 256 and 1,024 tokens too, and docs/accuracy.md says what moves with it.

Then calibrate on few, predict the rest, with `wattserve calibrate`'s own fit
(`fit_calibration`, time terms and the power curve): six H100 configurations as decode rows
(seconds = median time between tokens, watts = mean power per GPU), then every other H100
configuration; the same on B200.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from wattserve import Deployment, load_catalog, load_model
from wattserve.calibrate.fit import POWER_TERMS, fit_calibration
from wattserve.calibrate.measurements import Measurement
from wattserve.core.energy import batch_run
from wattserve.core.params import Calibration, EngineParams
from wattserve.core.perf import perf_model

DATA = Path(__file__).parent / "data" / "mlenergy_v3.csv"
HW = {"H100": "h100-sxm", "B200": "b200"}
PROMPT_TOKENS = 256  # assumed: the benchmark does not publish its prompts' lengths
# (task, gpu, model, tp, dtype, max_num_seqs): configurations of one device to calibrate on,
# all with a mean batch under half the mean output (their median step is a decode step)
TRAIN = {
    "H100": tuple(
        ("chat", "H100", "llama-3.1-70b", 4, "bf16", b) for b in (8, 16, 32, 64, 96, 128)
    ),
    # B200 ran no 96: five points
    "B200": tuple(("chat", "B200", "llama-3.1-70b", 2, "bf16", b) for b in (8, 16, 32, 64, 128)),
}
# another choice for H100, kept in the printout: two model sizes at three batches each
TRAIN_TWO_SIZES = tuple(
    ("chat", "H100", m, tp, "bf16", b)
    for m, tp in (("llama-3.1-8b", 1), ("llama-3.1-70b", 4))
    for b in (8, 32, 128)
)


Key = tuple[str, str, str, int, str, int]  # task, gpu, model, tp, dtype, max_num_seqs


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    task: str
    model: str
    gpu: str
    tp: int
    dtype: str
    max_num_seqs: int
    batch: float
    output_tokens: float
    power_w: float
    j_per_token: float
    itl_s: float

    @property
    def key(self) -> Key:
        return (self.task, self.gpu, self.model, self.tp, self.dtype, self.max_num_seqs)

    @property
    def decode_median(self) -> bool:
        """Most steps carry no prefill, so the median time between tokens is a decode step."""
        return self.batch <= self.output_tokens / 2


def rows() -> list[Row]:
    with DATA.open() as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    return [
        Row(
            r["task"],
            r["model"],
            r["gpu"],
            int(r["tensor_parallel"]),
            r["dtype"],
            int(r["max_num_seqs"]),
            float(r["avg_batch_size"]),
            float(r["avg_output_len"]),
            float(r["avg_power_w"]),
            float(r["energy_per_token_j"]),
            float(r["median_itl_ms"]) * 1e-3,
        )
        for r in csv.DictReader(lines)
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class Errors:
    """Signed relative errors of one configuration's prediction (None: not compared)."""

    power: float
    energy: float
    itl: float | None


def deployment(
    r: Row, calibration: Calibration | None, **limits: int
) -> tuple[Deployment, EngineParams]:
    """The run's deployment (`limits`: max_num_seqs, max_batched_tokens) and the terms used."""
    hw = load_catalog().device(HW[r.gpu])
    params = (calibration or Calibration()).params_for(hw)
    # vLLM's default cache dtype is the activations', fp8 weights or not
    dep = Deployment(load_model(r.model), hw, tp=r.tp, dtype=r.dtype, kv_dtype="bf16", **limits)  # type: ignore[arg-type]
    return dep, params


def predict(r: Row, calibration: Calibration | None, prompt: int = PROMPT_TOKENS) -> Errors:
    pm = perf_model(*deployment(r, calibration))
    batch, output = max(1, round(r.batch)), max(1, round(r.output_tokens))
    pre, dec = pm.prefill(batch, prompt), pm.decode_step(batch, prompt + output // 2)
    seconds, joules = batch_run(pre, dec, output)
    return Errors(
        joules / seconds / r.power_w - 1,
        joules / (batch * output) / r.j_per_token - 1,
        dec.time_s / r.itl_s - 1 if r.decode_median else None,
    )


def measurements(train: Iterable[Row], prompt: int = PROMPT_TOKENS) -> list[Measurement]:
    """The training configurations as `calibrate` reads them: decode rows."""
    return [
        Measurement(
            model=r.model,
            hardware=HW[r.gpu],
            count=r.tp,
            tensor_parallel=r.tp,
            dtype=r.dtype,  # type: ignore[arg-type]
            phase="decode",
            batch=max(1, round(r.batch)),
            prompt_tokens=prompt,
            context_tokens=int(prompt + r.output_tokens / 2),
            seconds=r.itl_s,
            watts=r.power_w / r.tp,
            line=i + 1,
        )
        for i, r in enumerate(train)
    ]


def time_terms(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in POWER_TERMS]  # the power terms have their own note


def band(r: Row) -> str:
    return (
        "batch <= 32" if r.batch <= 33 else ("batch 33-192" if r.batch <= 200 else "batch >= 256")
    )


def per_model(r: Row) -> str:
    return f"{r.gpu} {r.task} {r.model} tp{r.tp} {r.dtype}"


def group(r: Row) -> str:
    kind = "moe" if load_model(r.model).is_moe else "dense"
    return f"{r.gpu} {r.task} {kind} {band(r)}"


def _mean(xs: Sequence[float]) -> float:
    return sum(abs(x) for x in xs) / len(xs) * 100 if xs else float("nan")


Table = dict[str, dict[str, tuple[float, float, int]]]


def table(
    data: list[Row],
    train: tuple[Key, ...] | None,
    prompt: int = PROMPT_TOKENS,
    by: Callable[[Row], str] | None = None,
    predictor: Callable[[Row, Calibration | None, int], Errors | None] | None = None,
    calibration: Calibration | None = None,
) -> tuple[Table, str]:
    """Per group, for power, energy and time between tokens: (uncalibrated mean |error| %,
    calibrated, points). Training rows are left out; without `train` or a `calibration` made
    elsewhere, uncalibrated only. `predictor` (default `predict`, estimate's static batch)
    gives a row's errors; None leaves the row out."""
    how = predictor or predict
    cal = calibration
    summary = "uncalibrated"
    train_gpus = {g for g, hw in HW.items() if cal is not None and hw in cal.params}
    if train:
        picked = [r for r in data if r.key in train]
        assert len(picked) == len(train), "a training configuration is not in the data"
        cal, reports = fit_calibration(measurements(picked, prompt), load_catalog())
        summary = "; ".join(
            f"{rep.hardware}: fitted {', '.join(time_terms(rep.fitted)) or 'no time term'} "
            f"({rep.loo_mean_abs_pct or 0:.1f}% held out); "
            + "; ".join(n for n in rep.notes if n.startswith("power"))
            + "".join(f"; WARNING: {w}" for w in rep.warnings)
            for rep in reports
        )
        train_gpus = {r.gpu for r in picked}
    acc: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in data:
        if train and r.key in train:
            continue
        if cal is not None and r.gpu not in train_gpus:
            continue
        unc = how(r, None, prompt)
        calv = how(r, cal, prompt) if cal else unc
        if unc is None or calv is None:
            continue
        for metric, u, c in (
            ("power", unc.power, calv.power),
            ("J/token", unc.energy, calv.energy),
            ("time between tokens", unc.itl, calv.itl),
        ):
            if u is not None and c is not None:
                acc[(by or group)(r)][metric].append((u, c))
                acc[f"{r.gpu} all"][metric].append((u, c))
    out: Table = {
        g: {m: (_mean([u for u, _ in v]), _mean([c for _, c in v]), len(v)) for m, v in ms.items()}
        for g, ms in acc.items()
    }
    return out, summary


def render(t: Table, calibrated: bool) -> str:
    metrics = ("power", "J/token", "time between tokens")
    head = "| group | " + " | ".join(
        f"{m} ({'points, uncal., cal.' if calibrated else 'points, mean error'})" for m in metrics
    )
    lines = [head + " |", "| --- |" + " --- |" * len(metrics)]
    for g in sorted(t, key=lambda s: (s.split()[0], s.endswith("all"), s)):
        cells = []
        for m in metrics:
            if m not in t[g]:
                cells.append("-")
                continue
            u, c, n = t[g][m]
            cells.append(f"{n}: {u:.1f}% -> {c:.1f}%" if calibrated else f"{n}: {u:.1f}%")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worse(t: Table) -> list[str]:
    return [
        f"{g} {m} by {c - u:.1f} points"
        for g, ms in sorted(t.items())
        for m, (u, c, _) in ms.items()
        if c > u + 0.05 and not g.endswith("all")
    ]


DOCS = Path(__file__).parent.parent / "docs" / "accuracy.md"


def test_uncalibrated_decode_steps_on_h100_where_the_context_is_known() -> None:
    t, _ = table(rows(), None)
    itl = "time between tokens"
    # gpqa's contexts are set by its ~8,000-token outputs, not by the unknown prompts: dense
    # decode steps within 10% uncalibrated (measured 5.3%, 8.4%), the MoE's 10.8% (8.8% before
    # the elementwise kernels and per-layer launches of 2026-12-04, docs/model.md, which took
    # every H100 group's mean from 18.0% to 16.2%); chat at batch <= 32 within 10% too
    for g in ("gpqa dense batch <= 32", "gpqa dense batch 33-192"):
        assert t[f"H100 {g}"][itl][0] < 10.0
    assert t["H100 gpqa moe batch <= 32"][itl][0] < 11.0
    assert t["H100 chat dense batch <= 32"][itl][0] < 10.0
    assert t["H100 chat moe batch <= 32"][itl][0] < 10.0
    # power 8.6% off uncalibrated (9.1% before the all-reduce's rate of 2026-12-05, 10.3%
    # before the elementwise kernels; 14.4% before the curve of 2026-12-04,
    # tests/test_accuracy_power.py), joules per token 14.8% (15.2%, 16.9%, 31.8%)
    assert t["H100 all"]["power"][0] < 10.0
    assert 13.0 < t["H100 all"]["J/token"][0] < 16.0


def test_six_h100_configurations_predict_other_models_tasks_batches_and_moe() -> None:
    t, summary = table(rows(), TRAIN["H100"])
    assert "power: fitted" in summary and "WARNING" not in summary
    power, energy, itl = (t["H100 all"][m] for m in ("power", "J/token", "time between tokens"))
    # measured 8.7%, 13.6% and 15.5% held out (uncalibrated 8.6%, 15.7%, 16.3%). Before the
    # all-reduce's rate of 2026-12-05 (docs/model.md) the time between tokens was 7.2%: on TP4
    # rows alone the all-reduce and the per-sequence overhead both grow with the batch, and
    # the fit had put the missing all-reduce time into the per-sequence overhead, which stood
    # in for the TP1 runs' own; with the all-reduce right, it fits GEMM terms that do not
    # transfer. No better than uncalibrated on time between tokens, better on energy:
    assert power[1] < 10.0 and energy[1] < 15.0 and itl[1] < 16.0
    assert energy[1] < energy[0] - 1.0 and itl[1] < itl[0]
    # worse than uncalibrated in 14 groups, by at most 4.2 points (the chat MoE's J/token)
    bad = worse(t)
    assert len(bad) <= 14, bad
    assert max(float(w.split(" by ")[1].split()[0]) for w in bad) < 5.0, bad


def test_two_model_sizes_on_h100_predict_the_rest() -> None:
    t, summary = table(rows(), TRAIN_TWO_SIZES)
    power, energy, itl = (t["H100 all"][m] for m in ("power", "J/token", "time between tokens"))
    # measured 9.8%, 13.5% and 7.8%: no power term beats the default curve on held-out rows,
    # so the fit keeps it (docs/accuracy.md)
    assert "power: no term set predicts held-out rows better than the defaults" in summary
    assert power[1] < 12.0 and energy[1] < 15.0 and itl[1] < 10.0


def test_b200_calibrated_on_chat_never_worse_in_time_or_energy() -> None:
    """B200's short chat steps are slower than any hardware term explains: alone, attention's
    factor would go to its upper bound (8) and then predict the long-context gpqa rows far
    worse than uncalibrated (joules per token 140-343% off against 44-53%); so would the
    elementwise kernels' factor (20). Selection excludes a term its fit sends to its upper
    bound, so the calibration takes per-sequence and per-kernel costs instead, and no B200
    group is predicted worse in time or joules per token. Power is: gpqa's GPUs idle through
    most of their 30-48 ms steps, which no power term fitted on chat can know
    (docs/accuracy.md)."""
    picked = [r for r in rows() if r.key in TRAIN["B200"]]
    _, [report] = fit_calibration(measurements(picked), load_catalog())
    assert "elementwise_factor excluded (fitted at its upper bound)" in " ".join(report.notes)
    assert "attn_factor" not in report.fitted and "elementwise_factor" not in report.fitted
    assert not report.warnings
    t, _ = table(rows(), TRAIN["B200"])
    assert not [w for w in worse(t) if " power " not in w], worse(t)
    assert t["B200 all"]["J/token"][1] < t["B200 all"]["J/token"][0] / 2
    assert (
        t["B200 gpqa dense batch <= 32"]["power"][1] > t["B200 gpqa dense batch <= 32"]["power"][0]
    )


def test_docs_show_the_tables_this_file_prints() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for train in (None, TRAIN["H100"], TRAIN_TWO_SIZES, TRAIN["B200"]):
        t, _ = table(rows(), train)
        assert render(t, calibrated=train is not None) in docs
    t, _ = table(rows(), TRAIN["H100"], by=per_model)
    assert render(t, calibrated=True) in docs


def main() -> None:
    data = rows()
    for prompt in (PROMPT_TOKENS, 64, 1024):
        t, summary = table(data, None, prompt)
        print(f"{summary}, prompt {prompt} tokens assumed")
        print(render(t, calibrated=False))
        print()
    for name, train in (
        ("H100 Llama-3.1-70B TP4 at max_num_seqs 8-128", TRAIN["H100"]),
        ("H100 Llama-3.1-8B TP1 and 70B TP4 at 8, 32, 128", TRAIN_TWO_SIZES),
        ("B200 Llama-3.1-70B TP2 at max_num_seqs 8-128 (five)", TRAIN["B200"]),
    ):
        t, summary = table(data, train)
        print(f"calibrated on {name} (prompt {PROMPT_TOKENS} assumed)")
        print(summary)
        print("worse than uncalibrated: " + (", ".join(worse(t)) or "none"))
        print(render(t, calibrated=True))
        print()
        if train is TRAIN["H100"]:
            t, _ = table(data, train, by=per_model)
            print("the same, per model")
            print(render(t, calibrated=True))
            print()


if __name__ == "__main__":
    sys.exit(main())
