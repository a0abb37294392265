"""Memory fit: do the weights, KV cache and activations fit, and what batch fits at most."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from wattserve.core.deployment import ACTIVATION_BYTES, Deployment
from wattserve.core.hardware import Hardware
from wattserve.core.params import EngineParams

GB = 1e9
KV_BLOCK_TOKENS = 16  # KV-cache block size in tokens (vLLM's default): fit and engine alike
MAX_BATCH = 2**31 - 1  # the largest batch reported as fitting (an engine's int32 counter)
MAX_STEP_BATCH = 1 << 20  # the most sequences asked of one step: no engine runs a million


@dataclass(frozen=True, slots=True)
class MemoryFit:
    """Per-device memory use (GB) for a batch, and the largest batch that fits."""

    weights_gb: float
    kv_cache_gb: float
    activations_gb: float
    capacity_gb: float | None
    fits: bool
    max_batch: int | None  # None: no batch limit is modelled (compute-in-memory) or known
    reason: str = ""

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.kv_cache_gb + self.activations_gb

    def as_dict(self) -> dict[str, float | None]:
        return {
            "weights": round(self.weights_gb, 4),
            "kv_cache": round(self.kv_cache_gb, 4),
            "activations": round(self.activations_gb, 4),
            "total": round(self.total_gb, 4),
            "capacity": None if self.capacity_gb is None else round(self.capacity_gb, 4),
        }


@dataclass(frozen=True, slots=True)
class MemoryLayout:
    """What a deployment's memory fit needs that does not depend on the batch (per device)."""

    kind: str
    weights: float  # bytes
    kv_token_bytes: float  # KV-cache bytes of one token, all layers, before the split
    kv_split: float  # one sequence's KV cache over the share of it the fullest device holds
    act_width: float  # activation elements per token of a prefill step
    capacity: float | None  # bytes (weights held, for compute-in-memory parts)
    usable: float  # bytes the engine may use


def device_capacity_bytes(hw: Hardware) -> float | None:
    """Bytes of one device that hold weights and KV cache: its DRAM/HBM, or an SRAM-only
    part's on-chip SRAM (a Cerebras WSE-3's 44 GB). None where that is no byte count: a
    compute-in-memory part (its arrays hold a number of weights) or one that publishes neither.
    The memory fit's capacity, and what `catalog --min-memory-gb` filters on."""
    if hw.memory_kind == "sram":
        return hw.require("sram_mb", "capacity") * 1e6
    if hw.memory_kind == "dram":
        return hw.require("memory_gb", "capacity") * GB
    return None


@lru_cache(maxsize=4096)
def memory_layout(dep: Deployment, params: EngineParams) -> MemoryLayout:
    """Built once per (deployment, parameters) pair, like `perf_model`."""
    m, hw = dep.model, dep.hardware
    kind = hw.memory_kind
    weights = m.weight_bytes(dep.dtype) / dep.devices
    kv_split: float = min(dep.tp, m.num_kv_heads) * dep.pp
    if kind == "dram" and dep.pp > 1:
        # the fullest stage, not an even split (until 2026-12-06): the first holds the
        # embedding, the last the LM head (its own copy where tied) and the final norm
        stages = pipeline_layers(m.num_layers, dep.pp)
        head = 0 if m.tied_embeddings else m.lm_head_params
        embedding = m.vocab_size * m.hidden_size
        per_layer = (m.total_params - embedding - head - m.hidden_size) / m.num_layers
        held = max(
            embedding + stages[0] * per_layer,
            m.lm_head_params + m.hidden_size + stages[-1] * per_layer,
            max(stages[1:-1], default=0) * per_layer,
        )
        weights = held * m.weight_bytes(dep.dtype) / m.total_params / dep.tp
        kv_split = min(dep.tp, m.num_kv_heads) * m.num_layers / max(stages)
    act_width = 4 * m.hidden_size + 3 * m.intermediate_size / dep.tp
    capacity = device_capacity_bytes(hw)
    if kind == "cim":
        capacity = hw.require("weight_capacity_m", "capacity") * 1e6 * dep.devices
    elif kind == "sram":
        act_width = 0.0  # dataflow parts stream activations between chips
    usable = 0.0 if capacity is None else capacity * params.memory_utilization
    kv_token_bytes = m.kv_bytes_per_token(dep.kv_dtype)
    return MemoryLayout(kind, weights, kv_token_bytes, kv_split, act_width, capacity, usable)


def pipeline_layers(layers: int, stages: int) -> tuple[int, ...]:
    """Layers per pipeline stage as vLLM assigns them (`get_pp_indices`): an even share, and
    the remainder one each to the stages before the last, which holds the LM head."""
    share, extra = divmod(layers, stages)
    return tuple(share + (stages - 1 - extra <= i < stages - 1) for i in range(stages))


def kv_tokens_held(prompt_tokens: int, output_tokens: int, context_tokens: int) -> int:
    """KV-cache tokens one sequence holds at its longest: its prompt and every output token
    but the last, which is never fed back (as the engine counts it: `EngineModel.refusal`), or
    the decode context when a step is asked for at a longer one (`estimate --context`)."""
    return max(prompt_tokens + max(output_tokens, 1) - 1, context_tokens)


