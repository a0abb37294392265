"""Builds the live fleet (backends and targets) from a fleet file and admits requests through
the core's one admission path (`wattserve.core.admission.admit`), with the very Policy,
PowerGovernor, targets and View that `simulate` uses."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wattserve.core.admission import Admission, admit
from wattserve.core.energy import carbon_g
from wattserve.core.fleet import Fleet
from wattserve.core.governor import PowerGovernor
from wattserve.core.policy import Policy
from wattserve.core.targets import Target
from wattserve.core.view import View
from wattserve.core.workload import SLO, Request
from wattserve.errors import NoBackendAvailable
from wattserve.serve.backends.base import Backend, BuildContext, Built
from wattserve.serve.backends.registry import backend_kind

HEALTH_EVERY_S = 5.0
COOLDOWN_S = 10.0
POWER_POLL_S = 0.05  # how often a request waiting for power under a cap tries again


@dataclass
class Placement:
    target: Target
    backend: Backend


class Router:
    """The live fleet: backends, targets, the policy and the power governor."""

    def __init__(
        self,
        fleet: Fleet,
        policy: Policy,
        *,
        enforce_caps: bool = True,
        max_wait_s: float = 5.0,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet, self.policy, self.max_wait_s = fleet, policy, max_wait_s
        self.clock = clock
        self.gov = PowerGovernor(
            {n: s.power_cap_w for n, s in fleet.sites.items()}, enforce=enforce_caps, bin_s=1.0
        )
        ctx = BuildContext(fleet, self.gov, random.Random(seed), asyncio.Condition())
        self.power_changed = ctx.power_changed
        self.built: dict[str, Built] = {}
        for spec in fleet.deployments:
            self.built[spec.name] = backend_kind(spec.backend.get("kind", "emulated")).deployment(
                spec, ctx
            )
        for h in fleet.hosted:
            self.built[h.name] = backend_kind(h.backend.get("kind", "emulated")).hosted(h, ctx)
        self.targets: dict[str, Target] = {n: b.target for n, b in self.built.items()}
        self.backends: dict[str, Backend] = {
            b.name: b for built in self.built.values() for b in built.backends
        }
        self.view = View(fleet, list(self.targets.values()), {"default": SLO()}, self.gov)
        self.drained: set[str] = set()
        self.started = clock()
        self.health_task: asyncio.Task[None] | None = None
        self.ejected_until: dict[str, float] = {}
        # called with (backend, cooldown_s) when a backend is ejected (shared state publishes)
        self.on_eject: list[Callable[[Backend, float], None]] = []
        # called with the request when admission refuses it for power (shared power leases)
        self.on_power_wait: list[Callable[[Request], None]] = []
        self.background: set[asyncio.Task[Any]] = set()

    @property
    def models(self) -> list[str]:
        return sorted(self.view.by_model)

    def now(self) -> float:
        """Seconds since the gateway started: the clock of the fleet file's outage windows."""
        return self.clock() - self.started

    async def start(self) -> None:
        for b in self.backends.values():
            await b.start()
        self.health_task = asyncio.create_task(self._health_loop())

    async def stop(self) -> None:
        if self.health_task is not None:
            self.health_task.cancel()
        for b in self.backends.values():
            await b.stop()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            for b in list(self.backends.values()):
                if b.probed:
                    await b.check()
            self._refresh_unhealthy()

    def eject(self, backend: Backend) -> None:
        """Take a failing backend out of rotation for a cooldown (then it is tried again)."""
        backend.healthy = False
        self.ejected_until[backend.name] = self.clock() + COOLDOWN_S
        for hook in self.on_eject:
            hook(backend, COOLDOWN_S)
        self._refresh_unhealthy()

    def _refresh_unhealthy(self) -> None:
        now = self.clock()
        for name, until in list(self.ejected_until.items()):
            if until <= now:
                del self.ejected_until[name]
                self.backends[name].healthy = True
        bad = set(self.drained)
        for name, built in self.built.items():
            if not any(b.healthy for b in built.backends):
                bad.add(name)
        self.view.unhealthy = bad

    def admit(self, req: Request, failed: set[str]) -> Placement | str:
        """The shared admission path (wattserve.core.admission) at the gateway's clock, once:
        a placement, or the refusal. `failed`: backends that already failed this request."""
        adm = self._admission(req, failed)
        if adm.target is None or adm.bound is None:
            return adm.refusal or "none"
        return Placement(adm.target, adm.bound)

    def _admission(self, req: Request, failed: set[str]) -> Admission[Backend]:
        self._refresh_unhealthy()
        exclude = (  # targets whose every backend already failed this request
            [n for n, b in self.built.items() if all(x.name in failed for x in b.backends)]
            if failed
            else ()
        )
        built = self.built

        def bind(target: Target) -> Backend | None:
            return built[target.name].bind(req, failed)

        return admit(req, self.now(), self.policy, self.view, self.gov, bind, exclude)

    async def place(self, req: Request, failed: set[str]) -> Placement:
        """Admit the request (see `wattserve.core.admission`) and pick its backend. Waits
        (bounded by `max_wait_s`) while power is the only obstacle; raises NoBackendAvailable
        with the HTTP status and reason otherwise."""
        deadline = self.clock() + self.max_wait_s
        while True:
            adm = self._admission(req, failed)
            if adm.target is not None and adm.bound is not None:
                return Placement(adm.target, adm.bound)
            got = adm.refusal or "none"
            if got == "power" and self.clock() < deadline:
                for hook in self.on_power_wait:
                    hook(req)
                await asyncio.sleep(POWER_POLL_S)
                continue
            if got == "power":
                raise NoBackendAvailable(
                    429, "every site that serves this model is at its power cap", retry_after_s=1.0
                )
            if got == "outage":
                raise NoBackendAvailable(
                    503, "the link to the sites that serve this model is down", retry_after_s=5.0
                )
            if got == "residency":  # no retry helps: the fleet has nothing at the origin
                raise NoBackendAvailable(
                    503,
                    f"this request may not leave site {req.origin}, and no deployment there "
                    f"serves {req.model}",
                )
            raise NoBackendAvailable(
                503, adm.reason or f"no healthy backend serves {req.model} now", retry_after_s=2.0
            )

    def carbon_g(self, site: str, energy_j: float | None) -> float | None:
        """Grams of CO2 of `energy_j` drawn at `site` (None: unknown energy or intensity)."""
        s = self.fleet.sites.get(site)
        return None if s is None else carbon_g(energy_j, s.pue, s.carbon_g_per_kwh)

    def fleet_state(self) -> dict[str, Any]:
        """The live state `/v1/fleet` returns."""
        sites = {}
        for name, site in self.fleet.sites.items():
            acct = self.gov.sites[name]
            sites[name] = {
                "kind": site.kind,
                "power_cap_w": acct.cap_w,
                "power_w": round(acct.power_w, 3),
                "peak_power_w": round(acct.peak_w, 3),
            }
        targets = {}
        for name, t in self.targets.items():
            targets[name] = {
                "site": t.site,
                "model": t.model,
                "kind": t.kind,
                "in_flight": t.outstanding,
                "drained": name in self.drained,
                "healthy": name not in self.view.unhealthy,
                **t.describe(),
            }
        return {
            "fleet": self.fleet.name,
            "policy": self.policy.name,
            "sites": sites,
            "targets": targets,
            "uptime_s": round(self.now(), 3),
        }
