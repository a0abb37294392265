"""Budgets and rate limits as reservations.

At admission a request holds its worst case (its prompt and `max_tokens` at the chosen
target's prices and predicted energy) against its key's remaining budget, in one step that
nothing can interleave with; when it ends the hold is settled to what the request actually
cost (never more than it held), or released if it never reached a backend. Spend can then
never exceed a budget, however many requests run at once.

`Budgets` is the interface the gateway calls; `LocalBudgets` keeps the state in this process
(one gateway); `wattserve.serve.shared_budgets.RedisBudgets` shares it between replicas. Admission
(take_request, reserve) is async: a shared store answers over the network. A settlement needs
no shared answer (the charge is the hold capped), so settle and release return at once.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from wattserve.core.energy import request_energy_bound_j
from wattserve.core.perf import PerfModel
from wattserve.core.ratelimit import TokenBucket
from wattserve.core.workload import Request
from wattserve.serve.ledger import KeyRecord

# The worst case doubles what it is built from (see worst_case): an emulated step slowed under a
# power cap bills the extra idle time, a request's share of a device's time depends on the
# batches it runs in, and the stretch of waiting for power is measured after the fact.
# Measured overruns are counted in wattserve_budget_overruns_total.
HEADROOM = 2.0
# Retry-After of a budget refusal that requests in flight cause: their holds end as they do
HELD_RETRY_S = 1.0


@dataclass(frozen=True)
class Charge:
    """Dollars and joules (0 where unknown: an unknown energy is never billed)."""

    usd: float
    joules: float


@dataclass(frozen=True)
class Hold:
    """A reservation of `charge` against key `key_id`."""

    id: int
    key_id: str
    charge: Charge


@dataclass(frozen=True)
class Refusal:
    """Why a key may not run a request now: an HTTP 429 with OpenAI's type and code."""

    message: str
    type_: str
    code: str
    retry_after_s: float | None = None
    status: int = 429


class Budgets(Protocol):
    """Admission against per-key budgets and rate limits. Each method is atomic."""

    async def take_request(self, key: KeyRecord) -> Refusal | None:
        """Count one request against the key's requests/s limit, or refuse it."""
        ...

    async def reserve(self, key: KeyRecord, worst: Charge) -> Hold | Refusal:
        """Hold `worst` against the key's remaining budget, or refuse it."""
        ...

    def settle(self, hold: Hold, actual: Charge) -> Charge:
        """End a hold: charge the key what the request cost, capped at the hold. Returns the
        charge (what the ledger adds to the key's spend)."""
        ...

    def release(self, hold: Hold) -> None:
        """End a hold that charges nothing (the request never reached a backend)."""
        ...


