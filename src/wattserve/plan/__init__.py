"""`plan`: which devices, how many, at which site, for a workload within its SLOs and caps."""

from wattserve.plan.api import Plan, plan

__all__ = ["Plan", "plan"]
