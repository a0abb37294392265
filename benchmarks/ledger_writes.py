"""The ledger's cost per request record, as the gateway pays it: `submit` a row on the event
loop and await what the answer's last byte waits for (wattserve.serve.accounting.durable: the
row's journal write, or its commit where no journal is kept), one request at a time and 64 at
once, with the writer thread (as `serve` runs it) and inline (the writer not started).

Run: python benchmarks/ledger_writes.py [RECORDS]
Prints the wall time per record until it is durable, and the process CPU (all threads) per
record until every row is committed to SQLite. To compare two commits, run it with
each commit's `src` on PYTHONPATH, alternately, in one session.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wattserve.serve.accounting import durable
from wattserve.serve.ledger import Ledger


def row(i: int) -> dict[str, Any]:
    return {
        "id": f"req-{i}",
        "ts": time.time(),
        "key_id": None,
        "model": "llama-3.2-1b",
        "backend": "fake",
        "site": "dc",
        "prompt_tokens": 12,
        "completion_tokens": 2,
        "ttft_s": 0.001,
        "duration_s": 0.002,
        "energy_j": 1.5,
        "usd": 1e-6,
        "status": "ok",
        "error": None,
        "billed_usd": None,
        "billed_j": None,
    }


async def run(records: int, threaded: bool, at_once: int) -> tuple[float, float]:
    ledger = Ledger(Path(tempfile.mkdtemp()) / "ledger.db")
    if threaded:
        ledger.start()
    sem = asyncio.Semaphore(at_once)

    async def one(i: int) -> None:
        async with sem:
            await durable(ledger.submit(row(i)), f"req-{i}")

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(records)))
    wall = time.perf_counter() - wall0
    ledger.close()  # every row committed: its CPU counts too
    cpu = time.process_time() - cpu0
    return wall * 1e6 / records, cpu * 1e6 / records


def main() -> None:
    records = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    for threaded in (True, False):
        for at_once in (1, 64):
            wall_us, cpu_us = runner(run(records, threaded, at_once))
            print(
                f"{'writer thread' if threaded else 'inline':13} {at_once:3} at once: "
                f"{wall_us:6.0f} us wall, {cpu_us:6.0f} us CPU per record"
            )


if __name__ == "__main__":
    main()
