"""A hosted API emulated from its published profile (used when no API key is configured):
first token after `ttft_s`, then `output_tokens_per_s`, priced per token. Text is synthetic,
the emulated engine's, and ends at a stop sequence as the engine's does (`synthetic`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from wattserve.core.cost import token_usd
from wattserve.core.fleet import HostedSpec
from wattserve.serve.backends.base import Backend, Event, Finish, GenRequest, Piece
from wattserve.serve.backends.synthetic import SyntheticText, stop_for


class EmulatedHostedBackend(Backend):
    kind = "emulated-hosted"

    def __init__(self, spec: HostedSpec) -> None:
        self.spec = spec
        self.name, self.site, self.model = spec.name, spec.site, spec.model

    async def generate(self, req: GenRequest) -> AsyncIterator[Event]:
        s = self.spec
        tokens, keep = stop_for(req.body, req.max_tokens)  # billed to its stop sequence
        text = SyntheticText(keep)
        await asyncio.sleep(s.ttft_s)
        gap = 1.0 / s.output_tokens_per_s
        for i in range(tokens):
            if i:
                await asyncio.sleep(gap)
            yield Piece(text.next_text())
        usd = token_usd(req.prompt_tokens, tokens, s.usd_per_mtok_input, s.usd_per_mtok_output)
        energy = s.energy_j(req.prompt_tokens, tokens)
        yield Finish(
            "stop" if keep >= 0 else "length",
            req.prompt_tokens,
            tokens,
            energy,
            usd,
            synthetic=True,
            energy_basis=s.energy_basis,
            prompt_estimated=True,
        )
