"""The context window of each model a fleet serves: the one limit both clocks check a request
against before routing it (serve answers 400 `context_length_exceeded`, simulate rejects)."""

from __future__ import annotations

from wattserve.core.fleet import Fleet
from wattserve.core.modelspec import load_model
from wattserve.errors import WattserveError


def context_windows(fleet: Fleet) -> dict[str, int]:
    """Tokens of context per served model (the smallest where deployments differ, such as a
    local-llama engine started with a smaller `n_ctx` than its model's); a model whose card
    gives none, or an opaque hosted model, is absent (any length passes)."""
    out: dict[str, int] = {}
    for d in fleet.deployments:
        window = d.context_tokens
        if window is not None:
            out[d.model] = min(out.get(d.model, window), window)
    for model in sorted(set(fleet.models) - {d.model for d in fleet.deployments}):
        try:
            spec = load_model(model)
        except (WattserveError, OSError):
            continue
        if spec.max_context:
            out[model] = spec.max_context
    return out
