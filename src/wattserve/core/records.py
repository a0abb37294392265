"""One record per request: what `simulate --requests-out` writes, one JSON object a line, and
what `compare` pairs with a real replay request by request (docs/simulate.md#--requests-out).

Times are seconds on the run's clock (0 = the trace's first arrival, after --rate-scale).
`first_token_s` and `end_s` are when the client sees the first and the last token (a link's
round trip included), `admitted_s` when the engine took the request into its running batch;
a request that never got there (refused, still waiting at the end) has None for the times it
did not reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# status: what happened to the request (reason says why when it is not ok)
OK, REJECTED, UNFINISHED = "ok", "rejected", "unfinished"
STATUSES = (OK, REJECTED, UNFINISHED)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request of a run, as the client and the engine saw it."""

    id: int
    row: int  # its line in the trace file (0 for a generated workload)
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    status: str = OK
    reason: str = ""
    admitted_s: float | None = None
    first_token_s: float | None = None
    end_s: float | None = None
    target: str | None = None  # deployment/replica, or a hosted API's name
    site: str | None = None
    preemptions: int = 0
    policy: str = ""

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """Seconds per output token after the first (None for one-token answers)."""
        return per_token_s(self.ttft_s, self.e2e_s, self.output_tokens)

    def as_json(self) -> dict[str, Any]:
        """The JSON line's object: the fields, then ttft_s, tpot_s and e2e_s."""
        return {
            "id": self.id,
            "row": self.row,
            "policy": self.policy,
            "arrival_s": self.arrival_s,
            "admitted_s": self.admitted_s,
            "first_token_s": self.first_token_s,
            "end_s": self.end_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "target": self.target,
            "site": self.site,
            "preemptions": self.preemptions,
            "status": self.status,
            "reason": self.reason,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "e2e_s": self.e2e_s,
        }


def per_token_s(ttft_s: float | None, e2e_s: float | None, tokens: int) -> float | None:
    """TPOT as vLLM's benchmark defines it: (end to end - TTFT) / (output tokens - 1)."""
    if ttft_s is None or e2e_s is None or tokens < 2:
        return None
    return (e2e_s - ttft_s) / (tokens - 1)


def _number(obj: dict[str, Any], key: str, *, optional: bool, whole: bool = False) -> Any:
    v = obj.get(key)
    if v is None and optional:
        return None
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float)
        or (whole and not isinstance(v, int))
        or not math.isfinite(v)
        or v < 0
    ):
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"field '{key}' must be {kind} >= 0, got {v!r}")
    return v


def policy_name(v: Any) -> str:
    """A policy as simulate names it, in a `--json` result or a `--requests-out` line: text,
    not empty. ValueError for null, a number or a list, which had become policies named ''
    or '[1]' (and '', sorting first, was the one compared, until 2026-12-07)."""
    if not isinstance(v, str) or not v:
        raise ValueError(f"must be the name of the policy simulated, got {v!r:.60}")
    return v


def _policy_field(obj: dict[str, Any]) -> str:
    """A line's policy, the field named in the error as parse_record names its others."""
    try:
        return policy_name(obj.get("policy"))
    except ValueError as exc:
        raise ValueError(f"field 'policy' {exc}") from None


def parse_record(obj: Any) -> RequestRecord:
    """A record from one JSON line's object; ValueError names the field that is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    status = obj.get("status")
    if status not in STATUSES:
        raise ValueError(f"field 'status' must be one of {', '.join(STATUSES)}, got {status!r}")
    times = {k: _number(obj, k, optional=True) for k in ("admitted_s", "first_token_s", "end_s")}
    return RequestRecord(
        id=_number(obj, "id", optional=False, whole=True),
        row=_number(obj, "row", optional=False, whole=True),
        arrival_s=float(_number(obj, "arrival_s", optional=False)),
        prompt_tokens=_number(obj, "prompt_tokens", optional=False, whole=True),
        output_tokens=_number(obj, "output_tokens", optional=False, whole=True),
        status=status,
        reason=str(obj.get("reason") or ""),
        target=None if obj.get("target") is None else str(obj["target"]),
        site=None if obj.get("site") is None else str(obj["site"]),
        preemptions=_number(obj, "preemptions", optional=True, whole=True) or 0,
        policy=_policy_field(obj),
        **times,
    )
