"""Array backends for the synthetic decoder: NumPy (CPU) and PyTorch (GPU or CPU)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from wattserve.profile.decoder import Backend


class NumpyBackend(Backend):
    """float32 NumPy on the CPU (the BLAS numpy was built with)."""

    name = "numpy"
    dtype = "fp32"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def randn(self, *shape: int) -> Any:
        # uniform with unit variance: as good as normal for timing, several times faster to make
        return (self.rng.random(shape, dtype=np.float32) - 0.5) * np.float32(3.4641)

    def zeros(self, *shape: int) -> Any:
        return np.zeros(shape, dtype=np.float32)

    def softmax_last(self, x: Any) -> Any:
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def silu(self, x: Any) -> Any:
        return x / (1.0 + np.exp(-x))

    def rmsnorm(self, x: Any) -> Any:
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6)

    def causal_mask(self, q: int, ctx: int) -> Any:
        rows = np.arange(q)[:, None] + (ctx - q)
        cols = np.arange(ctx)[None, :]
        return np.where(cols > rows, -np.inf, 0.0).astype(np.float32)

    def tokens(self, batch: int, length: int, vocab: int) -> Any:
        return self.rng.integers(0, vocab, size=(batch, length))

    def permute(self, x: Any, axes: tuple[int, ...]) -> Any:
        return x.transpose(axes)

    def topk_last(self, x: Any, k: int) -> tuple[Any, Any]:
        idx = np.argpartition(-x, k - 1, axis=-1)[..., :k]
        return np.take_along_axis(x, idx, axis=-1), idx

    def group_rows(self, chosen: Any, n: int) -> list[tuple[int, Any, Any]]:
        return _group_rows(np.argsort(chosen.reshape(-1), kind="stable"), chosen, n, np.bincount)

    def index_add(self, out: Any, rows: Any, values: Any) -> Any:
        np.add.at(out, rows, values)
        return out

    def sync(self) -> None:
        return None


class TorchBackend(Backend):
    """PyTorch on `device` ("cuda" or "cpu") in bf16 (fp32 on the CPU)."""

    name = "torch"

    def __init__(self, device: str = "cuda", seed: int = 0) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.tdtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.dtype = "bf16" if self.device.type == "cuda" else "fp32"
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        # decode attention: "matmul" (grouped matmuls, softmax) or "sdpa" (PyTorch's fused
        # kernel, GQA in place). On an H200 (PyTorch 2.11) sdpa was the faster in every one
        # of 116 decode shapes, 5x at 8k context (tests/data/gpu_grid_h200_2026-12-04)
        self.decode_attention: Literal["matmul", "sdpa"] = (
            "sdpa" if self.device.type == "cuda" else "matmul"
        )

    def randn(self, *shape: int) -> Any:
        return self.torch.randn(shape, generator=self.gen, device=self.device, dtype=self.tdtype)

    def zeros(self, *shape: int) -> Any:
        return self.torch.zeros(shape, device=self.device, dtype=self.tdtype)

    def softmax_last(self, x: Any) -> Any:
        return self.torch.softmax(x, dim=-1)

    def silu(self, x: Any) -> Any:
        return self.torch.nn.functional.silu(x)

    def rmsnorm(self, x: Any) -> Any:  # one fused kernel where PyTorch has it, as engines do
        return self.torch.nn.functional.rms_norm(x, (x.shape[-1],), eps=1e-6)

    def causal_mask(self, q: int, ctx: int) -> Any:
        t = self.torch
        rows = t.arange(q, device=self.device)[:, None] + (ctx - q)
        cols = t.arange(ctx, device=self.device)[None, :]
        zero = t.zeros((), device=self.device, dtype=self.tdtype)
        return t.where(
            cols > rows, t.tensor(float("-inf"), dtype=self.tdtype, device=self.device), zero
        )

    def tokens(self, batch: int, length: int, vocab: int) -> Any:
        return self.torch.randint(0, vocab, (batch, length), generator=self.gen, device=self.device)

    def permute(self, x: Any, axes: tuple[int, ...]) -> Any:
        return x.permute(*axes)

    def topk_last(self, x: Any, k: int) -> tuple[Any, Any]:
        values, idx = self.torch.topk(x, k, dim=-1)
        return values, idx

    def group_rows(self, chosen: Any, n: int) -> list[tuple[int, Any, Any]]:
        order = self.torch.argsort(chosen.reshape(-1), stable=True)
        return _group_rows(order, chosen, n, self.torch.bincount)

    def index_add(self, out: Any, rows: Any, values: Any) -> Any:
        return out.index_add_(0, rows, values)

    def grouped_experts(
        self, h: Any, chosen: Any, weights: Any, w: tuple[Any, Any], act: Callable[[Any], Any]
    ) -> Any | None:
        t = self.torch
        grouped_mm = getattr(t, "_grouped_mm", None)  # PyTorch 2.8+
        if grouped_mm is None:
            return None
        k = chosen.shape[-1]
        flat = chosen.reshape(-1)
        order = t.argsort(flat, stable=True)
        # rows per expert counted on the device (bincount reads its size on the host)
        counts = t.zeros(w[0].shape[0], dtype=t.int64, device=self.device)
        counts.scatter_add_(0, flat, t.ones_like(flat))
        offs = counts.cumsum(0).to(t.int32)
        y = grouped_mm(act(grouped_mm(h[order // k], w[0], offs=offs)), w[1], offs=offs)
        # back to (token, choice) order, then each token's k outputs weighted and summed, as
        # fused MoE kernels combine them: no atomic adds (against index_add_ on bf16, 3-10%
        # faster on an H200's prefills of 2,048 tokens and up, the same on decode;
        # tests/data/gpu_grid_h200_2026-12-04/moe-kernels)
        back = t.empty_like(y)
        back[order] = y
        return (back.view(-1, k, y.shape[-1]) * weights[..., None]).sum(1)

    def attention(self, q: Any, k: Any, v: Any, start: int) -> Any:
        """Prefill: PyTorch's fused attention (FlashAttention-style kernels on a GPU). Decode:
        as `decode_attention` says, each reading each kv head's cache once, as decode kernels
        do."""
        nq = q.shape[2]
        sdpa = self.torch.nn.functional.scaled_dot_product_attention
        if nq == 1:
            if self.decode_attention == "sdpa":  # one query sees the whole cache: no mask
                return sdpa(q, k, v, enable_gqa=k.shape[1] != q.shape[1])
            return super().attention(q, k, v, start)
        mask = None if start == 0 else self.causal_mask(nq, start + nq)
        if k.shape[1] != q.shape[1]:  # GQA: each kv head serves a group of query heads
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return sdpa(q, k, v, attn_mask=mask, is_causal=mask is None)

    def capture(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """A CUDA graph of `fn` (warmed up on a side stream first, as PyTorch requires), whose
        replay launches every kernel at once; on the CPU, `fn` itself."""
        if self.device.type != "cuda":
            return fn
        t = self.torch
        side = t.cuda.Stream()
        side.wait_stream(t.cuda.current_stream())
        with t.cuda.stream(side):
            for _ in range(2):
                fn()
        t.cuda.current_stream().wait_stream(side)
        graph = t.cuda.CUDAGraph()
        with t.cuda.graph(graph):
            fn()
        replay: Callable[[], Any] = graph.replay
        return replay

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def free(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


def _group_rows(
    order: Any, chosen: Any, n: int, bincount: Callable[..., Any]
) -> list[tuple[int, Any, Any]]:
    """Split choices sorted by index (`order`, positions in `chosen` flattened) into groups."""
    k = chosen.shape[-1]
    counts = [int(c) for c in bincount(chosen.reshape(-1), minlength=n).tolist()]
    rows = order // k
    groups = []
    first = 0
    for i, c in enumerate(counts):
        if c:
            groups.append((i, rows[first : first + c], order[first : first + c]))
            first += c
    return groups
