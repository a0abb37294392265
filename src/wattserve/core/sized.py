"""A dense architecture from a parameter count, to estimate the energy of a model known only by
its size (an opaque upstream model that states `params_b`).

The shape follows the published Llama 3 family (Llama Team, "The Llama 3 Herd of Models",
arXiv:2407.21783, Table 3; the built-in `llama-3.2-1b`, `llama-3.1-8b`, `-70b` and `-405b`
configs): a gated MLP 3.5 times the model width, attention heads of 128 dimensions, 8 KV
heads (grouped-query attention; fewer where there are fewer than 8 heads), a 128,256-token
vocabulary and untied embeddings. The width is interpolated in log-log between those models'
widths by parameter count (2048 at 1.24B, 4096 at 8.03B, 8192 at 70.6B, 16384 at 405.9B;
extrapolated along the end segments), rounded to a multiple of 1024 (of 128 below 1024) and
kept small enough that embeddings are at most half the parameters; the layer count then
matches the parameter count. It gives Llama 3.1 8B's and
70B's exact shapes, and 405B's width (with 119 layers for its 126: its MLP is 3.25 times the
width, not 3.5); tests/test_sized_models.py.

What the estimate rests on: at a batch of one, a decode step reads every weight once and does
two FLOPs per parameter per token, so the energy follows the parameter count and the bytes per
weight; the shape only moves the attention and KV-cache terms, small at ordinary contexts.
A mixture of experts is estimated as a dense model of its active parameters (a token at a
batch of one goes through only its routed experts), placed on the devices that hold all its
parameters. Against the same perf model with the real architecture of the built-in models
(dense and MoE, 0.5B to 141B) the estimate is within 5% for most and 10% for all
(tests/test_sized_models.py): a check of the derivation, not of the perf model, whose own
accuracy is in docs/accuracy.md. Fine-grained MoEs (Qwen3's 128 experts) have about twice
the layers of a dense model of their active size; the extra layers' overheads add time at idle
power, which request energy (dynamic joules) leaves out, so they are within 10% too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wattserve.core.catalog import Catalog
from wattserve.core.deployment import Deployment, default_kv_dtype
from wattserve.core.dtypes import Dtype, parse_dtype
from wattserve.core.energy import request_energy_j
from wattserve.core.hardware import Hardware
from wattserve.core.memory import KV_BLOCK_TOKENS, memory_fit
from wattserve.core.modelspec import ModelSpec, load_model
from wattserve.core.params import Calibration, EngineParams
from wattserve.core.perf import perf_model
from wattserve.core.yamlio import Fields, LineDict
from wattserve.errors import ConfigError, WattserveError

VOCAB = 128_256
HEAD_DIM = 128
KV_HEADS = 8
FFN_RATIO = 3.5
# (parameters, width) of Llama 3.2 1B, Llama 3.1 8B, 70B and 405B (their config.json files)
ANCHORS = ((1.236e9, 2048), (8.030e9, 4096), (70.55e9, 8192), (405.9e9, 16384))
MIN_PARAMS_B = 0.1  # below it the vocabulary's embeddings alone would overstate the size
MAX_PARAMS_B = 100_000.0  # 100T: past any model published; a larger figure is a typo
MAX_DEVICES = 4096


def _width(params: float) -> int:
    pts = [(math.log(n), math.log(d)) for n, d in ANCHORS]
    x = math.log(params)
    i = 0 if x < pts[1][0] else 2 if x >= pts[2][0] else 1  # the segment (ends extrapolate)
    (x0, y0), (x1, y1) = pts[i], pts[i + 1]
    d = math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    d = min(d, params / (4 * VOCAB))  # embeddings (input and output) at most half of it
    step = 1024 if d >= 1024 else HEAD_DIM  # whole groups of 8 heads where there are 8
    return max(HEAD_DIM, round(d / step) * step)


def _kv_heads(heads: int) -> int:
    return math.gcd(KV_HEADS, heads)  # each KV head serves a whole group of query heads


def _layer_params(d: int) -> int:
    kv = _kv_heads(d // HEAD_DIM) * HEAD_DIM
    ffn = int(FFN_RATIO * d)
    return 2 * d * d + 2 * d * kv + 3 * d * ffn + 2 * d  # q,o; k,v; gated MLP; two norms


def dense_model(model_id: str, params: float) -> ModelSpec:
    """A Llama-3-shaped dense model of about `params` parameters (see the module docstring)."""
    if not (math.isfinite(params) and MIN_PARAMS_B * 1e9 <= params <= MAX_PARAMS_B * 1e9):
        raise ConfigError(
            f"must be {MIN_PARAMS_B:g}B to {MAX_PARAMS_B:g}B parameters, got {params!r}"
        )
    d = _width(params)
    rest = params - 2 * VOCAB * d - d
    layers = max(1, round(rest / _layer_params(d)))
    heads = d // HEAD_DIM
    return ModelSpec(
        id=model_id,
        hidden_size=d,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=_kv_heads(heads),
        head_dim=HEAD_DIM,
        intermediate_size=int(FFN_RATIO * d),
        vocab_size=VOCAB,
        source=f"derived from {params / 1e9:g}B parameters (Llama 3 shape, core/sized.py)",
    )


def sized_deployment(
    model: ModelSpec, held: ModelSpec, hw: Hardware, dtype: Dtype, params: EngineParams
) -> Deployment:
    """`model` on the fewest devices of `hw` (a power of two: tensor-parallel up to 8, then
    pipeline stages) whose memory holds the weights of `held` in `dtype` and a KV block
    (`held` is `model` for a dense model, the dense model of all its parameters for a mixture
    of experts). A device without an interconnect figure is laid out in pipeline stages only,
    as estimate lays out SRAM parts: tensor parallelism needs the all-reduce's rate, and
    without it a Groq, Cerebras or A10G entry's energy had come out unknown."""
    widest = 8 if hw.value("interconnect_gbps") is not None else 1
    devices = 1
    while devices <= MAX_DEVICES:
        tp = min(devices, widest)
        while model.num_heads % tp or held.num_heads % tp:
            tp //= 2
        pp = devices // tp
        if pp > min(model.num_layers, held.num_layers) and hw.memory_kind == "dram":
            break  # a stage holds at least one layer
        dep = Deployment(held, hw, tp=tp, pp=pp, dtype=dtype, kv_dtype=default_kv_dtype(dtype))
        if memory_fit(dep, params, 1, KV_BLOCK_TOKENS, dep.max_batched_tokens).fits:
            return Deployment(
                model, hw, tp=tp, pp=pp, dtype=dtype, kv_dtype=default_kv_dtype(dtype)
            )
        devices *= 2
    raise ConfigError(
        f"{held.total_params / 1e9:.4g}B parameters in {dtype} do not fit on {MAX_DEVICES} {hw.id}"
    )


