"""Profile the engine `serve` runs: llama-cpp-python with the SmolLM2-135M-Instruct GGUF.

Prefill: one prompt at several lengths, evaluated in-process through `llama_cpp.Llama` with the
settings of the server the local backend starts (n_ctx 4096, n_batch 512, logits for every
token, threads: the server's default of half the CPUs unless given). Decode: the time between
tokens as that server streams them (`ServerDecodeTimer`), started as the local backend starts
it: a token's gap holds the server's sampling and its HTTP streaming as well as the step
(docs/fidelity.md, runs G and H). llama-cpp-python's server runs one sequence at a time, so
every row is batch 1. Rows are `smollm2-135m` on `local-cpu` in `w4a16` (a 4-bit GGUF:
weights move at 4-5 bits, the math runs at the activations' precision; docs/model.md).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wattserve.errors import WattserveError

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
# Tokens streamed per decode timing: its rows' context is the prompt's plus half of these.
DECODE_TOKENS = 16
MODEL = "smollm2-135m"
# Each case is timed once per round, every case in every round, and the fastest round kept:
# a burst of other work on a shared machine then costs one round of several cases, not every
# repeat of one case (which a best-of-N on one case in a row would keep or miss whole), and
# other work only ever adds time, so the fastest round is nearest the engine's own speed
# (the median keeps a slowed round whenever two of the three were: on nine recorded
# sim-to-real runs, profiles kept by the fastest round predict the heavy window's TTFT p50
# within 7.7% on average, by the median 12.9%; benchmarks/profile_rounds.py,
# docs/fidelity.md).
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

    def close(self) -> None:
        self.llm.close()


class ServerDecodeTimer:
    """Times decode as the llama.cpp server the local backend starts streams it.

    A decode row at a nominal context C: a chat request of C tokens, its user message random
    words (bench's prompts, one token each, as many as C less the chat template's tokens; a
    fixed seed, so each prompt extends the last and the server's prefix cache keeps prefills
    short), first sent for one token to fill the cache and count the prompt (`usage`), then
    streamed for DECODE_TOKENS tokens. The row's seconds are TPOT as `bench` measures it:
    (end - first token) / (tokens - 1); its context the prompt's tokens plus half of those
    generated."""

    def __init__(self, gguf: Path, threads: int, timeout_s: float = 120.0) -> None:
        from wattserve.serve.backends.local import llama_server_args
        from wattserve.serve.net import free_port

        port = free_port()
        self.url = f"http://127.0.0.1:{port}/v1"
        self.timeout_s = timeout_s
        args = llama_server_args(gguf, MODEL, port, n_ctx=N_CTX, threads=threads)
        # its log goes to a file: a pipe nobody reads would block the server once full
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace")[-500:]
                self.log.close()
                raise WattserveError(
                    f"the llama.cpp server exited ({self.proc.returncode}) before answering: "
                    + tail
                )
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    self.close()
                    raise WattserveError(
                        f"the llama.cpp server did not answer within {timeout_s:g} s"
                    ) from None
                time.sleep(0.25)
        try:  # the chat template's tokens around a one-word message (one token)
            self.template = self._prompt_tokens(self._body("the")) - 1
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _body(content: str) -> dict[str, Any]:
        return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 1}

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        """The prompt's tokens as the server counts them, generating one token (which also
        leaves the prompt in its cache)."""
        try:
            with self._post(body) as resp:
                return int(json.loads(resp.read())["usage"]["prompt_tokens"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WattserveError(f"the llama.cpp server gave no prompt count: {e}") from None

    def _post(self, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            self.url + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            return urllib.request.urlopen(req, timeout=self.timeout_s)
        except (urllib.error.URLError, OSError) as e:  # HTTPError too: a URLError
            raise WattserveError(f"the llama.cpp server failed a timing request: {e}") from None

    def decode_s(
        self, context: int, on_first: Callable[[], None] | None = None
    ) -> tuple[float, int]:
        """(seconds per streamed token, context tokens) at about `context` tokens of context;
        `on_first` runs when the first token arrives (to start a power meter on decode only)."""
        from wattserve.bench.prompts import prompt
        from wattserve.core.records import per_token_s

        body = self._body(prompt(max(1, context - self.template), random.Random(0)))
        prompt_tokens = self._prompt_tokens(body)
        body.update(max_tokens=DECODE_TOKENS, min_tokens=DECODE_TOKENS, stream=True)
        t0 = time.perf_counter()
        first: float | None = None
        chunks, finish = 0, None
        try:
            with self._post(body) as resp:
                for line in resp:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        break
                    choice = (json.loads(payload).get("choices") or [{}])[0]
                    finish = choice.get("finish_reason") or finish
                    if (choice.get("delta") or {}).get("content"):
                        chunks += 1
                        if first is None:
                            first = time.perf_counter()
                            if on_first is not None:
                                on_first()
        except (OSError, ValueError, AttributeError, IndexError) as e:  # cut, or not a stream
            raise WattserveError(f"the llama.cpp server's stream failed: {e}") from None
        end = time.perf_counter()
        # a token that ends inside a UTF-8 character streams with the next: count by the stop
        tokens = DECODE_TOKENS if finish == "length" else chunks
        seconds = per_token_s(None if first is None else first - t0, end - t0, tokens)
        if seconds is None:
            raise WattserveError(f"the llama.cpp server streamed {chunks} token(s): too few")
        return seconds, prompt_tokens + DECODE_TOKENS // 2

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
