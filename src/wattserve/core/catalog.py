"""The hardware and provider catalog: built-in package data plus users' own files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TypeVar

from wattserve.core.hardware import (
    ID_RULE,
    Hardware,
    Provider,
    is_plain_id,
    parse_hardware,
    parse_provider,
)
from wattserve.core.yamlio import LineDict, load_yaml_file, load_yaml_text
from wattserve.errors import ConfigError, UnknownNameError, in_any_case

T = TypeVar("T")
# devices and providers in a catalog with its hardware files: rank times each (about 4 ms a
# device), and a file of YAML aliases could add 24,000 in 300 KB (100 s of rank)
MAX_CATALOG_ENTRIES = 1000


def _any_case(by_id: Mapping[str, T], name: str) -> T | None:
    """The entry whose id is `name` in another case, when exactly one is."""
    key = in_any_case(name, by_id)
    return None if key is None else by_id[key]


@dataclass(frozen=True, slots=True)
class Catalog:
    """Devices and hosted providers by id. Immutable; `extended` returns a new catalog."""

    devices: Mapping[str, Hardware]
    providers: Mapping[str, Provider]

    def device(self, hw_id: str) -> Hardware:
        """The device `hw_id`; a hosted provider's id says that this needs a device."""
        hw = self.devices.get(hw_id) or _any_case(self.devices, hw_id)
        if hw is None:
            if hw_id in self.providers:
                raise ConfigError(
                    f"'{hw_id}' is a hosted provider, not a device; this needs a device "
                    "(`wattserve catalog` lists them)"
                )
            raise UnknownNameError("hardware", hw_id, self.devices)
        return hw

    def known_id(self, name: str) -> str | None:
        """The catalog's id for a device or provider named `name` in any case, else None."""
        if name in self.devices or name in self.providers:
            return name
        entry: Hardware | Provider | None = _any_case(self.devices, name) or _any_case(
            self.providers, name
        )
        return None if entry is None else entry.id

    def provider(self, provider_id: str) -> Provider:
        """The hosted provider `provider_id`; a device's id says that this needs a provider."""
        p = self.providers.get(provider_id) or _any_case(self.providers, provider_id)
        if p is None:
            if provider_id in self.devices:
                raise ConfigError(
                    f"'{provider_id}' is a device, not a hosted provider; this needs a provider "
                    "(`wattserve catalog providers` lists them)"
                )
            raise UnknownNameError("provider", provider_id, self.providers)
        return p

    def extended(self, paths: Iterable[str | Path]) -> Catalog:
        """This catalog plus the devices and providers in each file (later ids win)."""
        devices = dict(self.devices)
        providers = dict(self.providers)
        for path in paths:
            data = load_yaml_file(path)
            new_devices, new_providers = _parse_catalog(data, str(path))
            _replace(devices, new_devices)
            _replace(providers, new_providers)
            _one_kind_per_id(data, str(path), devices, providers)
            if len(devices) + len(providers) > MAX_CATALOG_ENTRIES:
                raise ConfigError(
                    f"the catalog would hold {len(devices) + len(providers):,} devices and "
                    f"providers; at most {MAX_CATALOG_ENTRIES:,} (rank searches every one)",
                    path=str(path),
                )
            for p in new_providers.values():  # a provider's hardware is a device it runs on
                if p.hardware and _any_case(devices, p.hardware) is None:
                    raise ConfigError(
                        UnknownNameError("hardware", p.hardware[:200], devices).args[0],
                        path=str(path),
                        field=f"{p.id}.hardware",
                    )
        return Catalog(devices=devices, providers=providers)


