"""The planning problem: flows of traffic, candidate deployments per site, and capacities.

A *flow* is the traffic of one request class from one origin site, split in two when part of
it may not leave its origin (residency). An *option* is one candidate configuration (a device
layout from `core.configs`) at one site; each replica of it serves any mix of the flows it can
meet the SLO for, in proportion to its capacity for each (the load constraint of the program).
Hosted providers are options too, priced per token and bounded by their rate limits.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import numpy as np

from wattserve.core.catalog import Catalog
from wattserve.core.configs import SearchSpace, search_configs, tpot_counts
from wattserve.core.cost import CostAssumptions, cost_rate
from wattserve.core.deployment import Deployment, default_kv_dtype
from wattserve.core.dtypes import Dtype
from wattserve.core.fleet import Fleet, HostedSpec, deployment_of, kv_block_count
from wattserve.core.hardware import Hardware, stack_excluded
from wattserve.core.modelspec import ModelSpec, builtin_model_id, fits_context, load_model
from wattserve.core.params import Calibration, EngineParams
from wattserve.core.perf import perf_model
from wattserve.core.ratelimit import poisson_rate_within
from wattserve.core.sites import Site
from wattserve.core.workload import SLO, Request, Workload
from wattserve.errors import ConfigError, UnknownNameError
from wattserve.plan.capacity import (
    Capacity,
    CapacityCache,
    CapacityMethod,
    Shape,
    analytic_rate,
    replica_capacity,
)
from wattserve.plan.queueing import MAX_SHARE

# how much more a larger layout must carry per device than every smaller one to be sized too
LAYOUT_GAIN = 0.01


@dataclass(frozen=True, slots=True)
class Flow:
    """Requests of one class from one origin (None: anywhere), with their mean lengths."""

    cls: str
    origin: str | None
    local_only: bool
    model: str
    rate_rps: float
    prompt_tokens: int
    output_tokens: int
    slo: SLO
    sizes: tuple[tuple[int, int], ...] = ()  # a sample of its (prompt, output) lengths
    # where its model was named, as (file, line, field): for an error about the model
    model_at: tuple[str | None, int | None, str] = (None, None, "--model")
    slo_name: str = "default"  # the name its requests give their SLO (`Request.slo`)

    @property
    def label(self) -> str:
        where = f" from {self.origin}" if self.origin else ""
        return f"{self.cls or 'default'}{where}{' (stays local)' if self.local_only else ''}"


@dataclass(frozen=True, slots=True)
class Option:
    """One candidate deployment at one site; `caps[q]` is a replica's capacity for flow q."""

    name: str
    site: str
    deployment: Deployment
    params: EngineParams
    usd_per_h: float  # per replica: rent, or capex amortised (electricity separately)
    usd_per_j: float  # electricity x PUE for owned devices (rent includes power)
    idle_w: float
    peak_w: float
    caps: dict[int, Capacity] = field(default_factory=dict)

    @property
    def hardware(self) -> Hardware:
        return self.deployment.hardware

    @property
    def devices(self) -> int:
        return self.deployment.devices

    def busy_w(self) -> float:
        """What the program charges a busy replica before its load: the lowest busy draw
        (`Capacity.busy_power_w`) of its flows whose draw is concave in the load (a flow whose
        draw is not, such as short answers to long prompts, has idle there and is left out:
        its line through idle over-charges it), so that a replica at full load of any one flow
        costs that flow's measured W; the idle draw where none is concave."""
        busy = [w for c in self.caps.values() if (w := c.busy_power_w()) > self.idle_w]
        return min(busy, default=self.idle_w)

    def joules_per_request(self, q: int) -> float:
        """What one request of flow q adds to a replica's energy, above `busy_w`."""
        cap = self.caps[q]
        return max(0.0, (cap.avg_power_w - self.busy_w()) / cap.rate_rps)

    def replica_w(self, rates: dict[int, float], replicas: int) -> float:
        """The average W of `replicas` replicas sharing `rates` (req/s by flow) evenly, from
        each flow's measured draw at that load (`Capacity.power_at`), mixed by load share."""
        if replicas <= 0:
            return 0.0
        loads = {q: r / self.caps[q].rate_rps / replicas for q, r in rates.items() if r > 0}
        total = sum(loads.values())
        if total <= 0:
            return self.idle_w * replicas
        dynamic = sum(
            u / total * (self.caps[q].power_at(total) - self.idle_w) for q, u in loads.items()
        )
        return (self.idle_w + dynamic) * replicas


