"""Reading the two files `wattserve compare` holds side by side: `simulate --json` (an object,
or the list `--compare` writes), `simulate --requests-out` (JSON lines), `bench --json` and
`vllm bench serve`'s result file.

Each is a regular file of bounded size read as UTF-8 (`core/textfile.py`); anything wrong with
it (empty, not JSON, nested too deeply, a figure that is not a finite number >= 0, figures
that contradict each other, no figure compare reads at all) is a ConfigError naming the file,
and its line and field where there is one (docs/bench.md#wattserve-compare).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from wattserve.bench.compare import (
    MAX_S,
    MAX_WHOLE,
    Timed,
    kind_of,
    metrics,
    per_request,
    records_result,
)
from wattserve.core.records import OK, RequestRecord, parse_record, policy_name
from wattserve.core.textfile import load_json, read_text
from wattserve.errors import ConfigError

MAX_RECORD_S = MAX_S  # a requests file's times, from the trace's start: 31 years
RECORD_TIMES = ("arrival_s", "admitted_s", "first_token_s", "end_s")
# the latencies a line repeats from its times (what compare reads are the times): a copy
# rounded for reading (the docs' example, to 0.1 ms) agrees; one edited or of another run not
DERIVED = ("ttft_s", "tpot_s", "e2e_s")
DERIVED_TOL_S, DERIVED_TOL_SHARE = 1e-4, 1e-3
TIME_ORDER = (
    ("arrival_s", "admitted_s"),
    ("arrival_s", "first_token_s"),
    ("arrival_s", "end_s"),
    ("first_token_s", "end_s"),
)


class ResultFile(NamedTuple):
    """One file read: its kind (simulate, bench, requests, vllm), the label shown for it, the
    result object, its metrics, its completed requests where it lists them, and a note when
    it held several policies and none was named."""

    kind: str
    label: str
    raw: dict[str, Any]
    figures: dict[str, float | None]
    requests: list[Timed]
    note: str = ""


def _short(text: str, limit: int = 60) -> str:
    """A name from the file, made safe to print: one line, cut short."""
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _record(obj: Any, path: Path, line: int | None) -> RequestRecord:
    """One `--requests-out` line, its times in order and within MAX_RECORD_S."""

    def error(message: str, field: str | None = None) -> ConfigError:
        return ConfigError(message, path=str(path), line=line, field=field)

    if isinstance(obj, dict):
        for key, v in obj.items():
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_WHOLE:
                raise error("must be a number below 2^53", _short(key))
    try:
        rec = parse_record(obj)
    except ValueError as exc:
        raise error(str(exc)) from None
    for key in RECORD_TIMES:
        t = getattr(rec, key)
        if t is not None and t > MAX_RECORD_S:
            raise error(f"{t:.3g} s is past {MAX_RECORD_S:.0e} s from the start", key)
    for before, after in TIME_ORDER:  # else a negative TTFT or end-to-end time
        t0, t1 = getattr(rec, before), getattr(rec, after)
        if t0 is not None and t1 is not None and t1 < t0:
            raise error(f"{t1} is before {before} ({t0})", after)
    if rec.status == OK:  # else it drops out of the means, and the file counts it completed
        for key in ("first_token_s", "end_s"):
            if getattr(rec, key) is None:
                raise error("is null on a line of status ok: a completed request has one", key)
    for key in DERIVED:
        _derived(obj, rec, key, error)
    return rec


def _derived(
    obj: dict[str, Any], rec: RequestRecord, key: str, error: Callable[..., ConfigError]
) -> None:
    """A line's `ttft_s`, `tpot_s` or `e2e_s` where it gives one: a finite number >= 0, the
    one its times give (docs/simulate.md#--requests-out)."""
    given = obj.get(key)
    if given is None:
        return
    if isinstance(given, bool) or not isinstance(given, int | float) or not 0 <= given < math.inf:
        raise error(f"must be a finite number >= 0 or null, got {given!r:.40}", key)
    want = getattr(rec, key)
    if want is None:
        raise error(
            f"is {given} where the line's times give none (first_token_s or end_s null, or "
            "one output token for tpot_s)",
            key,
        )
    if abs(given - want) > DERIVED_TOL_S + DERIVED_TOL_SHARE * abs(want):
        raise error(f"is {given} where the line's times give {want:.6g}", key)


def _lines(path: Path, text: str) -> list[RequestRecord] | None:
    """The records of a `--requests-out` file, or None when the text is not one."""
    records: list[RequestRecord] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = load_json(line, str(path), line_no)
        except json.JSONDecodeError:
            if not records:
                return None
            raise ConfigError("not a JSON line", path=str(path), line=line_no) from None
        if not records and not isinstance(obj, dict):
            return None
        if not records and ("status" not in obj or "row" not in obj):
            # a JSON object on one line, and more text after it: JSON lines, not a record
            missing = [k for k in ("row", "status") if k not in obj]
            raise ConfigError(
                "missing; JSON lines, but not simulate --requests-out's: each line needs "
                "row and status",
                path=str(path),
                line=line_no,
                field=missing[0],
            )
        records.append(_record(obj, path, line_no))
    return records or None


def _names(names: list[str]) -> str:
    return _short(", ".join(names), 200)


def _one_policy(
    records: list[RequestRecord], path: Path, pick: str | None
) -> tuple[list[RequestRecord], str]:
    """The records of the policy picked (or the first, with a note saying so)."""
    policies = sorted({r.policy for r in records})
    if pick is None and len(policies) < 2:
        return records, ""
    chosen = pick if pick is not None else policies[0]
    if chosen not in policies:
        raise ConfigError(
            f"no policy '{_short(chosen)}' in this file (it holds {_names(policies)})",
            path=str(path),
        )
    note = "" if pick is not None else _note(path, policies)
    return [r for r in records if r.policy == chosen], note


def _note(path: Path, policies: list[str]) -> str:
    return (
        f"{path} holds {len(policies)} policies ({_names(policies)}); comparing the first, "
        f"'{_short(policies[0])}' (--policy picks another)"
    )


def _requests(path: Path, records: list[RequestRecord], pick: str | None) -> ResultFile:
    records, note = _one_policy(records, path, pick)
    raw = records_result(records)
    policy = records[0].policy
    raw["policy"] = policy
    label = f"requests:{_short(policy)}" if policy else "requests"
    return ResultFile("requests", label, raw, metrics(raw), per_request(raw), note)


def _policy(raw: dict[str, Any], path: Path, field: str = "policy") -> str:
    """A simulate result's policy: the name simulate gives it, never null or a number (the
    rule a requests file's lines are held to as well: `policy_name`)."""
    try:
        return policy_name(raw.get("policy"))
    except ValueError as exc:
        raise ConfigError(_short(str(exc), 120), path=str(path), field=field) from None


def _from_list(raw: list[Any], path: Path, pick: str | None) -> tuple[dict[str, Any], str]:
    """One object of simulate --json --compare's list: the one picked, or the first. Each
    names its policy, each a different one (as simulate --compare writes them)."""
    objs = [(i, r) for i, r in enumerate(raw) if isinstance(r, dict)]
    if not objs:
        raise ConfigError(
            "a list with no result of simulate --json --compare in it", path=str(path)
        )
    seen: dict[str, int] = {}
    for i, r in objs:
        if "policy" not in r:  # not a simulate result: named as such if it is taken
            continue
        name = _policy(r, path, f"[{i}].policy")
        if name in seen:
            raise ConfigError(
                f"'{_short(name)}' is also the policy of entry {seen[name]}: simulate "
                "--compare runs each policy once (two files joined?)",
                path=str(path),
                field=f"[{i}].policy",
            )
        seen[name] = i
    names = [_short(str(r.get("policy"))) for _, r in objs]
    chosen = [r for _, r in objs if pick is None or r.get("policy") == pick]
    if not chosen:
        raise ConfigError(
            f"no policy '{_short(str(pick))}' in this file (it holds {_names(names)})",
            path=str(path),
        )
    note = _note(path, names) if pick is None and len(objs) > 1 else ""
    return chosen[0], note


def load(path: Path, pick: str | None = None) -> ResultFile:
    """A result file read and checked; `pick` names a policy in a simulate list or a
    requests file of several policies."""
    try:
        found = _load(path, pick)
    except ConfigError as exc:
        if exc.path is not None:
            raise
        # metrics() and per_request() name the field; the file is named here
        raise ConfigError(exc.detail, path=str(path), line=exc.line, field=exc.field) from None
    if all(v is None for v in found.figures.values()):
        raise ConfigError(
            f"a {found.kind} result with none of the figures compare reads (e.g. "
            "mean_ttft_ms, request_throughput, completed, ttft_s.p50)",
            path=str(path),
        )
    return found


def _load(path: Path, pick: str | None) -> ResultFile:
    text = read_text(path)
    if not text.strip():
        raise ConfigError("an empty file, not a result", path=str(path))
    try:
        raw = load_json(text, str(path))
    except (json.JSONDecodeError, ConfigError) as exc:
        # JSON lines (`--requests-out`) are not one JSON document: read line by line, which
        # also names the line of a syntax error or a nesting too deep
        records = _lines(path, text)
        if records is None:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"not JSON: {exc}", path=str(path)) from None
        return _requests(path, records, pick)
    if isinstance(raw, dict) and "status" in raw and "row" in raw:  # a one-request file
        return _requests(path, [_record(raw, path, None)], pick)
    note = ""
    if isinstance(raw, list):
        raw, note = _from_list(raw, path, pick)
    kind = kind_of(raw)
    if not kind:
        raise ConfigError(
            "not a result of simulate --json, bench --json or vllm bench serve",
            path=str(path),
        )
    label = kind
    if kind == "simulate":
        policy = _policy(raw, path)
        if pick is not None and policy != pick:
            raise ConfigError(
                f"no policy '{_short(pick)}' in this file (it holds {_short(policy)})",
                path=str(path),
            )
        label = f"{kind}:{_short(policy)}"
    return ResultFile(kind, label, raw, metrics(raw), per_request(raw), note)