class LocalBudgets:
    """Budgets kept in this process: spend starts from the ledger's figures for each key and
    grows with each settled hold; holds in flight are counted alongside."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.spent: dict[str, list[float]] = {}  # key id -> [usd, joules], settled
        self.held: dict[str, list[float]] = {}  # key id -> [usd, joules, holds], in flight
        self.holds: dict[int, Hold] = {}
        self.buckets: dict[str, TokenBucket] = {}  # key id -> its rate limit
        self._ids = itertools.count(1)

    async def take_request(self, key: KeyRecord) -> Refusal | None:
        spent = self.spent.get(key.id) or (key.spent_usd, key.spent_j)
        if (done := spent_refusal(key, spent[0], spent[1])) is not None:
            return done
        if not key.rps:
            return None
        now = self.clock()
        bucket = self.buckets.get(key.id)
        if bucket is None:  # at least one request at once, then `rps` a second
            bucket = self.buckets[key.id] = TokenBucket(key.rps, now=now)
        if bucket.try_take(now):
            return None
        return Refusal(
            f"key '{key.name}' is over its {key.rps:g} requests/s limit",
            "rate_limit_error",
            "rate_limit_exceeded",
            retry_after_s=(1.0 - bucket.tokens) / key.rps,
        )

    async def reserve(self, key: KeyRecord, worst: Charge) -> Hold | Refusal:
        spent = self.spent.setdefault(key.id, [key.spent_usd, key.spent_j])
        held = self.held.setdefault(key.id, [0.0, 0.0, 0])
        for i, (budget, need, unit) in enumerate(
            ((key.budget_usd, worst.usd, "$"), (key.budget_j, worst.joules, "J"))
        ):
            if budget is None:
                continue
            left = budget - spent[i] - held[i]
            if spent[i] >= budget or need > left:
                what = f"${budget:g}" if unit == "$" else f"{budget:g} J energy"
                return Refusal(
                    f"key '{key.name}' has {_amount(max(0.0, left), unit)} of its {what} budget "
                    f"left (spent {_amount(spent[i], unit)}, {_amount(held[i], unit)} held by "
                    f"requests in flight); this request may cost up to {_amount(need, unit)}",
                    "insufficient_quota",
                    "insufficient_quota",
                    retry_after_s=held_retry_s(budget, spent[i], held[i], need),
                )
        held[0] += worst.usd
        held[1] += worst.joules
        held[2] += 1
        hold = Hold(next(self._ids), key.id, worst)
        self.holds[hold.id] = hold
        return hold

    def settle(self, hold: Hold, actual: Charge) -> Charge:
        self._end(hold)
        charge = Charge(min(actual.usd, hold.charge.usd), min(actual.joules, hold.charge.joules))
        spent = self.spent[hold.key_id]
        spent[0] += charge.usd
        spent[1] += charge.joules
        return charge

    def release(self, hold: Hold) -> None:
        self._end(hold)

    def _end(self, hold: Hold) -> None:
        if self.holds.pop(hold.id, None) is None:
            raise ValueError(f"hold {hold.id} was already settled or released")
        held = self.held[hold.key_id]
        held[2] -= 1
        if held[2] <= 0:  # none left: nothing held (floats subtracted leave ~1e-19 behind,
            held[:] = [0.0, 0.0, 0]  # refusals named it, with a Retry-After that won't help)
            return
        held[0] = max(0.0, held[0] - hold.charge.usd)
        held[1] = max(0.0, held[1] - hold.charge.joules)


def spent_refusal(key: KeyRecord, usd: float, joules: float) -> Refusal | None:
    """The door's refusal of a key whose budget is spent (by `usd` and `joules`): nothing but a
    new budget helps, and such a request is not written to the ledger (docs/serve.md: a
    client retrying it as fast as it can would fill the disk; until 2026-12-06 each retry was
    a `rejected` row); None while some is left."""
    for budget, spent, unit in ((key.budget_usd, usd, "$"), (key.budget_j, joules, "J")):
        if budget is not None and spent >= budget:
            what = f"${budget:g}" if unit == "$" else f"{budget:g} J energy"
            return Refusal(
                f"key '{key.name}' has spent its {what} budget ({_amount(spent, unit)})",
                "insufficient_quota",
                "insufficient_quota",
            )
    return None


def held_retry_s(budget: float, spent: float, held: float, need: float) -> float | None:
    """The Retry-After of a refusal by a budget: HELD_RETRY_S where holds of requests in
    flight stand between the request and a budget that would cover it (they settle at most to
    what they hold, so room may come back), None where what is spent leaves too little
    (nothing but a new budget helps)."""
    return HELD_RETRY_S if held > 0 and spent < budget and spent + need <= budget else None


def _amount(value: float, unit: str) -> str:
    return f"${value:.3g}" if unit == "$" else f"{value:.3g} J"


def _finite(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) and x > 0 else 0.0


def usd_per_s(target: Any) -> float:
    """What a target's devices cost per second of use (their hourly price, or their purchase
    price over their lifetime), which backends bill by time share; 0 for token-priced APIs."""
    spec = getattr(target, "spec", None)
    if spec is not None and hasattr(spec, "cost"):
        return float(spec.cost.billable()[0])
    return max(
        (_finite(getattr(b, "usd_per_s", 0.0)) for b in getattr(target, "backends", ())),
        default=0.0,
    )


def priced(target: Any) -> bool:
    """Whether a target's dollars are known: False for devices with no price (its requests'
    `usd` is then None, not $0; a budget's hold and charge count them at 0)."""
    spec = getattr(target, "spec", None)
    if spec is not None and hasattr(spec, "cost"):
        return bool(spec.cost.known)
    return all(getattr(b, "priced", True) for b in getattr(target, "backends", ()))


def worst_case(target: Any, req: Request, stretch: float = 1.0) -> Charge:
    """The most `req` (its prompt and `output_tokens` = max_tokens) can cost on `target`: the
    target's predicted dollars and joules, plus its time-priced dollars over the predicted
    duration times `stretch` (how much a power cap stretches the chosen backend's steps now:
    serve.stretch; 1 without a binding cap, and read as 1 unless finite and above 1), with
    HEADROOM. Unknown energy (inf or NaN) holds 0 J: it is not billed either."""
    ttft_s, tpot_s, joules, usd = target.predict(req)
    duration_s = _finite(ttft_s) + req.output_tokens * _finite(tpot_s)
    if math.isfinite(stretch) and stretch > 1.0:
        duration_s *= stretch
    joules = _finite(joules)
    perf = getattr(target, "perf", None)
    if perf is not None:  # an engine pool: see _alone_j
        joules = max(joules, _alone_j(perf, req))
    return Charge(HEADROOM * (_finite(usd) + usd_per_s(target) * duration_s), HEADROOM * joules)


def _alone_j(perf: PerfModel, req: Request) -> float:
    """See core.energy.request_energy_bound_j: the policies' prediction is the marginal energy
    at today's batch, which a batch that later empties can exceed several times."""
    return _finite(request_energy_bound_j(perf, req.prompt_tokens, req.output_tokens))


def delivered(target: Any, req: Request, output_tokens: int, elapsed_s: float) -> Charge:
    """What a request that ended early (client gone, backend failed) cost for the prompt and
    the `output_tokens` it got in `elapsed_s`: the target's predicted figures for that much
    work, and its time-priced dollars for the time it ran."""
    _, _, joules, usd = target.predict(replace(req, output_tokens=output_tokens))
    return Charge(_finite(usd) + usd_per_s(target) * max(0.0, elapsed_s), _finite(joules))
