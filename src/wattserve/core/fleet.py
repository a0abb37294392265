"""The fleet file: sites (with power caps and links), deployments and hosted providers.

Shared by `plan`, `simulate` and `serve`. Parsing validates everything and names the file,
line and field of any problem; `load_fleet` also resolves each deployment against the catalogs
and checks that it fits (an infeasible deployment is an error that says which and why).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattserve.core.catalog import Catalog, load_catalog
from wattserve.core.cost import CostAssumptions, CostRate, cost_rate
from wattserve.core.deployment import (
    DEFAULT_BATCHED_TOKENS,
    Deployment,
    budget_below_seqs,
    default_kv_dtype,
    sram_stages,
)
from wattserve.core.dtypes import PEAK_DTYPES, parse_dtype
from wattserve.core.energy import token_energy_j
from wattserve.core.hardware import LIMITS, ProviderOffer
from wattserve.core.memory import KV_BLOCK_TOKENS, memory_fit, memory_layout
from wattserve.core.modelspec import builtin_model_id, load_model, model_files
from wattserve.core.params import (
    Calibration,
    EngineParams,
    check_memory_share,
    load_calibration,
)
from wattserve.core.perf import PerfModel, perf_model
from wattserve.core.plausible import implausible_step
from wattserve.core.sites import (
    MAX_LATENCY_S,
    Link,
    Site,
    mapping_of,
    parse_links,
    parse_sites,
    rtt_s,
)
from wattserve.core.sized import SizedEnergy, hosted_energy
from wattserve.core.yamlio import Fields, LineDict, load_yaml_file, shown
from wattserve.errors import ConfigError, UnknownNameError, WattserveError


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """`replicas` identical engines of one deployment at one site, resolved and checked."""

    name: str
    site: str
    deployment: Deployment
    replicas: int
    params: EngineParams
    kv_blocks: int
    cost: CostRate
    scheduling: str = "fcfs"
    backend: dict[str, Any] = field(default_factory=dict)  # how `serve` reaches it

    @property
    def perf(self) -> PerfModel:
        return perf_model(self.deployment, self.params)

    @property
    def model(self) -> str:
        return self.deployment.model.id

    @property
    def context_tokens(self) -> int | None:
        """The context window requests to this deployment must fit: its model's, or the
        smaller one its engine is started with (a `local-llama` backend's `n_ctx`)."""
        window = self.deployment.model.max_context or None
        n_ctx = self.backend.get("n_ctx", LOCAL_LLAMA_N_CTX) if self.local_llama else None
        if n_ctx is not None:
            window = n_ctx if window is None else min(window, n_ctx)
        return window

    @property
    def local_llama(self) -> bool:
        return self.backend.get("kind") == "local-llama"


@dataclass(frozen=True, slots=True)
class HostedSpec:
    """A hosted API serving one model, with the prices and latency profile in force."""

    name: str
    site: str
    provider: str
    model: str
    remote_name: str
    base_url: str
    usd_per_mtok_input: float
    usd_per_mtok_output: float
    ttft_s: float
    output_tokens_per_s: float
    rate_limit_rps: float | None
    joules_per_token: float | None
    backend: dict[str, Any] = field(default_factory=dict)
    opaque: bool = False  # a model wattserve knows only by name: no architecture
    assumed_latency: bool = False  # ttft_s/output_tokens_per_s are routing priors, not figures
    sized: SizedEnergy | None = None  # its energy estimated on named hardware (core.sized)

    @property
    def energy_basis(self) -> str | None:
        """What `energy_j` rests on (None: energy unknown)."""
        if self.joules_per_token is not None:
            return "joules_per_token (the fleet file)"
        return None if self.sized is None or not self.sized.known else self.sized.basis

    def energy_j(self, prompt_tokens: int, output_tokens: int) -> float | None:
        """Joules of one request: at the entry's joules per token when given, else estimated
        on its named hardware (core.sized); None when neither is known (never invented)."""
        if self.joules_per_token is not None or self.sized is None:
            return token_energy_j(prompt_tokens, output_tokens, self.joules_per_token)
        return self.sized.request_j(prompt_tokens, output_tokens)


@dataclass(frozen=True, slots=True)
class Fleet:
    name: str
    sites: dict[str, Site]
    links: tuple[Link, ...]
    default_rtt_s: float
    deployments: tuple[DeploymentSpec, ...]
    hosted: tuple[HostedSpec, ...]
    path: str = ""
    aliases: dict[str, str] = field(default_factory=dict)  # name a client may use -> model
    # every file the fleet was read from (itself, hardware files, calibrations, model configs):
    # what an output of the command that loaded it must not replace
    files: tuple[str, ...] = ()
    _link_index: dict[tuple[str, str], Link] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for link in self.links:
            self._link_index[(link.a, link.b)] = link
            self._link_index[(link.b, link.a)] = link

    def link(self, a: str, b: str) -> Link | None:
        return self._link_index.get((a, b))

    def rtt_s(self, a: str | None, b: str) -> float:
        if a is None or a == b:
            return 0.0
        link = self.link(a, b)
        return self.default_rtt_s if link is None else link.rtt_s

    def reachable(self, a: str | None, b: str, t: float) -> bool:
        if a is None or a == b:
            return True
        link = self.link(a, b)
        return link is None or link.up(t)

    @property
    def models(self) -> set[str]:
        return {d.model for d in self.deployments} | {h.model for h in self.hosted}

    def resolve_model(self, name: str) -> str | None:
        """The model this fleet serves under `name`: a model's own name, a fleet alias, or a
        catalog alias of a built-in it serves (a Hugging Face repository id); None if none."""
        models = self.models
        if name in models:
            return name
        target = self.aliases.get(name)
        if target is None:
            target = builtin_model_id(name)
        return target if target in models else None


# -- parsing ------------------------------------------------------------------------------


def _resolve_deployment(
    name: str,
    entry: LineDict,
    sites: dict[str, Site],
    catalog: Catalog,
    base: Path,
    path: str,
    line: int,
) -> DeploymentSpec:
    r = Fields(entry, path, f"deployments.{name}")
    r.check_keys(
        {
            "site",
            "model",
            "hardware",
            "replicas",
            "tp",
            "pp",
            "dtype",
            "kv_dtype",
            "max_num_seqs",
            "max_batched_tokens",
            "calibration",
            "cost_basis",
            "scheduling",
            "backend",
            "gpu_memory_utilization",
            "expert_parallel",
        }
    )
    site = r.text("site")
    if site not in sites:
        raise r.err("site", f"no site '{site}' in this fleet ({', '.join(sites)})")
    # read before the try: their own errors name the field already (`model: [1]` said it twice)
    model_name, hw_name, dtype_name = r.text("model"), r.text("hardware"), r.text("dtype", "bf16")
    kv_name = r.text("kv_dtype") if entry.get("kv_dtype") is not None else None
    try:
        model = load_model(model_name)
        hw = catalog.device(hw_name)
        dtype = parse_dtype(dtype_name)
        kv_dtype = parse_dtype(kv_name or default_kv_dtype(dtype), "kv_dtype", PEAK_DTYPES)
    except WattserveError as exc:
        raise ConfigError(str(exc), path=path, line=line, field=f"deployments.{name}") from None
    calib = Calibration()
    if "calibration" in entry:
        try:
            calib = load_calibration(file_named(base, r, "calibration", entry["calibration"]))
        except ConfigError as exc:
            if exc.line is not None or exc.field is not None:  # within the file: it says where
                raise
            raise r.err("calibration", str(exc)) from None  # unreadable: name who named it
        if calib.entry_id(hw.id) is None:  # else its defaults would stand in without a word
            raise r.err(
                "calibration",
                f"has no terms for {hw.id} (it has {', '.join(sorted(calib.params)) or 'none'})",
            )
    params = calib.params_for(hw)
    if "gpu_memory_utilization" in entry:  # vLLM's name: the share of memory the engine takes
        try:  # one rule and one message for every value out of range, as the CLI's
            share = check_memory_share(entry["gpu_memory_utilization"])
        except ConfigError as exc:
            raise r.err("gpu_memory_utilization", exc.detail) from None
        params = params.with_updates(memory_utilization=share)
    tp = r.integer("tp", 1)
    max_seqs = r.integer("max_num_seqs", 256)
    max_tokens = r.integer("max_batched_tokens", DEFAULT_BATCHED_TOKENS)
    below = budget_below_seqs(max_tokens, max_seqs)
    if below:  # as vLLM refuses it: a step could not decode every sequence
        raise r.err("max_batched_tokens" if "max_batched_tokens" in r.d else "max_num_seqs", below)
    stages = sram_stages(model, hw, dtype, kv_dtype, max_seqs * 2048, params, tp)
    pp = r.integer("pp", 1 if stages is None else stages)
    expert_parallel = r.flag("expert_parallel")
    try:
        dep = Deployment(
            model,
            hw,
            tp=tp,
            pp=pp,
            dtype=dtype,
            kv_dtype=kv_dtype,
            max_num_seqs=max_seqs,
            max_batched_tokens=max_tokens,
            expert_parallel=expert_parallel,
        )
    except ConfigError as exc:  # it names the field (tp: heads that do not divide) only
        key = exc.field or ""
        raise ConfigError(
            exc.detail,
            path=path,
            line=entry.line_of(key) if key in entry else line,
            field=f"deployments.{name}" + (f".{key}" if key else ""),
        ) from None
    blocks, problem = kv_block_count(dep, params)
    if problem:
        raise ConfigError(
            f"infeasible: {problem}", path=path, line=line, field=f"deployments.{name}"
        )
    s = sites[site]
    basis = r.text("cost_basis", "auto")
    if basis not in ("auto", "rent", "own"):
        raise r.err("cost_basis", "use auto, rent or own")
    cost = cost_rate(hw, dep.devices, CostAssumptions(basis, s.electricity_usd_per_kwh, s.pue))  # type: ignore[arg-type]
    scheduling = r.text("scheduling", "fcfs")
    if scheduling not in ("fcfs", "priority"):
        raise r.err("scheduling", "use fcfs or priority (tighter TTFT SLO first)")
    replicas = r.integer("replicas", 1)
    if replicas > MAX_REPLICAS:
        # Each replica is its own engine in simulate and serve; 99,999,999 of them hung the run.
        raise r.err("replicas", f"at most {MAX_REPLICAS:,} in a fleet, got {replicas:,}")
    return DeploymentSpec(
        name,
        site,
        dep,
        replicas,
        params,
        blocks,
        cost,
        scheduling,
        _backend(r, entry),
    )


BACKEND_KINDS = ("emulated", "openai", "local-llama")
MAX_REPLICAS = 100_000
# The context window a local-llama backend's llama.cpp server is started with (`n_ctx:` in
# its `backend:` mapping): the window serve and simulate hold its requests to.
LOCAL_LLAMA_N_CTX = 4096


def _backend(r: Fields, entry: LineDict) -> dict[str, Any]:
    """The `backend:` mapping `serve` uses (simulate ignores it); checked here."""
    raw = entry.get("backend")
    if raw is None:
        return {}
    if not isinstance(raw, LineDict):
        raise r.err("backend", "must be a mapping such as {kind: openai, url: ...}")
    kind = raw.get("kind", "emulated")
    if kind not in BACKEND_KINDS:
        raise r.err("backend", f"kind must be one of {', '.join(BACKEND_KINDS)}")
    if kind == "openai" and not (
        isinstance(raw.get("url"), str) or isinstance(raw.get("urls"), list)
    ):
        raise r.err("backend", "an openai backend needs url (or urls: [...])")
    if kind == "local-llama":
        b = Fields(raw, r.path, f"{r.where}.backend")
        b.check_keys({"kind", "n_ctx", "threads"})
        b.integer("n_ctx", LOCAL_LLAMA_N_CTX)
        if "threads" in raw:
            b.integer("threads", 1)
    return dict(raw)


def _resolve_hosted(
    name: str, entry: LineDict, sites: dict[str, Site], catalog: Catalog, path: str, line: int
) -> HostedSpec:
    r = Fields(entry, path, f"providers.{name}")
    r.check_keys(
        {
            "site",
            "provider",
            "model",
            "rate_limit_rps",
            "ttft_s",
            "output_tokens_per_s",
            "usd_per_mtok_input",
            "usd_per_mtok_output",
            "joules_per_token",
            "params_b",
            "active_params_b",
            "hardware",
            "dtype",
            "backend",
        }
    )
    site = r.text("site")
    if site not in sites:
        raise r.err("site", f"no site '{site}' in this fleet ({', '.join(sites)})")
    written = r.text("model")
    if not written.strip():
        raise r.err("model", "must name a model")
    backend = _backend(r, entry)
    # A model wattserve has no architecture for is served by name ("opaque"): its prices and
    # (optionally) its joules per token, or its size and hardware, come from this entry; its
    # energy is otherwise unknown.
    model = builtin_model_id(written) or written
    opaque = False
    try:
        load_model(model)
    except UnknownNameError:
        opaque = True
    except WattserveError as exc:
        raise ConfigError(str(exc), path=path, line=line, field=f"providers.{name}") from None
    if "provider" in entry:
        try:
            prov = catalog.provider(r.text("provider"))
        except WattserveError as exc:
            raise ConfigError(
                str(exc), path=path, line=line, field=f"providers.{name}.provider"
            ) from None
        provider_id, base_url, offers = prov.id, prov.base_url, prov.offers
    elif backend.get("kind") == "openai" and isinstance(backend.get("url"), str):
        provider_id, base_url, offers = name, str(backend["url"]), {}
    else:
        raise r.err(
            "provider", "name a catalog provider, or give backend: {kind: openai, url: ...}"
        )
    offer: ProviderOffer | None = offers.get(model)
    sized = hosted_energy(r, entry, model, opaque, catalog)

    def pick(key: str, assumed: float | None = None) -> float:
        # within what a catalog entry may hold (1e308 $/1M tokens made every dollar inf)
        v = r.number(key, positive=assumed is not None, most=LIMITS[key])
        if v is None and offer is not None:
            fig = getattr(offer, key)
            v = None if fig is None else fig.value
        if v is None and assumed is not None:
            return assumed
        if v is None:
            raise ConfigError(
                f"{provider_id} publishes no {key} for {model}; set {key} in the fleet file",
                path=path,
                line=line,
                field=f"providers.{name}.{key}",
            )
        return v

    ttft_s = pick("ttft_s", ASSUMED_TTFT_S)
    if ttft_s > MAX_LATENCY_S:  # 1e300 ran the simulator out of memory
        raise r.err("ttft_s", f"at most {MAX_LATENCY_S:g} s (an hour), got {ttft_s:g}")
    tokens_per_s = pick("output_tokens_per_s", ASSUMED_OUTPUT_TOKENS_PER_S)
    if tokens_per_s < MIN_TOKENS_PER_S:
        raise r.err(
            "output_tokens_per_s", f"at least {MIN_TOKENS_PER_S:g} tokens/s, got {tokens_per_s:g}"
        )
    latency_given = any(k in entry for k in ("ttft_s", "output_tokens_per_s")) or (
        offer is not None and offer.ttft_s is not None
    )
    return HostedSpec(
        name=name,
        site=site,
        provider=provider_id,
        model=model,
        remote_name=offer.remote_name if offer else written,
        base_url=base_url,
        usd_per_mtok_input=pick("usd_per_mtok_input"),
        usd_per_mtok_output=pick("usd_per_mtok_output"),
        ttft_s=ttft_s,
        output_tokens_per_s=tokens_per_s,
        rate_limit_rps=r.number("rate_limit_rps", positive=True, most=1e9, unit="requests/s"),
        joules_per_token=r.number("joules_per_token", positive=True, most=1e6, unit="J"),
        backend=backend,
        opaque=opaque,
        assumed_latency=not latency_given,
        sized=sized,
    )


def kv_block_count(dep: Deployment, params: EngineParams) -> tuple[int, str]:
    """KV-cache blocks one replica holds (what memory leaves after weights and activations),
    and the reason it cannot run ("" when it can)."""
    pm = perf_model(dep, params)
    if pm.missing:
        return 0, "; ".join(pm.missing)
    broken = implausible_step(pm)
    if broken:
        return 0, broken
    fit = memory_fit(dep, params, 1, KV_BLOCK_TOKENS, dep.max_batched_tokens)
    if not fit.fits:
        return 0, fit.reason
    lay = memory_layout(dep, params)
    kv_bytes_block = KV_BLOCK_TOKENS * lay.kv_token_bytes / lay.kv_split
    free = (fit.capacity_gb or 0.0) * 1e9 * params.memory_utilization - (
        fit.weights_gb + fit.activations_gb
    ) * 1e9
    if dep.hardware.memory_kind == "cim":
        return 1 << 30, ""
    return int(free // kv_bytes_block), ""


# Routing priors for an upstream with no published latency profile: they only order the
# candidates until the gateway has measured the upstream (UpstreamTarget blends measurements
# in); they are never reported as figures.
ASSUMED_TTFT_S = 1.0
ASSUMED_OUTPUT_TOKENS_PER_S = 50.0
MIN_TOKENS_PER_S = 0.1  # slower, and one long output outlasts any simulated day


def _parse_aliases(raw: Any, models: set[str], path: str, line: int) -> dict[str, str]:
    """`aliases: {name a client may use: model of this fleet}`."""
    if raw is None:
        return {}
    if not isinstance(raw, LineDict):
        raise ConfigError(
            "must be a mapping of alias -> model served by this fleet",
            path=path,
            line=line,
            field="aliases",
        )
    out: dict[str, str] = {}
    for alias, target in raw.items():
        where = f"aliases.{alias}"
        if not isinstance(alias, str) or not alias.strip():
            raise ConfigError(
                "an alias must be a non-empty name", path=path, line=line, field="aliases"
            )
        if not isinstance(target, str):
            raise ConfigError("must name a model", path=path, line=raw.line_of(alias), field=where)
        resolved = target if target in models else builtin_model_id(target)
        if resolved not in models:
            raise ConfigError(
                f"'{target}' is not a model of this fleet ({', '.join(sorted(models))})",
                path=path,
                line=raw.line_of(alias),
                field=where,
            )
        if alias in models and alias != resolved:
            raise ConfigError(
                f"'{alias}' is a model of this fleet; it cannot be an alias of another",
                path=path,
                line=raw.line_of(alias),
                field=where,
            )
        out[alias] = str(resolved)
    return out


def replica_name(deployment: str, i: int) -> str:
    """The name of a deployment's replica i, in simulate and serve alike."""
    return f"{deployment}/{i}"


def deployment_of(name: str, deployments: Container[str]) -> str | None:
    """The deployment among `deployments` that `name` names a replica of
    (`replica_name`), or None."""
    head, sep, tail = name.rpartition("/")
    return head if sep and tail.isdigit() and head in deployments else None


def target_of(name: str, deployments: Container[str]) -> str:
    """The deployment or hosted API a backend (or a simulated target) named `name` belongs
    to: the deployment among `deployments` whose replica it is, else the name itself (a
    hosted API's, which may hold a '/', as may a deployment's: `meta-llama/llama-3.1-8b`)."""
    return deployment_of(name, deployments) or name


def parse_fleet(
    data: Any, path: str, catalog: Catalog | None = None, *, sites_only: bool = False
) -> Fleet:
    """Validate a parsed fleet mapping and resolve it against the catalogs. `sites_only`:
    a sites file (what `plan` reads), whose deployments may be absent."""
    if not isinstance(data, LineDict):
        raise ConfigError("a fleet file is a mapping with sites, deployments, providers", path=path)
    top = Fields(data, path, "fleet")
    top.check_keys(
        {
            "name",
            "sites",
            "links",
            "default_rtt_ms",
            "deployments",
            "providers",
            "hardware_files",
            "aliases",
        }
    )
    base = Path(path).parent
    hw_files = data.get("hardware_files") or []
    if not isinstance(hw_files, list):
        raise top.err("hardware_files", "must be a list of paths")
    hw_paths = [file_named(base, top, "hardware_files", f) for f in hw_files]
    try:
        cat = (catalog or load_catalog()).extended(hw_paths)
    except ConfigError as exc:
        if exc.line is not None or exc.field is not None:  # within the file: it says where
            raise
        raise top.err("hardware_files", str(exc)) from None  # unreadable: name who named it
    sites = parse_sites(data.get("sites"), path, data.line_of("sites"), cat)
    if not sites:
        raise ConfigError("a fleet needs at least one site", path=path, field="sites")
    deps_map = mapping_of(data.get("deployments"), "deployments", path, data.line_of("deployments"))
    hosted_map = mapping_of(data.get("providers"), "providers", path, data.line_of("providers"))
    for section, entries in (("deployments", deps_map), ("providers", hosted_map)):
        for n, e in entries.items():
            if not isinstance(e, LineDict):
                raise ConfigError(
                    "must be a mapping of fields",
                    path=path,
                    line=entries.line_of(n),
                    field=f"{section}.{n}",
                )
    # targets are told apart by name; a replica's is `replica_name`
    for section, entries in (("deployments", deps_map), ("providers", hosted_map)):
        for n in entries:
            owner = deployment_of(str(n), deps_map)
            if section == "providers" and n in deps_map:
                what = f"deployment '{n}'"
            elif owner is not None:
                what = f"a replica of deployment '{owner}' ('{owner}/0', ...)"
            else:
                continue
            raise ConfigError(
                f"a {section[:-1]} may not be named as {what}: simulate, serve and plan would "
                "count them as one",
                path=path,
                line=entries.line_of(n),
                field=f"{section}.{n}",
            )
    deps = tuple(
        _resolve_deployment(n, e, sites, cat, base, path, deps_map.line_of(n))
        for n, e in deps_map.items()
    )
    total = 0
    for d in deps:  # each replica is an engine in simulate and serve (about 2 KB)
        total += d.replicas
        if total > MAX_REPLICAS:
            raise ConfigError(
                f"at most {MAX_REPLICAS:,} replicas in a fleet; with {d.name} there are {total:,}",
                path=path,
                line=deps_map.line_of(d.name),
                field=f"deployments.{d.name}.replicas",
            )
    hosted = tuple(
        _resolve_hosted(n, e, sites, cat, path, hosted_map.line_of(n))
        for n, e in hosted_map.items()
    )
    if not deps and not hosted and not sites_only:
        raise ConfigError("a fleet needs deployments or providers", path=path)
    for s in sites.values():
        idle = sum(d.replicas * d.perf.idle_power_w for d in deps if d.site == s.name)
        if s.power_cap_w is not None and idle > s.power_cap_w:
            entry = data["sites"].get(s.name)  # parse_sites checked it is a mapping
            raise ConfigError(
                f"infeasible: the devices at {s.name} draw {idle:.0f} W idle, over its "
                f"{s.power_cap_w:.0f} W cap; remove replicas or raise the cap",
                path=path,
                line=entry.line_of("power_cap_w")
                if isinstance(entry, LineDict)
                else data.line_of("sites"),
                field=f"sites.{s.name}.power_cap_w",
            )
    models = {d.model for d in deps} | {h.model for h in hosted}
    files = [path, *map(str, hw_paths)]
    for e in deps_map.values():
        if "calibration" in e:  # each read above, so named well
            where = Fields(e, path, "")
            files.append(str(file_named(base, where, "calibration", e["calibration"])))
        if isinstance(e.get("model"), str):
            files += map(str, model_files(e["model"]))
    return Fleet(
        files=tuple(files),
        aliases=_parse_aliases(data.get("aliases"), models, path, data.line_of("aliases")),
        name=top.text("name", Path(path).stem),
        sites=sites,
        links=parse_links(data.get("links"), sites, path, data.line_of("links")),
        default_rtt_s=rtt_s(top, "default_rtt_ms", 50.0),
        deployments=deps,
        hosted=hosted,
        path=path,
    )


def file_named(base: Path, r: Fields, key: str, text: Any) -> Path:
    """The file `text` that a fleet file's field `key` names, relative to the fleet file's
    folder `base`, `~` expanded: text without NUL (no path holds one) whose `~user` exists;
    anything else is an error naming the field, not a traceback."""
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise r.err(key, f"expected the path of a file, got {shown(text)}")
    try:
        return base / Path(text).expanduser()
    except RuntimeError:  # `~nosuch/h.yaml`: no such user, no home folder to expand
        raise r.err(key, f"no home folder for {text.split('/')[0]!r:.80}") from None


def load_fleet(path: str | Path, catalog: Catalog | None = None) -> Fleet:
    """Read, validate and resolve a fleet file."""
    return parse_fleet(load_yaml_file(path), str(path), catalog)


def load_sites(path: str | Path, catalog: Catalog | None = None) -> Fleet:
    """A sites file: a fleet file whose deployments are optional (`plan` chooses them)."""
    return parse_fleet(load_yaml_file(path), str(path), catalog, sites_only=True)
