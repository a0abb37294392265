"""The simulator's engine against ML.ENERGY's vLLM runs, in the steady state they measured.

`tests/test_accuracy_mlenergy.py` compares `estimate` (a static batch: one prefill, then the
decode steps) with the benchmark's runs. A vLLM run is not a static batch: every request is
sent at once, `max_num_seqs` of them run, and each that finishes lets a waiting one in, whose
prefill is mixed into the running decode steps (chunked prefill, 8,192 tokens a step, the
benchmark's setting). That is what the simulator's EngineModel does, so here it runs the same
way: `REQUESTS` requests at time 0 (at least six times the batch), the prompt assumed
(PROMPT_TOKENS), outputs drawn from the benchmark's own histogram of that model's output
lengths (tests/data/mlenergy_v3_output_lengths.json), until they are done. Measured over the
steady state (from the 20% to the 60% completion, the batch full and requests waiting): output
tokens per second, mean power of the GPUs, joules per output token, and the median time
between tokens (each decode token weighted by its step's time, mixed steps included), against
the benchmark's. Every configuration is compared on all three, large batches included.

`python tests/test_fidelity_mlenergy.py` prints the tables in docs/fidelity.md.
"""

from __future__ import annotations

import json
import random
import sys
from functools import cache
from pathlib import Path

from test_accuracy_mlenergy import (
    PROMPT_TOKENS,
    TRAIN,
    Errors,
    Key,
    Row,
    Table,
    deployment,
    render,
    rows,
    table,
    worse,
)

from wattserve.core.engine import EngineModel, Seq
from wattserve.core.fleet import kv_block_count
from wattserve.core.params import Calibration
from wattserve.core.perf import perf_model
from wattserve.core.workload import Request

LENGTHS = Path(__file__).parent / "data" / "mlenergy_v3_output_lengths.json"
REQUESTS = 2048
MAX_BATCHED_TOKENS = 8192  # the benchmark's vLLM setting (max-num-batched-tokens)
DOCS = Path(__file__).parent.parent / "docs" / "fidelity.md"


@cache
def _histograms() -> dict[str, dict[str, list[float]]]:
    data: dict[str, dict[str, list[float]]] = json.loads(LENGTHS.read_text())["histograms"]
    return data


def output_lengths(r: Row, n: int, seed: int = 1) -> list[int]:
    """`n` output lengths drawn from the benchmark's histogram for this model and task
    (a bin by its count, then uniformly within it)."""
    h = _histograms()[f"{r.task}/{r.model}/{r.dtype}"]
    edges, counts = h["bins"], h["counts"]
    rng = random.Random(seed)
    picks = rng.choices(range(len(counts)), weights=counts, k=n)
    return [max(1, round(rng.uniform(edges[i], edges[i + 1]))) for i in picks]


def steady(r: Row, calibration: Calibration | None, prompt: int = PROMPT_TOKENS) -> Errors | None:
    """The engine's steady state against the run's (None when the model does not fit)."""
    dep, params = deployment(
        r, calibration, max_num_seqs=r.max_num_seqs, max_batched_tokens=MAX_BATCHED_TOKENS
    )
    blocks, _ = kv_block_count(dep, params)
    if not blocks:
        return None
    engine = EngineModel("run", perf_model(dep, params), blocks)
    n = max(REQUESTS, 6 * r.max_num_seqs)
    for i, out in enumerate(output_lengths(r, n)):
        engine.submit(Seq(Request(i, 0.0, prompt, out, r.model)))
    lo, hi = 0.2 * n, 0.6 * n
    now = seconds = joules = 0.0
    tokens = done = 0
    gaps: list[tuple[float, int]] = []  # (time between tokens, tokens that waited it)
    while done < hi:
        plan, refused = engine.next_plan(now)
        assert plan is not None and not refused
        engine.start(plan)
        start, now = now, plan.end_s
        first, finished = engine.complete(now)
        if done >= lo:
            seconds += now - start
            joules += plan.energy_j
            made = plan.decodes * plan.steps
            tokens += made + len(first)
            if made:
                gaps.append(((now - start) / plan.steps, made))
        done += len(finished)
    gaps.sort()
    half, seen, itl = sum(k for _, k in gaps) / 2, 0, gaps[-1][0]
    for gap, k in gaps:
        seen += k
        if seen >= half:
            itl = gap
            break
    return Errors(
        joules / seconds / r.power_w - 1,
        joules / tokens / r.j_per_token - 1,
        itl / r.itl_s - 1,
    )


@cache
def steady_table(train: tuple[Key, ...] | None) -> tuple[Table, str]:
    """`table` with the engine's steady state (about 10 s each: both tests share them)."""
    return table(rows(), train, predictor=steady)


def test_the_engine_in_steady_state_on_h100() -> None:
    t, _ = steady_table(None)
    itl = "time between tokens"
    # where the context is known (gpqa: ~8,000-token outputs), the engine's steps, mixed
    # prefills included, are within 3% uncalibrated at every batch (measured 2.6%, 2.5%)
    assert t["H100 gpqa dense batch <= 32"][itl][0] < 5.0
    assert t["H100 gpqa dense batch 33-192"][itl][0] < 5.0
    # all 81 H100 runs, measured: power 11.0%, J/token 16.6%, time between tokens 17.6% (power
    # and J/token 11.8% and 28.1% under the power curve before 2026-12-04)
    assert t["H100 all"][itl][0] < 20.0 and t["H100 all"]["J/token"][0] < 18.0
    assert t["H100 all"]["power"][0] < 12.0
    t, _ = steady_table(TRAIN["H100"])
    power, energy, itl_all = (t["H100 all"][m] for m in ("power", "J/token", itl))
    # calibrated on six runs of the 70B, measured: 8.9%, 12.0%, 15.9% held out (12.9% time
    # between tokens before the all-reduce's rate of 2026-12-05: tests/test_accuracy_mlenergy.py
    # says why the fit on those rows transfers less well now)
    assert energy[1] < 15.0 and power[1] < 15.0 and itl_all[1] < 17.0
    assert t["H100 gpqa dense batch 33-192"][itl][1] > t["H100 gpqa dense batch 33-192"][itl][0]


def test_docs_show_the_tables_this_file_prints() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for train in (None, TRAIN["H100"]):
        t, _ = steady_table(train)
        assert render(t, calibrated=train is not None) in docs


def main() -> None:
    data = rows()
    t, summary = table(data, None, predictor=steady)
    print(f"engine in steady state, {summary}, prompt {PROMPT_TOKENS} tokens assumed")
    print(render(t, calibrated=False))
    print()
    t, summary = table(data, TRAIN["H100"], predictor=steady)
    print("engine in steady state, calibrated on H100 Llama-3.1-70B TP4 at max_num_seqs 8-128")
    print(summary)
    print("worse than uncalibrated: " + (", ".join(worse(t)) or "none"))
    print(render(t, calibrated=True))


if __name__ == "__main__":
    sys.exit(main())
