"""Requests and where they come from: Azure trace CSV, JSONL (wattserve's or Mooncake's), and
synthetic generators.

A workload file (YAML) names a trace or a generator, the SLO classes, and how requests are
assigned a model, an origin site, an SLO class and a data-residency flag. Trace files are read
by `core.traces`; malformed rows are counted and reported with their row number, never fatal.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattserve.core.modelspec import builtin_model_id
from wattserve.core.traces import MAX_ARRIVAL_S, MAX_TOKENS, BadRows, TraceRow, read_trace
from wattserve.core.yamlio import NAME_RULE, Fields, LineDict, is_name, load_yaml_file, shown
from wattserve.errors import ConfigError, WattserveError

# MLPerf Inference v4.1 server-scenario limits for Llama-2-70B (shared/reference/public_figures.md)
DEFAULT_TTFT_S = 2.0
DEFAULT_TPOT_S = 0.2
# requests a generator may make: `plan` streams them (`stream_workload`), keeping about 24
# bytes of each
MAX_GENERATED = 20_000_000
# requests a workload held in memory may have (`load_workload`: simulate, bench, plan --verify):
# each is a Request of about 215 bytes, and a simulation peaks near 400 bytes a request (1M
# generated requests: 255 MB held, 400 MB at the peak, 20 s), so this is about 2 GB; 20M was
# killed at 60 s and 2 GB with nothing printed
MAX_HELD = 5_000_000
MAX_SIGMA = 10.0
# gamma inter-arrivals: cv 0.01 is near-periodic, 100 one burst a run; past those the shape
# 1/cv^2 divides by zero or rounds every gap to zero
CV_RANGE = (0.01, 100.0)
MIN_PERIOD_S = 1.0  # a diurnal cycle shorter than a second is no longer a cycle


@dataclass(slots=True)
class Request:
    """One inference request. `row` is its line in the trace file (0 when generated)."""

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    model: str
    origin: str | None = None
    slo: str = "default"
    local_only: bool = False
    row: int = 0
    cls: str = ""  # the workload file's class name ("" from a bare trace)

    @property
    def unplaceable(self) -> bool:
        """A local-only request that names no site: no fleet may serve it (simulate and serve
        refuse it: `core.admission.residency_refusal`; plan leaves it out)."""
        return self.local_only and self.origin is None


# a latency target past a day is no target (rank's --slo-ttft stops there too): 1e308 in a
# workload file was refused by plan naming --slo-ttft, not the file
MAX_SLO_S = 86_400.0
# MLPerf Inference states its server latency limits at the 99th percentile
DEFAULT_PERCENTILE = 0.99


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency limits that a `percentile` share of a class's requests must meet (both at once)."""

    ttft_s: float = DEFAULT_TTFT_S
    tpot_s: float = DEFAULT_TPOT_S
    percentile: float = DEFAULT_PERCENTILE

    def meets(self, ttft_s: float | None, tpot_s: float | None) -> bool:
        """Whether one request met these limits: both at once; a one-token answer (no TPOT,
        `tpot_s` None) on its TTFT alone; a request with no first token (refused, never
        finished) never."""
        if ttft_s is None or ttft_s > self.ttft_s:
            return False
        return tpot_s is None or tpot_s <= self.tpot_s


Sampler = Callable[[], int]


@dataclass(frozen=True, slots=True)
class RequestClass:
    """A kind of request: its share (or rate), model, SLO, origins and residency; `prompt` and
    `output` sample its own token lengths (None: the generator's or the trace's)."""

    weight: float = 1.0
    model: str | None = None
    slo: str = "default"
    origins: tuple[tuple[str, float], ...] = ()
    local_only: float = 0.0
    name: str = ""
    rate_rps: float | None = None
    prompt: Sampler | None = None
    output: Sampler | None = None
    model_line: int = 0  # the line of `model:` in the workload file (0: none given)
    origins_line: int = 0  # the line of `origins:` in the workload file (0: none given)


