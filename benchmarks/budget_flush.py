"""A key's budget against Redis losing its data mid-burst: two gateway replicas sharing one
ledger and one redis-server, a key with a $0.002 budget, 24 clients on both for 8 s (a third
of them streamed), Redis flushed (FLUSHALL) 2 s and 5 s in. Prints the answers by status and
what the key was billed; the target is within the budget.

Run: python benchmarks/budget_flush.py (uses the tests' redis-server and gateway helpers,
tests/redis_server.py and tests/serving.py; needs redis-server). Compare commits with
`PYTHONPATH=OTHER/src python benchmarks/budget_flush.py`."""

from __future__ import annotations

import concurrent.futures
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_server import redis_server
from test_scale_out_gateways import replicas

from wattserve.serve.ledger import Ledger

BUDGET_USD = 0.002
SECONDS = 8.0
FLUSH_AT_S = (2.0, 5.0)
FLEET = """
sites:
  dc: {kind: datacenter}
deployments:
  d: {site: dc, model: llama-3.2-1b, hardware: h100-sxm, replicas: 2}
"""


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="budget-flush-"))
    db = tmp / "shared.db"
    key = Ledger(db).create_key("team", budget_usd=BUDGET_USD)
    codes: list[object] = []
    with redis_server() as srv, replicas(tmp, FLEET, 2, "--state", srv.url, "--db", str(db)) as gws:
        start = time.monotonic()

        def client(i: int) -> None:
            url = f"{gws[i % 2].url}/v1/chat/completions"
            body = {
                "model": "llama-3.2-1b",
                "messages": [{"role": "user", "content": "hi " * 20}],
                "max_tokens": 64,
                "stream": i % 3 == 0,
            }
            while time.monotonic() < start + SECONDS:
                try:
                    auth = {"Authorization": f"Bearer {key}"}
                    codes.append(httpx.post(url, headers=auth, json=body, timeout=30).status_code)
                except httpx.HTTPError as exc:
                    codes.append(type(exc).__name__)

        def flusher() -> None:
            for at in FLUSH_AT_S:
                time.sleep(max(0.0, start + at - time.monotonic()))
                redis.Redis.from_url(srv.url).flushall()

        flushes = threading.Thread(target=flusher)
        flushes.start()
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            list(pool.map(client, range(24)))
        flushes.join()
        time.sleep(2.0)  # the last rows committed
        lost = [httpx.get(f"{g.url}/health").json()["state"].get("data_lost_total") for g in gws]
    with sqlite3.connect(db) as con:
        billed = con.execute("SELECT TOTAL(billed_usd) FROM requests").fetchone()[0]
    print("answers by status:", dict(Counter(codes)))
    print(f"billed ${billed:.6f} of a ${BUDGET_USD} budget; data_lost_total per replica {lost}")
    print("OVER BUDGET" if billed > BUDGET_USD + 1e-12 else "within budget")


if __name__ == "__main__":
    main()
