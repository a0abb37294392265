"""The plan's own routing: send each flow's requests to the deployments the program chose for
it, in the proportions it chose (a smooth weighted round robin per flow).

The built-in policies do not know the plan: `slo`, for one, sends long requests to the fast
devices the plan kept for a tight-TPOT class (verification by simulation showed it). `--verify`
therefore simulates with this policy unless the workload names one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from wattserve.core.policy import FleetView, Policy, TargetView
from wattserve.core.workload import Request
from wattserve.plan.api import Plan

# (class, origin, stays local, the SLO's name): a class whose rows name two SLOs is two flows,
# each planned on its own deployments (a 50 ms tier's rows had gone to a 200 ms tier's L4s)
FlowKey = tuple[str, str | None, bool, str]


class PlanSplit(Policy):
    """Route by the plan's split; a request whose planned targets are all unreachable goes to
    the least loaded candidate."""

    name = "plan"

    def __init__(self, split: dict[FlowKey, dict[str, float]]) -> None:
        self.split = split
        self.sent: dict[FlowKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    @staticmethod
    def from_plan(plan: Plan) -> PlanSplit:
        p, sol = plan.problem, plan.solution
        split: dict[FlowKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for (q, j), rate in sol.rates.items():
            f, o = p.flows[q], p.options[j]
            split[(f.cls, f.origin, f.local_only, f.slo_name)][o.name] += rate
        for (q, k), rate in sol.hosted_rates.items():
            f = p.flows[q]
            split[(f.cls, f.origin, f.local_only, f.slo_name)][p.hosted[k].name] += rate
        return PlanSplit({k: dict(v) for k, v in split.items()})

    def pick(self, req: Request, view: FleetView, cands: Sequence[TargetView]) -> TargetView:
        key = (req.cls, req.origin, req.local_only, req.slo)
        if key not in self.split:  # a flow of no origin (no rate planned from this one)
            key = (req.cls, None, req.local_only, req.slo)
        weights = self.split.get(key, {})
        planned = [t for t in cands if weights.get(t.name, 0.0) > 0]
        if not planned:
            return min(cands, key=lambda t: t.load)
        sent = self.sent[key]
        # the target furthest behind its share: ties go to the larger share
        best = min(planned, key=lambda t: ((sent[t.name] + 1) / weights[t.name], -weights[t.name]))
        sent[best.name] += 1
        return best
