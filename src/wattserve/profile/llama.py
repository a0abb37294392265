"""Profile the engine `serve` runs: llama-cpp-python with the SmolLM2-135M-Instruct GGUF.

Times one prefill of a prompt at several lengths and single-token decode steps at several
context lengths, in-process through `llama_cpp.Llama` with the settings of the server the
local backend starts (n_ctx 4096, n_batch 512, logits for every token, threads: the server's
default of half the CPUs unless given). llama-cpp-python's server runs one sequence at a
time, so every row is batch 1. Rows are `smollm2-135m` on `local-cpu` in `w4a16` (a 4-bit
GGUF: weights move at 4-5 bits, the math runs at the activations' precision; docs/model.md).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

N_CTX = 4096  # what LocalLlamaBackend gives the server
N_BATCH = 512  # llama-cpp-python's server default
# The server's default too (llama_cpp.server.settings.ModelSettings.logits_all), and passed to
# it by `llama_server_args` (serve/backends/local.py): every evaluated token's logits are
# computed and copied out, which made prefill 32-39% and a decode step 1.4-3.4 ms slower than
# without on this project's 2-vCPU machine (2026-12-03): the gap between the server and a
# profile that left it off (benchmarks/llama_server_costs.py, docs/fidelity.md run F).
LOGITS_ALL = True
PREFILLS = (32, 128, 512, 1024)
DECODES = (64, 512, 1536, 3072)
QUICK_PREFILLS = (32, 256)
QUICK_DECODES = (64, 1024)
# Each case is timed once per round, every case in every round, and the median of the rounds
# kept: a burst of other work on a shared machine then costs one round of several cases, not
# every repeat of one case (which a best-of-N on one case in a row would keep or miss whole).
ROUNDS = 3
QUICK_ROUNDS = 1


def server_threads() -> int:
    """The thread count llama-cpp-python's server uses when none is given."""
    return max((os.cpu_count() or 2) // 2, 1)


def llama_available() -> bool:
    from wattserve.serve.demo import local_model_available

    return local_model_available()


class LlamaTimer:
    """Times prefill and decode steps of the real llama.cpp engine."""

    def __init__(self, gguf: Path, threads: int) -> None:
        import llama_cpp

        self.llm: Any = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=N_CTX,
            n_batch=N_BATCH,
            n_threads=threads,
            logits_all=LOGITS_ALL,
            verbose=False,
        )
        vocab = int(self.llm.n_vocab())
        # a fixed, varied token sequence: timing does not depend on which tokens they are
        self.tokens = [(i * 7919) % (vocab - 100) + 100 for i in range(N_CTX)]
        self.prefill_s(32)  # warm-up: the first pass pages the weights in

    def prefill_s(self, prompt: int) -> float:
        """Seconds of prefilling `prompt` tokens into an empty cache (one timing)."""
        self.llm.reset()
        t0 = time.perf_counter()
        self.llm.eval(self.tokens[:prompt])
        return time.perf_counter() - t0

    def decode_s(self, context: int, steps: int = 8) -> float:
        """Median seconds of one decode step with `context` tokens already in the cache."""
        self.llm.reset()
        self.llm.eval(self.tokens[:context])
        times = []
        for j in range(steps):
            t0 = time.perf_counter()
            self.llm.eval([self.tokens[context + j]])
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def close(self) -> None:
        self.llm.close()
