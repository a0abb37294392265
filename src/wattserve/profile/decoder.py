"""A synthetic decoder with a model's exact shapes and random weights, for timing only.

No weights are downloaded: the point is to time the same matrix and attention work a real
forward pass does. The array library is a small Backend (NumPy on the CPU, PyTorch on a GPU).
"""

from __future__ import annotations

import statistics
import time
from abc import ABC, abstractmethod
from typing import Any

from wattserve.core.modelspec import ModelSpec


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


class SyntheticDecoder:
    """Forward passes of `spec` (dense part only: MoE layers run their selected experts)."""

    def __init__(self, spec: ModelSpec, backend: Backend) -> None:
        self.spec = spec
        self.be = backend
        d, hd = spec.hidden_size, spec.head_dim
        qkv = (spec.num_heads + 2 * spec.num_kv_heads) * hd
        ffn = spec.expert_intermediate_size or spec.intermediate_size
        scale = 0.02
        self.embed = backend.randn(spec.vocab_size, d) * scale
        self.layers = []
        experts = spec.experts_per_token
        for _ in range(spec.num_layers):
            self.layers.append(
                {
                    "qkv": backend.randn(d, qkv) * scale,
                    "o": backend.randn(spec.num_heads * hd, d) * scale,
                    "gate": [backend.randn(d, ffn) * scale for _ in range(experts)],
                    "up": [backend.randn(d, ffn) * scale for _ in range(experts)],
                    "down": [backend.randn(ffn, d) * scale for _ in range(experts)],
                }
            )
        self.lm_head = backend.randn(d, spec.vocab_size) * scale
        self.k_cache: list[Any] = []
        self.v_cache: list[Any] = []

    def reset_cache(self, batch: int, tokens: int) -> None:
        """A fresh KV cache for `batch` sequences of up to `tokens` tokens."""
        s, be = self.spec, self.be
        self.k_cache = self.v_cache = []
        be.free()
        shape = (batch, s.num_kv_heads, tokens, s.head_dim)
        self.k_cache = [be.zeros(*shape) for _ in range(s.num_layers)]
        self.v_cache = [be.zeros(*shape) for _ in range(s.num_layers)]

    def forward(self, tokens: Any, start: int) -> Any:
        """Run new `tokens` (batch, q) whose cache already holds `start` tokens; last logits."""
        s, be = self.spec, self.be
        b, q = tokens.shape
        nh, nkv, hd = s.num_heads, s.num_kv_heads, s.head_dim
        group = nh // nkv
        end = start + q
        mask = be.causal_mask(q, end) if q > 1 else None
        x = self.embed[tokens]
        for i, layer in enumerate(self.layers):
            h = be.rmsnorm(x)
            qkv = h @ layer["qkv"]
            qh = be.permute(qkv[..., : nh * hd].reshape(b, q, nkv, group, hd), (0, 2, 3, 1, 4))
            k = be.permute(qkv[..., nh * hd : (nh + nkv) * hd].reshape(b, q, nkv, hd), (0, 2, 1, 3))
            v = be.permute(qkv[..., (nh + nkv) * hd :].reshape(b, q, nkv, hd), (0, 2, 1, 3))
            self.k_cache[i][:, :, start:end] = k
            self.v_cache[i][:, :, start:end] = v
            keys = self.k_cache[i][:, :, None, :end]  # (b, nkv, 1, end, hd)
            vals = self.v_cache[i][:, :, None, :end]
            scores = (qh @ be.permute(keys, (0, 1, 2, 4, 3))) * (hd**-0.5)  # (b, nkv, g, q, end)
            if mask is not None:
                scores = scores + mask
            attn = be.softmax_last(scores) @ vals  # (b, nkv, g, q, hd)
            attn = be.permute(attn, (0, 3, 1, 2, 4)).reshape(b, q, nh * hd)
            x = x + attn @ layer["o"]
            h = be.rmsnorm(x)
            for gate, up, down in zip(layer["gate"], layer["up"], layer["down"], strict=True):
                x = x + (be.silu(h @ gate) * (h @ up)) @ down
        return be.rmsnorm(x[:, -1]) @ self.lm_head

    def time_prefill(self, batch: int, prompt: int, repeats: int = 3) -> float:
        """Median seconds of one prefill of `prompt` tokens for `batch` sequences."""
        toks = self.be.tokens(batch, prompt, self.spec.vocab_size)
        self.reset_cache(batch, prompt)
        return self._median(lambda: self.forward(toks, 0), repeats)

    def time_decode(self, batch: int, context: int, repeats: int = 5) -> float:
        """Median seconds of one decode step for `batch` sequences at `context` tokens."""
        toks = self.be.tokens(batch, 1, self.spec.vocab_size)
        self.reset_cache(batch, context + 1)
        return self._median(lambda: self.forward(toks, context), repeats)

    def _median(self, fn: Any, repeats: int) -> float:
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
