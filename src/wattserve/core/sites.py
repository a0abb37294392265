"""A fleet's sites and the links between them: where devices live (power cap, electricity,
PUE, grid carbon, devices available) and the network paths that join them. Parsed from a fleet
(or sites) file's `sites:` and `links:` blocks, naming the file, line and field of any problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from wattserve.core.catalog import Catalog
from wattserve.core.cost import MAX_PUE
from wattserve.core.yamlio import NAME_RULE, Fields, LineDict, is_name
from wattserve.errors import ConfigError, WattserveError

SiteKind = Literal["datacenter", "edge", "cloud"]


@dataclass(frozen=True, slots=True)
class Outage:
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Link:
    """A network path between two sites: round-trip time, bandwidth, outage windows."""

    a: str
    b: str
    rtt_s: float
    bandwidth_gbps: float | None = None
    outages: tuple[Outage, ...] = ()

    def up(self, t: float) -> bool:
        return not any(o.start_s <= t < o.end_s for o in self.outages)

    def next_up(self, t: float) -> float:
        """The first time at or after t when the link is up."""
        for o in sorted(self.outages, key=lambda o: o.start_s):
            if o.start_s <= t < o.end_s:
                t = o.end_s
        return t


@dataclass(frozen=True, slots=True)
class Site:
    """Where devices live. `carbon_g_per_kwh` is the grid's intensity (None: unknown);
    `available` caps how many devices of each hardware id the site can hold (absent: no limit)."""

    name: str
    kind: SiteKind
    power_cap_w: float | None
    electricity_usd_per_kwh: float
    pue: float
    carbon_g_per_kwh: float | None = None
    available: tuple[tuple[str, int], ...] = ()

    def available_count(self, hw_id: str) -> int | None:
        return dict(self.available).get(hw_id)


def mapping_of(d: Any, key: str, path: str, line: int) -> LineDict:
    """A block of named entries (`sites:`, `deployments:`, ...); absent: an empty one."""
    if d is None:
        empty = LineDict()
        empty.key_lines = {}
        return empty
    if not isinstance(d, LineDict):
        raise ConfigError("must be a mapping of names to entries", path=path, line=line, field=key)
    for name in d:  # a name is written back (plan --out, reports) and read again: plain text
        if not is_name(name):
            raise ConfigError(
                f"{name!r:.80} is not a name: {NAME_RULE}",
                path=path,
                line=d.line_of(name) if isinstance(name, str) else line,
                field=key,
            )
    return d


def parse_links(raw: Any, sites: dict[str, Site], path: str, line: int) -> tuple[Link, ...]:
    """The `links:` list: each a pair of this fleet's sites, linked once."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("must be a list of links", path=path, line=line, field="links")
    links = []
    seen: dict[frozenset[str], int] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, LineDict):
            raise ConfigError("must be a mapping", path=path, line=line, field=f"links[{i}]")
        r = Fields(entry, path, f"links[{i}]")
        r.check_keys({"between", "rtt_ms", "bandwidth_gbps", "outages"})
        pair = entry.get("between")
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(p, str) and p in sites for p in pair)  # [{a: 1}, x]: unhashable
        ):
            raise r.err("between", f"must name two sites of this fleet ({', '.join(sites)})")
        if pair[0] == pair[1]:
            raise r.err("between", f"names {pair[0]} twice: a link joins two different sites")
        key = frozenset(pair)
        if key in seen:  # else one of the two would be used and the other ignored, unsaid
            raise r.err(
                "between", f"{pair[0]} and {pair[1]} are already linked by links[{seen[key]}]"
            )
        seen[key] = i
        outages = []
        raw_outages = entry.get("outages") or []
        if not isinstance(raw_outages, list):
            raise r.err("outages", "must be a list of {start_s: ..., end_s: ...}")
        for j, o in enumerate(raw_outages):
            if not isinstance(o, LineDict):
                raise r.err("outages", "each outage is {start_s: ..., end_s: ...}")
            ro = Fields(o, path, f"links[{i}].outages[{j}]")
            start, end = ro.number("start_s"), ro.number("end_s")
            if start is None or end is None or end <= start:
                raise ro.err("end_s", "an outage needs start_s < end_s")
            outages.append(Outage(start, end))
        links.append(
            Link(
                pair[0],
                pair[1],
                rtt_s(r, "rtt_ms", 0.0),
                r.number("bandwidth_gbps", positive=True),
                tuple(outages),
            )
        )
    return tuple(links)


