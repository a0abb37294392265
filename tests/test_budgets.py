"""Budgets as reservations (wattserve.serve.budgets): the rules, with a manual clock."""

from __future__ import annotations

import asyncio

import pytest

from wattserve.serve.budgets import Charge, Hold, LocalBudgets, Refusal
from wattserve.serve.ledger import KeyRecord


def key(**kw: float | None) -> KeyRecord:
    fields: dict[str, float | None] = {"budget_usd": None, "budget_j": None, "rps": None}
    fields.update(kw)
    return KeyRecord("k1", "alice", False, spent_usd=0.0, spent_j=0.0, **fields)  # type: ignore[arg-type]


def reserve(b: LocalBudgets, k: KeyRecord, worst: Charge) -> Hold | Refusal:
    """Admission is async (a shared state backend may await Redis); run one call."""
    return asyncio.run(b.reserve(k, worst))


def take(b: LocalBudgets, k: KeyRecord) -> Refusal | None:
    return asyncio.run(b.take_request(k))


def test_holds_count_against_the_budget_until_settled() -> None:
    b, k = LocalBudgets(), key(budget_usd=1.0)
    first = reserve(b, k, Charge(0.6, 0.0))
    assert isinstance(first, Hold)
    refused = reserve(b, k, Charge(0.6, 0.0))  # 0.4 left while the first is in flight
    assert isinstance(refused, Refusal) and refused.code == "insufficient_quota"
    assert "$0.4 of its $1 budget left" in refused.message
    assert b.settle(first, Charge(0.1, 0.0)) == Charge(0.1, 0.0)
    assert isinstance(reserve(b, k, Charge(0.6, 0.0)), Hold)  # 0.9 left now


def test_a_request_is_never_billed_more_than_it_held() -> None:
    b, k = LocalBudgets(), key(budget_j=100.0)
    hold = reserve(b, k, Charge(0.0, 40.0))
    assert isinstance(hold, Hold)
    assert b.settle(hold, Charge(0.0, 55.0)) == Charge(0.0, 40.0)
    assert b.spent["k1"] == [0.0, 40.0] and b.held["k1"] == [0.0, 0.0]


def test_release_charges_nothing_and_a_hold_ends_once() -> None:
    b, k = LocalBudgets(), key(budget_usd=1.0)
    hold = reserve(b, k, Charge(1.0, 0.0))
    assert isinstance(hold, Hold)
    b.release(hold)
    assert b.spent["k1"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="already settled"):
        b.settle(hold, Charge(1.0, 0.0))


def test_a_spent_budget_refuses_even_a_free_request() -> None:
    b = LocalBudgets()
    k = key(budget_usd=1.0)
    k.spent_usd = 1.0
    assert isinstance(reserve(b, k, Charge(0.0, 0.0)), Refusal)


def test_rate_limit_is_a_token_bucket() -> None:
    now = [0.0]
    b, k = LocalBudgets(clock=lambda: now[0]), key(rps=2.0)
    assert take(b, k) is None and take(b, k) is None  # burst of 2
    refused = take(b, k)
    assert refused is not None and refused.code == "rate_limit_exceeded"
    now[0] = 0.5  # one more token after half a second
    assert take(b, k) is None and take(b, k) is not None
