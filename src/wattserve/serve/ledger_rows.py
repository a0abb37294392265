"""The ledger's rows checked: a journaled request row before it is replayed, a key's row
before the gateway trusts its figures, and `usage`'s totals made safe to print."""

from __future__ import annotations

import math
from typing import Any

TEXT_COLUMNS = ("key_id", "backend", "site", "error")
COUNT_COLUMNS = ("prompt_tokens", "completion_tokens")
FLAG_COLUMNS = ("prompt_tokens_estimated", "completion_tokens_estimated")  # 0, 1 or null
AMOUNT_COLUMNS = ("ttft_s", "duration_s", "energy_j", "usd", "billed_usd", "billed_j")


def valid_row(row: dict[str, Any]) -> bool:
    """A journaled row has what the requests table requires, each column of its type: text,
    counts that fit SQLite's 64-bit integers, finite non-negative amounts (None where the
    column may be empty). A row that is not such a record is skipped on its own."""
    if not all(isinstance(row.get(c), str) for c in ("id", "model", "status")):
        return False
    ts = row.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return False
    for c in TEXT_COLUMNS:
        if row.get(c) is not None and not isinstance(row.get(c), str):
            return False
    for c in COUNT_COLUMNS:
        v = row.get(c)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63):
            return False
    for c in FLAG_COLUMNS:
        if row.get(c) not in (None, 0, 1):
            return False
    for c in AMOUNT_COLUMNS:
        v = row.get(c)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0
        ):
            return False
    return True


def usage_row(row: dict[str, Any]) -> dict[str, Any]:
    """Token totals as integers; a sum past what a float holds (rows written by something
    other than wattserve) is null, not inf; a group that is a blob, not text, as its repr
    (`usage --json` failed on it with a traceback)."""
    if not isinstance(row["group"], str | None):
        row["group"] = repr(row["group"])
    for name, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            row[name] = None
    for name in (
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_estimated_requests",
        "completion_tokens_estimated_requests",
    ):
        value = row[name]
        if value is not None:
            row[name] = int(value)
    return row


def key_row_problem(row: tuple[Any, ...]) -> str | None:
    """What is wrong with a key's row (id, name, admin, budget_usd, budget_j, rps, spent_usd,
    spent_j, revoked, metrics), or None. SQLite keeps whatever a hand edit stores: text in a
    REAL column failed the budget's arithmetic (a 500 on every request with the key), and
    `admin = 'no'` read as true."""
    _, _, admin, budget_usd, budget_j, rps, spent_usd, spent_j, revoked, metrics = row
    for name, flag in (("admin", admin), ("revoked", revoked), ("metrics", metrics)):
        if flag not in (0, 1):
            return f"{name} is {flag!r:.40}, not 0 or 1"
    for name, value, optional in (
        ("budget_usd", budget_usd, True),
        ("budget_j", budget_j, True),
        ("rps", rps, True),  # 0, as null: no limit (the gateway has always read it so)
        ("spent_usd", spent_usd, False),
        ("spent_j", spent_j, False),
    ):
        if value is None and optional:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value >= 0):
            return f"{name} is {value!r:.40}, not a non-negative finite number"
    return None