@dataclass(frozen=True, slots=True)
class HostedOption:
    """A hosted API: $/request for each flow it meets the SLO for, and for each the req/s the
    plan may send it while that flow's requests go there: `limits[q]`, the Poisson rate its
    rate limit's token bucket refuses at most flow q's SLO share of (`_planned_limit`; the
    bucket refuses every flow alike, so the strictest flow sent there sets the total). Empty
    where the API publishes no rate limit."""

    spec: HostedSpec
    usd_per_request: dict[int, float]
    limits: dict[int, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class Limits:
    """What the plan must respect besides the SLOs."""

    headroom: float = 0.1  # share of each site's power cap kept free
    budget_usd_per_h: float | None = None
    available: tuple[tuple[str, int], ...] = ()  # devices of a hardware id over all sites
    require_software: str | None = None  # at least this mature a stack, as in rank
    min_maturity: str | None = None


@dataclass
class Problem:
    flows: list[Flow]
    sites: dict[str, Site]
    fleet: Fleet  # the sites file as read (links, providers)
    options: list[Option]
    hosted: list[HostedOption]
    limits: Limits
    excluded: dict[str, str]  # hardware id -> why it is not a candidate
    cache: CapacityCache
    left_out: tuple[str, ...] = ()  # requests no engine takes (past the context window), or
    # that no fleet may take (local-only, naming no site; from a site the sites file lacks)
    origins_read: bool = True  # False: one site, every request planned as coming from it

    def left_out_origin(self, r: Request, declared: Collection[str]) -> bool:
        """Whether `r` was left out for its trace row's origin (`foreign_origin`; `declared`:
        the workload's `declared_origins`)."""
        return self.origins_read and foreign_origin(r, self.sites, declared)


def declared_origins(workload: Workload) -> set[str]:
    """The sites the workload's classes name in `origins:`."""
    return {site for c in workload.classes for site, _ in c.origins}


def foreign_origin(r: Request, sites: Collection[str], declared: Collection[str]) -> bool:
    """A request from a site the sites file lacks, named by its trace row (simulate and serve
    refuse it; a class's `origins:` naming one is the workload's error)."""
    return r.origin is not None and r.origin not in sites and r.origin not in declared

    def rtt_s(self, origin: str | None, site: str) -> float:
        return self.fleet.rtt_s(origin, site)


class _Group:
    """The requests of one flow as they stream past: their lengths, kept compactly."""

    def __init__(self, first: Request) -> None:
        self.first = first
        self.prompts = array("I")  # token counts: at most MAX_TOKENS (1e7)
        self.outputs = array("I")


class ContextWindows:
    """Each model's context window, loaded once: the limit a request must fit for an engine
    to take it (`fits_context`); a model that cannot be loaded has none here (_models says
    where it was named)."""

    def __init__(self) -> None:
        self.by_model: dict[str, int | None] = {}

    def window(self, model: str) -> int | None:
        if model not in self.by_model:
            try:
                self.by_model[model] = load_model(model).max_context
            except (ConfigError, UnknownNameError):
                self.by_model[model] = None
        return self.by_model[model]

    def fits(self, r: Request, model: str) -> bool:
        return fits_context(self.window(model), r.prompt_tokens, r.output_tokens)


def flows_of(
    workload: Workload,
    default_model: str,
    requests: Iterable[Request] | None = None,
    *,
    ignore_origins: bool = False,
    sites: Collection[str] | None = None,
) -> tuple[list[Flow], tuple[str, ...]]:
    """Group a workload's requests by (class, origin, residency) into flows with mean rates,
    and say which were left out: a request past its model's context window, which an engine
    refuses (serve answers 400, simulate rejects it: `fits_context`), a local-only one
    that names no site, which no fleet may take (`residency_refusal`), and one whose trace
    row names an origin not among `sites` (simulate refuses it; an origin a class's
    `origins:` names is the workload's error, `build_problem`'s). `requests` (default:
    the workload's) may be a stream (`stream_workload`): each is seen once and not kept.
    `ignore_origins`: one site, so every request comes from it."""
    declared = declared_origins(workload)
    foreign: Counter[str] = Counter()  # rows' origins the sites file lacks
    foreign_rows: list[str] = []
    groups: dict[tuple[str, str | None, bool, str, str], _Group] = {}
    windows = ContextWindows()
    too_long: dict[str, list[str]] = {}  # the first few a model left out
    left = Counter[str]()  # and how many
    unplaced: list[str] = []  # the first few local-only requests that name no site
    n_unplaced = 0
    first: float | None = None
    last = 0.0
    named: dict[str, str] = {}  # as written -> the built-in it is, else as written
    for r in workload.requests if requests is None else requests:
        model = r.model or default_model
        # one model under two names (a Hugging Face id and the catalog's) is one flow, and
        # a hosted API of it serves both: they had been planned as two models
        canonical = named.get(model)
        if canonical is None:
            canonical = named[model] = builtin_model_id(model) or model
        model = canonical
        last = r.arrival_s  # the span is the workload's, left-out requests included
        if first is None:
            first = last
        if sites is not None and not ignore_origins and foreign_origin(r, sites, declared):
            foreign[str(r.origin)] += 1
            if len(foreign_rows) < 5:
                foreign_rows.append(f"row {r.row}" if r.row else f"request {r.id}")
            continue
        if r.unplaceable:  # refused on both clocks (residency_refusal)
            n_unplaced += 1
            if n_unplaced <= 5:
                unplaced.append(f"row {r.row}" if r.row else f"request {r.id}")
            continue
        if not windows.fits(r, model):
            left[model] += 1
            if left[model] <= 5:  # a stream of 20M requests may all be too long
                too_long.setdefault(model, []).append(
                    f"row {r.row}" if r.row else f"request {r.id}"
                )
            continue
        key = (r.cls, None if ignore_origins else r.origin, r.local_only, model, r.slo)
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group(r)
        g.prompts.append(r.prompt_tokens)
        g.outputs.append(r.output_tokens)
    # a stream has its span once it is read; from the first arrival, as a trace excerpt
    # (JSONL, not rebased as Azure's are) may begin an hour in: its rate had been divided
    # by that hour, and the plan sized for a thirtieth of the load
    span = workload.duration_s or last
    if workload.trace and first is not None and span - first > 0:
        span -= first  # a trace's arrivals cover its first to its last
    left_out = [
        f"{left[model]} request(s) for {model} past its context window of "
        f"{windows.window(model)} tokens ({', '.join(rows)}{', ...' if left[model] > 5 else ''})"
        ": an engine refuses them"
        for model, rows in sorted(too_long.items())
    ]
    if n_unplaced:
        left_out.append(
            f"{n_unplaced} local-only request(s) that name no origin site ({', '.join(unplaced)}"
            f"{', ...' if n_unplaced > 5 else ''}): simulate and serve refuse them (give the "
            "rows an origin, or the workload's class origins:)"
        )
    if foreign:
        n = sum(foreign.values())
        left_out.append(
            f"{n} request(s) from sites the sites file lacks ("
            + ", ".join(f"{site!r}: {k}" for site, k in sorted(foreign.items()))
            + f"; {', '.join(foreign_rows)}{', ...' if n > 5 else ''}): simulate and serve "
            "refuse them"
        )
    bad = workload.bad_rows  # complete once a stream is read
    if bad and groups and span > 0:  # simulate and bench say so; plan had said nothing
        left_out.append(
            f"{bad.total} malformed trace row(s), skipped ("
            + "; ".join(f"line {n}: {why}" for n, why in bad[:3])
            + (", ..." if bad.total > 3 else "")
            + ")"
        )
    if not groups or span <= 0:
        why = f" ({bad.total} malformed rows, e.g. {bad[:2]})" if bad else ""
        raise ConfigError(
            f"the workload has no requests over a positive span to plan for{why}"
            + "".join(f"; left out: {note}" for note in left_out),
            path=workload.source or None,
        )
    flows = []
    for (cls, origin, local, model, slo), g in sorted(
        groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])
    ):
        n = len(g.prompts)
        flows.append(
            Flow(
                cls,
                origin,
                local,
                model,
                n / span,
                max(1, round(sum(g.prompts) / n)),
                max(1, round(sum(g.outputs) / n)),
                workload.slos.get(slo, workload.slos["default"]),
                _sample(g.prompts, g.outputs),
                workload.model_named_at(g.first, default_model),
                slo,
            )
        )
    return flows, tuple(left_out)


