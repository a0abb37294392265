"""`simulate`: what happens when this fleet and routing policy serve this trace."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from wattserve.core.admission import MIN_MAX_QUEUE_S
from wattserve.core.fleet import Fleet
from wattserve.core.governor import check_max_wait
from wattserve.core.policy import Policy, make_policy
from wattserve.core.records import RequestRecord
from wattserve.core.workload import Workload
from wattserve.core.workload_check import check_workload
from wattserve.errors import ConfigError
from wattserve.simulate.outcome import Outcome
from wattserve.simulate.report import comparison_table, summarize
from wattserve.simulate.simulator import Simulation

__all__ = [
    "MIN_MAX_QUEUE_S",
    "Outcome",
    "Simulation",
    "check_max_queue",
    "comparison_table",
    "simulate",
    "summarize",
]


def check_max_queue(value: float, field: str = "max_queue_s") -> float:
    """`value` as seconds from MIN_MAX_QUEUE_S up (inf: no limit), else ConfigError naming
    `field` (NaN too)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value >= MIN_MAX_QUEUE_S
    ):
        raise ConfigError(
            f"must be a number of seconds of at least {MIN_MAX_QUEUE_S:g} (inf: no limit), "
            f"got {value!r:.40}",
            field=field,
        )
    return float(value)


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
    `on_request` receives each request's record as it finishes or is refused.
    Arguments are checked before the run (`check_workload`: each request's fields, by index):
    a ConfigError naming what is wrong, not a traceback or a report of nonsense."""
    if not isinstance(fleet, Fleet):
        raise ConfigError(
            f"must be a Fleet (core.fleet.load_fleet), not {type(fleet).__name__}", field="fleet"
        )
    check_workload(workload)
    if not isinstance(policy, str) and not callable(getattr(policy, "choose", None)):
        raise ConfigError(
            "must be a policy's name or an object with choose(request, view), not "
            f"{type(policy).__name__}",
            field="policy",
        )
    check_max_wait(max_wait_s, "max_wait_s")
    check_max_queue(max_queue_s)
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
