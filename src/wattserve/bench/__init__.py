"""`wattserve bench`: replay a trace against any OpenAI-compatible endpoint and report
vLLM-comparable latency and throughput figures, plus $, J and gCO2 where wattserve serves it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
from collections.abc import Callable
from typing import Any

import aiohttp

from wattserve.bench.client import Result
from wattserve.bench.metrics import summarize
from wattserve.bench.run import Bench, BenchOptions, Progress, Run, progress_bar
from wattserve.core.workload import Workload

__all__ = [
    "BenchOptions",
    "Result",
    "Run",
    "progress_bar",
    "replay",
    "run_bench",
    "summarize",
]


async def replay(workload: Workload, opts: BenchOptions, progress: Progress | None = None) -> Run:
    """Send `workload`'s requests to `opts.url`; what happened to each."""
    connector = aiohttp.TCPConnector(limit=opts.concurrency or 0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=opts.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        bench = Bench(opts, session)
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:  # SIGTERM ends the run like Ctrl-C: with a partial report
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await bench.run(workload, progress)
        finally:
            if bench.client.pool is not None:
                await bench.client.pool.close()


def run_bench(
    workload: Workload,
    opts: BenchOptions,
    *,
    progress: Progress | None = None,
    carbon_g_per_kwh: dict[str, float] | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Replay and summarize (blocking): the run and its `--json` object."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            run = runner.run(replay(workload, opts, progress))
        except asyncio.CancelledError:  # SIGTERM before the run began: as Ctrl-C would
            raise KeyboardInterrupt from None
    return run, summarize(run.results, run.duration_s, workload.slos, carbon_g_per_kwh)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed: the client must not be the bottleneck."""
    if importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop

    return uvloop.new_event_loop
