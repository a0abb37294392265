"""The context window of each model a fleet serves: the one limit both clocks check a request
against before routing it (serve answers 400 `context_length_exceeded`, simulate rejects)."""

from __future__ import annotations

from wattserve.core.fleet import Fleet
from wattserve.core.modelspec import load_model
from wattserve.errors import WattserveError


def context_windows(fleet: Fleet) -> dict[str, int]:
    """Tokens of context per served model (the smallest where deployments differ); a model
    whose card gives none, or an opaque hosted model, is absent (any length passes)."""
    out: dict[str, int] = {}
    specs = {d.model: d.deployment.model for d in fleet.deployments}
    for model in sorted(fleet.models):
        spec = specs.get(model)
        if spec is None:
            try:
                spec = load_model(model)
            except (WattserveError, OSError):
                continue
        if spec.max_context:
            out[model] = min(out.get(model, spec.max_context), spec.max_context)
    return out
