"""Requests and where they come from: Azure trace CSV, JSONL (wattserve's or Mooncake's), and
synthetic generators.

A workload file (YAML) names a trace or a generator, the SLO classes, and how requests are
assigned a model, an origin site, an SLO class and a data-residency flag. Malformed trace rows
are counted and reported with their row number, never fatal.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattserve.core.yamlio import Fields, LineDict, load_yaml_file
from wattserve.errors import ConfigError

# MLPerf Inference v4.1 server-scenario limits for Llama-2-70B (shared/reference/public_figures.md)
DEFAULT_TTFT_S = 2.0
DEFAULT_TPOT_S = 0.2
MAX_GENERATED = 20_000_000  # requests a generator may make (memory: about 2 KB each)


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


# MLPerf Inference states its server latency limits at the 99th percentile
DEFAULT_PERCENTILE = 0.99


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency limits that a `percentile` share of a class's requests must meet (both at once)."""

    ttft_s: float = DEFAULT_TTFT_S
    tpot_s: float = DEFAULT_TPOT_S
    percentile: float = DEFAULT_PERCENTILE


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


@dataclass
class Workload:
    requests: list[Request]
    slos: dict[str, SLO]
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    source: str = ""
    duration_s: float | None = None  # the span the arrivals cover (generator or trace)
    policy: str | None = None  # the routing policy the workload file asks for
    classes: tuple[RequestClass, ...] = ()

    def require_requests(self, path: str | Path) -> None:
        """Raise ConfigError naming the file when nothing in it can be replayed."""
        if self.requests:
            return
        why = (
            f"{len(self.bad_rows)} malformed rows, e.g. {self.bad_rows[:3]}"
            if self.bad_rows
            else "the trace is empty, or empty within --duration"
        )
        raise ConfigError(f"no usable requests ({why})", path=str(path))


# -- token-length distributions and arrival processes ---------------------------------------


def _length(spec: Any, rng: random.Random, where: str, path: str, line: int) -> Any:
    """A sampler for token lengths: a number, or {dist: fixed | uniform | lognormal, ...}."""
    if isinstance(spec, int) and not isinstance(spec, bool) and spec >= 1:
        return lambda: spec
    if not isinstance(spec, LineDict):
        raise ConfigError(
            "a length is a positive integer or {dist: ...}", path=path, line=line, field=where
        )
    f = Fields(spec, path, where)
    f.check_keys({"dist", "value", "min", "max", "mean", "sigma"})
    kind = f.text("dist", "lognormal")
    cap = f.integer("max", 1 << 20)
    lo = f.integer("min", 1)
    if kind == "fixed":
        v = f.integer("value", 1)
        return lambda: v
    if kind == "uniform":
        if lo > cap:
            raise f.err("min", f"min ({lo}) must not exceed max ({cap})")
        return lambda: rng.randint(lo, cap)
    if kind == "lognormal":
        mean = f.number("mean", 512.0, positive=True) or 512.0
        sigma = f.number("sigma", 1.0) or 0.0
        mu = math.log(mean) - sigma * sigma / 2
        return lambda: max(lo, min(cap, round(rng.lognormvariate(mu, sigma))))
    raise f.err("dist", f"unknown dist '{kind}'; use fixed, uniform or lognormal")


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
    times: list[float] = []
    t = 0.0
    if kind == "poisson":
        while True:
            t += rng.expovariate(rate_rps)
            if t >= duration_s:
                return times
            times.append(t)
    if kind in ("gamma", "bursty"):
        shape = 1.0 / (cv * cv)
        scale = 1.0 / (rate_rps * shape)
        while True:
            t += rng.gammavariate(shape, scale)
            if t >= duration_s:
                return times
            times.append(t)
    if kind == "diurnal":
        peak = rate_rps * (1 + amplitude)
        while True:
            t += rng.expovariate(peak)
            if t >= duration_s:
                return times
            level = rate_rps * (1 + amplitude * math.sin(2 * math.pi * t / period_s))
            if rng.random() * peak < level:
                times.append(t)
    raise ConfigError(f"unknown arrival process '{kind}'; use poisson, gamma or diurnal")


# -- trace files -------------------------------------------------------------------------------


