"""Routing policies: small pure objects behind one interface, `choose(request, view)`.

The simulator and the gateway both call the same objects; a policy never knows which clock it
runs on. It sees a read-only FleetView whose targets (a deployment's replicas, or a hosted
API) predict, for a request, its time to first token, time per output token, the marginal
joules and dollars it would add, and expose load and site. Built-ins: round_robin,
least_loaded, cost, energy, slo, edge_first, and weighted composites
(`weighted:latency=1,energy=0.5`). Users plug in their own with `package.module:Class`.
"""

from __future__ import annotations

import importlib
import math
import operator
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from wattserve.core.workload import SLO, Request
from wattserve.errors import ConfigError, printable


class Decision(NamedTuple):
    """Where a request goes: a target's name, or None with the reason it is not placed."""

    target: str | None
    reason: str = ""


class TargetView(Protocol):
    """What a policy may read about one target."""

    @property
    def name(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def load(self) -> float:
        """Outstanding requests per replica (queued and running)."""
        ...

    def ttft_s(self, req: Request) -> float:
        """Predicted time to first token, queueing and network included."""
        ...

    def tpot_s(self, req: Request) -> float: ...

    def joules(self, req: Request) -> float:
        """Marginal energy the request adds (inf when unknown)."""
        ...

    def usd(self, req: Request) -> float:
        """Marginal dollars the request adds (token price, or electricity; 0 when rented)."""
        ...

    def predict(self, req: Request) -> tuple[float, float, float, float]:
        """(ttft_s, tpot_s, joules, usd) at once, indexed by TTFT, TPOT, JOULES and USD: what
        the four methods above return, in one call (built-in policies ask every candidate)."""
        ...


TTFT, TPOT, JOULES, USD = range(4)  # positions in TargetView.predict


def predict_each(t: TargetView, req: Request) -> tuple[float, float, float, float]:
    """TargetView.predict for a target with no faster way: its four answers in turn."""
    return t.ttft_s(req), t.tpot_s(req), t.joules(req), t.usd(req)


class FleetView(Protocol):
    @property
    def targets(self) -> Mapping[str, Any]:
        """Every target of the fleet by name."""
        ...

    def candidates(self, req: Request) -> Sequence[TargetView]:
        """Healthy targets that serve the request's model and that it may reach now."""
        ...

    def slo(self, req: Request) -> SLO: ...

    def site_headroom_w(self, site: str) -> float:
        """Watts left under a site's power cap now (inf without a cap), for user policies."""
        ...


class Policy(ABC):
    """Choose a target for a request. Subclasses implement `pick` (a target among the
    candidates) or override `choose` (a Decision, which may leave the request unplaced)."""

    name = "policy"

    def choose(self, req: Request, view: FleetView) -> Decision:
        cands = view.candidates(req)
        if not cands:
            return Decision(None)  # the mechanism says why in its own terms (no target)
        return Decision(self.pick(req, view, cands).name)

    @abstractmethod
    def pick(self, req: Request, view: FleetView, cands: Sequence[TargetView]) -> TargetView: ...


# Predictions are estimates: a target must be predicted to meet the SLO with this much to spare.
SLO_MARGIN = 0.8


def _meets(t: TargetView, req: Request, slo: SLO) -> bool:
    return t.ttft_s(req) <= SLO_MARGIN * slo.ttft_s and t.tpot_s(req) <= SLO_MARGIN * slo.tpot_s


_load = operator.attrgetter("load")


def _latency(t: TargetView, req: Request) -> float:
    return t.ttft_s(req) + max(0, req.output_tokens - 1) * t.tpot_s(req)


class RoundRobin(Policy):
    name = "round_robin"

    def __init__(self) -> None:
        self.turn: dict[str, int] = {}

    def pick(self, req: Request, view: FleetView, cands: Sequence[TargetView]) -> TargetView:
        i = self.turn.get(req.model, 0)
        self.turn[req.model] = i + 1
        return cands[i % len(cands)]


def _nth_tied(cands: Sequence[TargetView], values: list[float], best: float, n: int) -> TargetView:
    """The `n`-th candidate (0-based) whose value equals `best`."""
    i = values.index(best)
    for _ in range(n):
        i = values.index(best, i + 1)
    return cands[i]


class _Ties:
    """Equally good targets take turns (a fixed first choice would send one of two identical
    upstreams every request). `turn` counts the ties broken."""

    def __init__(self) -> None:
        self.turn = 0

    def rotate(self, tied: list[TargetView]) -> TargetView:
        """The next of `tied` in turn (a fresh policy takes the first, as `min` would)."""
        self.turn += 1
        return tied[(self.turn - 1) % len(tied)]

    def nth(self, cands: Sequence[TargetView], values: list[float], best: float) -> TargetView:
        """The candidate whose value is `best`, in turn among those that tie on it."""
        k = values.count(best)
        if k == 1:
            return cands[values.index(best)]
        self.turn += 1
        return _nth_tied(cands, values, best, (self.turn - 1) % k)


class LeastLoaded(Policy):
    name = "least_loaded"

    def __init__(self) -> None:
        self.ties = _Ties()

    def pick(self, req: Request, view: FleetView, cands: Sequence[TargetView]) -> TargetView:
        loads = [t.load for t in cands]
        return self.ties.nth(cands, loads, min(loads))


class LowestLatency(Policy):
    """`slo`: the lowest predicted end-to-end latency."""

    name = "slo"

    def __init__(self) -> None:
        self.ties = _Ties()

    def pick(self, req: Request, view: FleetView, cands: Sequence[TargetView]) -> TargetView:
        decodes = max(0, req.output_tokens - 1)
        best, best_s = cands[0], math.inf
        tied: list[TargetView] | None = None
        for t in cands:  # min() with a key, one call per target
            p = t.predict(req)
            latency = p[0] + decodes * p[1]
            if latency < best_s:
                best, best_s, tied = t, latency, None
            elif latency == best_s:
                tied = tied or [best]
                tied.append(t)
        return best if tied is None else self.ties.rotate(tied)


class _CheapestMeetingSLO(Policy):
    """Among targets predicted to meet the SLO, the one with the least `metric` (a position
    in TargetView.predict); ties and the no-target-meets-it case go to the lowest predicted
    latency."""

    metric = JOULES

    def __init__(self) -> None:
        self.ties = _Ties()

    def pick(self, req: Request, view: FleetView, cands: Sequence[TargetView]) -> TargetView:
        slo = view.slo(req)
        max_ttft, max_tpot = SLO_MARGIN * slo.ttft_s, SLO_MARGIN * slo.tpot_s
        decodes = max(0, req.output_tokens - 1)
        m = self.metric
        best: TargetView | None = None
        best_v = best_s = math.inf
        fastest, fastest_s = cands[0], math.inf
        tied: list[TargetView] | None = None  # equal to `best` on both metric and latency
        tied_fast: list[TargetView] | None = None
        for t in cands:  # one pass, one call per target: this runs for every request
            p = t.predict(req)
            ttft, tpot = p[0], p[1]
            latency = ttft + decodes * tpot
            if latency < fastest_s:
                fastest, fastest_s, tied_fast = t, latency, None
            elif latency == fastest_s:
                tied_fast = tied_fast or [fastest]
                tied_fast.append(t)
            if ttft <= max_ttft and tpot <= max_tpot:
                v = p[m]
                if best is None or v < best_v or (v == best_v and latency < best_s):
                    best, best_v, best_s, tied = t, v, latency, None
                elif v == best_v and latency == best_s:
                    tied = tied or [best]
                    tied.append(t)
        if best is None:
            return fastest if tied_fast is None else self.ties.rotate(tied_fast)
        return best if tied is None else self.ties.rotate(tied)


class Cost(_CheapestMeetingSLO):
    name = "cost"
    metric = USD


class Energy(_CheapestMeetingSLO):
    name = "energy"
    metric = JOULES


class EdgeFirst(Policy):
    """Serve at the request's origin site when a target there meets the SLO; else offload to
    the lowest predicted latency elsewhere."""

    name = "edge_first"

    def __init__(self) -> None:
        self.ties = _Ties()

    def pick(self, req: Request, view: FleetView, cands: Sequence[TargetView]) -> TargetView:
        slo = view.slo(req)
        local = [t for t in cands if t.site == req.origin and _meets(t, req, slo)]
        pool = local or cands
        values = [t.load for t in local] if local else [_latency(t, req) for t in cands]
        return self.ties.nth(pool, values, min(values))


_METRICS: dict[str, Callable[[TargetView, Request], float]] = {
    "latency": _latency,
    "energy": lambda t, r: t.joules(r),
    "cost": lambda t, r: t.usd(r),
    "load": lambda t, r: t.load,
}


class Weighted(Policy):
    """Minimise a weighted sum of metrics, each divided by its best value among candidates
    (so weights compare like with like); SLO-meeting targets first."""

    name = "weighted"

    def __init__(self, weights: dict[str, float]) -> None:
        unknown = set(weights) - set(_METRICS)
        if unknown or not weights:
            raise ConfigError(
                f"weighted policy metrics are {', '.join(_METRICS)}; got {', '.join(weights)}",
                field="policy",
            )
        # relative to the largest: weights that differ by a common factor route alike (1e308
        # each overflowed the scores to inf, every target tied, and routing went round-robin)
        top = max(weights.values())
        self.weights = {k: v / top for k, v in weights.items()} if top > 0 else weights
        self.name = "weighted:" + ",".join(f"{k}={v:g}" for k, v in weights.items())
        self.ties = _Ties()

    def pick(self, req: Request, view: FleetView, cands: Sequence[TargetView]) -> TargetView:
        slo = view.slo(req)
        pool = [t for t in cands if _meets(t, req, slo)] or list(cands)
        values = {k: [_METRICS[k](t, req) for t in pool] for k in self.weights}
        scales = {}
        for k, vs in values.items():
            finite = [v for v in vs if math.isfinite(v) and v > 0]
            scales[k] = min(finite) if finite else 1.0

        scores = [
            sum(w * min(values[k][i] / scales[k], 1e9) for k, w in self.weights.items())
            for i in range(len(pool))
        ]
        return self.ties.nth(pool, scores, min(scores))


BUILTIN: dict[str, Callable[[], Policy]] = {
    "round_robin": RoundRobin,
    "least_loaded": LeastLoaded,
    "cost": Cost,
    "energy": Energy,
    "slo": LowestLatency,
    "edge_first": EdgeFirst,
}


class _UserPolicy:
    """A policy from the user's code (`package.module:Class`), held to the contract: `choose`
    returns a Decision naming one of the view's targets, or None. Whatever else it does (it
    raises, returns something else, names no target) leaves the request unplaced with a reason
    naming the class, in `simulate` and in `serve` alike, rather than a traceback."""

    def __init__(self, policy: Any, spec: str) -> None:
        self.policy = policy
        try:
            name = getattr(policy, "name", None)
        except Exception:  # a `name` property that raises is still the user's error, not ours
            name = None
        # printed in simulate's table and in every reason: a name with an escape sequence in
        # it would reach the terminal as written
        # Policy's own "policy" is no name: a subclass that sets none is known by its spec
        # (two of them in one --compare were two rows called "policy")
        if isinstance(name, str) and name.strip() and name != Policy.name:
            self.name = printable(name)[:100]
        else:
            self.name = spec

    def choose(self, req: Request, view: FleetView) -> Decision:
        try:
            d = self.policy.choose(req, view)
        # the user's code: whatever it raises is their error to read (a SystemExit had ended
        # simulate at once, with exit status 0 and no report)
        except (Exception, SystemExit) as exc:
            return Decision(None, f"policy {self.name}: choose() raised {exc!r:.200}")
        if not isinstance(d, Decision):
            return Decision(
                None, f"policy {self.name}: choose() returned {d!r:.100}, not a Decision"
            )
        if d.target is not None and not (isinstance(d.target, str) and d.target in view.targets):
            return Decision(None, f"policy {self.name}: chose {d.target!r:.100}, not a target")
        if not isinstance(d.reason, str):  # the reason is printed and sent to the client as text
            return Decision(d.target, f"{d.reason!r:.200}")
        return d


def make_policy(spec: str) -> Policy:
    """A policy from its name, `weighted:metric=w,...`, or `package.module:Class`."""
    if spec in BUILTIN:
        return BUILTIN[spec]()
    if spec.startswith("weighted:"):
        weights: dict[str, float] = {}
        for part in spec.removeprefix("weighted:").split(","):
            key, _, value = part.partition("=")
            try:
                weight = float(value)
            except ValueError:
                raise ConfigError(f"'{part}' is not metric=weight", field="policy") from None
            if not math.isfinite(weight) or weight < 0:
                # a negative weight would seek the dearest or slowest target
                raise ConfigError(
                    f"'{part}': the weight must be a finite number >= 0", field="policy"
                )
            if key.strip() in weights:  # else the last would win without a word
                raise ConfigError(f"'{key.strip()}' is weighted twice", field="policy")
            weights[key.strip()] = weight
        if not any(weights.values()):
            raise ConfigError("at least one weight must be above 0", field="policy")
        return Weighted(weights)
    if ":" in spec:
        module, _, cls = spec.partition(":")
        if not module.strip(". ") or module.startswith("."):
            raise ConfigError(
                f"{spec!r:.200}: a policy of your own is 'package.module:Class', with the "
                "module's absolute name",
                field="policy",
            )
        # the working folder is searched too, last (as `python -m` does, first): a console
        # script does not, and a policy in ./mypol.py was "No module named 'mypol'"
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())
        try:
            obj = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load policy {spec}: {exc}", field="policy") from None
        if not isinstance(obj, type):
            raise ConfigError(f"{spec} is not a class", field="policy")
        try:
            policy = obj()
        except (Exception, SystemExit) as exc:  # the user's code: their error to read
            raise ConfigError(f"{spec}() failed: {exc!r:.200}", field="policy") from None
        if not callable(getattr(policy, "choose", None)):
            raise ConfigError(f"{spec} has no choose(request, view) method", field="policy")
        return _UserPolicy(policy, spec)  # type: ignore[return-value]
    raise ConfigError(
        f"unknown policy '{spec}'; use {', '.join(BUILTIN)}, weighted:metric=w,... or "
        "package.module:Class",
        field="policy",
    )