SIZE_SAMPLE = 100  # lengths a capacity probe cycles through: enough for a tail to show


def _sample(prompts: array[int], outputs: array[int]) -> tuple[tuple[int, int], ...]:
    """A deterministic sample of a flow's (prompt, output) lengths that keeps its tail: the
    requests at the midpoints of SIZE_SAMPLE equal slices of the flow ordered by total tokens
    (prompt + output, then prompt), each a real pair, in a fixed shuffled order (cycled in
    order, sorted lengths would arrive as a ramp). Every 1/SIZE_SAMPLE of the flow thus has
    one request in the sample, the longest slice included. A sample evenly spaced in arrival
    order was a random one: its largest requests were luck, and the capacity of one H100
    for one lognormal class (1000/200 tokens, sigma 0.8, TTFT 1 s, TPOT 50 ms at p99) came
    out at 19.6 to 26.8 req/s over five seeds of the same workload (23.1 to 24.3 now)."""
    n = len(prompts)
    if n <= SIZE_SAMPLE:
        return tuple(zip(prompts, outputs, strict=True))
    p = np.asarray(prompts, dtype=np.int64)
    o = np.asarray(outputs, dtype=np.int64)
    order = np.lexsort((p, p + o))  # by total tokens, then by prompt
    picks = [int(order[min(n - 1, int((i + 0.5) * n / SIZE_SAMPLE))]) for i in range(SIZE_SAMPLE)]
    random.Random(SIZE_SAMPLE).shuffle(picks)
    return tuple((prompts[i], outputs[i]) for i in picks)