def _azure_rows(path: Path) -> tuple[list[tuple[int, float, int, int]], list[tuple[int, str]]]:
    """(row, seconds since first, prompt, output) from an Azure LLM trace CSV."""
    good: list[tuple[int, float, int, int]] = []
    bad: list[tuple[int, str]] = []
    t0: dt.datetime | None = None
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
        if not need <= set(reader.fieldnames or []):
            raise ConfigError(
                f"an Azure trace needs columns {', '.join(sorted(need))}", path=str(path), line=1
            )
        for row in reader:
            line = reader.line_num
            try:
                ts = dt.datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])
                p, o = int(row["ContextTokens"]), int(row["GeneratedTokens"])
                if p < 1 or o < 1:
                    raise ValueError("token counts must be positive")
            except (ValueError, TypeError, AttributeError) as exc:
                bad.append((line, f"malformed row: {exc}"))
                continue
            t0 = ts if t0 is None else t0
            good.append((line, (ts - t0).total_seconds(), p, o))
    return good, bad


def _count(value: Any) -> int:
    """A token count: a whole number (2.0 and "2" are fine; 2.5, inf and true are not)."""
    if isinstance(value, bool) or (
        isinstance(value, float) and not (math.isfinite(value) and value.is_integer())
    ):
        raise ValueError(f"token counts are whole numbers, not {value!r}")
    return int(value)


def _jsonl_rows(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    good: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
                obj["_row"] = line
                if "input_length" in obj:  # Mooncake: timestamp in ms, input/output_length
                    obj["arrival_s"] = float(obj["timestamp"]) / 1000.0
                    obj["prompt_tokens"] = _count(obj["input_length"])
                    obj["output_tokens"] = _count(obj["output_length"])
                else:
                    when = obj.get("arrival_s", obj.get("timestamp"))
                    if when is None:
                        raise ValueError("needs arrival_s")
                    obj["arrival_s"] = float(when)
                    obj["prompt_tokens"] = _count(obj["prompt_tokens"])
                    obj["output_tokens"] = _count(obj["output_tokens"])
                if not math.isfinite(obj["arrival_s"]):
                    raise ValueError("arrival_s must be a finite number")
                if obj["prompt_tokens"] < 1 or obj["output_tokens"] < 1 or obj["arrival_s"] < 0:
                    raise ValueError("token counts must be positive, arrival_s non-negative")
            except (ValueError, KeyError, TypeError) as exc:
                bad.append((line, f"malformed row: {exc}"))
                continue
            good.append(obj)
    return good, bad


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
        weights = []
        for site, w in origins.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or w <= 0:
                raise f.err("origins", f"the weight of '{site}' must be a positive number")
            weights.append((str(site), float(w)))
        model = c.get("model")
        rate = f.number("rate_rps", positive=True)
        if rate is not None and "weight" in c:
            raise f.err("weight", "give weight or rate_rps, not both")
        name = f.text("name", f"class{i}")
        if any(o.name == name for o in out):
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
                model=None if model is None else f.text("model"),
                slo=f.text("slo", "default"),
                origins=tuple(weights),
                local_only=f.fraction("local_only", 0.0),
                name=name,
                rate_rps=rate,
                prompt=lengths["prompt_tokens"],
                output=lengths["output_tokens"],
            )
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


def _pick(rng: random.Random, items: list[RequestClass]) -> RequestClass:
    total = sum(c.weight for c in items)
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