@dataclass
class Workload:
    requests: list[Request]
    slos: dict[str, SLO]
    bad_rows: BadRows = field(default_factory=BadRows)  # .total: all, kept or not
    source: str = ""
    duration_s: float | None = None  # the span the arrivals cover (generator or trace)
    policy: str | None = None  # the routing policy the workload file asks for
    classes: tuple[RequestClass, ...] = ()
    trace: str = ""  # the trace file the requests were read from ("" when generated)

    def model_named_at(self, r: Request, default_model: str) -> tuple[str | None, int | None, str]:
        """Where request `r`'s model was named, as (file, line, field) for an error: its
        class's `model:`, the `--model` default, or else its trace row."""
        for i, c in enumerate(self.classes):
            if c.name == r.cls and c.model is not None and c.model == r.model:
                return self.source, c.model_line or None, f"classes[{i}].model"
        if r.row and self.trace and r.model != default_model:
            return self.trace, r.row, "model"
        return None, None, "--model"

    def require_requests(self, path: str | Path) -> None:
        """Raise ConfigError naming the file when nothing in it can be replayed."""
        if self.requests:
            return
        why = (
            f"{self.bad_rows.total} malformed rows, e.g. "
            + "; ".join(f"line {n}: {why}" for n, why in self.bad_rows[:3])
            if self.bad_rows
            else "the trace is empty, or empty within --duration"
        )
        raise ConfigError(f"no usable requests ({why})", path=str(path))


# -- token-length distributions and arrival processes ---------------------------------------


def _length(spec: Any, rng: random.Random, where: str, path: str, line: int) -> Any:
    """A sampler for token lengths: a number, or {dist: fixed | uniform | lognormal, ...};
    every length, mean and bound is at most MAX_TOKENS."""
    if isinstance(spec, int) and not isinstance(spec, bool) and 1 <= spec <= MAX_TOKENS:
        return lambda: spec
    if not isinstance(spec, LineDict):
        raise ConfigError(
            f"a length is a whole number from 1 to {MAX_TOKENS:,} or {{dist: ...}}, "
            f"got {shown(spec)}",
            path=path,
            line=line,
            field=where,
        )
    f = Fields(spec, path, where)
    f.check_keys({"dist", "value", "min", "max", "mean", "sigma"})
    kind = f.text("dist", "lognormal")
    cap = _tokens(f, "max", 1 << 20)
    lo = _tokens(f, "min", 1)
    if kind == "fixed":
        if "value" not in spec:
            raise f.err("dist", "a fixed length needs value: N")
        v = _tokens(f, "value", 1)
        return lambda: v
    if kind not in ("uniform", "lognormal"):
        raise f.err("dist", f"unknown dist {shown(kind)}; use fixed, uniform or lognormal")
    if lo > cap:
        raise f.err("min", f"min ({lo}) must not exceed max ({cap})")
    if kind == "uniform":
        return lambda: rng.randint(lo, cap)
    mean = _within(f, "mean", 512.0, 1.0, MAX_TOKENS)
    if not lo <= mean <= cap:  # every draw clipped to a bound: no longer that distribution
        raise f.err("mean", f"must lie from min ({lo}) to max ({cap}), got {mean:g}")
    # sigma 10 already spans e^±30 around the median; more only overflows (inf, then NaN)
    sigma = _within(f, "sigma", 1.0, 0.0, MAX_SIGMA)
    mu = math.log(mean) - sigma * sigma / 2
    return lambda: max(lo, min(cap, round(rng.lognormvariate(mu, sigma))))


def _tokens(f: Fields, key: str, default: int) -> int:
    v = f.integer(key, default)
    if v > MAX_TOKENS:
        raise f.err(key, f"at most {MAX_TOKENS:,} tokens, got {shown(v)}")
    return v


