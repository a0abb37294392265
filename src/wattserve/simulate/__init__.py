"""`simulate`: what happens when this fleet and routing policy serve this trace."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from wattserve.core.fleet import Fleet
from wattserve.core.policy import Policy, make_policy
from wattserve.core.records import RequestRecord
from wattserve.core.workload import Workload
from wattserve.simulate.report import comparison_table, summarize
from wattserve.simulate.simulator import Outcome, Simulation

__all__ = ["Outcome", "Simulation", "comparison_table", "simulate", "summarize"]


def simulate(
    fleet: Fleet,
    workload: Workload,
    policy: str | Policy = "least_loaded",
    *,
    governor: bool = True,
    exact: bool = False,
    seed: int = 0,
    max_wait_s: float = 30.0,
    max_queue_s: float = math.inf,
    progress: Callable[[float], None] | None = None,
    on_request: Callable[[RequestRecord], None] | None = None,
) -> tuple[dict[str, Any], Outcome]:
    """Run one simulation; returns the report dict (the `--json` form) and the raw outcome.
    `max_queue_s`: serve's --max-queue (core.admission: a target predicting a later first
    token is passed over; a request queued that long is refused); none by default.
    `on_request` receives each request's record as it finishes or is refused."""
    pol = make_policy(policy) if isinstance(policy, str) else policy
    out = Simulation(
        fleet,
        workload,
        pol,
        governor=governor,
        exact=exact,
        seed=seed,
        max_wait_s=max_wait_s,
        max_queue_s=max_queue_s,
        progress=progress,
        on_request=on_request,
    ).run()
    return summarize(out, fleet), out