def _one_kind_per_id(
    data: LineDict, path: str, devices: dict[str, Hardware], providers: dict[str, Provider]
) -> None:
    """Refuse an id, in any case, that names both a device and a provider once `path`'s
    entries are in: a device named `groq-cloud` had hidden the hosted provider from
    `estimate` and `catalog show`, and rank's hosted-API row was computed from the device."""
    both = {k.lower() for k in devices} & {k.lower() for k in providers}
    for section in ("devices", "providers"):
        entries = data.get(section)
        if not isinstance(entries, LineDict):
            continue
        for entry_id in entries:
            if entry_id.lower() in both:
                other = "provider" if section == "devices" else "device"
                raise ConfigError(
                    f"'{entry_id}' is also a hosted {other}'s id (ids are read in any case); "
                    "give it another",
                    path=path,
                    line=entries.line_of(entry_id),
                    field=f"{section}.{entry_id}",
                )


def _replace(into: dict[str, T], new: dict[str, T]) -> None:
    """Add `new` to `into`; an id that is one of `into`'s in another case replaces it (ids are
    read in any case: `H100-SXM:` in a hardware file left the built-in h100-sxm in force, and
    rank listed both)."""
    lowered = {k.lower(): k for k in into}
    for key, entry in new.items():
        old = lowered.get(key.lower())
        if old is not None and old != key:
            del into[old]
        into[key] = entry
        lowered[key.lower()] = key


def _parse_catalog(data: object, path: str) -> tuple[dict[str, Hardware], dict[str, Provider]]:
    if not isinstance(data, LineDict) or not ({"devices", "providers"} & set(data)):
        raise ConfigError(
            "a hardware file is a mapping with 'devices:' and/or 'providers:' "
            "(see docs/hardware-file.md)",
            path=path,
        )
    for key in data:
        if key not in ("devices", "providers"):
            raise ConfigError(
                "unknown field; expected devices or providers",
                path=path,
                line=data.line_of(key),
                field=key,
            )
    devices: dict[str, Hardware] = {}
    providers: dict[str, Provider] = {}
    for section in ("devices", "providers"):
        entries = data.get(section)
        if entries is None:
            continue
        if not isinstance(entries, LineDict):
            raise ConfigError(
                "must map ids to entries", path=path, line=data.line_of(section), field=section
            )
        seen: dict[str, str] = {}  # lower case -> the id as written
        for entry_id, entry in entries.items():
            if not is_plain_id(entry_id):
                raise ConfigError(
                    f"{entry_id!r:.80} is not an id: {ID_RULE}",
                    path=path,
                    line=entries.line_of(entry_id),
                    field=section,
                )
            first = seen.setdefault(entry_id.lower(), entry_id)
            if first != entry_id:  # the last had won in silence, even for the other's exact id
                raise ConfigError(
                    f"'{entry_id}' and '{first}' (line {entries.line_of(first)}) are one id in "
                    "two cases; keep one",
                    path=path,
                    line=entries.line_of(entry_id),
                    field=f"{section}.{entry_id}",
                )
            if not isinstance(entry, LineDict):
                raise ConfigError(
                    "must be a mapping of fields",
                    path=path,
                    line=entries.line_of(entry_id),
                    field=entry_id,
                )
            if section == "devices":
                devices[entry_id] = parse_hardware(entry_id, entry, path)
            else:
                providers[entry_id] = parse_provider(entry_id, entry, path)
    return devices, providers


@cache
def builtin_catalog() -> Catalog:
    """The catalog shipped with wattserve (read once per process)."""
    devices: dict[str, Hardware] = {}
    providers: dict[str, Provider] = {}
    for name in ("hardware.yaml", "providers.yaml"):
        text = (resources.files("wattserve") / "data" / name).read_text(encoding="utf-8")
        d, p = _parse_catalog(load_yaml_text(text, f"wattserve/data/{name}"), name)
        devices.update(d)
        providers.update(p)
    return Catalog(devices=devices, providers=providers)


def load_catalog(hardware_files: Iterable[str | Path] = ()) -> Catalog:
    """The built-in catalog extended with the users' hardware files."""
    files = list(hardware_files)
    base = builtin_catalog()
    return base.extended(files) if files else base
