"""A deployment: one model served by a group of devices with a parallel layout and dtypes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from wattserve.core.dtypes import Dtype
from wattserve.core.hardware import Hardware
from wattserve.core.modelspec import ModelSpec
from wattserve.core.params import EngineParams
from wattserve.errors import ConfigError

ACTIVATION_BYTES = 2.0  # activations and collectives travel in 16-bit
# tokens a step may batch (vLLM's max_num_batched_tokens): its default with chunked prefill,
# and the most estimate and rank take (16.8M tokens of activations is past any engine's step)
DEFAULT_BATCHED_TOKENS = 8192
MAX_BATCHED_TOKENS = 1 << 24


def check_batched_tokens(value: object, field: str = "max_batched_tokens") -> int:
    """`value` as an engine's token budget per step: a whole number from 1 to
    MAX_BATCHED_TOKENS, else a ConfigError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be a positive whole number, got {value!r:.40}", field=field)
    if value > MAX_BATCHED_TOKENS:  # 1e30 tokens of activations, reserved
        raise ConfigError(
            f"must be at most {MAX_BATCHED_TOKENS:,} tokens a step, got {value:.3g}", field=field
        )
    return value


def budget_below_seqs(
    max_batched_tokens: int,
    max_num_seqs: int,
    *,
    budget_name: str = "max_batched_tokens",
    seqs_name: str = "max_num_seqs",
) -> str:
    """Why an engine refuses a token budget per step below the sequences it runs at once
    ("" when it does not): a step could not give each of them a token. vLLM refuses it
    (max_num_batched_tokens < max_num_seqs); a fleet file's replica and estimate's batch are
    held to this one rule. The names are those the caller's user typed."""
    if max_batched_tokens >= max_num_seqs:
        return ""
    return (
        f"{budget_name} ({max_batched_tokens}) is below {seqs_name} ({max_num_seqs}): a step "
        "could not hold one token of each sequence (vLLM refuses this too)"
    )


def default_kv_dtype(dtype: Dtype) -> Dtype:
    """KV cache dtype when none is given: fp8 with fp8 weights, else 16-bit (fp32 on fp32):
    the activations' format (weight-only quantisation leaves the cache in 16-bit)."""
    if dtype in ("fp32", "bf16", "fp16", "fp8"):
        return dtype
    return "bf16"


@dataclass(frozen=True, slots=True)
class Deployment:
    """`model` on `tp * pp` devices of `hardware`.

    Engine limits follow vLLM's names: `max_num_seqs` sequences and `max_batched_tokens`
    tokens per step (chunked prefill). `expert_parallel` (vLLM's `--enable-expert-parallel`)
    places an MoE's experts whole across the `tp` devices of each stage instead of splitting
    every expert over them; attention stays tensor-parallel.
    """

    model: ModelSpec
    hardware: Hardware
    tp: int = 1
    pp: int = 1
    dtype: Dtype = "bf16"
    kv_dtype: Dtype = "bf16"
    max_num_seqs: int = 256
    max_batched_tokens: int = DEFAULT_BATCHED_TOKENS
    expert_parallel: bool = False

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "max_num_seqs", "max_batched_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
        # a stage of a DRAM part holds whole layers, at least one (SRAM-only and compute-in-
        # memory parts spread weights over as many chips as they fill, layers split across)
        if self.pp > self.model.num_layers and self.hardware.memory_kind == "dram":
            raise ConfigError(
                f"{self.model.id} has {self.model.num_layers} layers, so at most "
                f"{self.model.num_layers} pipeline stages, not {self.pp}",
                field="pp",
            )
        heads = self.model.num_heads
        if heads % self.tp:  # as vLLM: each device takes a whole share of the attention heads
            raise ConfigError(
                f"tensor parallelism splits the attention heads, and {self.model.id}'s {heads} "
                f"do not divide by {self.tp}; use a divisor of {heads}",
                field="tp",
            )
        if self.expert_parallel is not False:
            self._check_expert_parallel()

    def _check_expert_parallel(self) -> None:
        m = self.model
        if self.expert_parallel is not True:
            raise ConfigError(
                f"must be true or false, got {self.expert_parallel!r}", field="expert_parallel"
            )
        if not m.is_moe:
            raise ConfigError(
                f"{m.id} is a dense model: it has no experts to place", field="expert_parallel"
            )
        if m.num_experts % self.tp:
            raise ConfigError(
                f"expert parallelism places whole experts on each of the {self.tp} devices of "
                f"a stage, and {m.id}'s {m.num_experts} experts do not divide by {self.tp}",
                field="expert_parallel",
            )

    @property
    def devices(self) -> int:
        return self.tp * self.pp


def sram_stages(
    model: ModelSpec,
    hw: Hardware,
    dtype: Dtype,
    kv_dtype: Dtype,
    kv_tokens: int,
    params: EngineParams,
    tp: int,
) -> int | None:
    """How many pipeline stages of `tp` chips an SRAM-only part (Groq, Cerebras) needs to
    hold `model` and the KV cache of `kv_tokens` tokens.

    Weights and KV cache must all sit in on-chip SRAM, so such parts pipeline a model across
    as many chips as it fills: weights split over every chip, the KV cache over the stages and
    over as many tensor-parallel ranks as there are KV heads (past them each rank holds a copy,
    as `memory.layout_fit` counts it). None for other parts, whose device count the user
    chooses (a fit check then says whether it is enough).
    """
    if hw.memory_kind != "sram":
        return None
    per_chip = hw.require("sram_mb", "capacity") * 1e6 * params.memory_utilization
    weights = model.weight_bytes(dtype) / tp
    kv = kv_tokens * model.kv_bytes_per_token(kv_dtype) / min(tp, model.num_kv_heads)
    return max(1, math.ceil((weights + kv) / per_chip))
