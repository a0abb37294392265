"""How often a request costs more than the worst case its key's budget held for it.

Run: python benchmarks/budget_holds.py [REQUESTS] [CONCURRENCY] (defaults 120, 40).
Starts `wattserve serve` on the demo fleet with one key (a budget far above what the run
spends), sends REQUESTS chat requests from CONCURRENCY clients (8, 64 or 256 tokens, streamed
or not, prompts of 10 to 160 words), then compares each ledger row's actual dollars and joules
with what its key was billed (the actual figure capped at the hold: see serve/budgets.py).
"""

from __future__ import annotations

import concurrent.futures
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from gateway_overhead import wait_up  # this directory: on sys.path when run as a script

from wattserve.serve.ledger import Ledger
from wattserve.serve.net import free_port


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    tmp = Path(tempfile.mkdtemp())
    db = tmp / "ledger.db"
    ledger = Ledger(db)
    key = ledger.create_key("bench", budget_usd=100.0, budget_j=1e9)
    ledger.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = subprocess.Popen(
        [sys.executable, "-m", "wattserve", "serve", "--port", str(port), "--db", str(db)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def one(i: int) -> int:
        return httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "llama-3.1-8b",
                "max_tokens": (8, 64, 256)[i % 3],
                "stream": bool(i % 2),
                "messages": [{"role": "user", "content": "hi " * (10 + 50 * (i % 4))}],
            },
            timeout=300,
        ).status_code

    try:
        wait_up(f"{url}/health", seconds=30)
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            codes = list(pool.map(one, range(requests)))
    finally:
        gw.terminate()
        gw.wait(60)
    con = sqlite3.connect(db)
    n, usd_over, j_over, usd, billed_usd, joules, billed_j = con.execute(
        "SELECT COUNT(*), SUM(usd > billed_usd * 1.000001), SUM(energy_j > billed_j * 1.000001),"
        " SUM(usd), SUM(billed_usd), SUM(energy_j), SUM(billed_j) FROM requests"
        " WHERE billed_usd IS NOT NULL"
    ).fetchone()
    print(
        f"{requests} requests, {concurrency} concurrent, demo fleet: "
        f"{codes.count(200)} answered 200, {n} billed"
    )
    print(
        f"dollars: {usd_over} over their hold; ${usd:.6f} actual, ${billed_usd:.6f} billed "
        f"({100 * (1 - billed_usd / usd):.1f}% unbilled)"
    )
    print(
        f"joules:  {j_over} over their hold; {joules:.1f} J actual, {billed_j:.1f} J billed "
        f"({100 * (1 - billed_j / joules):.1f}% unbilled)"
    )


if __name__ == "__main__":
    main()
