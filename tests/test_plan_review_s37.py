"""An infeasible plan's advice can be followed (a new user's walkthrough, session 37): where
the smallest changes together touch several limits (a site's cap, a rate limit, the budget),
each of them raised alone had left the plan infeasible; the change that is enough alone, where
one is, now comes first."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattserve.errors import PlanInfeasibleError
from wattserve.plan import plan

REPO = Path(__file__).resolve().parents[1]
HW = ["h100-sxm", "l4", "jetson-agx-orin-64gb"]


def _plan(budget: float) -> object:
    return plan(
        REPO / "examples" / "workload-multisite.yaml",
        sites=REPO / "examples" / "sites-two-dc-edge.yaml",
        hardware=HW,
        capacity="analytic",
        budget_usd_per_h=budget,
        compare_with_single=False,
    )


def test_the_change_that_is_enough_alone_comes_first_and_is_enough() -> None:
    with pytest.raises(PlanInfeasibleError) as info:
        _plan(1.0)
    reasons = info.value.reasons
    assert reasons[0].startswith("alone, this is enough: the budget binds"), reasons
    together = [r for r in reasons if r.startswith("or all of these together: ")]
    assert {"power cap", "rate limit", "budget"} <= {
        k for r in together for k in ("power cap", "rate limit", "budget") if k in r
    }, reasons
    usd = float(reasons[0].split("at least $")[1].split("/h")[0])
    _plan(usd)  # raised alone to what it says: a plan
    with pytest.raises(PlanInfeasibleError):
        _plan(usd - 0.01)
    # the joint figure alone is not enough: that was the advice before
    joint = float(next(r for r in together if "budget" in r).split("at least $")[1].split("/h")[0])
    assert joint < usd
    with pytest.raises(PlanInfeasibleError):
        _plan(joint)
