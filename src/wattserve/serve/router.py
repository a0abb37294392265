"""Builds the live fleet (backends and targets) from a fleet file and routes requests with the
very Policy and PowerGovernor objects `simulate` uses."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from wattserve.core.fleet import DeploymentSpec, Fleet, HostedSpec
from wattserve.core.governor import PowerGovernor
from wattserve.core.policy import Policy
from wattserve.core.workload import SLO, Request
from wattserve.serve.backends.base import Backend
from wattserve.serve.backends.emulated import EmulatedBackend
from wattserve.serve.backends.hosted_emulated import EmulatedHostedBackend
from wattserve.serve.backends.upstream import OpenAIBackend
from wattserve.serve.targets import UpstreamTarget
from wattserve.simulate.targets import EnginePool, View, make_engines

HEALTH_EVERY_S = 5.0
COOLDOWN_S = 10.0


class NoTarget(Exception):
    """No backend can take the request now: HTTP status, reason and when to retry."""

    def __init__(self, status: int, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.retry_after_s = status, reason, retry_after_s


@dataclass
class Placement:
    target: Any
    backend: Backend


def _upstream_for_deployment(
    spec: DeploymentSpec, fleet: Fleet
) -> tuple[UpstreamTarget, list[Backend]]:
    cfg = spec.backend
    pm = spec.perf
    urls = cfg.get("urls") or [cfg.get("url")]
    backends: list[Backend] = []
    per_s = spec.cost.usd_per_s if spec.cost.basis != "unknown" else 0.0
    for i, url in enumerate(urls):
        b = OpenAIBackend(
            f"{spec.name}/{i}",
            spec.site,
            spec.model,
            str(url),
            str(cfg.get("model_name", spec.model)),
            cfg.get("api_key_env"),
            estimate_j=partial(_estimate_j, spec),
            usd_per_s=per_s,
            timeout_s=float(cfg.get("timeout_s", 300.0)),
        )
        backends.append(b)
    pre = pm.prefill(1, 512).time_s
    dec = pm.decode_step(8, 1024).time_s
    usd_per_j = spec.cost.usd_per_j if spec.cost.basis == "own" else 0.0
    target = UpstreamTarget(
        spec.name,
        spec.site,
        spec.model,
        backends,
        pre,
        dec,
        joules=lambda r: _estimate_j(spec, r.prompt_tokens, r.output_tokens),
        usd=lambda r: usd_per_j * _estimate_j(spec, r.prompt_tokens, r.output_tokens),
        rtt=fleet.rtt_s,
        marginal_w=max(0.0, pm.decode_step(1, 1024).power_w - pm.idle_power_w),
    )
    return target, backends


def _estimate_j(spec: DeploymentSpec, prompt: int, output: int) -> float:
    """Dynamic energy of one request on a deployment, from the PerfModel (batch of one);
    NaN when the hardware's power figures are unknown."""
    pm = spec.perf
    pre = pm.prefill(1, max(1, prompt))
    dec = pm.decode_step(1, prompt + output // 2)
    idle = pm.idle_power_w
    return (pre.energy_j - idle * pre.time_s) + output * (dec.energy_j - idle * dec.time_s)


def _hosted(spec: HostedSpec, fleet: Fleet) -> tuple[UpstreamTarget, list[Backend]]:
    cfg = spec.backend
    backend: Backend
    if cfg.get("kind") == "openai":
        backend = OpenAIBackend(
            spec.name,
            spec.site,
            spec.model,
            str(cfg.get("url", spec.base_url)),
            str(cfg.get("model_name", spec.remote_name)),
            cfg.get("api_key_env"),
            usd_per_mtok_input=spec.usd_per_mtok_input,
            usd_per_mtok_output=spec.usd_per_mtok_output,
        )
    else:
        backend = EmulatedHostedBackend(spec)
    jpt = spec.joules_per_token

    def usd(r: Request) -> float:
        return (
            r.prompt_tokens * spec.usd_per_mtok_input + r.output_tokens * spec.usd_per_mtok_output
        ) / 1e6

    target = UpstreamTarget(
        spec.name,
        spec.site,
        spec.model,
        [backend],
        spec.ttft_s,
        1.0 / spec.output_tokens_per_s,
        joules=lambda r: math.inf if jpt is None else jpt * (r.prompt_tokens + r.output_tokens),
        usd=usd,
        rtt=fleet.rtt_s,
        rate_limit_rps=spec.rate_limit_rps,
    )
    return target, [backend]


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
    ) -> None:
        self.fleet, self.policy, self.max_wait_s = fleet, policy, max_wait_s
        self.gov = PowerGovernor(
            {n: s.power_cap_w for n, s in fleet.sites.items()}, enforce=enforce_caps, bin_s=1.0
        )
        self.backends: dict[str, Backend] = {}
        self.targets: dict[str, Any] = {}
        self.engine_backend: dict[int, EmulatedBackend] = {}
        rng = random.Random(seed)
        for spec in fleet.deployments:
            kind = spec.backend.get("kind", "emulated")
            if kind == "emulated":
                engines = make_engines(spec, exact=True)  # stepped: tokens stream per step
                pool = EnginePool(spec, engines, rng, fleet.rtt_s)
                for e in engines:
                    b = EmulatedBackend(
                        e.name,
                        spec.site,
                        spec.model,
                        e,
                        self.gov,
                        spec.cost.usd_per_s if spec.cost.basis != "unknown" else 0.0,
                        spec.cost.usd_per_j if spec.cost.basis == "own" else 0.0,
                    )
                    self.engine_backend[id(e)] = b
                    self.backends[b.name] = b
                    self.gov.add_base(spec.site, e.idle_w)
                self.targets[spec.name] = pool
            elif kind == "local-llama":
                from wattserve.serve.backends.local import local_llama_target

                local_target, local_backends = local_llama_target(spec, fleet)
                self.targets[spec.name] = local_target
                self.backends.update({b.name: b for b in local_backends})
            else:
                target, backends = _upstream_for_deployment(spec, fleet)
                self.targets[spec.name] = target
                self.backends.update({b.name: b for b in backends})
        for h in fleet.hosted:
            target, backends = _hosted(h, fleet)
            self.targets[h.name] = target
            self.backends.update({b.name: b for b in backends})
        self.view = View(fleet, list(self.targets.values()), {"default": SLO()}, self.gov)
        self.drained: set[str] = set()
        self.started = time.monotonic()
        self.health_task: asyncio.Task[None] | None = None
        self.ejected_until: dict[str, float] = {}

    @property
    def models(self) -> list[str]:
        return sorted(self.view.by_model)

    def now(self) -> float:
        """Seconds since the gateway started: the clock of the fleet file's outage windows."""
        return time.monotonic() - self.started

    async def start(self) -> None:
        cond = asyncio.Condition()
        for b in self.backends.values():
            if isinstance(b, EmulatedBackend):
                b.power_changed = cond
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
                if b.kind in ("openai", "local-llama"):
                    await b.check()
            self._refresh_unhealthy()

    def eject(self, backend: Backend) -> None:
        """Take a failing backend out of rotation for a cooldown (then it is tried again)."""
        backend.healthy = False
        self.ejected_until[backend.name] = time.monotonic() + COOLDOWN_S
        self._refresh_unhealthy()

    def _refresh_unhealthy(self) -> None:
        now = time.monotonic()
        for name, until in list(self.ejected_until.items()):
            if until <= now:
                del self.ejected_until[name]
                self.backends[name].healthy = True
        bad = set(self.drained)
        for name, t in self.targets.items():
            bs = getattr(t, "backends", None)
            if bs is not None and not any(b.healthy for b in bs):
                bad.add(name)
        self.view.unhealthy = bad

    def backend_for(self, target: Any, req: Request, exclude: set[str]) -> Backend | None:
        if isinstance(target, EnginePool):
            engine = target.replica_for(req)
            b = self.engine_backend[id(engine)]
            return None if b.name in exclude else b
        picked: Backend | None = target.pick(exclude)
        return picked

    async def place(self, req: Request, failed: set[str]) -> Placement:
        """Choose a target with the policy, admit it with the governor, pick a backend.
        Waits (bounded) for power; raises NoTarget with a status and reason otherwise."""
        deadline = time.monotonic() + self.max_wait_s
        while True:
            self._refresh_unhealthy()
            view = self.view
            view.clock[0] = self.now()
            view.exclude = (  # targets whose every backend already failed this request
                {
                    n
                    for n, t in self.targets.items()
                    if getattr(t, "backends", None) is not None
                    and all(b.name in failed for b in t.backends)
                }
                if failed
                else set()
            )
            powered_out = False
            while True:
                decision = self.policy.choose(req, view)
                if decision.target is None or decision.target in view.exclude:
                    break
                target = self.targets[decision.target]
                if self.gov.capped(target.site) and not self.gov.fits(
                    target.site, target.marginal_power_w()
                ):
                    view.exclude.add(target.name)
                    powered_out = True
                    continue
                backend = self.backend_for(target, req, failed)
                if backend is None:
                    view.exclude.add(target.name)
                    continue
                if getattr(target, "rate_limited", False):
                    target.take()
                return Placement(target, backend)
            if powered_out and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                continue
            if powered_out:
                raise NoTarget(
                    429, "every site that serves this model is at its power cap", retry_after_s=1.0
                )
            if view.cut_by_outage:
                raise NoTarget(
                    503, "the link to the sites that serve this model is down", retry_after_s=5.0
                )
            raise NoTarget(503, f"no healthy backend serves {req.model} now", retry_after_s=2.0)

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
            entry: dict[str, Any] = {
                "site": t.site,
                "model": t.model,
                "kind": t.kind,
                "in_flight": t.outstanding,
                "drained": name in self.drained,
                "healthy": name not in self.view.unhealthy,
            }
            if isinstance(t, EnginePool):
                entry["replicas"] = [
                    {
                        "name": e.name,
                        "batch": e.batch,
                        "waiting": len(e.waiting),
                        "power_w": round(e.power_w, 2),
                    }
                    for e in t.engines
                ]
                entry["hardware"] = t.spec.deployment.hardware.id
            else:
                entry["backends"] = [
                    {"name": b.name, "healthy": b.healthy, "kind": b.kind} for b in t.backends
                ]
            targets[name] = entry
        return {
            "fleet": self.fleet.name,
            "policy": self.policy.name,
            "sites": sites,
            "targets": targets,
            "uptime_s": round(self.now(), 3),
        }
