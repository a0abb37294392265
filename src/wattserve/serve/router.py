"""Builds the live fleet (backends and targets) from a fleet file and admits requests through
the core's one admission path (`wattserve.core.admission.admit`), with the very Policy,
PowerGovernor, targets and View that `simulate` uses."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from wattserve.core.admission import POWER_RETRY_S as POWER_POLL_S
from wattserve.core.admission import Admission, admit, queued_past, residency_refusal
from wattserve.core.energy import carbon_g
from wattserve.core.fleet import Fleet
from wattserve.core.governor import PowerGovernor
from wattserve.core.policy import Policy
from wattserve.core.targets import Target
from wattserve.core.view import View
from wattserve.core.workload import SLO, Request
from wattserve.errors import NoBackendAvailable
from wattserve.serve.backends.base import Backend, BuildContext, Built, GenRequest
from wattserve.serve.backends.registry import backend_kind
from wattserve.serve.capabilities import Need, needs, refusal

HEALTH_EVERY_S = 5.0
COOLDOWN_S = 10.0  # a failing backend's time out of rotation (a health probe does not end it)


@dataclass
class Placement:
    target: Target
    backend: Backend


class Unsupported(NamedTuple):
    """A request's field that no backend serving its model honours: the 400's param and
    message (serve.capabilities)."""

    param: str
    message: str


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
        slos: dict[str, SLO] | None = None,
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
        # the target each backend serves: a deployment's replica `NAME/N`, a hosted API's own
        # name, either of which may hold a '/' (read as the ledger's `backend`)
        self.target_of: dict[str, str] = {
            b.name: n for n, built in self.built.items() for b in built.backends
        }
        # the SLO classes requests may name (x-wattserve-slo); "default" alone unless given
        classes = {"default": SLO()} if slos is None else {"default": SLO(), **slos}
        self.slo_names: tuple[str, ...] = () if slos is None else tuple(classes)  # () any
        self.view = View(fleet, list(self.targets.values()), classes, self.gov)
        self.drained: set[str] = set()
        self.started = clock()
        self.health_task: asyncio.Task[None] | None = None
        self.ejected_until: dict[str, float] = {}
        # backends out of rotation because their server answered 429, until when (a subset
        # of ejected_until): while one is, a request nothing else can take answers 429
        self.limited_until: dict[str, float] = {}
        # called with (backend, cooldown_s, rate limited) when a backend is ejected (shared
        # state publishes)
        self.on_eject: list[Callable[[Backend, float, bool], None]] = []
        # called with the request when admission refuses it for power, or places it past a
        # target that lacked power (shared power leases: a replica whose lease was given away
        # had sent every request to a hosted API, its own engines idle, and never asked back)
        self.on_power_wait: list[Callable[[Request, tuple[str, ...]], None]] = []
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
        """Probe the backends every HEALTH_EVERY_S, except those ejected: a probe that
        succeeds (a server answering /models while it refuses work with 503 or 429) would put
        them back before their cooldown ends, as it did until 2026-12-05."""
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            self._refresh_unhealthy()
            for b in list(self.backends.values()):
                if b.probed and b.name not in self.ejected_until:
                    await b.check()
                    self._refresh_unhealthy()  # an ejection made while it ran still holds

    def eject(self, backend: Backend, rate_limited_s: float | None = None) -> None:
        """Take a backend out of rotation (then it is tried again): a failing one for
        COOLDOWN_S; one whose server answered 429 for `rate_limited_s`, as long as it asked
        (its Retry-After): it is not broken, and requests go elsewhere meanwhile. A longer
        cooldown it is already in holds (`hold_out`)."""
        cooldown = COOLDOWN_S if rate_limited_s is None else rate_limited_s
        until, limited = self.hold_out(
            backend.name, self.clock() + cooldown, rate_limited_s is not None
        )
        for hook in self.on_eject:
            hook(backend, until - self.clock(), limited)
        self._refresh_unhealthy()

    def hold_out(self, name: str, until: float, limited: bool) -> tuple[float, bool]:
        """Keep backend `name` out of rotation until `until` (the router's clock), because its
        server is rate limited (`limited`) or failing, unless it is already out until later:
        then that cooldown and its reason hold (a failure 10 s long does not end a server's
        3,600 s Retry-After). Returns the cooldown's end and reason that hold."""
        self.backends[name].healthy = False
        held = self.ejected_until.get(name)
        if held is not None and held >= until:
            return held, name in self.limited_until
        self.ejected_until[name] = until
        if limited:
            self.limited_until[name] = until
        else:
            self.limited_until.pop(name, None)
        return until, limited

    def _refresh_unhealthy(self) -> None:
        now = self.clock()
        for name, until in list(self.ejected_until.items()):
            if until <= now:
                del self.ejected_until[name]
                self.limited_until.pop(name, None)
            # down until its cooldown ends, whatever a probe or an answer that was already
            # under way when it was ejected said since (OpenAIBackend.check sets `healthy`)
            self.backends[name].healthy = until <= now
        bad = set(self.drained)
        for name, built in self.built.items():
            if not any(b.healthy for b in built.backends):
                bad.add(name)
        self.view.unhealthy = bad

    def admit(
        self, req: Request, failed: set[str], greq: GenRequest | None = None
    ) -> Placement | str:
        """The shared admission path (wattserve.core.admission) at the gateway's clock, once:
        a placement, or the refusal. `failed`: backends that already failed this request."""
        adm = self._admission(req, failed, greq)
        if adm.target is None or adm.bound is None:
            return adm.refusal or "none"
        return Placement(adm.target, adm.bound)

    def _capable(self, built: Built, wanted: list[Need]) -> bool:
        return all(b.honours(n.capability) for n in wanted for b in built.backends)

    def unsupported(self, model: str, kind: str, body: dict[str, Any]) -> Unsupported | None:
        """The first field of a request (`kind`: chat or completion) that no target serving
        `model` honours (serve.capabilities), or None. The gateway refuses such a request
        before routing it; `place` routes the others only to targets that honour them all."""
        wanted = needs(kind, body)
        if not wanted:
            return None
        served = [self.built[t.name] for t in self.view.by_model.get(model, ())]
        kinds = sorted({x.kind for b in served for x in b.backends})
        for need in wanted:
            if not any(self._capable(b, [need]) for b in served):
                return Unsupported(need.param, refusal(need, model, kinds))
        if not any(self._capable(b, wanted) for b in served):  # each, but not together
            fields = ", ".join(dict.fromkeys(n.param for n in wanted))
            return Unsupported(
                wanted[-1].param,
                f"{fields}: no backend serving {model} honours these fields together (each "
                "is honoured by another); send them in separate requests",
            )
        return None

    def _admission(
        self,
        req: Request,
        failed: set[str],
        greq: GenRequest | None = None,
        max_queue_s: float = math.inf,
        queued: list[float] | None = None,
    ) -> Admission[Backend]:
        self._refresh_unhealthy()
        wanted = [] if greq is None else needs(greq.kind, greq.body)
        exclude = (  # targets whose every backend already failed this request, and targets
            # that would ignore a field the request sets: filtered before the policy chooses
            [
                n
                for n, b in self.built.items()
                if (failed and all(x.name in failed for x in b.backends))
                or (wanted and not self._capable(b, wanted))
            ]
            if failed or wanted
            else ()
        )
        built = self.built
        if queued is not None:
            queued.clear()

        def bind(target: Target) -> Backend | None:
            # a target whose first token is predicted past max_queue_s is passed over inside
            # admission, as simulate's is: before a rate-limited target's token is taken
            wait_s = queued_past(target, req, max_queue_s) if max_queue_s < math.inf else None
            if wait_s is not None:
                if queued is not None:
                    queued.append(wait_s)
                return None
            return built[target.name].bind(req, failed)

        return admit(req, self.now(), self.policy, self.view, self.gov, bind, exclude)

    async def place(
        self,
        req: Request,
        failed: set[str],
        greq: GenRequest | None = None,
        max_queue_s: float = math.inf,
        queued: list[float] | None = None,
    ) -> Placement:
        """Admit the request (see `wattserve.core.admission`) and pick its backend, among the
        targets that honour what `greq` asks (serve.capabilities). Waits (bounded by
        `max_wait_s`) while power or a link that is down is the only obstacle; raises
        NoBackendAvailable with the HTTP status and reason otherwise: 429 with the server's
        Retry-After while a target of the model is out of rotation because its server is rate
        limited. A target whose first
        token is predicted past `max_queue_s` is passed over (core.admission.queued_past);
        `queued` gets the last admission's predictions for them."""
        deadline = self.clock() + self.max_wait_s
        while True:
            adm = self._admission(req, failed, greq, max_queue_s, queued)
            if adm.target is not None and adm.bound is not None:
                if adm.powered_out:  # placed past targets that lacked power: ask for it
                    for hook in self.on_power_wait:
                        hook(req, adm.powered_out)
                return Placement(adm.target, adm.bound)
            got = adm.refusal or "none"
            # a link down waits for its end as power does, as simulate's requests wait (until
            # 2026-12-06 the gateway answered 503 at once, simulate served them when it came
            # back within --max-wait)
            if got in ("power", "outage") and self.clock() < deadline:
                for hook in self.on_power_wait if got == "power" else ():
                    hook(req, adm.powered_out)
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
                raise NoBackendAvailable(503, residency_refusal(req))
            raise self.rate_limited(req, greq) or NoBackendAvailable(
                503, adm.reason or f"no healthy backend serves {req.model} now", retry_after_s=2.0
            )

    def rate_limited(
        self, req: Request, greq: GenRequest | None = None
    ) -> NoBackendAvailable | None:
        """The 429 for a request that no backend can take while some it could use are rate
        limited (their servers answered 429), with their Retry-After; None where none is."""
        limited = self.rate_limited_s(req, greq)
        if limited is None:
            return None
        return NoBackendAvailable(
            429,
            f"the servers that serve {req.model} are rate limited (they answered 429) and no "
            "other backend can take the request",
            retry_after_s=limited,
        )

    def rate_limited_s(self, req: Request, greq: GenRequest | None = None) -> float | None:
        """Whole seconds until the first rate-limited backend the request could use is back (a
        wait that ends early would meet the same 429): one of its model's, at a target that
        honours what `greq` asks, at its origin where it must stay there. None when none is
        rate limited."""
        now = self.clock()
        wanted = [] if greq is None else needs(greq.kind, greq.body)
        waits = [
            self.limited_until[b.name] - now
            for name, built in self.built.items()
            if (t := self.targets[name]).model == req.model
            and not (req.local_only and t.site != req.origin)
            and (not wanted or self._capable(built, wanted))
            for b in built.backends
            if self.limited_until.get(b.name, now) > now
        ]
        return float(math.ceil(min(waits))) if waits else None

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
        self._refresh_unhealthy()  # as of now: a cooldown over, a drain lifted
        targets = {}
        for name, t in self.targets.items():
            targets[name] = {
                "site": t.site,
                "model": t.model,
                "kind": t.kind,
                "in_flight": t.outstanding,
                "drained": name in self.drained,
                # its backends' health, drained or not (a drained target read as unhealthy,
                # and stayed so up to 5 s after it was undrained)
                "healthy": any(b.healthy for b in self.built[name].backends),
                **t.describe(),
            }
        return {
            "fleet": self.fleet.name,
            "policy": self.policy.name,
            "sites": sites,
            "targets": targets,
            "uptime_s": round(self.now(), 3),
        }
