"""StepBasis: what one deployment's step costs are made of before any engine term applies.

A step's time and power (core/perf.py) combine two kinds of figures: the deployment's own (the
model's sizes, the hardware's peaks, bandwidths and power, resolved from the catalog with their
sources) and the engine's terms (EngineParams: efficiencies, overheads). The first kind does
not change while a calibration tries thousands of sets of terms, so it is resolved here once per
deployment; `PerfModel(dep, params, basis)` then does arithmetic only. Resolving it again for
every set of terms had been 80% of a fit's time on a file of many deployments
(benchmarks/calibrate_deployments.py).

Rates here are one device's datasheet rates (no efficiency applied, no tensor parallelism: the
step model multiplies in that order, so its figures stay the same to the last bit); a figure
the catalog lacks is NaN, with the reason in `missing` (time) or `power_missing` (power).
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

from wattserve.core.deployment import ACTIVATION_BYTES, Deployment
from wattserve.core.figures import Figure
from wattserve.core.modelspec import ModelSpec

NAN = float("nan")


class StepBasis:
    """A deployment's step figures that no engine term changes (see the module docstring)."""

    def __init__(self, dep: Deployment) -> None:
        self.deployment = dep
        self.missing: list[str] = []
        self.power_missing: list[str] = []
        self.assumptions: list[str] = []
        self.figures_used: dict[str, Figure] = {}
        m = dep.model
        self.moe = m.is_moe
        self.head_flops = 2.0 * m.lm_head_params  # per sequence of a step: its sampled token
        self.flops_per_token = float(m.flops_per_token)  # the LM head included
        self.attn_coef = float(m.attention_flops_per_token_per_context)
        # tensor parallelism past the KV heads replicates them (vLLM; core/memory.py holds the
        # cache so): each of a head's tp / kv_heads devices reads its whole cache
        kv_copies = dep.tp / min(dep.tp, m.num_kv_heads)
        self.kv_bytes_per_token = m.kv_bytes_per_token(dep.kv_dtype) * kv_copies
        weight_bytes = m.weight_bytes(dep.dtype)
        self.expert_bytes = weight_bytes * (m.expert_params * m.num_layers / m.total_params)
        self.base_weight_bytes = weight_bytes - (
            self.expert_bytes * m.num_experts if self.moe else 0.0
        )
        if not self.moe:
            self.expert_bytes = 0.0
        self.n_experts = float(m.num_experts)
        self.top_k = float(m.experts_per_token)
        self.expert_params = m.expert_params  # one expert's, per layer
        self.experts_per_token = m.experts_per_token
        self.peak_flops = self._peak_flops()
        self.peak_bytes = self._peak_bytes()
        self.elementwise_bytes_per_token = (
            elementwise_bytes_per_token(m, dep.tp)
            if math.isfinite(self.peak_bytes)
            else 0.0  # a part that keeps activations in its arrays moves none of them
        )
        self.link_bytes = self._link_bytes()
        self.pad_k_dense, self.pad_k_expert = _pad_inputs(dep)
        self.gemm_kernels = _gemm_kernels(m)
        # expert parallelism: the step waits for the device with the most routed tokens
        self.ep_ranks = float(dep.tp) if dep.expert_parallel and dep.tp > 1 else 0.0
        self.ep_read_spread = self.ep_spread = 0.0
        if self.ep_ranks:
            self.ep_read_spread = _busiest_spread(dep.tp)
            # the loads sum to the step's assignments: pairwise correlation -1/(R - 1)
            self.ep_spread = self.ep_read_spread * math.sqrt(dep.tp / (dep.tp - 1.0))
        self.tdp_w = self._use("tdp_w")
        if self.tdp_w is None:
            self.power_missing.append(
                f"{dep.hardware.id} has no tdp_w in the catalog, so power and energy cannot "
                "be computed"
            )
        self.idle_w = self._use("idle_w") if self.tdp_w is not None else None

    def _use(self, key: str) -> float | None:
        fig = self.deployment.hardware.figures.get(key)
        if fig is not None:
            self.figures_used[key] = fig
            return fig.value
        return None

    def _peak_flops(self) -> float:
        dep, hw = self.deployment, self.deployment.hardware
        key = hw.peak_key(dep.dtype)
        if key is None:
            have = ", ".join(sorted(hw.peaks())) or "none"
            self.missing.append(
                f"{hw.id} has no {dep.dtype} peak in the catalog (it has: {have}); "
                f"try --dtype with one of those, or add the figure with --hardware-file"
            )
            return NAN
        if key != f"peak_tflops_{dep.dtype}":
            self.assumptions.append(
                f"{dep.dtype} weights use the {key.removeprefix('peak_tflops_')} peak of {hw.id}"
            )
        peak = self._use(key)
        assert peak is not None
        return peak * 1e12

    def _peak_bytes(self) -> float:
        hw = self.deployment.hardware
        kind = hw.memory_kind
        if kind == "cim":
            self.base_weight_bytes = 0.0
            self.expert_bytes = 0.0
            self.assumptions.append(
                f"{hw.id} keeps weights in its compute array (no weight traffic); "
                "its KV-cache traffic is not modelled"
            )
            return math.inf
        key = "sram_bw_gbps" if kind == "sram" else "mem_bw_gbps"
        bw = self._use(key)
        if bw is None:
            self.missing.append(
                f"{hw.id} has no {key} in the catalog, so step times cannot be computed; "
                "add it with --hardware-file if you know it"
            )
            return NAN
        return bw * 1e9

    def _link_bytes(self) -> float:
        """One direction of a device's link, bytes/s (a ring sends one way on each link)."""
        dep, hw = self.deployment, self.deployment.hardware
        if dep.devices == 1:
            return math.inf
        bw = self._use("interconnect_gbps")
        if bw is not None:  # both directions together, as vendors quote it
            return bw / 2 * 1e9
        if dep.tp > 1:
            self.missing.append(
                f"{hw.id} has no interconnect_gbps in the catalog, so tensor-parallel "
                "all-reduces cannot be timed"
            )
            return NAN
        self.assumptions.append(
            f"{hw.id} has no interconnect_gbps: pipeline hops cost their latency term only"
        )
        return math.inf