MAX_LATENCY_S = 3600.0  # a round trip or first token slower than an hour is a typo


def rtt_s(r: Fields, key: str, default_ms: float) -> float:
    """A round-trip time given in ms, in seconds: at most MAX_LATENCY_S (a simulation's
    latency histograms grow with it; 1e12 ms ran out of memory)."""
    ms = r.number(key, default_ms) or 0.0
    if ms > MAX_LATENCY_S * 1e3:
        raise r.err(key, f"at most {MAX_LATENCY_S * 1e3:,.0f} ms (an hour), got {ms:g}")
    return ms / 1e3


def parse_sites(raw: Any, path: str, line: int, catalog: Catalog | None = None) -> dict[str, Site]:
    """The `sites:` block of a fleet (or sites) file; `catalog` checks `available:` ids."""
    sites: dict[str, Site] = {}
    for name, entry in mapping_of(raw, "sites", path, line).items():
        if not isinstance(entry, LineDict):
            raise ConfigError("must be a mapping", path=path, line=line, field=name)
        r = Fields(entry, path, f"sites.{name}")
        r.check_keys(
            {
                "kind",
                "power_cap_w",
                "electricity_usd_per_kwh",
                "pue",
                "carbon_g_per_kwh",
                "available",
            }
        )
        kind = r.text("kind", "datacenter")
        if kind not in ("datacenter", "edge", "cloud"):
            raise r.err("kind", "use datacenter, edge or cloud")
        pue = r.number("pue", 1.5) or 0.0
        if not 1 <= pue <= MAX_PUE:  # facility power over IT power: the facility includes the IT
            raise r.err(
                "pue", f"must be between 1 and {MAX_PUE:g} (facility power / IT power), got {pue:g}"
            )
        sites[name] = Site(
            name,
            cast(SiteKind, kind),
            r.number("power_cap_w", positive=True, most=MAX_POWER_W, unit="W"),
            r.number("electricity_usd_per_kwh", 0.08, most=MAX_USD_PER_KWH, unit="$/kWh") or 0.0,
            pue,
            r.number("carbon_g_per_kwh", most=MAX_CARBON_G_PER_KWH, unit="g/kWh"),
            _available(r, entry, catalog),
        )
    return sites


# A thousand times the dearest retail electricity, ten times a coal plant's grid intensity:
# past these a figure is a slip, and its products overflow to infinity in the results.
MAX_USD_PER_KWH = 1e3
MAX_CARBON_G_PER_KWH = 1e4
# A power cap or envelope past any real use, so that no figure behind it overflows: 1 TW is
# about a third of the world's mean electricity generation
MAX_POWER_W = 1e12
# devices of one type at one site: a billion is past any site (and plan's --available, nine
# digits, stops there too); 10**4000 overflowed the solver's float bounds with a traceback
MAX_AVAILABLE = 10**9


def _available(r: Fields, entry: LineDict, catalog: Catalog | None) -> tuple[tuple[str, int], ...]:
    raw = entry.get("available")
    if raw is None:
        return ()
    if not isinstance(raw, LineDict):
        raise r.err("available", "maps hardware ids to device counts, e.g. {h100-sxm: 16}")
    out = []
    named: dict[str, str] = {}  # by the id in lower case (the catalog's lookup): as written
    for raw_id, n in raw.items():
        hw_id = raw_id
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_AVAILABLE:
            raise r.err(
                "available",
                f"the count of '{hw_id}' must be a whole number from 0 to {MAX_AVAILABLE:,}",
            )
        if catalog is not None and hw_id not in catalog.devices:
            try:
                hw_id = catalog.device(hw_id).id  # the catalog's id: `H100-SXM` is h100-sxm
            except WattserveError as exc:
                raise r.err("available", str(exc)) from None
        key = str(hw_id).lower()
        if key in named:  # {l4: 0, L4: 4}: one count was kept, and which one depended on order
            raise r.err(
                "available",
                f"{str(raw_id)[:80]!r} is given twice (as {named[key][:80]!r} too): one count "
                "per device",
            )
        named[key] = str(raw_id)
        out.append((str(hw_id), n))
    return tuple(out)