def _within(f: Fields, key: str, default: float, lo: float, hi: float) -> float:
    """A number from `lo` to `hi` (absent or null: `default`)."""
    v = f.number(key, default)
    if v is None:
        return default
    if not lo <= v <= hi:
        raise f.err(key, f"must be from {lo:g} to {hi:g}, got {v:g}")
    return v


def synthetic_arrivals(
    kind: str,
    rate_rps: float,
    duration_s: float,
    rng: random.Random,
    cv: float = 2.0,
    period_s: float = 86400.0,
    amplitude: float = 0.5,
) -> list[float]:
    """Arrival times: Poisson, bursty (gamma inter-arrivals with coefficient of variation `cv`)
    or diurnal (Poisson whose rate follows a sine of `period_s`, by thinning)."""
    return list(_arrivals(kind, rate_rps, duration_s, rng, cv, period_s, amplitude))


def _arrivals(
    kind: str,
    rate_rps: float,
    duration_s: float,
    rng: random.Random,
    cv: float,
    period_s: float,
    amplitude: float,
) -> Iterator[float]:
    if kind not in ("poisson", "gamma", "bursty", "diurnal"):
        raise ConfigError(f"unknown arrival process '{kind}'; use poisson, gamma or diurnal")
    t = 0.0
    if kind == "poisson":
        while True:
            t += rng.expovariate(rate_rps)
            if t >= duration_s:
                return
            yield t
    if kind in ("gamma", "bursty"):
        shape = 1.0 / (cv * cv)
        scale = 1.0 / (rate_rps * shape)
        while True:
            t += rng.gammavariate(shape, scale)
            if t >= duration_s:
                return
            yield t
    peak = rate_rps * (1 + amplitude)  # diurnal
    while True:
        t += rng.expovariate(peak)
        if t >= duration_s:
            return
        level = rate_rps * (1 + amplitude * math.sin(2 * math.pi * t / period_s))
        if rng.random() * peak < level:
            yield t


# -- assembling a workload ---------------------------------------------------------------------


def _classes(raw: Any, path: str, line: int, rng: random.Random) -> list[RequestClass]:
    if raw is None:
        return [RequestClass()]
    if not isinstance(raw, list) or not raw:
        raise ConfigError("must be a non-empty list", path=path, line=line, field="classes")
    out: list[RequestClass] = []
    for i, c in enumerate(raw):
        if not isinstance(c, LineDict):
            raise ConfigError(
                "each class is a mapping", path=path, line=line, field=f"classes[{i}]"
            )
        f = Fields(c, path, f"classes[{i}]")
        f.check_keys(
            {
                "name",
                "weight",
                "rate_rps",
                "model",
                "slo",
                "origins",
                "local_only",
                "prompt_tokens",
                "output_tokens",
            }
        )
        origins = c.get("origins") or {}
        if isinstance(origins, str):
            origins = {origins: 1.0}
        if not isinstance(origins, dict):
            raise f.err("origins", "maps site names to weights, e.g. {edge: 0.3, dc: 0.7}")
        weights = _origin_weights(f, origins)
        model = None if c.get("model") is None else _model_ref(f.text("model"), path)
        rate = f.number("rate_rps", positive=True)
        if rate is not None and "weight" in c:
            raise f.err("weight", "give weight or rate_rps, not both")
        taken = {o.name for o in out}
        k = i  # an unnamed class is classI, or the next such name no earlier class took
        while f"class{k}" in taken:
            k += 1
        name = f.name("name", f"class{k}")
        if name in taken:
            raise f.err("name", f"another class is already named '{name}'")
        lengths = {
            key: None
            if key not in c
            else _length(c[key], rng, f"classes[{i}].{key}", path, c.line_of(key))
            for key in ("prompt_tokens", "output_tokens")
        }
        out.append(
            RequestClass(
                weight=rate if rate is not None else f.number("weight", 1.0, positive=True) or 1.0,
                model=model,
                slo=f.text("slo", "default"),
                origins=tuple(weights),
                local_only=f.fraction("local_only", 0.0),
                name=name,
                rate_rps=rate,
                prompt=lengths["prompt_tokens"],
                output=lengths["output_tokens"],
                model_line=c.line_of("model") if model is not None else 0,
                origins_line=c.line_of("origins") if weights else 0,
            )
        )
    if not math.isfinite(sum(c.weight for c in out)):
        raise ConfigError(
            "the classes' weights (or rates) add up to more than a number can hold",
            path=path,
            line=line,
            field="classes",
        )
    rated = [c.rate_rps is not None for c in out]
    if any(rated) and not all(rated):
        raise ConfigError(
            "give rate_rps to every class or to none (weights then share the generator's rate)",
            path=path,
            line=line,
            field="classes",
        )
    return out


