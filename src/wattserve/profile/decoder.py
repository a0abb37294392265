"""A synthetic decoder with a model's exact shapes and random weights, for timing only.

No weights are downloaded: the point is to time the same matrix and attention work a real
forward pass does. The array library is a small Backend (NumPy on the CPU, PyTorch on a GPU).
"""

from __future__ import annotations

import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from wattserve.core.modelspec import ModelSpec


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a device running out of memory (PyTorch's OutOfMemoryError is a
    RuntimeError whose message says so), not a kernel or recording that failed."""
    return "out of memory" in str(exc).lower()


class Backend(ABC):
    """The few array operations the decoder needs."""

    name: str
    dtype: str

    @abstractmethod
    def randn(self, *shape: int) -> Any: ...

    @abstractmethod
    def zeros(self, *shape: int) -> Any: ...

    @abstractmethod
    def softmax_last(self, x: Any) -> Any: ...

    @abstractmethod
    def silu(self, x: Any) -> Any: ...

    @abstractmethod
    def rmsnorm(self, x: Any) -> Any: ...

    @abstractmethod
    def causal_mask(self, q: int, ctx: int) -> Any:
        """Additive mask (q, ctx): -inf where a query would see a later token."""

    @abstractmethod
    def tokens(self, batch: int, length: int, vocab: int) -> Any: ...

    @abstractmethod
    def permute(self, x: Any, axes: tuple[int, ...]) -> Any: ...

    @abstractmethod
    def sync(self) -> None: ...

    def free(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release cached device memory (no-op on the CPU)."""

    @abstractmethod
    def topk_last(self, x: Any, k: int) -> tuple[Any, Any]:
        """The `k` largest values along the last axis and their indices."""

    @abstractmethod
    def group_rows(self, chosen: Any, n: int) -> list[tuple[int, Any, Any]]:
        """For `chosen` (rows, k) indices below `n`: each index that occurs, with the rows that
        chose it and the positions of those choices in `chosen` flattened (one host read)."""

    @abstractmethod
    def index_add(self, out: Any, rows: Any, values: Any) -> Any:
        """`out[rows] += values`, rows repeated or not; returns `out`."""

    def grouped_experts(
        self, h: Any, chosen: Any, weights: Any, w: tuple[Any, Any], act: Callable[[Any], Any]
    ) -> Any | None:
        """Every token's top-k experts as one grouped matrix multiply per weight (rows sorted
        by expert, as fused MoE kernels do), with no read of the routing on the host; the
        weighted sum per token. None where the backend has no grouped multiply."""
        return None

    def attention(self, q: Any, k: Any, v: Any, start: int) -> Any:
        """Causal attention of q (b, heads, q, hd) over k, v (b, kv_heads, start + q, hd),
        heads grouped kv-head-major (GQA); (b, heads, q, hd). Plain matmul-softmax-matmul."""
        b, nh, nq, hd = q.shape
        nkv, ctx = k.shape[1], start + nq
        group = nh // nkv
        # a kv head's query heads stacked as rows of one matrix: a plain batched matmul over
        # (b, kv head). Broadcasting k over the group instead makes PyTorch copy the cache once
        # per query head (20x slower on the CPU at 4k context; NumPy does not copy).
        qg = q.reshape(b, nkv, group * nq, hd)
        scores = (qg @ self.permute(k, (0, 1, 3, 2))) * (hd**-0.5)
        if nq > 1:
            scores = scores.reshape(b, nkv, group, nq, ctx) + self.causal_mask(nq, ctx)
            scores = scores.reshape(b, nkv, group * nq, ctx)
        return (self.softmax_last(scores) @ v).reshape(b, nh, nq, hd)

    def capture(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """`fn` as a replayable recording where the backend has one (CUDA graphs); else `fn`."""
        return fn


class SyntheticDecoder:
    """Forward passes of `spec`. An MoE layer holds all its experts and a random router: each
    token goes to its top-k experts, and only the experts some token chose run, each on the
    tokens routed to it (so a step reads the distinct experts its batch touches); a shared
    expert, where the model has one, runs on every token.

    A step's tokens are spread over the experts as a trained router spreads them (`route_bias`).
    `expert_layout` is how the stacked expert weights lie in memory: "in_out" (experts, in,
    out) or "out_in" (experts, out, in: nn.Linear's and vLLM's), multiplied as its transpose."""

    def __init__(self, spec: ModelSpec, backend: Backend, expert_layout: str = "in_out") -> None:
        if expert_layout not in ("in_out", "out_in"):
            raise ValueError(f"expert_layout must be in_out or out_in, not {expert_layout!r}")
        self.spec = spec
        self.be = backend
        self.expert_layout = expert_layout
        d, hd = spec.hidden_size, spec.head_dim
        qkv = (spec.num_heads + 2 * spec.num_kv_heads) * hd
        ffn = spec.expert_intermediate_size or spec.intermediate_size
        scale = 0.02
        self.embed = backend.randn(spec.vocab_size, d) * scale
        self.layers: list[dict[str, Any]] = []
        for _ in range(spec.num_layers):
            layer: dict[str, Any] = {
                "qkv": backend.randn(d, qkv) * scale,
                "o": backend.randn(spec.num_heads * hd, d) * scale,
            }
            if spec.is_moe:  # all experts stacked: (experts, d, 2 ffn) and (experts, ffn, d)
                layer["experts"] = self._mlp_weights(ffn, scale, spec.num_experts)
                layer["router"] = backend.randn(d, spec.num_experts) * scale
            else:
                layer["mlp"] = self._mlp_weights(ffn, scale)
            if spec.shared_intermediate_size:
                layer["shared"] = self._mlp_weights(spec.shared_intermediate_size, scale)
            self.layers.append(layer)
        self.lm_head = backend.randn(d, spec.vocab_size) * scale
        self.k_cache: list[Any] = []
        self.v_cache: list[Any] = []
        # MoE: one grouped multiply per weight where the backend has it and it runs on these
        # shapes (no host read of the routing: a CUDA graph can hold it); else a loop
        self.grouped = spec.is_moe and self._grouped_runs()

    def _grouped_runs(self) -> bool:
        be, layer = self.be, self.layers[0]
        h = be.randn(2, self.spec.hidden_size)
        weights, chosen = be.topk_last(h @ layer["router"], self.spec.experts_per_token)
        try:
            routed = be.grouped_experts(h, chosen, weights, layer["experts"], self._gated)
            be.sync()
        except RuntimeError:  # an old PyTorch, a shape it refuses (NotImplementedError too)
            return False
        return routed is not None

    def _mlp_weights(self, ffn: int, scale: float, experts: int = 0) -> tuple[Any, Any]:
        """Gate and up projections as one (d, 2 ffn) matrix, as engines fuse them, and the
        down projection; with `experts`, that many of each stacked (in `expert_layout`; an
        out_in stack is held as its transposed view, so the products read it as it lies)."""
        d, be = self.spec.hidden_size, self.be
        if not experts:
            return (be.randn(d, 2 * ffn) * scale, be.randn(ffn, d) * scale)
        if self.expert_layout == "in_out":
            return (be.randn(experts, d, 2 * ffn) * scale, be.randn(experts, ffn, d) * scale)
        gate_up, down = be.randn(experts, 2 * ffn, d) * scale, be.randn(experts, d, ffn) * scale
        return (be.permute(gate_up, (0, 2, 1)), be.permute(down, (0, 2, 1)))

    def route_bias(self, rows: int) -> Any:
        """Routing logits of a step's `rows` tokens that outweigh the router's (None for a
        dense model). Trained routers spread a batch's tokens evenly over the experts (their
        load-balancing losses see to it), as docs/model.md's expected count of distinct
        experts assumes. A random router over random weights does not: within one prompt,
        attention makes the tokens alike layer after layer, and a 128-token prefill of
        qwen3-30b-a3b (128 experts, top-8) touched 92, 42, 33, 31, 34 and 27 experts in its
        first six layers on an H200, where even routing touches 128 (benchmarks/moe_kernels.py,
        tests/data/gpu_grid_h200_2026-12-04/moe-kernels). So each token draws its own random
        preference over the experts, shared by the step's layers."""
        if not self.spec.is_moe:
            return None
        return self.be.randn(rows, self.spec.num_experts) * 64.0

    def reset_cache(self, batch: int, tokens: int) -> None:
        """A fresh KV cache for `batch` sequences of up to `tokens` tokens."""
        s, be = self.spec, self.be
        self.k_cache = self.v_cache = []
        be.free()
        shape = (batch, s.num_kv_heads, tokens, s.head_dim)
        self.k_cache = [be.zeros(*shape) for _ in range(s.num_layers)]
        self.v_cache = [be.zeros(*shape) for _ in range(s.num_layers)]

    def forward(self, tokens: Any, start: int, route_bias: Any = None) -> Any:
        """Run new `tokens` (batch, q) whose cache already holds `start` tokens; last logits.
        `route_bias`: the MoE's routing preference of each of the b*q tokens (route_bias)."""
        s, be = self.spec, self.be
        b, q = tokens.shape
        nh, nkv, hd = s.num_heads, s.num_kv_heads, s.head_dim
        end = start + q
        x = self.embed[tokens]
        for i, layer in enumerate(self.layers):
            h = be.rmsnorm(x)
            qkv = h @ layer["qkv"]
            qh = be.permute(qkv[..., : nh * hd].reshape(b, q, nh, hd), (0, 2, 1, 3))
            k = be.permute(qkv[..., nh * hd : (nh + nkv) * hd].reshape(b, q, nkv, hd), (0, 2, 1, 3))
            v = be.permute(qkv[..., (nh + nkv) * hd :].reshape(b, q, nkv, hd), (0, 2, 1, 3))
            self.k_cache[i][:, :, start:end] = k
            self.v_cache[i][:, :, start:end] = v
            attn = be.attention(qh, self.k_cache[i][:, :, :end], self.v_cache[i][:, :, :end], start)
            x = x + be.permute(attn, (0, 2, 1, 3)).reshape(b, q, nh * hd) @ layer["o"]
            h = be.rmsnorm(x).reshape(b * q, s.hidden_size)
            x = x + self.mlp(h, layer, route_bias).reshape(b, q, s.hidden_size)
        return be.rmsnorm(x[:, -1]) @ self.lm_head

    def mlp(self, h: Any, layer: dict[str, Any], route_bias: Any = None) -> Any:
        """The feed-forward part of one layer for rows `h` (tokens, hidden); `route_bias`
        added to the router's logits (route_bias)."""
        if not self.spec.is_moe:
            return self._expert(h, layer["mlp"])
        be = self.be
        logits = h @ layer["router"]
        probs = be.softmax_last(logits if route_bias is None else logits + route_bias)
        weights, chosen = be.topk_last(probs, self.spec.experts_per_token)
        out = self._expert(h, layer["shared"]) if "shared" in layer else be.zeros(*h.shape)
        gate_up, down = layer["experts"]
        if self.grouped:  # probed at construction: the backend's grouped multiply runs
            return out + be.grouped_experts(h, chosen, weights, (gate_up, down), self._gated)
        weights = weights.reshape(-1)
        for e, rows, picks in be.group_rows(chosen, self.spec.num_experts):
            y = self._expert(h[rows], (gate_up[e], down[e])) * weights[picks][:, None]
            out = be.index_add(out, rows, y)
        return out

    def _gated(self, gate_up: Any) -> Any:
        """silu(gate) * up, from the fused projection's two halves."""
        f = gate_up.shape[-1] // 2
        return self.be.silu(gate_up[..., :f]) * gate_up[..., f:]

    def _expert(self, h: Any, w: tuple[Any, Any]) -> Any:
        return self._gated(h @ w[0]) @ w[1]

    def prefill_step(self, batch: int, prompt: int) -> Callable[[], Any]:
        """One prefill of `prompt` tokens for `batch` sequences, ready to run (and rerun)."""
        toks = self.be.tokens(batch, prompt, self.spec.vocab_size)
        bias = self.route_bias(batch * prompt)
        self.reset_cache(batch, prompt)
        return lambda: self.forward(toks, 0, bias)

    def decode_step(self, batch: int, context: int) -> Callable[[], Any]:
        """One decode step for `batch` sequences at `context` tokens, ready to run (and rerun:
        each run writes the same cache slot)."""
        toks = self.be.tokens(batch, 1, self.spec.vocab_size)
        bias = self.route_bias(batch)
        self.reset_cache(batch, context + 1)
        return lambda: self.forward(toks, context, bias)

    @property
    def recordable(self) -> bool:
        """Whether a step can be recorded once and replayed (a CUDA graph): not where the MoE's
        expert loop reads its routing on the host."""
        return not self.spec.is_moe or self.grouped

    def recorded(self, step: Callable[[], Any]) -> tuple[Callable[[], Any], str]:
        """`step` recorded once and replayed where it can be, as serving engines run their
        steps (vLLM's CUDA graphs: every kernel launched at once); with how it runs: "graph",
        or "eager" and why not. A failed recording leaves the step eager; running out of
        memory is not a failed recording and is raised."""
        if not self.recordable:
            return step, "eager (the MoE expert loop reads its routing on the host)"
        try:
            replay = self.be.capture(step)
        except RuntimeError as exc:
            if out_of_memory(exc):
                raise
            self.be.sync()
            return step, f"eager (recording failed: {type(exc).__name__}: {str(exc)[:200]})"
        return replay, ("graph" if replay is not step else "eager")

    def time_prefill(self, batch: int, prompt: int, repeats: int = 3) -> float:
        """Median seconds of one prefill of `prompt` tokens for `batch` sequences."""
        return self.time_step(self.recorded(self.prefill_step(batch, prompt))[0], repeats)

    def time_decode(self, batch: int, context: int, repeats: int = 5) -> float:
        """Median seconds of one decode step for `batch` sequences at `context` tokens."""
        return self.time_step(self.recorded(self.decode_step(batch, context))[0], repeats)

    def time_step(self, fn: Any, repeats: int) -> float:
        """Median seconds of `fn` (a warm-up first), synchronised after each run."""
        fn()  # warm-up
        self.be.sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            self.be.sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def release(self) -> None:
        self.embed = self.lm_head = None
        self.layers = []
        self.k_cache = self.v_cache = []
        self.be.free()
