"""`wattserve bench` must not be the bottleneck: against the package's fake backend it sustains
>= 2,000 non-streaming requests/s and 500 concurrent streams, and its own timing error is under
1 ms at p50 (its median end-to-end latency, one request at a time, against the plain aiohttp loop
of benchmarks/gateway_overhead.py on the same backend), and an open-loop schedule is kept to
within 1 ms at p50.

Run: python benchmarks/bench_client.py [REQUESTS]   (default 20,000)
The backend and this client run on this machine (loopback), each in its own process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import numpy as np
import orjson
from gateway_overhead import BODY, load, wait_up

from wattserve.bench import BenchOptions, replay, summarize
from wattserve.bench.__init__ import _loop_factory
from wattserve.core.workload import SLO, Request, Workload
from wattserve.serve.backends.http1 import Http1Pool
from wattserve.serve.net import free_port


def workload(n: int, gap_s: float = 0.0) -> Workload:
    reqs = [Request(i, i * gap_s, 8, 2, "fake") for i in range(n)]
    return Workload(reqs, {"default": SLO()})


def plain(url: str, seconds: float, concurrency: int) -> tuple[float, float]:
    """The plain aiohttp loop of gateway_overhead.py on the same event loop: (req/s, p50 ms)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        lat, _ = runner.run(load(f"{url}/v1/chat/completions", seconds, concurrency))
    return len(lat) / seconds, float(np.percentile(np.asarray(lat) * 1e3, 50))


def plain_http1(url: str, seconds: float) -> float:
    """One request at a time through the HTTP/1.1 client bench uses for whole answers: p50 ms."""

    async def go() -> list[float]:
        pool = Http1Pool(f"{url}/v1")
        body, headers = orjson.dumps(BODY), {"Content-Type": "application/json"}
        lat, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            await pool.post("/chat/completions", body, headers, 10.0)
            lat.append(time.perf_counter() - t)
        await pool.close()
        return lat

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        lat = runner.run(go())
    return float(np.percentile(np.asarray(lat) * 1e3, 50))


def bench(url: str, wl: Workload, **kw: object) -> dict[str, object]:
    opts = BenchOptions(url=url, model="fake", **kw)  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        t0 = time.perf_counter()
        run = runner.run(replay(wl, opts))
        wall = time.perf_counter() - t0
    s = summarize(run.results, run.duration_s, wl.slos)
    s["wall_s"] = wall
    return s


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    fake = subprocess.Popen(
        [sys.executable, "-m", "wattserve.serve.fake", "--port", str(port)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_up(f"{url}/v1/models")
        bench(url, workload(500), stream=False, request_rate=float("inf"), concurrency=32)
        s = bench(url, workload(n), stream=False, request_rate=float("inf"), concurrency=64)
        base, _ = plain(url, 5.0, 64)
        print(
            f"non-streaming, 64 in flight: {s['completed']} done, {s['failed']} failed, "
            f"{s['request_throughput']:.0f} requests/s (target >= 2,000); the plain aiohttp "
            f"loop on this machine now: {base:.0f} requests/s"
        )
        m = max(2000, n // 4)
        s = bench(url, workload(m), stream=True, request_rate=float("inf"), concurrency=500)
        print(
            f"streaming, 500 in flight: {s['completed']} done, {s['failed']} failed, "
            f"{s['request_throughput']:.0f} streams/s, TTFT p50 {s['median_ttft_ms']:.1f} ms"
        )
        s = bench(url, workload(500, gap_s=0.01), stream=False)
        lag = s["send_lag_ms"]
        print(
            f"open loop at 100 requests/s: sent late by p50 {lag['p50']:.3f} ms, "  # type: ignore[index]
            f"p99 {lag['p99']:.3f} ms (target p50 < 1)"  # type: ignore[index]
        )
        _, direct = plain(url, 3.0, 1)
        same = plain_http1(url, 3.0)
        s = bench(url, workload(1000), stream=False, request_rate=float("inf"), concurrency=1)
        ours = float(s["median_e2el_ms"])  # type: ignore[arg-type]
        print(
            f"one at a time, whole answers: bench p50 {ours:.3f} ms; the same HTTP/1.1 client "
            f"in a bare loop {same:.3f} ms: timing error {ours - same:+.3f} ms (target |error| "
            f"< 1); gateway_overhead's aiohttp loop (its 'direct' figure) {direct:.3f} ms"
        )
        s = bench(url, workload(1000), stream=True, request_rate=float("inf"), concurrency=1)
        ours = float(s["median_e2el_ms"])  # type: ignore[arg-type]
        print(
            f"one at a time, streamed (aiohttp): bench E2E p50 {ours:.3f} ms, TTFT p50 "
            f"{s['median_ttft_ms']:.3f} ms"
        )
    finally:
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