def memory_fit(
    dep: Deployment, params: EngineParams, batch: int, seq_tokens: int, workspace_tokens: int
) -> MemoryFit:
    """Memory per device for `batch` sequences of up to `seq_tokens` tokens each.

    Weights split over all tp * pp devices; the KV cache splits over pipeline stages and over
    tensor-parallel ranks as far as there are KV heads to split. Beside them, an activation
    workspace of `workspace_tokens` tokens (at most the engine's max_batched_tokens), whatever
    the batch: `estimate`, `rank` and a fleet's replicas reserve max_batched_tokens, as vLLM
    does before it sizes its KV cache (its profile run is a step of that many tokens); a
    measured step (calibrate) reserves none. Until 2026-12-06 `estimate` and `rank` reserved a
    step of the batch's own prompts only, and said a model fitted that `simulate` and `serve`
    refused (Llama-3.1-70B at tp 2 on H100s at 0.84 of memory: max batch 3 against none).
    `max_batch` is the largest batch that fits beside that workspace, so `fits` is exactly
    `batch <= max_batch`.
    """
    return layout_fit(memory_layout(dep, params), dep, batch, seq_tokens, workspace_tokens)


def layout_fit(
    lay: MemoryLayout, dep: Deployment, batch: int, seq_tokens: int, workspace_tokens: int
) -> MemoryFit:
    """`memory_fit` from a layout already at hand (`memory_layout(dep, params)`)."""
    weights = lay.weights
    # a sequence holds whole blocks of KV_BLOCK_TOKENS, as the engine allocates them (until
    # 2026-12-06 this counted its tokens: max_batch 7-12% high for sequences of ~100 tokens)
    blocks = -(-seq_tokens // KV_BLOCK_TOKENS)
    kv_per_seq = blocks * KV_BLOCK_TOKENS * lay.kv_token_bytes / lay.kv_split
    act_tokens = min(workspace_tokens, dep.max_batched_tokens)
    act = act_tokens * lay.act_width * ACTIVATION_BYTES
    if lay.kind == "cim":
        m, capacity = dep.model, lay.capacity
        assert capacity is not None
        fits = m.total_params <= capacity
        reason = (
            ""
            if fits
            else (
                f"{dep.hardware.id} holds {capacity / 1e6:.0f}M weights on {dep.devices} chip(s) "
                f"and {m.id} has {m.total_params / 1e6:.0f}M; it needs "
                f"{math.ceil(m.total_params / (capacity / dep.devices))} chips (--pp)"
            )
        )
        # the arrays hold the weights; where a batch's KV cache lives is not modelled, so no
        # batch limit either (until 2026-12-05 this said max_batch = the batch asked)
        return MemoryFit(weights / GB, 0.0, 0.0, None, fits, None, reason)
    if lay.capacity is None:
        return MemoryFit(
            weights / GB,
            batch * kv_per_seq / GB,
            act / GB,
            None,
            False,
            None,  # unknown, not 0 (until 2026-12-05 a silent 0)
            f"{dep.hardware.id} publishes no memory capacity, so no model can be shown to fit",
        )
    capacity, usable = lay.capacity, lay.usable
    free = usable - weights - act

    def fits_at(b: int) -> bool:
        return free > 0 and free >= b * kv_per_seq  # NaN (inf - inf) compares false

    max_batch = _largest_fitting(
        fits_at,
        free / kv_per_seq if kv_per_seq > 0 else math.inf,
        math.floor(free / kv_per_seq) if kv_per_seq > 0 and math.isfinite(free) else math.nan,
    )
    kv = batch * kv_per_seq
    fits = fits_at(batch)
    reason = ""
    if not fits and not free > 0:  # not even the workspace fits beside the weights
        m, hw = dep.model, dep.hardware
        reason = (
            f"weights of {m.id} in {dep.dtype} need {weights / GB:.1f} GB per device "
            f"(plus {act / GB:.1f} GB activations) but {hw.id} has {usable / GB:.1f} GB "
            f"usable on each of {dep.devices} device(s); use more devices (tensor or pipeline "
            "parallel) or a smaller dtype"
        )
    elif not fits:
        reason = (
            f"batch {batch} needs {kv / GB:.1f} GB of KV cache per device ({seq_tokens} "
            f"tokens a sequence) but only {max(free, 0.0) / GB:.1f} GB is free beside the "
            + (
                f"weights and {act / GB:.1f} GB of activations (a step of {act_tokens} tokens)"
                if act
                else "weights"
            )
            + f"; the largest batch that fits is {max_batch}"
        )
    return MemoryFit(weights / GB, kv / GB, act / GB, capacity / GB, fits, max_batch, reason)


def _largest_fitting(fits_at: Callable[[int], bool], bound: float, guess: float) -> int:
    """The largest batch b in [0, MAX_BATCH] with fits_at(b), fits_at falling from true to
    false as b grows (its KV cache grows with it).

    `bound` is a batch no fitting batch exceeds by more than one (the memory beside the weights
    over one sequence's KV cache), so that the bisection takes a dozen steps, not 31.
    """
    if 1 <= guess < MAX_BATCH and fits_at(int(guess)) and not fits_at(int(guess) + 1):
        return int(guess)  # the closed form, checked against the fit itself
    if not fits_at(1):
        return 0
    hi = int(bound) + 1 if bound < MAX_BATCH else MAX_BATCH
    # the first batch in [1, hi] that does not fit; all before it do
    first_out = bisect_left(range(1, hi + 1), True, key=lambda b: not fits_at(b)) + 1
    return first_out - 1