def load_workload(
    path: str | Path,
    *,
    default_model: str,
    seed: int = 0,
    rate_scale: float = 1.0,
    duration_s: float | None = None,
) -> Workload:
    """Requests from a trace (.csv Azure format, .jsonl) or a workload file (.yaml)."""
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
    spec: LineDict | None = None
    trace: Path | None = p
    policy: str | None = None
    span: float | None = None
    if p.suffix in (".yaml", ".yml"):
        spec = load_yaml_file(p)
        if not isinstance(spec, LineDict):
            raise ConfigError("a workload file is a mapping with trace or generator", path=str(p))
        top = Fields(spec, str(p), "workload")
        top.check_keys({"trace", "generator", "slos", "classes", "policy"})
        policy = top.text("policy") if "policy" in spec else None
        slo_map = spec.get("slos") or {}
        if not isinstance(slo_map, LineDict) and slo_map != {}:
            raise top.err("slos", "maps class names to {ttft_s: ..., tpot_s: ...}")
        for name, entry in slo_map.items():
            if not isinstance(entry, LineDict):
                raise ConfigError(
                    "must be {ttft_s: ..., tpot_s: ...}",
                    path=str(p),
                    line=spec.line_of("slos"),
                    field=f"slos.{name}",
                )
            f = Fields(entry, str(p), f"slos.{name}")
            f.check_keys({"ttft_s", "tpot_s", "percentile"})
            pct = f.number("percentile", DEFAULT_PERCENTILE * 100, positive=True)
            if pct is None or pct > 100:
                raise f.err("percentile", f"must be in (0, 100], got {pct}")
            slos[name] = SLO(
                f.number("ttft_s", DEFAULT_TTFT_S, positive=True) or DEFAULT_TTFT_S,
                f.number("tpot_s", DEFAULT_TPOT_S, positive=True) or DEFAULT_TPOT_S,
                pct / 100,
            )
        classes = _classes(spec.get("classes"), str(p), spec.line_of("classes"), rng)
        for i, c in enumerate(classes):
            if c.slo not in slos:
                raise ConfigError(
                    f"unknown slo '{c.slo}' (defined: {', '.join(slos)})",
                    path=str(p),
                    field=f"classes[{i}].slo",
                )
        trace = p.parent / top.text("trace") if "trace" in spec else None
    rows: list[tuple[int, float, int, int, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    if trace is not None:
        if not trace.exists():
            raise ConfigError("no such trace file", path=str(trace))
        if trace.suffix == ".jsonl":
            objs, bad = _jsonl_rows(trace)
            rows = [
                (o["_row"], o["arrival_s"], o["prompt_tokens"], o["output_tokens"], o) for o in objs
            ]
            rows.sort(key=lambda r: r[1])
        else:
            azure, bad = _azure_rows(trace)
            rows = [(r, t, pr, o, {}) for r, t, pr, o in azure]
    elif spec is not None and (
        isinstance(spec.get("generator"), LineDict)
        or ("generator" not in spec and classes[0].rate_rps is not None)
    ):
        g = spec.get("generator")
        if g is None:  # every class has its own rate: Poisson arrivals for a minute
            g = LineDict()
            g.key_lines = {}
            g.line = spec.line_of("classes")
        where = str(p)
        f = Fields(g, where, "generator")
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
            raise f.err("kind", f"unknown arrival process '{kind}'; use poisson, gamma or diurnal")
        class_rate = sum(c.rate_rps or 0.0 for c in classes)
        if class_rate and "rate_rps" in g:
            raise f.err("rate_rps", "the classes give their own rate_rps; drop this one")
        rate = class_rate or f.number("rate_rps", 1.0, positive=True) or 1.0
        span = f.number("duration_s", 60.0, positive=True) or 60.0
        if rate * span > MAX_GENERATED:
            raise f.err(
                "rate_rps",
                f"rate_rps x duration_s makes {rate * span:.0f} requests; "
                f"the limit is {MAX_GENERATED:,}",
            )
        times = synthetic_arrivals(
            kind,
            rate,
            span,
            rng,
            f.number("cv", 2.0, positive=True) or 2.0,
            f.number("period_s", 86400.0, positive=True) or 86400.0,
            f.fraction("amplitude", 0.5),
        )
        plen = _length(
            g.get("prompt_tokens", 512),
            rng,
            "generator.prompt_tokens",
            where,
            g.line_of("prompt_tokens"),
        )
        olen = _length(
            g.get("output_tokens", 128),
            rng,
            "generator.output_tokens",
            where,
            g.line_of("output_tokens"),
        )
        rows = [(0, t, plen(), olen(), {}) for t in times]
        span = span / rate_scale
    else:
        raise ConfigError("a workload file needs 'trace' or 'generator'", path=str(p))
    requests: list[Request] = []
    for row, t, prompt, out, extra in rows:
        arrival = t / rate_scale
        if duration_s is not None and arrival >= duration_s:
            break
        c = _pick(rng, classes)
        if c.prompt is not None:
            prompt = c.prompt()
        if c.output is not None:
            out = c.output()
        requests.append(
            Request(
                id=len(requests),
                arrival_s=arrival,
                prompt_tokens=prompt,
                output_tokens=out,
                model=str(extra.get("model") or c.model or default_model),
                origin=extra.get("origin") or _origin(rng, c),
                slo=str(extra.get("slo", c.slo)),
                local_only=bool(extra.get("local_only", rng.random() < c.local_only)),
                row=row,
                cls=c.name,
            )
        )
    if duration_s is not None:
        span = duration_s if span is None else min(span, duration_s)
    if span is None and requests:
        span = requests[-1].arrival_s
    return Workload(requests, slos, bad, str(p), span, policy, tuple(classes))
