"""Many concurrent streams through the demo fleet: every stream completes or gets a clear
429/503; none is reset, none hangs (issue #8).

Run: python benchmarks/gateway_streams.py [STREAMS] [MAX_TOKENS] [HANG_S] [BACKLOG]
(defaults 1000, 32, 60, and the gateway's own default backlog). The gateway (`wattserve
serve`, the built-in demo fleet: emulated H100s and an A100 under a 2 kW cap, a Jetson under
150 W, an emulated GroqCloud) and the load generator run on this machine, each in its own
process. All STREAMS requests are opened at
once, each on its own connection. A stream counts as completed when its `data: [DONE]`
arrives; reset when the connection fails (refused, reset, closed early); hung when no byte
of it arrives for HANG_S seconds (a slow stream that keeps sending is not hung). The
kernel's listen-queue overflows during the run are read
from /proc/net/netstat.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
from gateway_overhead import wait_up  # this directory: on sys.path when run as a script

from wattserve.serve.net import free_port

BODY = {
    "model": "llama-3.1-8b",
    "stream": True,
    "messages": [{"role": "user", "content": "Tell me about power caps. " * 8}],
}


def listen_overflows() -> int | None:
    """TcpExt ListenOverflows of this machine so far (None where /proc has no such figure)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return None


async def one(
    session: aiohttp.ClientSession, url: str, max_tokens: int, hang_s: float
) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(hang_s) as idle:
            async with session.post(url, json={**BODY, "max_tokens": max_tokens}) as r:
                if r.status != 200:
                    await r.read()
                    return str(r.status), time.perf_counter() - started
                async for line in r.content:
                    idle.reschedule(asyncio.get_running_loop().time() + hang_s)
                    if line.startswith(b"data: [DONE]"):
                        return "completed", time.perf_counter() - started
                return "reset", time.perf_counter() - started  # ended without [DONE]
    except TimeoutError:
        return "hung", time.perf_counter() - started
    except (aiohttp.ClientError, OSError):
        return "reset", time.perf_counter() - started


async def run(url: str, streams: int, max_tokens: int, hang_s: float) -> list[tuple[str, float]]:
    # one connection per stream, as many independent clients would open
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=hang_s)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        return await asyncio.gather(
            *(one(session, url, max_tokens, hang_s) for _ in range(streams))
        )


def main() -> None:
    streams = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    max_tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    hang_s = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    backlog = ["--backlog", sys.argv[4]] if len(sys.argv) > 4 else []
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    db = str(tmp / "ledger.db")
    gw = subprocess.Popen(
        [sys.executable, "-m", "wattserve", "serve", "--port", str(port), *backlog, "--db", db],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "gateway.log", "wb"),  # noqa: SIM115 - the process holds it
    )
    try:
        wait_up(f"http://127.0.0.1:{port}/health", seconds=30)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        before = listen_overflows()
        t0 = time.perf_counter()
        results = asyncio.run(run(url, streams, max_tokens, hang_s))
        wall = time.perf_counter() - t0
        after = listen_overflows()
    finally:
        gw.terminate()
        gw.wait(60)
    counts = collections.Counter(outcome for outcome, _ in results)
    done = np.asarray([s for outcome, s in results if outcome == "completed"])
    print(
        f"{streams} concurrent streams, max_tokens {max_tokens}, demo fleet, "
        f"backlog {backlog[1] if backlog else 'default'}, {wall:.1f} s"
    )
    for outcome in ("completed", "429", "503", "reset", "hung"):
        print(f"  {outcome:10} {counts.pop(outcome, 0):6}")
    for outcome, n in sorted(counts.items()):
        print(f"  {outcome:10} {n:6}   (other)")
    if len(done):
        p50, p99 = np.percentile(done, [50, 99])
        print(f"completed streams: p50 {p50:.2f} s, p99 {p99:.2f} s, longest {done.max():.2f} s")
    if before is not None and after is not None:
        print(f"listen-queue overflows on this machine during the run: {after - before}")
    log = (tmp / "gateway.log").read_text(errors="replace")
    print(f"gateway log: {log.count('Traceback')} tracebacks, {len(log.splitlines())} lines")


if __name__ == "__main__":
    main()
