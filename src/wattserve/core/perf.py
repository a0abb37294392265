"""PerfModel: roofline time, power and energy of one engine step of a deployment.

A step processes, across its sequences, `tokens` new tokens; `attn_work` is the sum over new
tokens of the context each attends to; `kv_tokens` is the KV-cache tokens read or written;
`seqs` is the number of sequences. Prefill and decode are both steps:

    time = max(FLOPs / (peak * eff_compute * tp), bytes / (bw * eff_memory * tp))
           + elementwise kernels (each token's activations, per layer, at the same bandwidth)
           + communication (TP all-reduces, PP hops) + overheads (step, layer, sequence)
    power = devices * idle + tp * (tdp - idle) * min(1, k_c * u_compute + k_m * u_memory)

u over the tp devices a stage runs on (pipeline stages take turns), so the step's gaps (its time
outside compute and memory: overheads, launches, all-reduces) and a stage's wait for the others
draw the idle power (docs/model.md). The LM head's FLOPs count once per sequence in a step
(the token sampled), not per token.

Small GEMMs (off by default): each GEMM's FLOPs are counted as if its output had
gemm_pad_elems more elements, and each GEMM kernel adds gemm_latency_s to the memory time
(docs/model.md). The deployment's own figures are resolved once (core/stepbasis.py), the
engine's terms applied in __init__; the hot path is plain float arithmetic on the results.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from typing import NamedTuple

from wattserve.core.deployment import ACTIVATION_BYTES, Deployment
from wattserve.core.params import EngineParams
from wattserve.core.stepbasis import StepBasis

NAN = float("nan")


class StepCost(NamedTuple):
    """Time (s) of one step split by what bounds it, with power (W) and energy (J).
    (A NamedTuple: immutable and cheap to make on the simulator's hot path.)"""

    time_s: float
    compute_s: float
    memory_s: float
    comm_s: float
    overhead_s: float
    flops: float
    bytes: float
    power_w: float
    energy_j: float
    elementwise_s: float = 0.0  # the layers' elementwise kernels, between their GEMMs

    @property
    def bound(self) -> str:
        """The largest term of the step's time, as `estimate` and `rank` print it: memory (the
        elementwise kernels' traffic with it), compute, communication or overhead (the first
        of them on a tie)."""
        label, most = "memory", self.memory_s + self.elementwise_s
        for name, t in (
            ("compute", self.compute_s),
            ("communication", self.comm_s),
            ("overhead", self.overhead_s),
        ):
            if t > most:
                label, most = name, t
        return label


class PerfModel:
    """Step costs for one deployment under one set of engine parameters."""

    def __init__(
        self, dep: Deployment, params: EngineParams, basis: StepBasis | None = None
    ) -> None:
        """`basis`: `dep`'s figures resolved already (core/stepbasis.py), as a fit passes
        them when it tries many `params` on one deployment; made here when not given."""
        b = basis if basis is not None and basis.deployment is dep else StepBasis(dep)
        self.deployment = dep
        self.params = params
        self.missing = list(b.missing)
        self.power_missing = list(b.power_missing)
        self.assumptions = list(b.assumptions)
        self.figures_used = dict(b.figures_used)
        self.devices = dep.devices
        # the devices a step's work runs on at any moment: pipeline stages take turns (the
        # step's time is its work over tp devices' rate), so the others wait at idle power
        self.busy_devices = dep.tp
        self.moe = b.moe
        # the LM head runs once per sequence in a step (its last token: the one sampled), not
        # for every prompt token, as vLLM computes logits; an engine with logits_all runs it
        # for every token (llama-cpp-python's server: EngineParams.logits_all, docs/model.md)
        self.head_flops = b.head_flops * (1.0 - params.logits_all)  # per sequence of a step
        self.flops_per_token = b.flops_per_token - self.head_flops
        self.attn_coef = b.attn_coef
        self.kv_bytes_per_token = b.kv_bytes_per_token
        # what the step time charges for them (EngineParams.attn_factor); the step's FLOPs and
        # bytes report the true amounts
        self.attn_time_coef = self.attn_coef * params.attn_factor
        self.kv_time_bytes = self.kv_bytes_per_token * params.attn_factor
        self.expert_bytes = b.expert_bytes
        self.base_weight_bytes = b.base_weight_bytes
        self.n_experts = b.n_experts
        self.top_k = b.top_k

        tp = dep.tp
        self.flops_rate = b.peak_flops * params.eff_compute * tp
        self.bytes_rate = b.peak_bytes * params.eff_memory * tp
        # the elementwise kernels between a layer's GEMMs (norms, residual adds, rotary, the
        # activation) stream each token's activations through memory, in kernels of their own:
        # time added to the step's, and load
        self.act_bytes_per_token = b.elementwise_bytes_per_token * params.elementwise_factor
        self.act_time_per_token = self.act_bytes_per_token / self.bytes_rate
        link = b.link_bytes * params.eff_comm
        layers = dep.model.num_layers
        per_token_act = dep.model.hidden_size * ACTIVATION_BYTES
        comm_fixed = 0.0
        comm_per_token = 0.0
        if tp > 1:
            ring = 2.0 * (tp - 1) / tp
            comm_fixed += 2 * layers * params.overhead_collective_s
            comm_per_token += 2 * layers * ring * per_token_act / link
        if dep.pp > 1:
            comm_fixed += (dep.pp - 1) * params.overhead_collective_s
            comm_per_token += (dep.pp - 1) * per_token_act / link
        self.comm_fixed = comm_fixed
        self.comm_per_token = comm_per_token
        self.overhead_fixed = params.overhead_step_s + layers * params.overhead_layer_s
        if self.moe:  # each MoE layer's routing: gate, top-k, sort by expert, combine
            self.overhead_fixed += layers * params.overhead_moe_layer_s
        self.overhead_seq = params.overhead_seq_s
        self.pad_s = self.expert_pad_s = 0.0
        pad, expert_pad = params.gemm_pad_elems, params.gemm_pad_expert_elems
        if pad or expert_pad:
            # a GEMM whose output is M x N over K inputs costs 2*K*(M*N + pad) FLOPs: the pad
            # is the same for every GEMM of a kind whatever its rows or width, so a step pays
            # 2*pad*sum(K) extra on each device (the rate is over all tp devices); 0 for the
            # expert kernels' pad means the dense one
            per_k_s = 2.0 * tp / self.flops_rate
            self.pad_s = b.pad_k_dense * pad * per_k_s
            self.expert_pad_s = b.pad_k_expert * (expert_pad or pad) * per_k_s
        self.padded = bool(self.pad_s or self.expert_pad_s)
        self.gemm_floor_s = params.gemm_latency_s * b.gemm_kernels
        self.ep_ranks = b.ep_ranks
        self.ep_read_spread, self.ep_spread = b.ep_read_spread, b.ep_spread
        # the grouped expert kernels reach eff_expert of the dense GEMMs' rates: their work is
        # charged beyond its true amount, to the step's time and load (_expert_slowdown)
        slow = 1.0 / params.eff_expert - 1.0 if self.moe else 0.0
        self.expert_flops_s = 2.0 * layers * b.expert_params / self.flops_rate
        self.expert_flops_s *= 1.0 + slow
        self.expert_time_bytes = self.expert_bytes * (1.0 + slow)
        self.expert_extra_flops = slow * 2.0 * layers * b.experts_per_token * b.expert_params
        self.time_flops_per_token = self.flops_per_token + self.expert_extra_flops
        self.poison = NAN if self.missing else 0.0

        self.idle_w, self.dynamic_w = self._power_figures(b)
        self.k_compute = params.power_k_compute * params.eff_compute
        self.k_memory = params.power_k_memory * params.eff_memory
        # a decode run's load line (run_lines): per unit of FLOPs and bytes, then its parts
        self.load_c, self.load_m = self.k_compute / self.flops_rate, self.k_memory / self.bytes_rate
        # a decode step's token: its logits and its elementwise kernels included; the experts'
        # shortfall counts as load
        self.load_token = (
            self.load_c * (self.time_flops_per_token + self.head_flops)
            + self.load_m * self.act_bytes_per_token
        )
        self.load_context = self.load_c * self.attn_coef + self.load_m * self.kv_bytes_per_token
        self.load_base = self.load_m * self.base_weight_bytes + self.poison

    def _power_figures(self, b: StepBasis) -> tuple[float, float]:
        """Idle and dynamic watts of one device; the idle draw, where the catalog has none, is
        the engine terms' share of TDP."""
        if b.tdp_w is None:
            return NAN, NAN
        idle = b.idle_w
        if idle is None:
            idle = b.tdp_w * self.params.idle_fraction
            self.assumptions.append(
                f"{self.deployment.hardware.id} idle power not in the catalog: taken as "
                f"{self.params.idle_fraction:.0%} of TDP ({idle:.3g} W)"
            )
        return idle, b.tdp_w - idle

    # -- the hot path ---------------------------------------------------------------------

    def step_time(self, tokens: float, attn_work: float, kv_tokens: float, seqs: float) -> float:
        """Seconds for one step (see the module docstring for the arguments)."""
        flops = (
            self.time_flops_per_token * tokens
            + self.head_flops * seqs
            + self.attn_time_coef * attn_work
        )
        nbytes = self.base_weight_bytes + self.kv_time_bytes * kv_tokens
        if self.moe:
            nbytes += self.expert_time_bytes * (
                self.experts_read(tokens)
                if self.ep_ranks
                else self.n_experts * (1.0 - (1.0 - self.top_k / self.n_experts) ** tokens)
            )
        t_c = flops / self.flops_rate
        if self.padded:
            t_c += self.gemm_pad_s(tokens)
        if self.ep_ranks:
            t_c += self.expert_imbalance_s(tokens)
        t_m = nbytes / self.bytes_rate + self.gemm_floor_s
        return (
            (t_c if t_c > t_m else t_m)
            + self.comm_fixed
            + self.comm_per_token * tokens
            + self.act_time_per_token * tokens
            + self.overhead_fixed
            + self.overhead_seq * seqs
            + self.poison
        )

    def step(self, tokens: float, attn_work: float, kv_tokens: float, seqs: float) -> StepCost:
        """One step with its breakdown, power and energy."""
        attn_flops = self.attn_coef * attn_work
        kv_bytes = self.kv_bytes_per_token * kv_tokens
        flops = self.flops_per_token * tokens + self.head_flops * seqs + attn_flops
        nbytes = self.base_weight_bytes + kv_bytes
        waits = 0.0  # bytes the busiest expert-parallel device reads beyond an even share
        slow_f = slow_b = 0.0  # what the expert kernels' shortfall adds (_expert_slowdown)
        if self.moe:
            touched = self.touched(tokens)
            nbytes += self.expert_bytes * touched
            if self.expert_extra_flops:
                slow_f, slow_b = self._expert_slowdown(tokens, touched)
            if self.ep_ranks:
                waits = self.expert_time_bytes * (self.experts_read(tokens) - touched)
        extra = self.params.attn_factor - 1.0  # attention's part charged beyond its true amount
        t_c = (flops + extra * attn_flops + slow_f) / self.flops_rate + self.poison
        if self.padded:
            t_c += self.gemm_pad_s(tokens)
        if self.ep_ranks:
            t_c += self.expert_imbalance_s(tokens)
        t_m = (nbytes + extra * kv_bytes + slow_b + waits) / self.bytes_rate + self.gemm_floor_s
        t_m += self.poison
        comm = self.comm_fixed + self.comm_per_token * tokens
        overhead = self.overhead_fixed + self.overhead_seq * seqs
        act_s = self.act_time_per_token * tokens
        nbytes += self.act_bytes_per_token * tokens
        time_s = max(t_c, t_m) + act_s + comm + overhead
        power = self.power_w(*self._work_s(flops + slow_f, nbytes + slow_b), time_s)
        return StepCost(
            time_s, t_c, t_m, comm, overhead, flops, nbytes, power, power * time_s, act_s
        )

    def work_times(self, c: StepCost, tokens: float) -> tuple[float, float]:
        """The seconds the work of step `c` (of `tokens` tokens) takes at the modelled rates:
        what draws power (power_w). Its own FLOPs and bytes, and the MoE expert kernels'
        shortfall (they run through it); not the time small GEMMs, attention's factor or an
        expert-parallel wait add (the device is not busier for them, only slower)."""
        if not self.expert_extra_flops:
            return self._work_s(c.flops, c.bytes)
        slow_f, slow_b = self._expert_slowdown(tokens, self.touched(tokens))
        return self._work_s(c.flops + slow_f, c.bytes + slow_b)

    def touched(self, tokens: float) -> float:
        """Distinct experts a step of `tokens` tokens touches per MoE layer, in expectation
        under uniform top-k routing: E(1 - (1 - k/E)^T) (step_time inlines it: the hot path)."""
        touched: float = self.n_experts * (1.0 - (1.0 - self.top_k / self.n_experts) ** tokens)
        return touched

    def _expert_slowdown(self, tokens: float, touched: float) -> tuple[float, float]:
        """The FLOPs and bytes an MoE's grouped expert kernels take beyond their own in a step
        of `tokens` tokens touching `touched` experts, reaching eff_expert of the dense rates.
        Charged to the step's time and to its load: the kernels stay busy through it. Counted
        as time alone, held-out MoE steps on an H200 drew 20% more than predicted; as load,
        within 5% (docs/model.md)."""
        extra_bytes = (self.expert_time_bytes - self.expert_bytes) * touched
        return self.expert_extra_flops * tokens, extra_bytes

    def _work_s(self, flops: float, nbytes: float) -> tuple[float, float]:
        return flops / self.flops_rate + self.poison, nbytes / self.bytes_rate

    def gemm_pad_s(self, tokens: float) -> float:
        """Seconds of padded GEMM work in a step of `tokens` tokens: the dense GEMMs' pad, and
        for MoE the fused expert kernels' (vLLM's fused_moe): one wave's pad for each of the
        two grouped kernels, and each touched expert's rows rounded up to the kernel's block
        of rows (`_expert_pad_rows`). Top-k routing of T tokens touches n = E(1 - (1 - k/E)^T)
        experts, Tk/n rows each on average."""
        if not self.moe:
            return self.pad_s
        touched = self.touched(tokens)
        if touched <= 0.0:
            return self.pad_s + self.expert_pad_s
        rows = _expert_pad_rows(tokens * self.top_k / touched)
        return self.pad_s + self.expert_pad_s + touched * rows * self.expert_flops_s

    def experts_read(self, tokens: float) -> float:
        """Experts whose weights a step of `tokens` tokens reads, as the step time counts them.

        Top-k routing of T tokens touches E(1 - (1 - k/E)^T) distinct experts in expectation.
        Under expert parallelism each device reads only its own E/R experts, each touched with
        probability p = 1 - (1 - k/E)^T, and the step waits for the device that reads the
        most: the mean E p / R plus sqrt(E p (1 - p) / R) times the expected largest of R
        standard normals (`stepbasis._busiest_spread`), capped at E/R, counted R times
        against the step's bandwidth over all R devices."""
        e = self.n_experts
        if not self.ep_ranks:
            return self.touched(tokens)
        p = self.touched(tokens) / e
        r = self.ep_ranks
        local = e / r
        busiest = local * p + self.ep_read_spread * math.sqrt(local * p * (1.0 - p))
        return r * (local if busiest > local else busiest)

    def busiest_load(self, tokens: float) -> float:
        """Expected expert assignments (token, expert) on the busiest of the `tp` devices of an
        expert-parallel layer, under uniform top-k routing of `tokens` tokens.

        A token's k distinct experts fall on the R devices (E/R experts each) as a
        hypergeometric draw, so a device's load over T tokens has mean Tk/R and variance
        Tk(1/R)(1 - 1/R)(E - k)/(E - 1); the loads sum to Tk, so any two correlate at
        -1/(R - 1). The expected largest of R such loads is taken as the mean plus the
        standard deviation times E[max of R exchangeable normals with that correlation],
        sqrt(R / (R - 1)) times that of independent ones (`stepbasis._busiest_spread`; a
        normal approximation of the loads; exact for R = 2: sqrt(2/pi)), capped at the most a device
        can take, T min(k, E/R)."""
        r, e, k = self.ep_ranks, self.n_experts, self.top_k
        mean = tokens * k / r
        sd = math.sqrt(tokens * k * (1.0 / r) * (1.0 - 1.0 / r) * (e - k) / (e - 1.0))
        most = tokens * min(k, e / r)
        busiest = mean + self.ep_spread * sd
        return most if busiest > most else busiest

    def expert_imbalance_s(self, tokens: float) -> float:
        """Seconds the busiest expert-parallel device computes beyond a perfectly balanced
        share of the step's expert work (the step's rate is over all devices)."""
        excess = self.busiest_load(tokens) * self.ep_ranks - tokens * self.top_k
        return excess * self.expert_flops_s if excess > 0.0 else 0.0

    def power_w(self, compute_s: float, memory_s: float, time_s: float) -> float:
        """Power of all devices during a step of `time_s` whose work takes `compute_s` and
        `memory_s` at the modelled rates (work_times). The rest of the step (engine overheads,
        launches, all-reduces, small GEMMs' padding and latency) adds time but no load: the
        GPU waits through it (docs/model.md)."""
        if time_s <= 0:
            return self.devices * self.idle_w
        load = (self.k_compute * compute_s + self.k_memory * memory_s) / time_s
        # at most 1, and NaN where the step's time is unknown (min(1.0, nan) is 1.0: a step of
        # unknown time had drawn the devices' TDP)
        capped = 1.0 if load >= 1.0 else load
        return self.devices * self.idle_w + self.busy_devices * self.dynamic_w * capped

    def prefill(self, batch: int, prompt_tokens: int, cached_tokens: int = 0) -> StepCost:
        """One prefill of `prompt_tokens` new tokens for each of `batch` sequences."""
        p, c = float(prompt_tokens), float(cached_tokens)
        attn = batch * (p * c + p * (p + 1) / 2)
        return self.step(batch * p, attn, batch * (c + p), batch)

    def batch_prefill(self, batch: int, prompt_tokens: int) -> StepCost:
        """The prefill of `batch` prompts of `prompt_tokens` arriving together, in the steps
        the deployment's token budget (max_batched_tokens) cuts it into, as the engine runs it
        (`prefill_chunks`): their summed time, terms and energy, power over the whole. One
        step, `prefill`'s, where the batch fits the budget. `estimate`'s TTFT: until
        2026-12-07 it was one step of every token whatever the budget, 16x below `simulate`'s
        for a 512-token prompt at a budget of 16."""
        shapes = prefill_shapes(batch, prompt_tokens, self.deployment.max_batched_tokens)
        if len(shapes) == 1 and shapes[0][1] == 1:
            return self.step(*shapes[0][0])
        costs = [self.step(*shape) for shape, _ in shapes]
        total = StepCost(
            *(
                math.fsum(x * n for x, (_, n) in zip(column, shapes, strict=True))
                for column in zip(*costs, strict=True)
            )
        )
        return total._replace(power_w=total.energy_j / total.time_s)

    def batch_prefill_s(self, batch: int, prompt_tokens: int) -> float:
        """`batch_prefill(batch, prompt_tokens).time_s`, on the hot path (rank's bisection)."""
        shapes = prefill_shapes(batch, prompt_tokens, self.deployment.max_batched_tokens)
        return math.fsum(self.step_time(*shape) * n for shape, n in shapes)

    def decode_step(self, batch: int, context_tokens: int) -> StepCost:
        """One decode step for `batch` sequences whose KV cache holds `context_tokens` each."""
        c = float(context_tokens)
        return self.step(batch, batch * (c + 1), batch * (c + 1), batch)

    @property
    def idle_power_w(self) -> float:
        return self.devices * self.idle_w


PrefillStep = tuple[float, float, float, float]  # tokens, attn_work, kv_tokens, seqs


def prefill_shapes(batch: int, prompt_tokens: int, budget: int) -> list[tuple[PrefillStep, int]]:
    """`prefill_chunks`'s steps as (shape, how many), each shape costed once: whole prompts
    that tile the budget (a power of two of each) make runs of one shape, counted here without
    listing them (64 x 2,048 tokens at 8,192 a step: 16 alike; costing every step had made
    estimate 30% slower and rank 3x)."""
    p = prompt_tokens

    def whole(n: int) -> PrefillStep:  # a step of n whole prompts
        return (float(n * p), n * p * (p + 1) / 2, float(n * p), float(n))

    if batch * p <= budget:  # one step
        return [(whole(batch), 1)]
    if budget % p == 0:  # whole prompts, k a step, none cut across two
        k = budget // p
        full, rest = divmod(batch, k)
        return [(whole(k), full)] + ([(whole(rest), 1)] if rest else [])
    return list(Counter(prefill_chunks(batch, p, budget)).items())


def prefill_chunks(batch: int, prompt_tokens: int, budget: int) -> list[PrefillStep]:
    """The steps that prefill `batch` prompts of `prompt_tokens` arriving together on an idle
    engine whose steps take at most `budget` tokens, as EngineModel schedules them: in order,
    each step going on with the prompt under way, then starting the next while tokens are left
    (vLLM's chunked prefill). A chunk of q tokens after c computed attends to c + 1 ... c + q
    and reads c + q tokens of KV cache. The decode tokens an engine also gives the sequences
    whose prefill ended in an earlier step are not counted: this is the batch's prefill,
    which `batch_run` follows with its decode steps."""
    steps: list[PrefillStep] = []
    p = prompt_tokens
    left, done = batch, 0  # prompts not finished; tokens of the one under way
    while left:
        room, tokens, attn, kv, seqs = budget, 0.0, 0.0, 0.0, 0
        if done:  # the prompt under way first
            q = min(p - done, room)
            tokens, attn, kv, seqs = q, q * done + q * (q + 1) / 2, done + q, 1
            room, done = room - q, done + q
            if done == p:
                left, done = left - 1, 0
        whole = min(room // p, left) if not done else 0  # prompts that fit whole
        if whole:
            tokens += whole * p
            attn += whole * p * (p + 1) / 2
            kv += whole * p
            seqs += whole
            room, left = room - whole * p, left - whole
        if left and room and not done:  # the next one's first chunk
            q = room
            tokens, attn, kv, seqs = tokens + q, attn + q * (q + 1) / 2, kv + q, seqs + 1
            done = q
        steps.append((tokens, attn, kv, seqs))
    return steps


def _expert_pad_rows(rows: float) -> float:
    """Rows a fused MoE kernel computes beyond an expert's own, when its experts get `rows`
    rows each on average. vLLM's fused_moe sorts the tokens by expert and pads each expert's
    rows to a multiple of BLOCK_SIZE_M; its tuned configurations pick a block near the rows an
    expert gets (for Qwen3-30B-A3B on H100, E=128 N=768: 16 up to 128 tokens, 32 at 256, 64
    at 512-1,024, 128 from 1,536), so the block is taken as the power of two at or above
    `rows`, from 16 to 128. An expert under half a block is padded to one block (block - r);
    one with more wastes half a block in expectation."""
    block = 16.0
    while block < rows and block < 128.0:
        block *= 2.0
    return block - rows if rows < 0.5 * block else 0.5 * block


@lru_cache(maxsize=4096)
def perf_model(dep: Deployment, params: EngineParams) -> PerfModel:
    """A PerfModel, built once per (deployment, parameters) pair."""
    return PerfModel(dep, params)


def _lin(a: float, d: float, j0: int, j1: int) -> float:
    """Sum of a + d*j for integer j in [j0, j1]."""
    n = j1 - j0 + 1
    return n * a + d * (j0 + j1) * n / 2.0 if n > 0 else 0.0


def _sum_extreme(a1: float, d1: float, a2: float, d2: float, j0: int, j1: int, hi: bool) -> float:
    """Sum over integer j in [j0, j1] of max (hi) or min of two lines a + d*j."""
    if j1 < j0:
        return 0.0
    if d1 != d2:
        x = (a2 - a1) / (d1 - d2)  # where the lines cross
        if j0 <= x < j1:
            k = math.floor(x)
            return _sum_extreme(a1, d1, a2, d2, j0, k, hi) + _sum_extreme(
                a1, d1, a2, d2, k + 1, j1, hi
            )
    mid = (j0 + j1) / 2.0
    first = (a1 + d1 * mid >= a2 + d2 * mid) == hi
    return _lin(a1, d1, j0, j1) if first else _lin(a2, d2, j0, j1)


# (tc0, dtc, tm0, dtm, fixed, la, ld): step j's compute and memory time (tc0 + dtc*j, ...), its
# time that does not depend on j, and its power load line la + ld*j (see run_lines)
RunLines = tuple[float, float, float, float, float, float, float]


def run_lines(pm: PerfModel, seqs: int, kv0: float) -> RunLines:
    """A run of decode steps of `seqs` sequences whose first step reads `kv0` KV tokens in
    total (each later step reads `seqs` more): compute and memory time of step j as lines
    (tc0 + dtc*j, tm0 + dtm*j), the part of the step time that does not depend on j, and the
    load line la + ld*j: k_c times the step's own compute seconds plus k_m times its memory
    seconds (PerfModel.work_times), which power_w divides by the step time."""
    s = float(seqs)
    tc0 = ((pm.time_flops_per_token + pm.head_flops) * s + pm.attn_time_coef * kv0) / pm.flops_rate
    tm0 = (pm.base_weight_bytes + pm.kv_time_bytes * kv0) / pm.bytes_rate
    if pm.moe:
        tm0 += pm.expert_time_bytes * pm.experts_read(s) / pm.bytes_rate
    dtc = pm.attn_time_coef * s / pm.flops_rate
    if pm.padded:
        tc0 += pm.gemm_pad_s(s)
    if pm.ep_ranks:
        tc0 += pm.expert_imbalance_s(s)
    tm0 += pm.gemm_floor_s
    dtm = pm.kv_time_bytes * s / pm.bytes_rate
    fixed = (
        pm.comm_fixed
        + (pm.comm_per_token + pm.act_time_per_token) * s
        + pm.overhead_fixed
        + pm.overhead_seq * s
        + pm.poison
    )
    # the load line from the steps' own FLOPs and bytes (the step's, not experts_read's count)
    la = pm.load_token * s + pm.load_context * kv0 + pm.load_base
    if pm.moe:
        la += pm.load_m * pm.expert_time_bytes * pm.touched(s)
    return tc0, dtc, tm0, dtm, fixed, la, pm.load_context * s


def _one_bound_time(a: float, d: float, fixed: float, steps: int) -> float:
    """Seconds of `steps` steps whose bound is the line a + d*j throughout. decode_run computes
    the very same expression, so that a cut found by search ends exactly where planned."""
    t0, tl = a + fixed, a + d * (steps - 1) + fixed
    return steps * (t0 + tl) / 2.0


def lines_time(lines: RunLines, steps: int) -> float:
    """Seconds of the first `steps` steps of a decode run described by `lines`."""
    tc0, dtc, tm0, dtm, fixed, _, _ = lines
    last = steps - 1
    if (tc0 >= tm0) == (tc0 + dtc * last >= tm0 + dtm * last):
        return _one_bound_time(*((tc0, dtc) if tc0 >= tm0 else (tm0, dtm)), fixed, steps)
    return _sum_extreme(tc0, dtc, tm0, dtm, 0, last, True) + steps * fixed


def lines_steps_within(lines: RunLines, steps: int, elapsed: float, strict: bool = False) -> int:
    """The number of whole steps, out of `steps`, that end within `elapsed` seconds (strictly
    before it, when `strict`)."""
    tc0, dtc, tm0, dtm, fixed, _, _ = lines
    last = steps - 1
    if steps > 1 and (tc0 >= tm0) == (tc0 + dtc * last >= tm0 + dtm * last):
        # one bound throughout: time(k) = k*a + d*k*(k-1)/2, solve the quadratic, then settle
        # the rounding with the expression decode_run uses
        a, d = (tc0, dtc) if tc0 >= tm0 else (tm0, dtm)
        af = a + fixed
        if d > 0:
            k = int((-(af - d / 2) + math.sqrt((af - d / 2) ** 2 + 2 * d * elapsed)) / d)
        else:
            k = int(elapsed / af) if af > 0 else steps
        k = max(0, min(steps, k))
        if strict:
            while k < steps and _one_bound_time(a, d, fixed, k + 1) < elapsed:
                k += 1
            while k > 0 and _one_bound_time(a, d, fixed, k) >= elapsed:
                k -= 1
        else:
            while k < steps and _one_bound_time(a, d, fixed, k + 1) <= elapsed:
                k += 1
            while k > 0 and _one_bound_time(a, d, fixed, k) > elapsed:
                k -= 1
        return k
    lo, hi = 0, steps
    while lo < hi:
        mid = (lo + hi + 1) // 2
        t = lines_time(lines, mid)
        if t < elapsed or (t == elapsed and not strict):
            lo = mid
        else:
            hi = mid - 1
    return lo


def decode_run(pm: PerfModel, lines: RunLines, steps: int) -> tuple[float, float, float]:
    """(seconds, joules, peak watts) of the first `steps` steps of the decode run `lines`
    describes (see run_lines), as a plain tuple: the simulator calls this per event.

    Every term of a decode step is linear in the step index j except the max() of compute and
    memory time and the min() of the power curve, so the sums are exact over the linear pieces
    between their crossings: O(1) however many steps, and equal to stepping them one by one
    (what `simulate --exact` does).
    """
    tc0, dtc, tm0, dtm, fixed, la, ld = lines  # la + ld*j: the load line (see run_lines)
    last = steps - 1
    tcl, tml = tc0 + dtc * last, tm0 + dtm * last
    if (tc0 >= tm0) == (tcl >= tml):
        # the common case: one bound throughout (decode is usually memory-bound)
        a, d = (tc0, dtc) if tc0 >= tm0 else (tm0, dtm)
        t0, tl = a + fixed, a + d * last + fixed
        if (la >= t0) == (la + ld * last >= tl):
            time_s = steps * (t0 + tl) / 2.0  # _one_bound_time(a, d, fixed, steps), inline
            dyn = time_s if la >= t0 else steps * (la + la + ld * last) / 2.0
            u0, ul = la / t0, (la + ld * last) / tl
            idle, busy = pm.devices * pm.idle_w, pm.busy_devices * pm.dynamic_w
            # held at 1, NaN kept (as power_w)
            p0 = idle + busy * (1.0 if u0 >= 1.0 else u0)
            pl = idle + busy * (1.0 if ul >= 1.0 else ul)
            energy = idle * time_s + busy * dyn
            return time_s, energy, p0 if p0 > pl else pl
    time_s = _sum_extreme(tc0, dtc, tm0, dtm, 0, last, True) + steps * fixed
    # energy_j(j) = devices * idle * t(j) + busy_devices * dynamic * min(t(j), L(j)),
    # L = la + ld*j
    cross = (tm0 - tc0) / (dtc - dtm) if dtc != dtm else -1.0
    k = (
        math.floor(cross)
        if 0 <= cross < last
        else (last if tc0 + dtc * last / 2 >= tm0 + dtm * last / 2 else -1)
    )
    # pieces: [0, k] where compute leads or not, then [k+1, last]
    pieces = []
    if 0 <= cross < last:
        c_first = tc0 >= tm0
        pieces = [(0, k, c_first), (k + 1, last, not c_first)]
    else:
        pieces = [(0, last, tc0 + dtc * last / 2 >= tm0 + dtm * last / 2)]
    dyn = 0.0
    for j0, j1, compute_leads in pieces:
        a, d = (tc0, dtc) if compute_leads else (tm0, dtm)
        dyn += _sum_extreme(a + fixed, d, la, ld, j0, j1, False)
    energy_j = pm.devices * pm.idle_w * time_s + pm.busy_devices * pm.dynamic_w * dyn

    def power(j: float) -> float:
        tj = max(tc0 + dtc * j, tm0 + dtm * j) + fixed
        u = (la + ld * j) / tj
        return pm.devices * pm.idle_w + pm.busy_devices * pm.dynamic_w * (1.0 if u >= 1.0 else u)

    peak = max(power(0.0), power(float(last)))
    if 0 <= cross < last:
        peak = max(peak, power(float(k)), power(float(k + 1)))
    return time_s, energy_j, peak
