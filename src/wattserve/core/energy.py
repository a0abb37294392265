"""The time and energy of a run of steps (`batch_run`, as `estimate` counts them), and of one
request, as routing, billing and reports estimate it: from a deployment's PerfModel (a batch
of one, dynamic power only: the idle draw is paid whether or not the request comes), or from a
hosted API's published joules per token."""

from __future__ import annotations

from wattserve.core.cost import J_PER_KWH
from wattserve.core.perf import PerfModel, StepCost


def batch_run(prefill: StepCost, decode: StepCost, output_tokens: int) -> tuple[float, float]:
    """Seconds and joules of one batch served start to end: its prefill, which samples each
    sequence's first output token (as vLLM's does, and simulate's engine), then
    `output_tokens - 1` decode steps at the mean context (`estimate`'s per-token, power and
    cost figures). Until 2026-12-05 it ran `output_tokens` decode steps, one too many: 7% of
    an 8B's time at one output token, 0.8% at 128."""
    steps = max(output_tokens - 1, 0)
    return (
        prefill.time_s + steps * decode.time_s,
        prefill.energy_j + steps * decode.energy_j,
    )


def request_energy_j(perf: PerfModel, prompt_tokens: int, output_tokens: int) -> float:
    """Dynamic joules of one request alone on a deployment: its prefill, which samples the
    first output token, and the decode steps after it at the mean context (`batch_run`, as
    `estimate` counts them; until 2026-12-05 this took one decode step more). NaN when the
    hardware's power figures are unknown."""
    pre = perf.prefill(1, max(1, prompt_tokens))
    dec = perf.decode_step(1, prompt_tokens + output_tokens // 2)
    seconds, joules = batch_run(pre, dec, output_tokens)
    return joules - perf.idle_power_w * seconds


def request_energy_bound_j(perf: PerfModel, prompt_tokens: int, output_tokens: int) -> float:
    """An upper bound on the joules one request is billed on an emulated engine: alone, idle
    power included (an engine shares each step's whole energy among its tokens, largest when
    the batch is smallest), every output token at the full context. NaN when power is unknown."""
    pre = perf.prefill(1, max(1, prompt_tokens))
    dec = perf.decode_step(1, prompt_tokens + output_tokens)
    return pre.energy_j + output_tokens * dec.energy_j


def token_energy_j(
    prompt_tokens: int, output_tokens: int, joules_per_token: float | None
) -> float | None:
    """Joules of one request at a hosted API's joules per token (prompt and output tokens
    alike); None when the provider publishes none."""
    if joules_per_token is None:
        return None
    return joules_per_token * (prompt_tokens + output_tokens)


def carbon_g(energy_j: float | None, pue: float, carbon_g_per_kwh: float | None) -> float | None:
    """Grams of CO2 for `energy_j` of device energy at a site: times the site's PUE (the
    facility's overhead) and its grid's intensity; None when either is unknown."""
    if energy_j is None or carbon_g_per_kwh is None:
        return None
    return energy_j * pue * carbon_g_per_kwh / J_PER_KWH
