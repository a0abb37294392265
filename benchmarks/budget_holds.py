"""How often a request costs more than the worst case its key's budget held for it.

Run: python benchmarks/budget_holds.py [--scenario demo|capped|both] [--requests N]
[--concurrency N] [--budget-usd USD]. Starts `wattserve serve --require-keys` with one key,
sends the chat requests from that many clients, then compares each ledger row's actual dollars
and joules with what its key was billed (the actual figure capped at the hold: see
serve/budgets.py).

- `demo` (default 120 requests from 40 clients, budget $100): the demo fleet, 8, 64 or 256
  tokens, streamed or not, prompts of 10 to 160 words.
- `capped` (default 120 requests from 60 clients, budget $0.004): 2 emulated H100 SXM serving
  llama-3.2-1b under a 900 W site cap (their idle draw is 210 W; one request's decode adds about
  190 W to an idle H100, its prefill up to 550 W), 100 tokens each, streamed or not: steps wait
  for power. It also prints the
  site's peak power, the engines' device time (running or waiting for power) against the time
  the ledger billed, and the site's power stretch.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from gateway_overhead import wait_up  # this directory: on sys.path when run as a script

from wattserve.core.fleet import load_fleet
from wattserve.serve.ledger import Ledger
from wattserve.serve.net import free_port


def capped_fleet(cap_w: float) -> str:
    return f"""\
name: capped
sites:
  dc: {{kind: datacenter, power_cap_w: {cap_w:g}}}
deployments:
  gpus: {{site: dc, model: llama-3.2-1b, hardware: h100-sxm, replicas: 2}}
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    fleet: str | None  # None: the built-in demo fleet
    model: str
    requests: int
    concurrency: int
    budget_usd: float

    def body(self, i: int) -> dict[str, object]:
        if self.fleet is None:
            max_tokens, words = (8, 64, 256)[i % 3], 10 + 50 * (i % 4)
        else:
            max_tokens, words = 100, 20
        return {
            "model": self.model,
            "max_tokens": max_tokens,
            "stream": bool(i % 2),
            "messages": [{"role": "user", "content": "hi " * words}],
        }


def run(sc: Scenario) -> None:
    tmp = Path(tempfile.mkdtemp())
    db = tmp / "ledger.db"
    ledger = Ledger(db)
    key = ledger.create_key("bench", budget_usd=sc.budget_usd, budget_j=1e9)
    ops = ledger.create_key("ops", admin=True)
    ledger.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["--port", str(port), "--db", str(db), "--require-keys"]
    if sc.fleet is not None:
        (tmp / "fleet.yaml").write_text(sc.fleet)
        args += ["--fleet", str(tmp / "fleet.yaml")]
    gw = subprocess.Popen(
        [sys.executable, "-m", "wattserve", "serve", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def one(i: int) -> int:
        return httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json=sc.body(i),
            timeout=300,
        ).status_code

    try:
        wait_up(f"{url}/health", gw, seconds=30)
        with concurrent.futures.ThreadPoolExecutor(sc.concurrency) as pool:
            codes = list(pool.map(one, range(sc.requests)))
        ops_auth = {"Authorization": f"Bearer {ops}"}
        state = httpx.get(f"{url}/v1/fleet", headers=ops_auth, timeout=10).json()
        metrics = httpx.get(f"{url}/metrics", headers=ops_auth, timeout=10).text
    finally:
        gw.terminate()
        gw.wait(60)
    con = sqlite3.connect(db)
    n, usd_over, j_over, usd, billed_usd, joules, billed_j = con.execute(
        "SELECT COUNT(*), SUM(usd > billed_usd * 1.000001), SUM(energy_j > billed_j * 1.000001),"
        " SUM(usd), SUM(billed_usd), SUM(energy_j), SUM(billed_j) FROM requests"
        " WHERE billed_usd IS NOT NULL"
    ).fetchone()
    spent = con.execute("SELECT spent_usd FROM keys WHERE name = 'bench'").fetchone()[0]
    print(
        f"[{sc.name}] {sc.requests} requests from {sc.concurrency} clients, budget "
        f"${sc.budget_usd:g}: {codes.count(200)} answered 200, {codes.count(429)} refused (429), "
        f"{n} billed; spent ${spent:.6f}"
    )
    if n:
        print(
            f"  dollars: {usd_over} over their hold; ${usd:.6f} actual, ${billed_usd:.6f} billed "
            f"({100 * (1 - billed_usd / usd):.1f}% unbilled)"
        )
        print(
            f"  joules:  {j_over} over their hold; {joules:.1f} J actual, {billed_j:.1f} J billed "
            f"({100 * (1 - billed_j / joules):.1f}% unbilled)"
        )
    for name, site in state["sites"].items():
        cap = site["power_cap_w"]
        print(
            f"  site {name}: peak {site['peak_power_w']:.1f} W, cap "
            f"{'none' if cap is None else f'{cap:g} W'}"
        )
    stretch = _gauges(metrics, "wattserve_engine_power_stretch{")
    if stretch:  # absent before the stretch was measured
        print(f"  engines' power stretch at the end: {', '.join(f'{x:.2f}' for x in stretch)}")
    device_s = sum(_gauges(metrics, "wattserve_engine_device_seconds{"))
    if device_s and sc.fleet is not None:
        usd_per_s = load_fleet(tmp / "fleet.yaml").deployments[0].cost.billable()[0]
        billed_s = (
            con.execute("SELECT SUM(usd) FROM requests WHERE status = 'ok'").fetchone()[0]
            / usd_per_s
        )
        print(
            f"  device time: {device_s:.3f} s on the engines (running or waiting for power), "
            f"{billed_s:.3f} s in the requests' dollars"
        )


def _gauges(metrics: str, prefix: str) -> list[float]:
    return [float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines() if x.startswith(prefix)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=("demo", "capped", "both"), default="both")
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--concurrency", type=int)
    ap.add_argument("--budget-usd", type=float)
    ap.add_argument("--cap-w", type=float, default=900.0, help="the capped site's cap")
    a = ap.parse_args()
    if a.scenario in ("demo", "both"):
        run(
            Scenario(
                "demo", None, "llama-3.1-8b", a.requests, a.concurrency or 40, a.budget_usd or 100.0
            )
        )
    if a.scenario in ("capped", "both"):
        run(
            Scenario(
                f"capped {a.cap_w:g} W",
                capped_fleet(a.cap_w),
                "llama-3.2-1b",
                a.requests,
                a.concurrency or 60,
                a.budget_usd or 0.004,
            )
        )


if __name__ == "__main__":
    main()