def _pad_inputs(dep: Deployment) -> tuple[float, float]:
    """The summed inputs K of a step's dense GEMMs and of its grouped expert kernels, per
    device (K of a row-parallel GEMM is sharded over tp): a GEMM whose output is M x N over K
    inputs costs 2*K*(M*N + pad) FLOPs, so a step pays 2*pad*sum(K) extra (PerfModel's pads)."""
    m, tp = dep.model, dep.tp
    attn_k = m.hidden_size + m.num_heads * m.head_dim / tp  # QKV, then the output projection
    if m.is_moe:
        shared = m.shared_intermediate_size
        mlp_k = m.hidden_size + shared / tp if shared else 0.0
        expert_k = m.num_layers * (m.hidden_size + m.expert_intermediate_size / tp)
        if dep.expert_parallel:
            # whole experts on each device: its grouped kernels take their whole inputs
            expert_k = m.num_layers * (m.hidden_size + m.expert_intermediate_size)
    else:
        mlp_k, expert_k = m.hidden_size + m.intermediate_size / tp, 0.0
    dense_k = m.num_layers * (attn_k + mlp_k) + m.hidden_size  # the LM head once per step
    return dense_k, expert_k


@lru_cache(maxsize=64)
def _busiest_spread(ranks: int) -> float:
    """E[max of `ranks` independent standard normals], the integral of
    x R phi(x) Phi(x)^(R-1) (0.564 for 2, 1.029 for 4, 1.424 for 8)."""
    if ranks < 2:
        return 0.0
    nd, n, lo, hi = NormalDist(), 4000, -9.0, 9.0
    h = (hi - lo) / n
    total = 0.0
    for i in range(n + 1):
        x = lo + i * h
        w = 0.5 if i in (0, n) else 1.0
        total += w * x * ranks * nd.pdf(x) * nd.cdf(x) ** (ranks - 1)
    return total * h


# The passes over a token's activations that a layer's elementwise kernels make in vLLM
# (csrc/layernorm_kernels.cu, pos_encoding_kernels.cu, activation_kernels.cu): two fused
# add-RMSNorms read the hidden state and the residual and write both (4 passes each), rotary
# embedding rewrites q and k in place (about 2.5 for grouped-query attention); the gated
# activation reads the FFN's two halves and writes one (3 passes of its width; 2 ungated).
ELEMENTWISE_HIDDEN_PASSES = 10.5


def elementwise_bytes_per_token(m: ModelSpec, tp: int) -> float:
    """Bytes a token's elementwise kernels move over all layers and `tp` devices: each device
    normalises the whole hidden state and activates its share of the FFN (docs/model.md)."""
    if m.is_moe:
        ffn = m.experts_per_token * (m.expert_intermediate_size or m.intermediate_size)
        ffn += m.shared_intermediate_size
    else:
        ffn = m.intermediate_size
    passes = ELEMENTWISE_HIDDEN_PASSES * m.hidden_size * tp + (3 if m.gated_mlp else 2) * ffn
    return ACTIVATION_BYTES * m.num_layers * passes


def _gemm_kernels(m: ModelSpec) -> int:
    """GEMM kernels in one step: per layer QKV, the output projection, and the MLP's two
    (gate and up fused, then down; for MoE the fused expert kernels, the router's, and the
    shared expert's two when there is one), then the LM head."""
    mlp = 2 + (1 + 2 * (m.shared_intermediate_size > 0) if m.is_moe else 0)
    return m.num_layers * (2 + mlp) + 1
