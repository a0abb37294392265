"""The live dashboard at the gateway's `/`: per site, power against its cap over the last ten
minutes; per target, load, health, TTFT/TPOT, J/token and $/1M tokens; the last requests with
where they went and why; totals of requests, $, J and gCO2; admin controls (drain a target,
change a cap) that call `POST /v1/fleet` with the key typed into the page.

The page polls `GET /dashboard/state` once a second. That endpoint answers only to whoever may
read `/v1/fleet` (the gateway's own check is asked), so the dashboard shows nothing the fleet
endpoint would not. Requests are read from the ledger's SQLite file through a second, read-only
connection, a few new rows at a time (by rowid), so the page costs the gateway little under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import math
import sqlite3
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from wattserve.report import asset

if TYPE_CHECKING:
    from wattserve.serve.app import Gateway

HISTORY_S = 600  # seconds of power history kept per site
SAMPLE_S = 1.0
RECENT = 25  # requests listed
WINDOW = 500  # requests per target behind its TTFT/TPOT/J/$ figures
J_PER_KWH = 3.6e6
ROWS = (
    "SELECT rowid, ts, model, backend, site, completion_tokens, ttft_s, "
    "duration_s, energy_j, usd, status, error FROM requests WHERE rowid > ? ORDER BY rowid "
    "LIMIT 5000"
)


# SQLite keeps what a row was given: one text figure or blob in the ledger (a hand edit,
# another program) stopped the page's sampling for good, its power history and totals frozen
# from that row on. A column is read as its type, or as unknown (None).


def _number(value: object) -> float | None:
    """A ledger figure as a finite number, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _known(total: float, unknown: float, known: float) -> float | None:
    """A dashboard total: None where requests were served without the figure and none had it
    (it had read 0 J and 0 g for a fleet whose power is unknown, where `usage` says unknown)."""
    return None if unknown and not known else total


def _text(value: object) -> str | None:
    """A ledger text column as text, or None."""
    return value if isinstance(value, str) else None


