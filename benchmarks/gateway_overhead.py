"""Gateway overhead: the same load sent to a fast fake backend directly and through wattserve.

Targets (issue #4): overhead at most 1 ms p50 and 5 ms p99; at least 1,500 non-streaming
requests/s through the gateway. Run: python benchmarks/gateway_overhead.py [SECONDS] [CONCURRENCY]
Latency overhead is measured with one client at a time (no queueing), throughput with
CONCURRENCY clients (default 16).
Both servers and the load generator run on this machine (loopback), each in its own process.
"""

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
import numpy as np

from wattserve.serve.net import free_port

BODY = {
    "model": "llama-3.2-1b",
    "max_tokens": 2,
    "messages": [{"role": "user", "content": "hello"}],
}


def wait_up(url: str, proc: subprocess.Popen[bytes] | None = None, seconds: float = 30) -> None:
    """Wait until `url` answers below 500 (the benchmarks' servers starting up); fail early
    if `proc`, the server's process, has exited."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({proc.returncode})")
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def load(url: str, seconds: float, concurrency: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with session.post(url, json=BODY) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used: less sensitive than latency to other
    work on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name: str, lat: list[float], errors: int, seconds: float) -> tuple[float, float]:
    a = np.asarray(lat) * 1e3
    p50, p99 = np.percentile(a, [50, 99])
    print(
        f"{name:16} {len(a) / seconds:8.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
        f"   errors {errors}"
    )
    return float(p50), float(p99)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    tmp = Path(tempfile.mkdtemp())
    bport, gport = free_port(), free_port()
    fleet = tmp / "fleet.yaml"
    fleet.write_text(f"""sites:
  dc: {{kind: datacenter}}
deployments:
  fake:
    site: dc
    model: llama-3.2-1b
    hardware: h100-sxm
    backend: {{kind: openai, url: "http://127.0.0.1:{bport}/v1", model_name: fake}}
""")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    backend = subprocess.Popen(
        [sys.executable, "-m", "wattserve.serve.fake", "--port", str(bport)], env=env
    )
    gw = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattserve",
            "serve",
            "--fleet",
            str(fleet),
            "--port",
            str(gport),
            "--db",
            str(tmp / "ledger.db"),
            "--policy",
            "least_loaded",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_up(f"http://127.0.0.1:{bport}/v1/models")
        wait_up(f"http://127.0.0.1:{gport}/health")
        direct_url = f"http://127.0.0.1:{bport}/v1/chat/completions"
        gw_url = f"http://127.0.0.1:{gport}/v1/chat/completions"
        asyncio.run(load(gw_url, 1.0, concurrency))  # warm up
        print(f"latency: one client at a time, {seconds:g} s each")
        d50, d99 = report("direct", *asyncio.run(load(direct_url, seconds, 1)), seconds)
        cpu0 = cpu_s(gw.pid)
        lat, errs = asyncio.run(load(gw_url, seconds, 1))
        cpu_ms = (cpu_s(gw.pid) - cpu0) * 1e3 / max(1, len(lat))
        g50, g99 = report("through gateway", lat, errs, seconds)
        print(f"gateway CPU per request: {cpu_ms:.3f} ms")
        print(
            f"gateway overhead: p50 {g50 - d50:.2f} ms (target <= 1), "
            f"p99 {g99 - d99:.2f} ms (target <= 5)"
        )
        print(f"throughput: {concurrency} concurrent clients, {seconds:g} s each")
        report("direct", *asyncio.run(load(direct_url, seconds, concurrency)), seconds)
        report("through gateway", *asyncio.run(load(gw_url, seconds, concurrency)), seconds)
        print("target: >= 1,500 requests/s through the gateway")
    finally:
        for p in (gw, backend):
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    main()
