"""Capacity at SLO: the largest request rate one replica sustains while a class meets its SLO.

Two steps, both from the PerfModel and the EngineModel (no rule of thumb):

1. `analytic_rate`: a steady-state bound. At rate r a replica keeps B = r * (o + 1) * tau
   sequences running (Little's law), and each step carries B decode tokens plus the prompt
   tokens that arrived during it (r * tau * p, chunked prefill), so the step time tau solves
   tau = step_time(B + r * tau * p, ...). The bound is the largest r whose tau stays within the
   TPOT limit, whose batch fits max_num_seqs and the KV cache, and whose one-request prefill
   fits the TTFT budget. It starts the simulated search; `--capacity analytic` takes the
   percentiles of a steady state whose prefill steps are apart from its decode steps instead
   (`_analytic`, plan.queueing): the mean of the two kinds of step is well above the step at
   the mean tokens, so the bound put some replicas at up to 5x what they hold.
2. `simulated_rate`: bisection on r, each probe a short Poisson run of one replica through the
   simulator (the same EngineModel `simulate` and `serve` use), its requests' lengths cycling
   through a sample of the class's own, passing when the class's percentile share of requests
   meets both TTFT and TPOT and every request completes, over the whole probe and over its
   last third. The analytic bound brackets the search, which never passes the sustained rate
   (the steady state at rate / UTIL_MAX, its mean batch KV_SIGMAS standard deviations under
   the KV cache's limit and SEQS_SIGMAS under max_num_seqs): past it the queue grows without
   end, or the KV cache overflows and preemption collapses the replica. A probe's arrivals
   span three times the longest a request may stay within its SLO and at least 60 TTFT
   budgets (at least 300 requests), so that a backlog shows as missed TTFTs rather than being
   absorbed as one burst (docs/plan.md).

Results are cached per (deployment, engine parameters, class shape); `CapacityCache` can be
saved to and loaded from JSON so that a second plan of the same candidates is quick.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from wattserve.core.cost import CostAssumptions, cost_rate
from wattserve.core.deployment import Deployment
from wattserve.core.fleet import DeploymentSpec, Fleet, kv_block_count
from wattserve.core.memory import KV_BLOCK_TOKENS
from wattserve.core.params import EngineParams
from wattserve.core.perf import PerfModel, perf_model
from wattserve.core.records import OK, RequestRecord
from wattserve.core.sites import Site
from wattserve.core.textfile import load_json, read_text, replacing
from wattserve.core.workload import SLO, Request, Workload
from wattserve.errors import ConfigError
from wattserve.plan.queueing import (
    MixedSteady,
    Spread,
    mixed_steady,
    own_prefill_s,
    percentiles,
    prompt_delta,
)

CapacityMethod = Literal["simulated", "analytic"]
# Requests in one simulated probe: at least PROBE_REQUESTS (enough for a p99 to see queueing),
# and enough that their arrivals span PROBE_RESIDENCES times the longest a request of the
# class's mean length may stay and still meet its SLO (TTFT + output x TPOT). A shorter probe
# is a burst the engine may absorb whole: 300 short requests (100 in, 100 out) fit one A100's
# 256-sequence batch, so every rate passed and Llama-2-7B's capacity came out at the search's
# ceiling, 64x the steady-state bound (4,872 req/s on one A100, where the bound is 64).
# PROBE_MAX bounds a probe's work (the simulator runs some 50,000 such requests a second).
PROBE_REQUESTS = 300
PROBE_RESIDENCES = 3.0
# ... and PROBE_TTFT_SPANS TTFT budgets: a rate past what the replica sustains piles up a
# backlog that shows as TTFT budgets missed in the probe's last third; one H100 at 12 req/s
# (Llama-2-7B, 1000/250 tokens) held its SLO for 150 s before its KV cache overflowed
PROBE_TTFT_SPANS = 60.0
PROBE_MAX = 20_000
# the share of a replica's throughput a plan may use (`analytic_rate`): at its saturation
# rate one H100 (Llama-2-7B, 1000/250 tokens, 11.6 req/s) met its SLO for 450 s and failed it
# within the hour
UTIL_MAX = 0.9
KV_SIGMAS = 3.0  # the mean batch's margin below the KV cache's limit (`analytic_rate`)
SEQS_SIGMAS = 1.0  # ... and below max_num_seqs
# the shares of its capacity at which a replica's average power is measured as well as at full
# load (`Capacity.power_at`)
PART_LOADS = (0.25, 0.5)
# ... each over a third of a capacity probe's span: the average W moved by at most 0.6% against
# whole-length runs, at a third of their cost (four shapes on H100, A100 and L4, 2026-12-05)
PART_SPAN = 1 / 3
BISECT_STEPS = 7  # a bracket of [0.5x, 1.2x] the bound narrows to within about 1%
# Checks on a cached Capacity: the analytic bound stops near 2^20 req/s and the simulated
# search at 64x it, so a rate past 1e8 is no replica's; 10 MW is past any replica's draw.
MAX_RATE_RPS = 1e8
# the cache file's format: 2 since capacities carry part-load power (PART_LOADS); 3 since the
# analytic capacity takes prefill steps apart from decode steps (plan.queueing, 2026-12-06): a
# file of 2 holds analytic figures up to 5x the simulated ones, so it is measured again
VERSION = 4  # 4: hardware and model by content in the key (2026-12-06)
MAX_POWER_W = 1e7


@dataclass(frozen=True, slots=True)
class Shape:
    """A request class as one replica sees it: token lengths and its latency budget (the
    class's TTFT limit less the network round trip to the replica's site)."""

    model: str
    prompt_tokens: int
    output_tokens: int
    ttft_s: float
    tpot_s: float
    percentile: float
    sizes: tuple[tuple[int, int], ...] = ()  # (prompt, output) pairs the probes cycle through

    def key(self) -> str:
        digest = hashlib.sha1(repr(self.sizes).encode()).hexdigest()[:12] if self.sizes else ""
        return (
            f"{self.model}|{self.prompt_tokens}|{self.output_tokens}|{self.ttft_s:.4f}|"
            f"{self.tpot_s:.5f}|{self.percentile:.4f}|{digest}"
        )


@dataclass(frozen=True, slots=True)
class Capacity:
    """One replica serving one class: the sustainable rate, power at that rate and at its
    peak step, and energy per request. `reason` says why the rate is 0."""

    rate_rps: float
    avg_power_w: float
    peak_power_w: float
    idle_power_w: float
    joules_per_request: float
    reason: str = ""
    # average W at PART_LOADS of the rate: a replica's draw is far from linear in its load (a
    # memory-bound decode step reads every weight whatever its batch: one H100, Llama-3.1-8B at
    # 3,000 in and 500 out, draws 517 W at 36% of its capacity and 636 W at all of it). NaN: not
    # measured (the draw is then taken as linear from idle to full load)
    quarter_power_w: float = math.nan
    half_power_w: float = math.nan

    def power_at(self, load: float) -> float:
        """Average W of one replica serving `load` (0-1) of its rate: interpolated through idle
        at 0, the part-load measurements and full load."""
        points = [(0.0, self.idle_power_w)]
        points += [(u, w) for u, w in zip(PART_LOADS, self._parts(), strict=True) if w == w]
        points.append((1.0, self.avg_power_w))
        u = min(max(load, 0.0), 1.0)
        for (u0, w0), (u1, w1) in itertools.pairwise(points):
            if u <= u1:
                return w0 + (w1 - w0) * (u - u0) / (u1 - u0)
        return self.avg_power_w

    def busy_power_w(self) -> float:
        """The W a busy replica draws before its load's share: the line through the lowest
        part-load measurement and full load, at no load (held between idle and full load; idle
        where nothing was measured at part load). The plan's program charges a replica this
        plus its marginal joules per request: exact at those two loads, the draw being concave in
        the load a little under it between them and over it at lighter loads."""
        u, w = next(
            ((u, w) for u, w in zip(PART_LOADS, self._parts(), strict=True) if w == w),
            (0.0, self.idle_power_w),
        )
        at_zero = w - u * (self.avg_power_w - w) / (1.0 - u)
        return min(max(at_zero, self.idle_power_w), self.avg_power_w)

    def _parts(self) -> tuple[float, float]:
        return (self.quarter_power_w, self.half_power_w)


def _config_key(dep: Deployment, params: EngineParams) -> str:
    """What a replica's capacity depends on. The hardware and the model by what they are,
    not only their ids: a hardware file may give a built-in id other figures, and a
    config.json's id is its folder's name (the cache had served an L4's capacity at 300 GB/s
    to one of 250, and a 1B's to an 8B read from another folder of the same name)."""
    p = asdict(params)
    p.pop("source", None)
    hw = dep.hardware
    figures = sorted((k, f.value) for k, f in hw.figures.items())
    model = asdict(dep.model)
    model.pop("source", None)
    what = hashlib.sha1(
        repr((hw.category, hw.memory_type, figures, sorted(model.items()))).encode()
    ).hexdigest()[:16]
    return (
        f"{hw.id}|{dep.model.id}|{what}|tp{dep.tp}|pp{dep.pp}|{dep.dtype}|{dep.kv_dtype}|"
        f"{dep.max_num_seqs}|{dep.max_batched_tokens}|{sorted(p.items())}"
    )


class CapacityCache:
    """Capacities by (configuration, shape, method); optionally persisted as JSON."""

    def __init__(self) -> None:
        self.entries: dict[str, Capacity] = {}
        self.hits = 0
        self.misses = 0
        self.dropped = 0  # damaged entries of the file loaded, left out (measured again)
        self.stale = 0  # entries of a file an earlier version wrote, left out (measured again)

    @staticmethod
    def load(path: str | Path) -> CapacityCache:
        """The cache saved at `path` (empty when there is no file). A file that is not a
        capacity cache is an error naming --cache, since saving would overwrite it; a cache
        whose entries are damaged is rebuilt, never trusted."""
        cache = CapacityCache()
        p = Path(path)
        try:
            # bounded, regular files only: a FIFO or /dev/zero is refused, never read
            text = read_text(p) if p.exists() else ""
            raw = load_json(text, str(p)) if text.strip() else {"version": VERSION, "entries": {}}
        except ConfigError as exc:
            raise _not_a_cache(p, f"cannot be read ({exc.detail})") from None
        except ValueError as exc:  # json.JSONDecodeError
            raise _not_a_cache(p, f"cannot be read as JSON ({exc})") from None
        if (
            not isinstance(raw, dict)
            or "version" not in raw
            or not isinstance(raw.get("entries"), dict)
        ):
            raise _not_a_cache(p, "is JSON but not a capacity cache (no version and entries)")
        version = raw["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
            raise _not_a_cache(p, f"has format {str(version)[:20]!r}, not one this wattserve reads")
        if version < VERSION:  # an earlier wattserve's: its figures are measured again
            cache.stale = len(raw["entries"])
            return cache
        for key, value in raw["entries"].items():
            cap = _capacity(value)
            if cap is None:
                cache.dropped += 1
            else:
                cache.entries[key] = cap
        return cache

    def save(self, path: str | Path) -> None:
        p = Path(path)
        data = {"version": VERSION, "entries": {k: asdict(v) for k, v in self.entries.items()}}
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            with replacing(p) as handle:  # an interrupted save never leaves half a file behind
                handle.write(json.dumps(data).encode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot write {p}: {exc.strerror}", field="--cache") from None


_FIELDS = {f.name for f in fields(Capacity)}


def _capacity(raw: Any) -> Capacity | None:
    """A cached entry as a Capacity, or None when it is damaged: a field missing, unknown or of
    the wrong type, or a figure no measurement gives (negative, infinite, past the bounds,
    NaN where a rate is positive: `_compute` writes NaN powers only beside a zero rate, and a
    zero rate always with its reason)."""
    if not isinstance(raw, dict) or set(raw) != _FIELDS or not isinstance(raw["reason"], str):
        return None
    figures = [raw[k] for k in _FIELDS - {"reason"}]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in figures):
        return None
    try:
        cap = Capacity(
            float(raw["rate_rps"]),
            float(raw["avg_power_w"]),
            float(raw["peak_power_w"]),
            float(raw["idle_power_w"]),
            float(raw["joules_per_request"]),
            raw["reason"],
            float(raw["quarter_power_w"]),
            float(raw["half_power_w"]),
        )
    except OverflowError:  # an integer past float range
        return None
    if not 0 <= cap.rate_rps <= MAX_RATE_RPS:  # NaN fails too
        return None
    if (cap.rate_rps == 0) != bool(cap.reason):  # a zero rate always says why
        return None
    powers = (cap.avg_power_w, cap.peak_power_w, cap.idle_power_w, *cap._parts())
    if cap.rate_rps == 0:  # no capacity: its figures are never used, NaN included
        ok = all(math.isnan(w) or 0 <= w <= MAX_POWER_W for w in powers)
        return cap if ok else None
    if not all(0 <= w <= MAX_POWER_W for w in powers) or cap.peak_power_w < cap.avg_power_w:
        return None
    if any(w < cap.idle_power_w for w in (cap.avg_power_w, *cap._parts())):  # below idle
        return None
    if not 0 <= cap.joules_per_request < math.inf:
        return None
    return cap


def _not_a_cache(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"{path} {why}; it would be overwritten: give a new file or a cache an earlier plan wrote",
        field="--cache",
    )


def _steady_tau(pm: PerfModel, rate: float, p: int, o: int) -> tuple[float, float]:
    """Step time and running batch of a replica at `rate` in steady state (inf if unstable)."""
    ctx = p + o / 2.0
    tau = pm.decode_step(1, int(ctx)).time_s
    batch = 0.0
    for _ in range(60):
        batch = rate * (o + 1) * tau
        new = rate * tau * p
        tokens = batch + new
        t = pm.step_time(tokens, batch * ctx + new * p / 2.0, batch * ctx + new, batch + 1)
        if t > 1e3 or not math.isfinite(t):
            return math.inf, math.inf
        if abs(t - tau) <= 1e-9 + 1e-6 * tau:
            return t, rate * (o + 1) * t
        tau = t
    # no fixed point: the step time keeps growing with the batch it creates (overload)
    return (tau, batch) if abs(rate * (o + 1) * tau - batch) < 0.05 * batch + 1 else (math.inf,) * 2


def analytic_rate(pm: PerfModel, kv_blocks: int, shape: Shape) -> tuple[float, float, str]:
    """The steady-state bound on the rate (req/s, at most the sustained rate), the sustained
    rate (the most a plan may give the replica whatever the step time: the steady state at
    rate / UTIL_MAX, with the batch's margins under its limits), and why the bound is 0 when
    it is."""
    dep = pm.deployment
    p, o = shape.prompt_tokens, shape.output_tokens
    if shape.ttft_s <= 0:
        return 0.0, 0.0, "the network round trip alone exceeds the TTFT limit"
    first = pm.prefill(1, min(p, dep.max_batched_tokens)).time_s * math.ceil(
        p / dep.max_batched_tokens
    )
    if first > shape.ttft_s:
        return 0.0, 0.0, f"one prefill takes {first * 1e3:.0f} ms, over the TTFT budget"
    # an answer of one token has no time between tokens: TTFT alone counts (`slo_excess`)
    tpot_s = shape.tpot_s if o > 1 else math.inf
    solo = pm.decode_step(1, p + o).time_s
    if solo > tpot_s:
        return 0.0, 0.0, f"one decode step takes {solo * 1e3:.1f} ms, over the TPOT limit"
    # A whole request's blocks per sequence, each rounded up to whole blocks as the engine
    # holds them; the last token is never fed back (as EngineModel.refusal counts): one
    # request fits exactly when the engine runs it
    kv_batch = kv_blocks // max(1, -(-(p + o - 1) // KV_BLOCK_TOKENS))
    max_batch = min(dep.max_num_seqs, kv_batch)
    if max_batch < 1:
        return 0.0, 0.0, "the KV cache cannot hold one request of this length"

    # Saturation counts a whole request's KV per sequence, as the bound does. Counting the mean
    # (prompt and half the output) put one L4's Llama-2-7B short requests at 9.6 req/s, which a
    # 3-residence probe passed and a 30-residence one (510 s) failed at 9.0; at 8.2 both hold.
    def steady(tpot_s: float) -> Callable[[float], bool]:
        def ok(rate: float) -> bool:
            tau, batch = _steady_tau(pm, rate, p, o)
            # Sequences in the system are Poisson about the mean batch (M/G/inf), so the mean
            # keeps a margin below each limit: KV_SIGMAS standard deviations below the KV
            # cache's, whose overflow preempts and recomputes (a collapse: one H100, Llama-2-7B,
            # 1000/250 tokens at 12 req/s held 150 s, then met no SLO), and SEQS_SIGMAS below
            # max_num_seqs, past which requests only queue (Halfin-Whitt: waits stay short)
            spread = math.sqrt(batch) if batch > 0 else 0.0
            return (
                tau <= tpot_s
                and batch + KV_SIGMAS * spread <= kv_batch
                and batch + SEQS_SIGMAS * spread <= dep.max_num_seqs
            )

        return ok

    bound = _largest(steady(tpot_s))
    why = "" if bound > 0 else "no positive rate keeps the step time within the TPOT limit"
    # saturation: the rate at which the replica's steps would fill all of its time, whatever
    # the step time, kept to UTIL_MAX of it: queueing waits grow as 1 / (1 - utilisation)
    sustained = steady(math.inf)
    most = _largest(lambda rate: sustained(rate / UTIL_MAX))
    return min(bound, most), most, why


def _largest(ok: Callable[[float], bool]) -> float:
    """The largest rate for which `ok` holds (0 if none), to 40 halvings of a doubled bracket."""
    hi = 1.0
    while ok(hi) and hi < 1e6:
        hi *= 2
    lo = 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _probe_fleet(dep: Deployment, params: EngineParams, blocks: int) -> Fleet:
    spec = DeploymentSpec(
        "probe", "probe", dep, 1, params, blocks, cost_rate(dep.hardware, 1, CostAssumptions())
    )
    site = Site("probe", "datacenter", None, 0.0, 1.0)
    return Fleet("capacity-probe", {"probe": site}, (), 0.0, (spec,), ())


def _probe(
    fleet: Fleet, shape: Shape, rate: float, seed: int = 1, share: float = 1.0
) -> tuple[bool, float, float]:
    """One short Poisson run at `rate`: (SLO held, average W, J per request); `share` of the
    usual length (PART_SPAN for the part-load power, which needs no backlog to show)."""
    # imported here: `import wattserve` (and so `serve`) must not pull in the simulator
    from wattserve.simulate import simulate

    rng = random.Random(seed)
    t = 0.0
    reqs = []
    sizes = shape.sizes or ((shape.prompt_tokens, shape.output_tokens),)
    span = share * max(
        PROBE_RESIDENCES * (shape.ttft_s + shape.output_tokens * shape.tpot_s),
        PROBE_TTFT_SPANS * shape.ttft_s,
    )
    least = math.ceil(share * PROBE_REQUESTS)
    n = int(min(PROBE_MAX, max(least, math.ceil(min(rate * span, PROBE_MAX)))))
    for i in range(n):
        t += rng.expovariate(rate)
        p, o = sizes[i % len(sizes)]
        reqs.append(Request(i, t, p, o, shape.model))
    slo = SLO(shape.ttft_s, shape.tpot_s, shape.percentile)
    late: list[bool] = []  # whether each of the last third of arrivals met the SLO
    cut = n - n // 3

    def seen(rec: RequestRecord) -> None:
        if rec.id >= cut:
            ttft, tpot = rec.ttft_s, rec.tpot_s
            late.append(
                rec.status == OK
                and ttft is not None
                and ttft <= shape.ttft_s
                and (tpot is None or tpot <= shape.tpot_s)
            )

    report, _ = simulate(
        fleet, Workload(reqs, {"default": slo}), "round_robin", governor=False, on_request=seen
    )
    # the share is held over the whole probe and over its last third: a backlog that grows
    # (a rate past what the replica sustains) shows there first
    held = (
        report["completed"] == n
        and (report["slo_attainment"] or 0.0) >= shape.percentile
        and sum(late) >= shape.percentile * len(late)
    )
    energy = report["energy_j"] or 0.0
    return held, energy / report["span_s"], energy / n


def replica_capacity(
    dep: Deployment,
    params: EngineParams,
    shape: Shape,
    method: CapacityMethod = "simulated",
    cache: CapacityCache | None = None,
) -> Capacity:
    """The capacity of one replica of `dep` for `shape` (see the module docstring)."""
    key = f"{method}|{_config_key(dep, params)}|{shape.key()}"
    if cache is not None:
        hit = cache.entries.get(key)
        if hit is not None:
            cache.hits += 1
            return hit
        cache.misses += 1
    cap = _compute(dep, params, shape, method)
    if cache is not None:
        cache.entries[key] = cap
    return cap


def _peak_power_w(pm: PerfModel, batch: float, shape: Shape) -> float:
    """The most one step draws at this operating point: the running batch's decode tokens
    plus a full prefill chunk (chunked prefill mixes them)."""
    dep = pm.deployment
    b = max(1.0, batch)
    chunk = max(1.0, min(float(shape.prompt_tokens), dep.max_batched_tokens - b))
    ctx = shape.prompt_tokens + shape.output_tokens / 2.0
    return pm.step(b + chunk, b * ctx + chunk * chunk / 2, b * ctx + chunk, b + 1).power_w


def _compute(dep: Deployment, params: EngineParams, shape: Shape, method: str) -> Capacity:
    pm = perf_model(dep, params)
    blocks, why = kv_block_count(dep, params)
    idle = pm.idle_power_w if not pm.power_missing else math.nan
    if why:
        return Capacity(0.0, idle, idle, idle, math.nan, why)
    bound, most, why = analytic_rate(pm, blocks, shape)
    if bound <= 0:
        return Capacity(0.0, idle, idle, idle, math.nan, why)
    if method == "analytic":
        return _analytic(pm, blocks, shape, most)
    _, batch = _steady_tau(pm, bound, shape.prompt_tokens, shape.output_tokens)
    peak = _peak_power_w(pm, batch, shape)
    fleet = _probe_fleet(dep, params, blocks)
    # the search stays under the sustained rate: past it the queue grows without end, which a
    # finite probe may not run long enough to show
    hi = min(bound * 1.2, most)
    held, w, j = _probe(fleet, shape, hi)
    best: tuple[float, float, float] | None = None
    while held and hi < min(bound * 64, most):  # the bound was pessimistic: widen
        best = (hi, w, j)
        hi = min(hi * 2, most)
        held, w, j = _probe(fleet, shape, hi)
    if held:  # held at the sustained rate itself
        best = (hi, w, j)
    if best is None:  # find a rate that holds, halving from 0.6x the bound
        r = bound * 0.6
        while r > bound / 64:
            held, w, j = _probe(fleet, shape, r)
            if held:
                best = (r, w, j)
                break
            hi, r = r, r / 2
    if best is None:
        return Capacity(
            0.0, idle, idle, idle, math.nan, "a simulated replica misses the SLO at every rate"
        )
    for _ in range(BISECT_STEPS):
        if hi - best[0] <= 0.01 * hi:
            break
        mid = (best[0] + hi) / 2
        held, w, j = _probe(fleet, shape, mid)
        if held:
            best = (mid, w, j)
        else:
            hi = mid
    rate, avg, jpr = best
    parts = [_probe(fleet, shape, u * rate, share=PART_SPAN)[1] for u in PART_LOADS]
    return Capacity(rate, avg, max(peak, avg), idle, jpr, "", *parts)


def _analytic(pm: PerfModel, kv_blocks: int, shape: Shape, most: float) -> Capacity:
    """`--capacity analytic`: the largest rate (at most the sustained rate `most`) whose
    steady state, prefill steps apart from decode steps (plan.queueing), keeps the class's
    percentile within both limits and the batch within its margins, and its power there."""
    dep = pm.deployment
    p, o = shape.prompt_tokens, shape.output_tokens
    kv_batch = kv_blocks // max(1, -(-(p + o - 1) // KV_BLOCK_TOKENS))
    # the class's sampled prompts, where they differ from its mean: its TTFT percentile is
    # in its long ones (`queueing._ttft_quantile`)
    prompts = [q for q, _ in shape.sizes] if any(q != p for q, _ in shape.sizes) else []

    def ok(rate: float) -> bool:
        if rate > most:
            return False
        s = mixed_steady(pm, dep, rate, p, o)
        if s is None:
            return False
        spread = math.sqrt(s.batch)  # as `analytic_rate`'s margins
        if (
            s.batch + KV_SIGMAS * spread > kv_batch
            or s.batch + SEQS_SIGMAS * spread > dep.max_num_seqs
        ):
            return False
        lengths = Spread() if not prompts else _spread(pm, s, p, prompts)
        tpot, ttft = percentiles(s, rate, o, shape.percentile, lengths)
        return tpot <= shape.tpot_s and ttft <= shape.ttft_s

    rate = _largest(ok)
    idle = pm.idle_power_w if not pm.power_missing else math.nan
    if rate <= 0:
        why = "no rate keeps the class's percentile within its TTFT and TPOT limits"
        return Capacity(0.0, idle, idle, idle, math.nan, why)
    s = mixed_steady(pm, dep, rate, p, o)
    assert s is not None  # ok(rate) held
    avg = _mixed_power_w(pm, s)
    parts = [_steady_power_w(pm, u * rate, shape) for u in PART_LOADS]
    peak = _peak_power_w(pm, s.batch, shape)
    return Capacity(rate, avg, max(peak, avg), idle, avg / rate, "", *parts)


def _spread(pm: PerfModel, s: MixedSteady, p: int, prompts: list[int]) -> Spread:
    """Each sampled prompt in steady state `s`: its own prefill seconds, the time it holds the
    steps' prefill budget (the mean prompt's, `s.service`, in proportion to its tokens), and
    the time its chunks add to the steps they join."""
    owns = [own_prefill_s(pm, s.step_batch, s.room, s.prefill_tokens, s.ctx, q) for q in prompts]
    adds = [
        prompt_delta(pm, s.step_batch, s.room, s.prefill_tokens, s.ctx, s.t_decode, q)
        for q in prompts
    ]
    return Spread(
        owns,
        [s.service * q / p for q in prompts],
        [max(a, 0.0) for a, _ in adds],
        [c for _, c in adds],
    )


def _steady_power_w(pm: PerfModel, rate: float, shape: Shape) -> float:
    """A replica's average W at `rate` in steady state: its decode and prefill steps in their
    shares of its busy time, idle for the share of time it holds no sequence (the sequences in
    the system are Poisson about the steady batch, M/G/infinity)."""
    p, o = shape.prompt_tokens, shape.output_tokens
    s = mixed_steady(pm, pm.deployment, rate, p, o)
    if s is None:  # past the steady state (a part load never is): the mean one
        _, batch = _steady_tau(pm, rate, p, o)
        step = pm.decode_step(max(1, round(batch)), p + o // 2)
        return pm.idle_power_w + (1.0 - math.exp(-batch)) * (step.power_w - pm.idle_power_w)
    return _mixed_power_w(pm, s)


def _mixed_power_w(pm: PerfModel, s: MixedSteady) -> float:
    """The average W of the steady state `s`."""
    # the share of time in steps that carry prefill (a prompt's own steps when prompts are
    # rare: an engine with no sequence to decode still prefills), and in decode-only steps
    prefilling = min(1.0, s.prefill_share * s.t_prefill / s.tau)
    decoding = max(0.0, -math.expm1(-s.batch) - prefilling)  # busy, and not prefilling
    idle = pm.idle_power_w
    return idle + prefilling * (s.prefill_power_w - idle) + decoding * (s.decode_power_w - idle)