class Dashboard:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.t0 = time.monotonic()
        self.power: dict[str, deque[tuple[float, float, float | None]]] = defaultdict(
            lambda: deque(maxlen=int(HISTORY_S / SAMPLE_S))
        )
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.window: dict[
            str, deque[tuple[float | None, float | None, int, float | None, float | None]]
        ] = defaultdict(lambda: deque(maxlen=WINDOW))
        self.totals: dict[str, float] = defaultdict(float)
        self.site_j: dict[str, float] = defaultdict(float)
        self.last_rowid = 0
        self.db: sqlite3.Connection | None = None
        self.task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        uri = Path(self.gateway.ledger.path).resolve().as_uri() + "?mode=ro"
        with contextlib.suppress(sqlite3.Error):
            self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            row = self.db.execute("SELECT COALESCE(MAX(rowid), 0) FROM requests").fetchone()
            self.last_rowid = int(row[0])  # totals count from the gateway's start
        self.task = asyncio.create_task(self._sample())

    async def stop(self, app: web.Application) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.db is not None:
            self.db.close()

    async def _sample(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_S)

    def sample(self) -> None:
        """Record each site's power and take in the ledger's new rows."""
        now = time.monotonic() - self.t0
        for name, s in self.gateway.router.fleet_state()["sites"].items():
            self.power[name].append((round(now, 2), s["power_w"], s["power_cap_w"]))
        if self.db is None:
            return
        try:
            rows = self.db.execute(ROWS, (self.last_rowid,)).fetchall()
        except sqlite3.Error:
            return  # the ledger is busy or being created: next second
        for rowid, *values in rows:
            self.last_rowid = rowid
            ts, model, backend, site, ct, ttft, dur, j, usd, status, err = values
            ts, ct, ttft, dur, j, usd = map(_number, (ts, ct, ttft, dur, j, usd))
            model, backend, site, status, err = map(_text, (model, backend, site, status, err))
            ct = None if ct is None else int(ct)
            self.totals["requests"] += 1
            self.totals["ok"] += status == "ok"
            self.totals["usd"] += usd or 0.0
            self.totals["energy_j"] += j or 0.0
            # as `wattserve usage` sums them: a served request (ok, or any that made tokens)
            # with no figure leaves the sum short, said rather than shown as 0; a sum with no
            # figure known at all is unknown
            served = status == "ok" or (ct or 0) > 0
            self.totals["usd_unknown"] += served and usd is None
            self.totals["energy_unknown"] += served and j is None
            self.totals["usd_known"] += usd is not None
            self.totals["energy_known"] += j is not None
            self.totals["output_tokens"] += ct or 0
            if site and j:
                self.site_j[site] += j
            tpot = (dur - ttft) / (ct - 1) if ttft is not None and dur and ct and ct > 1 else None
            if status == "ok":
                target = self.gateway.router.target_of.get(backend or "-", backend or "-")
                self.window[target].append((ttft, tpot, ct or 0, j, usd))
            self.recent.appendleft(
                {
                    "ts": ts,
                    "model": model,
                    "backend": backend,
                    "site": site,
                    "status": status,
                    "ttft_s": ttft,
                    "completion_tokens": ct,
                    "energy_j": j,
                    "usd": usd,
                    "reason": err if err else f"chosen by the {self.policy} policy",
                }
            )

    @property
    def policy(self) -> str:
        return str(self.gateway.router.policy.name)

    # -- what the page reads ---------------------------------------------------------------

    def _gco2(self) -> float | None:
        if not self.site_j and self.totals["energy_unknown"]:
            return None  # energy served, none of it known
        total = 0.0
        for site, joules in self.site_j.items():
            spec = self.gateway.router.fleet.sites.get(site)
            g = getattr(spec, "carbon_g_per_kwh", None)  # fleet files that give it
            if g is None:
                return None  # an unknown stays unknown
            total += joules * getattr(spec, "pue", 1.0) * g / J_PER_KWH  # as serve's usage
        return total

    def _stats(self, name: str) -> dict[str, Any]:
        rows = self.window.get(name) or ()
        ttfts = sorted(r[0] for r in rows if r[0] is not None)
        tpots = sorted(r[1] for r in rows if r[1] is not None)
        tokens = sum(r[2] for r in rows)
        j_tokens = sum(r[2] for r in rows if r[3] is not None)
        usd_tokens = sum(r[2] for r in rows if r[4] is not None)
        joules = sum(r[3] or 0.0 for r in rows)
        usd = sum(r[4] or 0.0 for r in rows)
        return {
            "requests": len(rows),
            "ttft_p50_s": ttfts[len(ttfts) // 2] if ttfts else None,
            "tpot_p50_s": tpots[len(tpots) // 2] if tpots else None,
            "energy_j_per_token": joules / j_tokens if j_tokens else None,
            "usd_per_mtok": usd / usd_tokens * 1e6 if usd_tokens else None,
            "output_tokens": tokens,
        }

    def state(self) -> dict[str, Any]:
        fleet = self.gateway.router.fleet_state()
        for name, s in fleet["sites"].items():
            hist = self.power.get(name) or deque()
            s["history"] = {
                "t_s": [h[0] for h in hist],
                "power_w": [h[1] for h in hist],
                "cap_w": [h[2] for h in hist],
            }
        for name, t in fleet["targets"].items():
            t["stats"] = self._stats(name)
        fleet["recent"] = list(self.recent)
        fleet["totals"] = {
            "requests": int(self.totals["requests"]),
            "ok": int(self.totals["ok"]),
            # None where every request served has no figure; else the known part, with the
            # requests served without one (as `wattserve usage` marks a sum `+?`)
            "usd": _known(self.totals["usd"], self.totals["usd_unknown"], self.totals["usd_known"]),
            "energy_j": _known(
                self.totals["energy_j"], self.totals["energy_unknown"], self.totals["energy_known"]
            ),
            "usd_unknown_requests": int(self.totals["usd_unknown"]),
            "energy_unknown_requests": int(self.totals["energy_unknown"]),
            "output_tokens": int(self.totals["output_tokens"]),
            "gco2": self._gco2(),
            "since": "the gateway started",
        }
        fleet["in_flight"] = self.gateway.in_flight
        return fleet

    # -- handlers --------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=self.html(), content_type="text/html", charset="utf-8")

    async def state_handler(self, request: web.Request) -> web.Response:
        allowed = await self.gateway.fleet(request)  # the gateway decides who may look
        if allowed.status != 200:
            return allowed
        return web.Response(
            text=json.dumps(self.state(), allow_nan=False),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    def html(self) -> str:
        title = html.escape(f"wattserve: {self.gateway.router.fleet.name}")
        return "\n".join(
            [
                "<!doctype html><html><head><meta charset='utf-8'>",
                f"<title>{title}</title>",
                f"<style>{asset('uPlot.min.css')}{asset('dashboard.css')}</style>",
                f"<script>{asset('uPlot.iife.min.js')}</script>",
                f"<script>{asset('charts.js')}</script>",
                "</head><body>",
                asset("dashboard.html").replace("{{title}}", title),
                f"<script>{asset('dashboard.js')}</script>",
                "</body></html>",
            ]
        )


def add_dashboard(app: web.Application, gateway: Gateway) -> None:
    """Serve the dashboard at `/` and its state at `/dashboard/state`."""
    dash = Dashboard(gateway)
    app.router.add_get("/", dash.page)
    app.router.add_get("/dashboard/state", dash.state_handler)
    app.on_startup.append(dash.start)
    app.on_cleanup.append(dash.stop)
