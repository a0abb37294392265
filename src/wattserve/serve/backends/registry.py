"""The registry of backend kinds: `backend: {kind: NAME}` in a fleet file names one of these.
A new kind is a `BackendKind` subclass (wattserve.serve.backends.base) added here."""

from __future__ import annotations

from wattserve.errors import UnknownNameError
from wattserve.serve.backends.base import BackendKind
from wattserve.serve.backends.emulated import EmulatedKind
from wattserve.serve.backends.local import LocalLlamaKind
from wattserve.serve.backends.upstream import OpenAIKind

KINDS: dict[str, type[BackendKind]] = {
    k.name: k for k in (EmulatedKind, OpenAIKind, LocalLlamaKind)
}


def backend_kind(name: str) -> BackendKind:
    """The kind called `name` (the fleet file's loader has already checked it exists)."""
    kind = KINDS.get(name)
    if kind is None:
        raise UnknownNameError("backend kind", name, KINDS)
    return kind()
