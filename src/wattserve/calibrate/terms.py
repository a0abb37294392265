"""The terms calibrate may fit: which, their physical bounds and priors (docs/calibration.md)."""

from __future__ import annotations

TIME_PARAMS = (
    "eff_compute",
    "eff_memory",
    "overhead_step_s",
    "overhead_layer_s",
    "overhead_seq_s",
    "gemm_pad_elems",
    "gemm_latency_s",
    "attn_factor",
    "elementwise_factor",
)
COMM_PARAMS = ("eff_comm", "overhead_collective_s")
# an MoE's expert kernels and routing: fitted only where some rows run an MoE model
MOE_PARAMS = ("eff_expert", "overhead_moe_layer_s", "gemm_pad_expert_elems")
BOUNDS: dict[str, tuple[float, float]] = {
    "eff_compute": (0.02, 0.95),
    "eff_memory": (0.05, 0.95),
    "eff_comm": (0.02, 0.95),
    "overhead_step_s": (1e-6, 2.0),
    "overhead_layer_s": (1e-8, 0.01),
    "overhead_seq_s": (1e-8, 0.01),
    "overhead_collective_s": (1e-7, 0.01),
    "gemm_pad_elems": (1.0e3, 1.0e8),
    "gemm_latency_s": (1.0e-7, 1.0e-3),
    "gemm_pad_expert_elems": (1.0e3, 1.0e8),
    "attn_factor": (0.25, 8.0),
    "elementwise_factor": (0.1, 20.0),
    "eff_expert": (0.1, 1.0),  # no faster than the dense GEMMs: the products stay <= 0.95
    "overhead_moe_layer_s": (1e-7, 1e-3),
}
# Prior widths (standard deviation of log(term / default)): a fitted term pays for moving away
# from its default as a misfit of PRIOR_WEIGHT per sigma, in log time of one row.
PRIOR_SIGMA: dict[str, float] = {
    "eff_compute": 0.4,
    "eff_memory": 0.25,
    "eff_comm": 0.5,
    "overhead_step_s": 1.5,
    "overhead_layer_s": 1.5,
    "overhead_seq_s": 1.5,
    "overhead_collective_s": 1.5,
    "gemm_pad_elems": 1.0,
    "gemm_latency_s": 1.0,
    "gemm_pad_expert_elems": 1.0,
    "attn_factor": 0.5,
    "elementwise_factor": 0.7,  # engines fuse more or less: PyTorch's own kernels 3.8x vLLM's
    "eff_expert": 0.4,
    "overhead_moe_layer_s": 1.5,
}
# Where a term fitted in log space starts when its default is 0 (off), and its prior's centre:
# half a wave of 128 x 128 output tiles on a 132-SM GPU (H100 SXM; NVIDIA's H100 whitepaper),
# and a few microseconds per GEMM kernel (the launch-to-drain floor NVIDIA's Nsight Systems
# guide and CUDA-graph measurements put at a few microseconds). docs/model.md.
# An MoE layer's routing (router GEMM, softmax and top-k, sorting tokens by expert, the
# weighted combine) is a handful of kernels of a few microseconds each: 10 us.
LOG_START: dict[str, float] = {
    "gemm_pad_elems": 1.0e6,
    "gemm_pad_expert_elems": 1.0e6,
    "gemm_latency_s": 4.0e-6,
    "overhead_moe_layer_s": 1.0e-5,
}
PRIOR_WEIGHT = 0.05
IMPLAUSIBLE_SIGMA = 3.0  # a fitted term this many prior widths from its centre is warned about
# The power curve (docs/model.md): how compute and memory utilisation drive the dynamic share,
# and the idle share of TDP where the catalog has no idle_w. Priors as wide as what is known:
# each slope to a factor of about 1.6 (sigma 0.5), the idle share too (an H100 idles at about
# 60-100 W of its 700 W, 9-14%, against the default 15%).
POWER_TERMS = ("power_k_compute", "power_k_memory", "idle_fraction")
POWER_BOUNDS: dict[str, tuple[float, float]] = {
    "power_k_compute": (0.01, 5.0),
    "power_k_memory": (0.01, 5.0),
    "idle_fraction": (0.01, 0.9),
}
POWER_PRIOR_SIGMA: dict[str, float] = {
    "power_k_compute": 0.5,
    "power_k_memory": 0.5,
    "idle_fraction": 0.5,
}
