"""The gateway's CPU time per streamed token: STREAMS concurrent streams of TOKENS tokens each
through four emulated replicas of a fast engine (SmolLM2-135M on a B200: about 1 ms a token),
the gateway's own user + system CPU read from /proc, ROUNDS times. A cost per token rather
than a wall time, so that it moves less with this VM's speed; compare commits side by side
(`PYTHONPATH=OTHER/src python benchmarks/gateway_stream_cpu.py`), alternating.

Run: python benchmarks/gateway_stream_cpu.py [STREAMS] [TOKENS] [ROUNDS] [upstream]
(default 32 1000 3). With `upstream`, the replicas are one OpenAI-compatible server instead
(wattserve's fake, `fake_tokens`: as fast as it writes, in a process of its own): the path a
vLLM or llama.cpp deployment's tokens take. Linux only (/proc)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from gateway_overhead import wait_up  # this directory: on sys.path when run as a script

from wattserve.serve.net import free_port

FLEET = """\
name: stream-cpu
sites:
  dc: {kind: datacenter}
deployments:
  g: {site: dc, model: smollm2-135m, hardware: b200, replicas: 4}
"""
UPSTREAM = "backend: {kind: openai, url: 'http://127.0.0.1:%d/v1'}"


def cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds (/proc/PID/stat: fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(session: aiohttp.ClientSession, url: str, tokens: int) -> int:
    body = {
        "model": "smollm2-135m",
        "max_tokens": tokens,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "fake_tokens": tokens,  # read by the fake server only (`upstream`)
    }
    got = 0
    async with session.post(url, json=body) as r:
        async for line in r.content:
            got += line.startswith(b"data: {")
    return got


async def load(url: str, streams: int, tokens: int) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        return sum(await asyncio.gather(*(one(session, url, tokens) for _ in range(streams))))


def main(argv: list[str]) -> None:
    upstream = "upstream" in argv
    argv = [a for a in argv if a != "upstream"]
    streams, tokens, rounds = (int(a) for a in (argv + ["32", "1000", "3"][len(argv) :])[:3])
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        fleet = Path(tmp) / "fleet.yaml"
        text = FLEET
        if upstream:
            fake_port = free_port()
            fake = subprocess.Popen(
                [sys.executable, "-m", "wattserve.serve.fake", "--port", str(fake_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(fake.wait, 30)
            stack.callback(fake.terminate)
            wait_up(f"http://127.0.0.1:{fake_port}/v1/models", fake)
            text = FLEET.replace("replicas: 4}", f"replicas: 4, {UPSTREAM % fake_port}}}")
        fleet.write_text(text)
        cmd = [sys.executable, "-m", "wattserve", "serve", "--fleet", str(fleet), "--port"]
        cmd += [str(port), "--db", str(Path(tmp) / "ledger.db"), "--max-queue", "600"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_up(f"http://127.0.0.1:{port}/health", proc)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            asyncio.run(load(url, 4, 50))  # warm up
            for _ in range(rounds):
                cpu0, wall0 = cpu_s(proc.pid), time.perf_counter()
                got = asyncio.run(load(url, streams, tokens))
                cpu1, wall1 = cpu_s(proc.pid), time.perf_counter()
                print(
                    f"{got} streamed chunks: gateway CPU {1e6 * (cpu1 - cpu0) / got:.1f} us "
                    f"a token, wall {wall1 - wall0:.1f} s"
                )
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main(sys.argv[1:])
