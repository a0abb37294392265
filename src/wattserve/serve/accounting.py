"""Where each request's outcome goes when it ends: the metrics, its key's budget (the hold
settled), and the ledger (a row queued for the writer thread)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from wattserve.core.workload import Request
from wattserve.serve.backends.base import Finish, GenRequest, guessed_finish
from wattserve.serve.budgets import Budgets, Charge, Hold, delivered, priced
from wattserve.serve.ledger import KeyRecord, Ledger
from wattserve.serve.metrics import Metrics

log = logging.getLogger("wattserve.serve")


def _finite(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) and x > 0 else 0.0


class Accounts:
    def __init__(
        self,
        metrics: Metrics,
        ledger: Ledger,
        budgets: Budgets,
        targets: dict[str, Any],
        target_of: dict[str, str],  # backend name -> the target it serves (Router.target_of)
        carbon_g: Callable[[str, float | None], float | None] = lambda site, joules: None,
    ) -> None:
        self.metrics, self.ledger, self.budgets, self.targets = metrics, ledger, budgets, targets
        self.target_of = target_of
        self.carbon_g = carbon_g  # (site, joules) -> grams of CO2, None when unknown

    def release(self, hold: Hold | None) -> None:
        """End a hold that charges nothing (the request never reached a backend's output)."""
        if hold is not None:
            self.budgets.release(hold)

    def settle(self, hold: Hold | None, fin: Finish) -> Charge | None:
        """Settle a hold to a request's figures; None without a hold (no key)."""
        if hold is None:
            return None
        actual = Charge(_finite(fin.usd), _finite(fin.energy_j))
        if actual.usd > hold.charge.usd or actual.joules > hold.charge.joules:
            # the worst case was beaten: billed at the hold, the gap is visible here
            self.metrics.inc("wattserve_budget_overruns_total", key=hold.key_id)
        return self.budgets.settle(hold, actual)

    def ended(
        self,
        greq: GenRequest,
        key: KeyRecord | None,
        hold: Hold | None,
        target: Any,
        backend: Any,
        req: Request,
        started: float,
        ttft_s: float | None,
        fin: Finish | None,
        produced: int,
        status: str,
        why: str | None,
    ) -> asyncio.Future[None]:
        """A request that reached a backend is over: settle its hold and record it. One that
        ended early (no Finish) is charged what its backend measured of it (an emulated
        engine: its shares of the steps it was in), else the target's figures for its prompt
        and the `produced` tokens, over the time it ran (see budgets.delivered)."""
        if fin is None:
            measured = backend.left_early(greq.id) if backend is not None else None
            counted = backend.prompt_counted(greq.id) if backend is not None else None
            if measured is not None:
                usd, joules = measured
            else:
                cost = delivered(target, req, produced, time.monotonic() - started)
                usd = cost.usd if priced(target) else None
                joules = cost.joules or None
            fin = guessed_finish(status, greq, produced, backend, joules, usd, counted)
        billed = self.settle(hold, fin)
        return self.record(greq, key, backend, ttft_s, started, fin, status, why, billed)

    def record(
        self,
        greq: GenRequest,
        key: KeyRecord | None,
        backend: Any,
        ttft_s: float | None,
        started: float,
        fin: Finish | None,
        status: str,
        why: str | None,
        billed: Charge | None = None,
    ) -> asyncio.Future[None]:
        """Count a request in the metrics and queue its ledger row; the future completes once
        the row is committed."""
        duration = time.monotonic() - started
        labels: dict[str, str] = {
            "model": greq.model,
            "backend": backend.name if backend else "-",
            "site": backend.site if backend else "-",
        }
        self.metrics.inc("wattserve_requests_total", 1.0, status=status, **labels)
        if fin is not None:
            self.metrics.inc(
                "wattserve_tokens_total", fin.prompt_tokens, direction="input", **labels
            )
            self.metrics.inc(
                "wattserve_tokens_total", fin.completion_tokens, direction="output", **labels
            )
            for direction, count, guessed in (
                ("input", fin.prompt_tokens, fin.prompt_estimated),
                ("output", fin.completion_tokens, fin.completion_estimated),
            ):
                if guessed:  # of wattserve_tokens_total, those no tokenizer counted
                    self.metrics.inc(
                        "wattserve_estimated_tokens_total", count, direction=direction, **labels
                    )
            if fin.energy_j:
                self.metrics.inc("wattserve_energy_joules_total", fin.energy_j, **labels)
                grams = self.carbon_g(labels["site"], fin.energy_j)
                if grams:
                    self.metrics.inc("wattserve_carbon_grams_total", grams, **labels)
            if fin.usd:
                self.metrics.inc("wattserve_cost_usd_total", fin.usd, **labels)
            if status == "ok":  # always measured: the whole request, first byte to last
                self.metrics.observe("wattserve_request_seconds", duration, model=greq.model)
            # TTFT and TPOT only where the first token was seen (None: a whole answer from a
            # server, whose time to the first token would be made up from the total)
            if ttft_s is not None and status == "ok":
                self.metrics.observe("wattserve_ttft_seconds", ttft_s, model=greq.model)
                tpot: float | None = None
                if fin.completion_tokens > 1:
                    tpot = (duration - ttft_s) / (fin.completion_tokens - 1)
                    self.metrics.observe("wattserve_tpot_seconds", tpot, model=greq.model)
                target = self.targets.get(self.target_of.get(backend.name, ""))
                if target is not None and hasattr(target, "observe"):
                    target.observe(ttft_s, tpot)
        return self.ledger.submit(
            {
                "id": greq.id,
                "ts": time.time(),
                "key_id": key.id if key else None,
                "model": greq.model,
                "backend": backend.name if backend else None,
                "site": backend.site if backend else None,
                "prompt_tokens": fin.prompt_tokens if fin else None,
                "completion_tokens": fin.completion_tokens if fin else None,
                "prompt_tokens_estimated": int(fin.prompt_estimated) if fin else None,
                "completion_tokens_estimated": int(fin.completion_estimated) if fin else None,
                "ttft_s": ttft_s,
                "duration_s": duration,
                "energy_j": fin.energy_j if fin else None,
                "usd": fin.usd if fin else None,
                "status": status,
                "error": why,
                "billed_usd": billed.usd if billed else None,
                "billed_j": billed.joules if billed else None,
            }
        )


async def durable(done: asyncio.Future[None], rid: str) -> None:
    """Wait for a record's commit (the last byte of a response waits for it)."""
    try:
        await done
    except Exception as exc:  # the answer is still sent: the client has its tokens
        log.error("wattserve: %s: ledger write failed: %s", rid, exc)