def _model_ref(name: str, path: str) -> str:
    """A class's model: a built-in id or alias as given, a config path relative to the
    workload file's folder (as `trace:` is), and anything else as given (an unknown id,
    which planning reports naming the class)."""
    if builtin_model_id(name) is not None:
        return name
    p = Path(path).parent / name
    try:
        is_path = p.exists() or p.suffix == ".json"
    except OSError:  # a name too long to be a path: an unknown id
        return name
    return str(p) if is_path else name


def _origin_weights(f: Fields, origins: dict[Any, Any]) -> list[tuple[str, float]]:
    """Site names and their weights: finite, positive, and with a finite sum."""
    weights = []
    for site, w in origins.items():
        if not is_name(site):  # no site is named so (core.sites)
            raise f.err("origins", f"{site!r:.80} is not a site name: {NAME_RULE}")
        try:
            ok = not isinstance(w, bool) and isinstance(w, int | float) and 0 < float(w) < math.inf
        except OverflowError:  # an integer past float range
            ok = False
        if not ok:
            raise f.err("origins", f"the weight of '{site}' must be a positive finite number")
        weights.append((str(site), float(w)))
    if not math.isfinite(sum(w for _, w in weights)):
        raise f.err("origins", "the weights add up to more than a number can hold")
    return weights


def _pick(rng: random.Random, items: list[RequestClass], total: float) -> RequestClass:
    """A class by weight; `total` is the sum of the weights."""
    x = rng.random() * total
    for c in items:
        x -= c.weight
        if x < 0:
            return c
    return items[-1]


def _origin(rng: random.Random, c: RequestClass) -> str | None:
    if not c.origins:
        return None
    total = sum(w for _, w in c.origins)
    x = rng.random() * total
    for name, w in c.origins:
        x -= w
        if x < 0:
            return name
    return c.origins[-1][0]


def load_slos(path: str | Path) -> dict[str, SLO]:
    """The SLO classes of a workload file's `slos:` block ("default" added when absent): the
    classes serve's --slos gives the gateway, read as simulate reads them."""
    p = Path(path)
    if p.suffix not in (".yaml", ".yml"):
        raise ConfigError("must be a workload file (.yaml) with a slos: block", path=str(p))
    spec = load_yaml_file(p)
    if not isinstance(spec, LineDict) or "slos" not in spec:
        raise ConfigError("has no slos: block naming SLO classes", path=str(p), field="slos")
    return _slos(spec, str(p))


def _slos(spec: LineDict, path: str) -> dict[str, SLO]:
    """The `slos:` block (with "default" added when absent)."""
    slos: dict[str, SLO] = {"default": SLO()}
    slo_map = spec.get("slos") or {}
    if not isinstance(slo_map, LineDict):
        if slo_map == {}:
            return slos
        raise Fields(spec, path, "workload").err(
            "slos", "maps class names to {ttft_s: ..., tpot_s: ...}"
        )
    for name, entry in slo_map.items():
        if not is_name(name):  # sent in x-wattserve-slo: HTTP drops surrounding spaces
            raise ConfigError(
                f"{name!r:.80} is not a name: {NAME_RULE}",
                path=path,
                line=slo_map.line_of(name),
                field="slos",
            )
        if not isinstance(entry, LineDict):
            raise ConfigError(
                "must be {ttft_s: ..., tpot_s: ...}",
                path=path,
                line=slo_map.line_of(name),
                field=f"slos.{name}",
            )
        f = Fields(entry, path, f"slos.{name}")
        f.check_keys({"ttft_s", "tpot_s", "percentile"})
        pct = _within(f, "percentile", DEFAULT_PERCENTILE * 100, 1.0, 100.0)
        slos[name] = SLO(
            f.number("ttft_s", DEFAULT_TTFT_S, positive=True, most=MAX_SLO_S, unit="s")
            or DEFAULT_TTFT_S,
            f.number("tpot_s", DEFAULT_TPOT_S, positive=True, most=MAX_SLO_S, unit="s")
            or DEFAULT_TPOT_S,
            pct / 100,
        )
    return slos


