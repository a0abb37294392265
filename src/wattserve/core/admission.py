"""Admission: the one path from a request to the target that takes it, called by the
simulator's event loop (virtual clock) and the gateway's router (wall clock) alike.

The policy chooses among the view's candidates; the PowerGovernor admits the choice only if
its site's power stays under the cap; the mechanism may then refuse to bind it (the gateway,
when every backend of the target already failed this request); a refused target is excluded
and the policy chooses again. When nothing is admissible the refusal says why, in order of
precedence: `power` (a target was refused for power: waiting may help), `outage` (a target was
unreachable because its site link is down), `residency` (a local-only request, and no deployment
at its origin serves its model: nothing will change that) or `none`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, Literal, NamedTuple, TypeVar

from wattserve.core.governor import PowerGovernor
from wattserve.core.policy import Policy
from wattserve.core.targets import Target
from wattserve.core.view import View
from wattserve.core.workload import Request

B = TypeVar("B")
Refusal = Literal["power", "outage", "residency", "none"]

# How often a request refused for power (and allowed to wait, up to --max-wait) is offered
# again, on either clock: the simulator retried every 0.25 s and the gateway every 50 ms, so a
# request waiting for power was placed up to 0.2 s later in simulate than in serve.
POWER_RETRY_S = 0.05

# The longest a request waits for its first token, predicted or actual, before it is refused
# (serve's and simulate's --max-queue): a target predicting a later first token is passed
# over, and a request placed that still has none after it gives up its place.
MAX_QUEUE_S = 30.0
# The shortest such limit either takes: at 0 every request is refused, its first token never
# being predicted at once.
MIN_MAX_QUEUE_S = 0.001


def queued_past(target: Target, req: Request, max_queue_s: float) -> float | None:
    """The first token's predicted wait for `req` on `target` when it is past `max_queue_s`
    (the request is then passed over there), else None."""
    wait_s = target.ttft_s(req)
    return wait_s if wait_s > max_queue_s else None


def queue_refusal(model: str, max_queue_s: float) -> str:
    """Why a request is refused when every target that would take it predicted a first token
    past `max_queue_s`. One text per model and limit (simulate counts refusals by reason; with
    the shortest prediction in it, one saturated run gave eight reasons for one refusal)."""
    return (
        f"on every backend that serves {model} the first token would take more than "
        f"{max_queue_s:g} s (its queue, its prefill and the network, as predicted)"
    )


def residency_refusal(req: Request) -> str:
    """Why a local-only request is refused when no deployment at its origin serves its model
    (the `residency` refusal), or when it names no origin."""
    if req.origin is None:
        return "a local-only request must name its site (x-wattserve-site, a trace row's origin)"
    return (
        f"this request may not leave site {req.origin}, and no deployment there serves {req.model}"
    )


def no_first_token(max_queue_s: float) -> str:
    """Why a placed request with no first token after `max_queue_s` gives up its place."""
    return f"no first token within {max_queue_s:g} s: the fleet is saturated"


class Admission(NamedTuple, Generic[B]):
    """The outcome: the target and what the mechanism bound on it, or None and the refusal.
    `cut_by_outage` is also set on success when the request had to go around a down link."""

    target: Target | None
    bound: B | None
    refusal: Refusal | None
    cut_by_outage: bool
    reason: str = ""  # why the policy placed nothing, in its own words (it may give none)
    # the targets passed over for power, on success too (the request then went to the
    # policy's next choice, such as a hosted API): where more power is wanted
    powered_out: tuple[str, ...] = ()


def admit(
    req: Request,
    now: float,
    policy: Policy,
    view: View,
    governor: PowerGovernor,
    bind: Callable[[Target], B | None],
    exclude: Iterable[str] = (),
) -> Admission[B]:
    """Place `req` at time `now` (see the module docstring). `bind(target)` returns what the
    mechanism places the request on (an engine replica, a backend), or None to exclude the
    target. `exclude`: target names that may not be chosen. A rate-limited target's token is
    taken on success."""
    view.decide_at(now)
    excluded = view.exclude
    excluded.clear()
    excluded.update(exclude)
    cut = False
    powered_out: list[str] | None = None  # made only when needed: admit is on the hot path
    targets = view.targets
    while True:
        decision = policy.choose(req, view)
        cut = cut or view.cut_by_outage
        name = decision.target
        if name is None or name in excluded:
            break
        target = targets[name]
        if not governor.admits(target.site, target):
            excluded.add(name)
            powered_out = [] if powered_out is None else powered_out
            powered_out.append(name)
            continue
        bound = bind(target)
        if bound is None:
            excluded.add(name)
            continue
        if target.rate_limited:
            target.take()
        return Admission(
            target, bound, None, cut, "", () if powered_out is None else tuple(powered_out)
        )
    refusal: Refusal = (
        "power"
        if powered_out
        else "outage"
        if cut
        else "residency"
        if req.local_only and not view.static_candidates(req)
        else "none"
    )
    said = decision.reason if decision.target is None else ""
    return Admission(
        None, None, refusal, cut, said, () if powered_out is None else tuple(powered_out)
    )