def _models(flows: list[Flow]) -> dict[str, ModelSpec]:
    """The flows' models, each loaded once; one that cannot be is an error naming where it
    was given (the class's `model:`, the trace row, or --model)."""
    out: dict[str, ModelSpec] = {}
    for f in flows:
        if f.model in out:
            continue
        try:
            out[f.model] = load_model(f.model)
        except (ConfigError, UnknownNameError) as exc:
            path, line, where = f.model_at
            raise ConfigError(
                f"cannot use model {f.model[:200]!r}: {exc}", path=path, line=line, field=where
            ) from None
    return out


def _allowed(hw: Hardware, limits: Limits) -> str:
    """Why `hw` may not be a candidate ("" if it may): the software and maturity filters, and
    price and power, which every plan weighs (cost, site caps, energy)."""
    if hw.value("usd_per_hour") is None and hw.value("list_price_usd") is None:
        return "no price: neither usd_per_hour nor list_price_usd in the catalog"
    if hw.value("tdp_w") is None:
        return "power unknown: no tdp_w in the catalog, so no cap or energy figure can include it"
    return stack_excluded(hw.software, hw.maturity, limits.require_software, limits.min_maturity)


def build_problem(
    workload: Workload,
    fleet: Fleet,
    catalog: Catalog,
    hardware: list[str],
    *,
    default_model: str,
    limits: Limits,
    calibration: Calibration | None = None,
    dtypes: tuple[Dtype, ...] | None = ("bf16",),
    method: CapacityMethod = "simulated",
    cache: CapacityCache | None = None,
    requests: Iterable[Request] | None = None,
    ignore_origins: bool = False,
) -> Problem:
    """Flows, options (device layouts x sites) with their capacities, and hosted options.
    `requests` and `ignore_origins` are as `flows_of` takes them."""
    calib = calibration or Calibration()
    cache = cache or CapacityCache()
    flows, left_out = flows_of(
        workload, default_model, requests, ignore_origins=ignore_origins, sites=fleet.sites
    )
    specs = _models(flows)
    for f in flows:
        if f.origin is not None and f.origin not in fleet.sites:
            raise ConfigError(
                f"class '{f.cls}' comes from site '{f.origin}', which the sites file lacks "
                f"({', '.join(fleet.sites)})",
                path=workload.source or None,
                field="origins",
            )
    excluded: dict[str, str] = {}
    options: list[Option] = []
    models = sorted(specs)
    for hw_id in hardware:
        hw = catalog.device(hw_id)
        why = _allowed(hw, limits)
        if why:
            excluded[hw_id] = why
            continue
        params = calib.params_for(hw)
        for model_id in models:
            layouts = _layouts(hw, catalog, model_id, specs[model_id], flows, calib, dtypes)
            if not layouts:
                excluded.setdefault(hw_id, f"no layout fits {model_id} and meets a class's SLO")
                continue
            for dep in layouts:
                # with more than one model the names carry it: two models' replicas of one
                # layout at one site are two deployments, not one of the last model's
                prefix = f"{model_id}-" if len(models) > 1 else ""
                options += _site_options(dep, model_id, params, fleet, flows, method, cache, prefix)
    hosted = [_hosted_option(h, flows, fleet) for h in fleet.hosted]
    hosted = [h for h in hosted if h.usd_per_request]
    _unique_names(options, hosted, fleet)
    return Problem(
        flows,
        dict(fleet.sites),
        fleet,
        options,
        hosted,
        limits,
        excluded,
        cache,
        left_out,
        origins_read=not ignore_origins,
    )