def _generate(
    spec: LineDict,
    path: str,
    classes: list[RequestClass],
    rng: random.Random,
    horizon_s: float,
    limit: int,
) -> tuple[Iterator[TraceRow], float]:
    """Requests of the generator (arrivals before `horizon_s` only) and the span it covers;
    more than `limit` expected is refused before any is made. Every draw is made here, in the
    order a seed has always given (all arrivals, then each request's lengths); the rows are
    kept as arrays and made one at a time."""
    g = spec.get("generator")
    if g is None:  # every class has its own rate: Poisson arrivals for a minute
        g = LineDict()
        g.key_lines = {}
        g.line = spec.line_of("classes")
    f = Fields(g, path, "generator")
    f.check_keys(
        {
            "kind",
            "rate_rps",
            "duration_s",
            "cv",
            "period_s",
            "amplitude",
            "prompt_tokens",
            "output_tokens",
        }
    )
    kind = f.text("kind", "poisson")
    if kind not in ("poisson", "gamma", "bursty", "diurnal"):
        raise f.err("kind", f"unknown arrival process {shown(kind)}; use poisson, gamma or diurnal")
    class_rate = sum(c.rate_rps or 0.0 for c in classes)
    if class_rate and "rate_rps" in g:
        raise f.err("rate_rps", "the classes give their own rate_rps; drop this one")
    rate = class_rate or f.number("rate_rps", 1.0, positive=True) or 1.0
    span = f.number("duration_s", 60.0, positive=True) or 60.0
    if span > MAX_ARRIVAL_S:
        raise f.err("duration_s", f"at most {MAX_ARRIVAL_S:g} s, got {span:g}")
    # With --duration only its first seconds are made: the limit is on what is made.
    made = min(span, horizon_s)
    if rate * made > limit:
        within = "" if made == span else f" in the {made:g} s that --duration keeps"
        too_many = f"makes {_count(rate * made)} requests{within}; the limit is {limit:,}" + (
            "" if limit == MAX_GENERATED else f" {_HELD_WHERE}"
        )
        if class_rate:  # blame the busiest class: the generator gives no rate
            i = max(range(len(classes)), key=lambda k: classes[k].rate_rps or 0.0)
            raw = spec.get("classes")
            line = raw[i].line_of("rate_rps") if isinstance(raw, list) else None
            raise ConfigError(
                f"the classes' rate_rps add up to {rate:.4g} req/s, which over "
                f"{made:g} s {too_many}",
                path=path,
                line=line,
                field=f"classes[{i}].rate_rps",
            )
        raise f.err("rate_rps", f"rate_rps x duration_s {too_many}")
    cv = _within(f, "cv", 2.0, *CV_RANGE)
    period_s = _within(f, "period_s", 86400.0, MIN_PERIOD_S, math.inf)
    amplitude = f.fraction("amplitude", 0.5)
    times = array("d", _arrivals(kind, rate, made, rng, cv, period_s, amplitude))
    plen, olen = (
        _length(g.get(key, default), rng, f"generator.{key}", path, g.line_of(key))
        for key, default in (("prompt_tokens", 512), ("output_tokens", 128))
    )
    prompts, outputs = array("I"), array("I")  # lengths are at most MAX_TOKENS (1e7)
    for _ in times:
        prompts.append(plen())
        outputs.append(olen())
    rows = (TraceRow(0, t, p, o) for t, p, o in zip(times, prompts, outputs, strict=True))
    return rows, span


