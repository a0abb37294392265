"""Where the llama.cpp server's time goes, against what `wattserve profile` times.

For each prompt length, one request at a time (no queueing): `wattserve bench` against the
llama.cpp server started as the local backend starts it (TTFT, and the median gap between
streamed tokens), then, in this process with the server stopped, llama-cpp-python's own calls
with the server's settings: `eval` of the whole prompt into an empty cache (what `profile`
times), `eval` of the prompt after the chat template's first 24 tokens are already cached (what
the server does from its second request on: it keeps the longest common prefix of the previous
prompt), one-token `eval` steps (profile's decode), and `create_completion(stream=True)` with
the server's sampling defaults and min_tokens (the server's own generation loop, without HTTP).

Run: python benchmarks/llama_server_costs.py [--out DIR]. About 5 minutes on 2 vCPUs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sim_to_real import MODEL, process, uptime, wattserve  # this directory: on sys.path

from wattserve.profile.llama import LOGITS_ALL, N_BATCH, N_CTX, server_threads
from wattserve.serve.backends.local import llama_server_args, smollm2_gguf
from wattserve.serve.net import free_port

PROMPTS = (64, 256, 512, 1000)
OUTPUT = 64
REPEATS = 2
# the server's sampling defaults (llama_cpp/server/types.py, 0.3.x)
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "min_p": 0.05, "top_k": 40, "repeat_penalty": 1.1}
TEMPLATE_PREFIX = 24  # "<|im_start|>system\n...<|im_end|>\n<|im_start|>user\n": every request's


def served(out: Path) -> dict[int, list[tuple[float, float]]]:
    """(TTFT s, median inter-token gap s) per prompt length, through HTTP, one at a time."""
    trace = out / "costs.jsonl"
    with trace.open("w") as fh:
        for i, p in enumerate(q for q in PROMPTS for _ in range(REPEATS)):
            fh.write(json.dumps({"arrival_s": i, "prompt_tokens": p, "output_tokens": OUTPUT}))
            fh.write("\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    result = out / "costs-bench.json"
    with process(
        llama_server_args(smollm2_gguf(), MODEL, port), out / "llama.log", url + "/v1/models"
    ):
        wattserve("bench", "--url", url, "--trace", str(trace), "--concurrency", "1",
                  "--request-rate", "inf", "--out", str(result), "--no-progress")  # fmt: skip
    r = json.loads(result.read_text())
    got: dict[int, list[tuple[float, float]]] = {p: [] for p in PROMPTS}
    for p, ttft, itl in zip(r["input_lens"], r["ttfts"], r["itls"], strict=True):
        got[min(PROMPTS, key=lambda q: abs(q - p))].append((ttft, statistics.median(itl)))
    return got


def in_process() -> dict[int, dict[str, float]]:
    """llama-cpp-python's calls with the server's settings, per prompt length (best of 2)."""
    import llama_cpp

    llm: Any = llama_cpp.Llama(
        model_path=str(smollm2_gguf()), n_ctx=N_CTX, n_batch=N_BATCH,
        n_threads=server_threads(), logits_all=LOGITS_ALL, verbose=False,
    )  # fmt: skip
    vocab = int(llm.n_vocab())
    tokens = [(i * 7919) % (vocab - 100) + 100 for i in range(N_CTX)]
    out: dict[int, dict[str, float]] = {}
    for p in PROMPTS:
        row: dict[str, list[float]] = {
            "eval": [],
            "eval_after_prefix": [],
            "decode": [],
            "stream": [],
        }
        for _ in range(REPEATS):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(tokens[:p])
            row["eval"].append(time.perf_counter() - t0)
            steps = []
            for j in range(16):
                t0 = time.perf_counter()
                llm.eval([tokens[p + j]])
                steps.append(time.perf_counter() - t0)
            row["decode"].append(statistics.median(steps))
            llm.reset()
            llm.eval(tokens[:TEMPLATE_PREFIX])
            t0 = time.perf_counter()
            llm.eval(tokens[TEMPLATE_PREFIX:p])
            row["eval_after_prefix"].append(time.perf_counter() - t0)
            llm.reset()
            eos = llama_cpp.MinTokensLogitsProcessor(OUTPUT, llm.token_eos())
            stamps = []
            for _chunk in llm.create_completion(
                tokens[:p], max_tokens=OUTPUT, stream=True,
                logits_processor=llama_cpp.LogitsProcessorList([eos]), **SAMPLING,
            ):  # fmt: skip
                stamps.append(time.perf_counter())
            row["stream"].append(statistics.median(b - a for a, b in itertools.pairwise(stamps)))
        out[p] = {k: min(v) for k, v in row.items()}
    llm.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    out = ap.parse_args().out or Path(tempfile.mkdtemp(prefix="llama-costs-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"before: {uptime()}", flush=True)
    http = served(out)
    local = in_process()
    print(f"after:  {uptime()}")
    print(
        "| prompt | server TTFT | eval(prompt) | eval(prompt - 24 cached) | server ITL "
        "| create_completion ITL | eval(1 token) |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    ms = lambda v: f"{v * 1e3:.1f} ms"  # noqa: E731
    for p in PROMPTS:
        ttft = min(t for t, _ in http[p])
        itl = min(g for _, g in http[p])
        x = local[p]
        print(
            f"| {p} | {ms(ttft)} | {ms(x['eval'])} | {ms(x['eval_after_prefix'])} | {ms(itl)} "
            f"| {ms(x['stream'])} | {ms(x['decode'])} |"
        )


if __name__ == "__main__":
    main()
