"""Checking a workload built in Python (simulate's API): each request has the types and ranges a
trace row is read to (core.traces), named by its index and field when it has not."""

from __future__ import annotations

from typing import Any

from wattserve.core.traces import MAX_ARRIVAL_S, MAX_TOKENS
from wattserve.core.workload import SLO, Request, Workload
from wattserve.core.yamlio import shown
from wattserve.errors import ConfigError


def check_workload(workload: Workload) -> None:
    """ConfigError, naming the request's index and field, unless `workload` can be simulated:
    its `slos` give "default", and each request has the types and ranges a trace row is
    read to (core.traces: arrivals from 0 to MAX_ARRIVAL_S in order, whole token counts up to
    MAX_TOKENS, an output of at least one token; a prompt of 0 tokens is let through, to be
    refused as vLLM refuses it, "empty prompt"). One pass, a few attribute reads a request."""
    if not isinstance(workload, Workload):
        raise ConfigError(
            f"must be a Workload (core.workload.load_workload), not {type(workload).__name__}",
            field="workload",
        )
    slos = workload.slos
    if not isinstance(slos, dict) or not isinstance(slos.get("default"), SLO):
        raise ConfigError(
            'must map SLO class names to SLOs, "default" among them', field="workload.slos"
        )
    if not isinstance(workload.requests, list | tuple):  # the simulator indexes them
        raise ConfigError(
            f"must be a list of Requests, not {type(workload.requests).__name__}",
            field="workload.requests",
        )
    last = 0.0
    for i, r in enumerate(workload.requests):
        # the common case, exact types, in one expression; anything else is looked at below
        if (
            type(r) is Request
            and (type(a := r.arrival_s) is float or type(a) is int)
            and last <= a <= MAX_ARRIVAL_S
            and type(p := r.prompt_tokens) is int
            and 0 <= p <= MAX_TOKENS
            and type(o := r.output_tokens) is int
            and 1 <= o <= MAX_TOKENS
            and type(m := r.model) is str
            and m
            and (r.origin is None or type(r.origin) is str)
            and type(r.slo) is str
            and type(r.local_only) is bool
            and type(r.id) is int
            and type(r.row) is int
            and type(r.cls) is str
        ):
            last = a
        else:
            last = _checked_request(i, r, last, workload.trace)


def _checked_request(i: int, r: Any, last: float, trace: str) -> float:
    """`r`'s arrival if `r` (the i-th request, after an arrival at `last`) is a request the
    simulator takes (a subclass of float, int or str passes), else a ConfigError naming it."""

    def bad(key: str, why: str) -> ConfigError:
        row = getattr(r, "row", 0)
        at = trace and isinstance(row, int) and not isinstance(row, bool) and row > 0
        return ConfigError(
            why,
            path=trace if at else None,
            line=row if at else None,
            field=f"requests[{i}]{key}",
        )

    if not isinstance(r, Request):
        raise bad("", f"must be a Request (core.workload.Request), not {type(r).__name__}")
    a = r.arrival_s
    if isinstance(a, bool) or not isinstance(a, int | float):
        raise bad(".arrival_s", f"must be a number of seconds, not {shown(a)}")
    if not 0 <= a <= MAX_ARRIVAL_S:  # NaN too
        raise bad(
            ".arrival_s",
            f"must be from 0 to {MAX_ARRIVAL_S:g} s after the workload's start, not {shown(a)}",
        )
    if a < last:
        raise bad(
            ".arrival_s",
            f"{a:g} s is before requests[{i - 1}]'s {last:g} s: requests must come in "
            "arrival order (sort them by arrival_s)",
        )
    for key, least in (("prompt_tokens", 0), ("output_tokens", 1)):
        n = getattr(r, key)
        if isinstance(n, bool) or not isinstance(n, int) or not least <= n <= MAX_TOKENS:
            raise bad(
                f".{key}",
                f"must be a whole number (int) of tokens from {least} to {MAX_TOKENS:,}, "
                f"not {shown(n)}",
            )
    if not isinstance(r.model, str) or not r.model:
        raise bad(".model", f"must name a model (non-empty text), not {shown(r.model)}")
    if r.origin is not None and not isinstance(r.origin, str):
        raise bad(".origin", f"must name a site (text) or be None, not {shown(r.origin)}")
    if not isinstance(r.slo, str):
        raise bad(".slo", f"must name an SLO class (text), not {shown(r.slo)}")
    if not isinstance(r.local_only, bool):
        raise bad(".local_only", f"must be True or False, not {shown(r.local_only)}")
    for key in ("id", "row"):
        n = getattr(r, key)
        if isinstance(n, bool) or not isinstance(n, int):
            raise bad(f".{key}", f"must be a whole number (int), not {shown(n)}")
    if not isinstance(r.cls, str):
        raise bad(".cls", f"must be text (a class name, or empty), not {shown(r.cls)}")
    return float(a)