def _count(n: float) -> str:
    """A request count for a message: digits while they read, else three figures (a rate of
    1e308 over a minute overflows: 'more than 1e308', not 'inf')."""
    if not math.isfinite(n):
        return "more than 1e308"
    return f"{n:,.0f}" if n < 1e12 else f"{n:.3g}"


# why the limit is MAX_HELD, not MAX_GENERATED, in a message naming it
_HELD_WHERE = f"where requests are held in memory (plan streams {MAX_GENERATED:,})"


def load_workload(
    path: str | Path,
    *,
    default_model: str,
    seed: int = 0,
    rate_scale: float = 1.0,
    duration_s: float | None = None,
) -> Workload:
    """Requests from a trace (.csv Azure format, .jsonl) or a workload file (.yaml).
    `duration_s` keeps the first seconds (after `rate_scale`); a generator makes only those.
    Every request is held: more than MAX_HELD is refused before they are made."""
    workload, requests = stream_workload(
        path,
        default_model=default_model,
        seed=seed,
        rate_scale=rate_scale,
        duration_s=duration_s,
        limit=MAX_HELD,
    )
    workload.requests = list(requests)
    return workload


def workload_files(path: str | Path) -> tuple[str, ...]:
    """The files a workload is read from: itself and, for a workload file, the trace it names
    (what an output must not replace). A file that cannot be read gives just its path: loading
    it says why."""
    p = Path(path)
    if p.suffix not in (".yaml", ".yml"):
        return (str(p),)
    try:
        spec = load_yaml_file(p)
    except WattserveError:
        return (str(p),)
    trace = spec.get("trace") if isinstance(spec, LineDict) else None
    return (str(p), str(p.parent / trace)) if isinstance(trace, str) else (str(p),)


def stream_workload(
    path: str | Path,
    *,
    default_model: str,
    seed: int = 0,
    rate_scale: float = 1.0,
    duration_s: float | None = None,
    limit: int = MAX_GENERATED,
) -> tuple[Workload, Iterator[Request]]:
    """`load_workload`, its requests made one at a time rather than held (`plan` sizes a fleet
    from their counts and lengths). The file is read and checked before this returns (a
    generator expected to make more than `limit` requests, or a trace of more rows, is
    refused); the Workload's `requests` stay empty, and its `bad_rows` and `duration_s` are
    complete once the iterator is exhausted."""
    p = Path(path)
    # `not x > 0` so that NaN is refused too; an infinite scale puts every request at t=0.
    if not 0 < rate_scale < math.inf:
        raise ConfigError(f"must be a positive finite number, got {rate_scale}", field="rate_scale")
    if duration_s is not None and not duration_s > 0:
        raise ConfigError(
            f"must be a positive number of seconds, got {duration_s}", field="duration"
        )
    rng = random.Random(seed)
    slos: dict[str, SLO] = {"default": SLO()}
    classes = [RequestClass()]
    trace: Path | None = p
    policy: str | None = None
    span: float | None = None
    checked_slos = False  # whether a row's slo must be one the workload file defines
    rows: Iterable[TraceRow] = []
    bad = BadRows()
    if p.suffix in (".yaml", ".yml"):
        spec = load_yaml_file(p)
        if not isinstance(spec, LineDict):
            raise ConfigError("a workload file is a mapping with trace or generator", path=str(p))
        top = Fields(spec, str(p), "workload")
        top.check_keys({"trace", "generator", "slos", "classes", "policy"})
        if "trace" in spec and "generator" in spec:
            raise top.err("generator", "give trace or generator, not both")
        policy = top.text("policy") if "policy" in spec else None
        slos, checked_slos = _slos(spec, str(p)), "slos" in spec
        classes = _classes(spec.get("classes"), str(p), spec.line_of("classes"), rng)
        for i, c in enumerate(classes):
            if c.slo not in slos:
                raise ConfigError(
                    f"unknown slo '{c.slo}' (defined: {', '.join(slos)})",
                    path=str(p),
                    field=f"classes[{i}].slo",
                )
        trace = p.parent / top.text("trace") if "trace" in spec else None
        # relative to the workload file's folder; a link that loops is reported when read
        if trace is not None and not trace.exists() and not trace.is_symlink():
            raise top.err("trace", f"no such trace file {str(trace)[:300]!r}")
        if trace is None:
            g = spec.get("generator")
            if g is not None and not isinstance(g, LineDict):
                raise top.err("generator", "must be a mapping such as {kind: poisson, ...}")
            if g is None and classes[0].rate_rps is None:
                raise ConfigError("a workload file needs 'trace' or 'generator'", path=str(p))
            horizon = math.inf if duration_s is None else duration_s * rate_scale
            rows, span = _generate(spec, str(p), classes, rng, horizon, limit)
            span = span / rate_scale
    if trace is not None:
        if not trace.exists() and not trace.is_symlink():
            raise ConfigError("no such trace file", path=str(trace))
        trace_rows, bad = read_trace(trace)
        if len(trace_rows) > limit:  # 64 MiB holds about 2.8M rows: a guard, for a smaller limit
            raise ConfigError(
                f"has {len(trace_rows):,} rows; the limit is {limit:,}"
                + ("" if limit == MAX_GENERATED else f" {_HELD_WHERE}"),
                path=str(trace),
            )
        rows = trace_rows
    workload = Workload(
        [], slos, bad, str(p), span, policy, tuple(classes), "" if trace is None else str(trace)
    )
    return workload, _requests(
        workload, rows, rng, default_model, rate_scale, duration_s, checked_slos
    )


