"""Micro-benchmarks: achievable matrix-multiply throughput and memory bandwidth."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _best_of(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def numpy_matmul_tflops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 n x n x n matrix-multiply throughput, TFLOPS."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    t = _best_of(lambda: a @ b, repeats, lambda: None)
    return 2.0 * n**3 / t / 1e12


def numpy_copy_gbps(megabytes: int = 512, repeats: int = 5) -> float:
    """Best memory bandwidth of a large copy (bytes read + written), GB/s."""
    n = megabytes * 1024 * 1024 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    t = _best_of(lambda: np.copyto(dst, src), repeats, lambda: None)
    return 2.0 * src.nbytes / t / 1e9


def _torch_sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else lambda: None


def torch_matmul_tflops(device: str, n: int = 8192, repeats: int = 10) -> float:
    """Best matrix-multiply throughput on a torch device (bf16 on a GPU, fp32 on the CPU),
    TFLOPS."""
    import torch

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a = torch.randn((n, n), device=device, dtype=dtype)
    b = torch.randn((n, n), device=device, dtype=dtype)
    t = _best_of(lambda: a @ b, repeats, _torch_sync(device))
    return 2.0 * n**3 / t / 1e12


def torch_copy_gbps(device: str, megabytes: int = 4096, repeats: int = 10) -> float:
    """Best device-memory bandwidth of a large copy (read + write), GB/s."""
    import torch

    n = megabytes * 1024 * 1024 // 2
    src = torch.ones(n, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    t = _best_of(lambda: dst.copy_(src), repeats, _torch_sync(device))
    return float(2.0 * src.numel() * 2 / t / 1e9)