def _unique_names(options: list[Option], hosted: list[HostedOption], fleet: Fleet) -> None:
    """The candidates' names are the plan's deployments' and the fleet file's: two with one
    name (a site named `x@tpot100ms` beside a site `x` with two TPOT tiers, a provider named
    as a candidate) would be one deployment in `--out`, `--json` and `--verify`."""
    where: dict[str, str] = {}
    for name, what, at in [(o.name, f"site {o.site}", "sites") for o in options] + [
        (h.name, "a provider", f"providers.{h.name}") for h in hosted
    ]:
        if name in where:
            raise ConfigError(
                f"two candidates would both be named '{name}' ({where[name]} and {what}): "
                "rename a site or provider",
                path=fleet.path or None,
                field=at,
            )
        where[name] = what
    candidates = {o.name for o in options}
    for h in hosted:  # as core.fleet refuses a provider named as a replica
        head = deployment_of(h.name, candidates)
        if head is not None:
            raise ConfigError(
                f"provider '{h.name}' would be named as a replica of candidate '{head}' "
                f"({where[head]}): rename the provider",
                path=fleet.path or None,
                field=f"providers.{h.name}",
            )


def _layouts(
    hw: Hardware,
    catalog: Catalog,
    model_id: str,
    model: ModelSpec,
    flows: list[Flow],
    calib: Calibration,
    dtypes: tuple[Dtype, ...] | None,
) -> list[Deployment]:
    """For each class of `model_id` (as the flows name it; loaded: `model`) and dtype, the
    layouts worth sizing (`_worth_sizing`) among those that fit and meet its SLO."""
    params = calib.params_for(hw)
    out: dict[tuple[int, int, str], Deployment] = {}
    for f in flows:
        if f.model != model_id:
            continue
        found = search_configs(
            model,
            hw,
            catalog,
            slo=f.slo,
            prompt_tokens=f.prompt_tokens,
            output_tokens=f.output_tokens,
            calibration=calib,
            space=SearchSpace(dtypes=dtypes),
        )
        by_dtype: dict[str, dict[tuple[int, int], Deployment]] = {}
        for c in found.feasible:
            tp = c.layout.tp
            pp = max(1, c.devices // tp)
            seqs = min(256, c.max_batch_slo) if c.layout.pp is None else 256
            dep = Deployment(
                model,
                hw,
                tp=tp,
                pp=pp,
                dtype=c.layout.dtype,
                kv_dtype=default_kv_dtype(c.layout.dtype),
                max_num_seqs=max(1, seqs),
            )
            by_dtype.setdefault(c.layout.dtype, {}).setdefault((tp, pp), dep)
        shape = Shape(model.id, f.prompt_tokens, f.output_tokens, f.slo.ttft_s, f.slo.tpot_s, 0.5)
        for deps in by_dtype.values():
            for dep in _worth_sizing(list(deps.values()), params, shape):
                out[(dep.tp, dep.pp, dep.dtype)] = dep
    return list(out.values())


def _worth_sizing(deps: list[Deployment], params: EngineParams, shape: Shape) -> list[Deployment]:
    """The layouts of one device and dtype a plan should size for one class: the fewest-device
    one, and each with more devices that carries more requests per device (by the steady-state
    bound, `analytic_rate`; the best of those with as many devices). Rent and power grow with
    the devices, so a larger layout earns its place only per device: two L4s hold more than
    twice one L4's KV cache (Llama-3.1-8B at 3,000 in and 500 out: 0.29 against 0.10 req/s a
    device), and of two H100s Llama-3.1-70B carries 3.5 req/s at tp 2 and 1.2 at pp 2. Keeping
    only the fewest-device layout (until 2026-12-05) planned a looser SLO dearer than a tighter
    one, whose single L4 missed it."""
    rated = []
    for dep in deps:
        blocks, why = kv_block_count(dep, params)
        rate = 0.0 if why else analytic_rate(perf_model(dep, params), blocks, shape)[0]
        rated.append((dep.devices, -rate / dep.devices, dep))
    rated.sort(key=lambda t: (t[0], t[1]))
    kept = [rated[0][2]]  # the fewest devices (the finest step of capacity), the best of those
    best = -rated[0][1]
    for _, neg_per_device, dep in rated[1:]:
        if -neg_per_device > best * (1 + LAYOUT_GAIN):
            kept.append(dep)
            best = -neg_per_device
    return kept


def _site_options(
    dep: Deployment,
    model_id: str,
    params: EngineParams,
    fleet: Fleet,
    flows: list[Flow],
    method: CapacityMethod,
    cache: CapacityCache,
    prefix: str = "",
) -> list[Option]:
    hw = dep.hardware
    out = []
    for site in fleet.sites.values():
        if site.kind == "cloud" or site.available_count(hw.id) == 0:
            continue  # cloud sites hold hosted APIs; 0 available: none may go there
        rate = cost_rate(
            hw, dep.devices, CostAssumptions("auto", site.electricity_usd_per_kwh, site.pue)
        )
        if rate.basis == "unknown":
            continue  # no price: a cost plan cannot weigh it (rank lists it)
        mine = [
            q
            for q, f in enumerate(flows)
            if f.model == model_id and not (f.local_only and f.origin not in (None, site.name))
        ]
        tiers = sorted({flows[q].slo.tpot_s for q in mine})
        layout = f"tp{dep.tp}" + (f"pp{dep.pp}" if dep.pp > 1 else "") + f"-{dep.dtype}"
        base = f"{prefix}{hw.id}-{layout}-{site.name}"
        for tier in tiers:
            caps: dict[int, Capacity] = {}
            for q in mine:
                f = flows[q]
                if f.slo.tpot_s < tier:
                    continue
                shape = Shape(
                    dep.model.id,  # a config path's model is served under its id
                    f.prompt_tokens,
                    f.output_tokens,
                    f.slo.ttft_s - fleet.rtt_s(f.origin, site.name),
                    tier,
                    f.slo.percentile,
                    f.sizes,
                )
                cap = replica_capacity(dep, params, shape, method, cache)
                if cap.rate_rps > 0:
                    caps[q] = cap
            if not caps:
                continue
            first = next(iter(caps.values()))
            name = base if len(tiers) == 1 else f"{base}@tpot{_tier_ms(tier, tiers)}ms"
            out.append(
                Option(
                    name,
                    site.name,
                    dep,
                    params,
                    rate.usd_per_s * 3600.0,
                    rate.usd_per_j,
                    first.idle_power_w,
                    max(c.peak_power_w for c in caps.values()),
                    caps,
                )
            )
    return out


def _tier_ms(tier: float, tiers: list[float]) -> str:
    """A TPOT tier's name in ms: 6 significant figures, or as many as tell it from the other
    tiers (0.1 and 0.1000001 s had both been "100": one deployment's name for two)."""
    for digits in (6, 9, 12, 17):
        text = f"{tier * 1e3:.{digits}g}"
        if all(t == tier or f"{t * 1e3:.{digits}g}" != text for t in tiers):
            return text
    return repr(tier * 1e3)


def _hosted_option(h: HostedSpec, flows: list[Flow], fleet: Fleet) -> HostedOption:
    """The flows `h` meets the SLO for (its published TTFT plus the round trip, and one
    token per 1/output_tokens_per_s), each with its $ per request."""
    usd: dict[int, float] = {}
    for q, f in enumerate(flows):
        if f.model != h.model or (f.local_only and f.origin not in (None, h.site)):
            continue
        ttft = h.ttft_s + fleet.rtt_s(f.origin, h.site)
        tpot = 1.0 / h.output_tokens_per_s if h.output_tokens_per_s > 0 else math.inf
        if ttft <= f.slo.ttft_s and (tpot <= f.slo.tpot_s or not tpot_counts(f.output_tokens)):
            usd[q] = (
                f.prompt_tokens * h.usd_per_mtok_input + f.output_tokens * h.usd_per_mtok_output
            ) / 1e6
    limits = (
        {}
        if h.rate_limit_rps is None
        else {q: _planned_limit(h.rate_limit_rps, flows[q].slo.percentile) for q in usd}
    )
    return HostedOption(h, usd, limits)


def _planned_limit(rate_limit_rps: float, percentile: float) -> float:
    """The req/s of Poisson arrivals a rate limit lets through with at most the share of
    requests an SLO at `percentile` may miss refused (core/ratelimit.py: the bucket simulate
    and serve hold, a second's burst; a percentile of 100 as MAX_SHARE, as the analytic
    capacity takes it). Planned at 94% of a 2 req/s limit, a class met 75% of its 99%: a
    bucket of two tokens refuses a quarter of such arrivals."""
    return poisson_rate_within(rate_limit_rps, 1.0 - min(percentile, MAX_SHARE))