@dataclass(frozen=True, slots=True)
class SizedEnergy:
    """How a hosted entry's energy is estimated: its model on named hardware."""

    deployment: Deployment
    params: EngineParams
    basis: str  # what the estimate rests on, as answers report it

    @property
    def known(self) -> bool:
        """Whether the estimate gives a figure at all (the hardware's power and speed figures
        are there): else the entry's energy is unknown and no basis is claimed for it."""
        return self.request_j(1, 1) is not None

    def request_j(self, prompt_tokens: int, output_tokens: int) -> float | None:
        """Dynamic joules of one request alone (core.energy.request_energy_j); None when the
        hardware's power figures are unknown."""
        j = request_energy_j(perf_model(self.deployment, self.params), prompt_tokens, output_tokens)
        return j if math.isfinite(j) else None


def hosted_energy(
    r: Fields, entry: LineDict, model_id: str, opaque: bool, catalog: Catalog
) -> SizedEnergy | None:
    """The `params_b`, `active_params_b`, `hardware` and `dtype` of a `providers:` entry: the
    model's energy on that hardware, or None when the entry names no hardware (energy then
    stays unknown unless `joules_per_token` is given). Errors name the field."""
    total_b, active_b = _size(r, "params_b"), _size(r, "active_params_b")
    if not opaque and total_b is not None:
        raise r.err("params_b", f"{model_id} is a built-in model: its size is known")
    if active_b is not None and total_b is None:
        raise r.err("active_params_b", "give params_b (all parameters) with it")
    if active_b is not None and total_b is not None and active_b > total_b:
        raise r.err("active_params_b", f"{active_b:g} exceeds params_b {total_b:g}")
    if "dtype" in entry and "hardware" not in entry:
        raise r.err("dtype", "the weights' dtype is used with hardware: name it")
    if "hardware" not in entry:
        return None
    if opaque and total_b is None:
        raise r.err("hardware", f"{model_id} is not a built-in model: give params_b, its size")
    hw_id, dtype_name = r.text("hardware"), r.text("dtype", "bf16")
    try:
        hw = catalog.device(hw_id)
    except WattserveError as exc:
        raise r.err("hardware", str(exc)) from None
    try:
        dtype = parse_dtype(dtype_name)
    except WattserveError as exc:
        raise r.err("dtype", str(exc)) from None
    params = Calibration().params_for(hw)
    if total_b is None:  # a built-in model: its own architecture
        model = held = load_model(model_id)
        what = f"{model_id}'s architecture"
    else:
        held = dense_model(model_id, total_b * 1e9)
        model = held if active_b is None else dense_model(model_id, active_b * 1e9)
        what = (
            f"a dense {total_b:g}B-parameter model (params_b)"
            if active_b is None
            else f"a dense {active_b:g}B-parameter model (active_params_b of {total_b:g}B)"
        )
    try:
        dep = sized_deployment(model, held, hw, dtype, params)
    except WattserveError as exc:
        raise r.err("hardware", str(exc)) from None
    basis = (
        f"estimate: {what} on {dep.devices} x {hw.id} in {dtype}, the request alone "
        "(batch of one), dynamic power"
    )
    return SizedEnergy(dep, params, basis)


def _size(r: Fields, key: str) -> float | None:
    v = r.number(key, positive=True)
    if v is not None and not (math.isfinite(v) and MIN_PARAMS_B <= v <= MAX_PARAMS_B):
        raise r.err(
            key, f"billions of parameters, from {MIN_PARAMS_B:g} to {MAX_PARAMS_B:g}; got {v}"
        )
    return v
