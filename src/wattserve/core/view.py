"""The read-only FleetView that policies see, over the targets of one fleet: candidates for a
request filtered by model, residency, reachability (site links and their outage windows),
health, rate limits and the admission loop's exclusions. One View per mechanism: the
simulator's and the gateway's are the same class over the same targets."""

from __future__ import annotations

from collections.abc import Sequence

from wattserve.core.fleet import Fleet
from wattserve.core.governor import PowerGovernor
from wattserve.core.targets import EnginePool, Target
from wattserve.core.workload import SLO, Request


class View:
    """The FleetView policies see (see the module docstring). `clock[0]` is the time of the
    decision being made, on the mechanism's clock; `exclude` and `unhealthy` hold target
    names; `cut_by_outage` says whether the last `candidates` call dropped a target because
    its link was down."""

    def __init__(
        self, fleet: Fleet, targets: Sequence[Target], slos: dict[str, SLO], governor: PowerGovernor
    ) -> None:
        self.fleet = fleet
        self.targets: dict[str, Target] = {t.name: t for t in targets}
        self.by_model: dict[str, list[Target]] = {}
        for t in targets:
            self.by_model.setdefault(t.model, []).append(t)
        self.slos = slos
        self.governor = governor
        self.clock: list[float] = [0.0]
        self.pools = [t for t in targets if isinstance(t, EnginePool)]
        for t in self.pools:
            t.clock = self.clock
        self.exclude: set[str] = set()
        self._static_cache: dict[tuple[str, str | None, bool], tuple[list[Target], bool]] = {}
        self.unhealthy: set[str] = set()
        self.cut_by_outage = False

    def decide_at(self, now: float) -> None:
        """A new decision at `now`: the pools' predictions kept for the last request are
        forgotten. They are kept by the request's identity, for the many questions one
        decision asks; a request retried later (waiting for power, for a link) is the same
        object, and had been given its first try's predictions, however the replicas' queues
        had changed since (placed 13 s late, passed over a replica that had room)."""
        self.clock[0] = now
        for t in self.pools:
            t.forget()

    def static_candidates(self, req: Request) -> list[Target]:
        """The targets that may take `req` by model and residency alone (health, links and
        rate limits aside: `candidates`)."""
        return self._static(req)[0]

    def _static(self, req: Request) -> tuple[list[Target], bool]:
        """Targets for a (model, origin, residency) before time-varying filters, and whether
        any of them needs those filters (links with outages, rate limits)."""
        key = (req.model, req.origin, req.local_only)
        hit = self._static_cache.get(key)
        if hit is None:
            targets = [
                t
                for t in self.by_model.get(req.model, ())
                if not (req.local_only and t.site != req.origin)
            ]
            dynamic = any(
                t.rate_limited
                or (
                    req.origin is not None
                    and t.site != req.origin
                    and (link := self.fleet.link(req.origin, t.site)) is not None
                    and bool(link.outages)
                )
                for t in targets
            )
            hit = self._static_cache[key] = (targets, dynamic)
        return hit

    def candidates(self, req: Request) -> list[Target]:
        self.cut_by_outage = False
        static, dynamic = self._static(req)
        if not dynamic and not self.exclude and not self.unhealthy:
            return static
        out: list[Target] = []
        fleet, now = self.fleet, self.clock[0]
        for t in static:
            if t.name in self.exclude or t.name in self.unhealthy:
                continue
            if not fleet.reachable(req.origin, t.site, now):
                self.cut_by_outage = True
                continue
            if t.rate_limited and not t.available(now):
                continue
            out.append(t)
        return out

    def slo(self, req: Request) -> SLO:
        return self.slos.get(req.slo) or self.slos["default"]

    def site_headroom_w(self, site: str) -> float:
        return self.governor.headroom_w(site)