def _requests(
    workload: Workload,
    rows: Iterable[TraceRow],
    rng: random.Random,
    default_model: str,
    rate_scale: float,
    duration_s: float | None,
    checked_slos: bool,
) -> Iterator[Request]:
    """The requests of `rows`, each given a class; completes `workload`'s bad rows and span."""
    slos, bad = workload.slos, workload.bad_rows
    classes = list(workload.classes)
    total = sum(c.weight for c in classes)
    made = 0
    last = 0.0
    for r in rows:
        arrival = r.arrival_s / rate_scale
        if duration_s is not None and arrival >= duration_s:
            break
        if arrival > MAX_ARRIVAL_S:  # a trace may span 1e9 s: stretched, no more
            raise ConfigError(
                f"stretches row {r.row}'s arrival to {arrival:g} s, past the {MAX_ARRIVAL_S:g} s "
                f"a workload may span; use a larger rate scale or --duration",
                field="--rate-scale",
            )
        if checked_slos and r.slo is not None and r.slo not in slos:
            bad.append((r.row, f"malformed row: unknown slo {shown(r.slo)} ({', '.join(slos)})"))
            continue
        c = _pick(rng, classes, total)
        # draws in this order, one local_only draw per request, so a seed's requests stay put
        prompt = r.prompt_tokens if c.prompt is None else c.prompt()
        output = r.output_tokens if c.output is None else c.output()
        origin = r.origin or _origin(rng, c)
        drawn_local = rng.random() < c.local_only
        yield Request(  # by position: 20M keyword calls cost seconds
            made,  # id
            arrival,
            prompt,
            output,
            r.model or c.model or default_model,
            origin,
            c.slo if r.slo is None else r.slo,
            drawn_local if r.local_only is None else r.local_only,
            r.row,
            c.name,  # cls
        )
        made += 1
        last = arrival
    bad.sort()
    span = workload.duration_s
    if duration_s is not None:
        span = duration_s if span is None else min(span, duration_s)
    if span is None and made:
        span = last
    workload.duration_s = span
