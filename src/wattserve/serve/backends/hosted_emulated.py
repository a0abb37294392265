"""A hosted API emulated from its published profile (used when no API key is configured):
first token after `ttft_s`, then `output_tokens_per_s`, priced per token. Text is synthetic,
the emulated engine's, and ends at a stop sequence as the engine's does (`synthetic`).

Token i is due `ttft_s + i / output_tokens_per_s` after the request arrived, the times
`simulate` gives it (core.targets.HostedPool), and each wait is to that deadline: a wait per
token of the gap lost to every timer's error (uvloop rounds a timer to whole milliseconds, so
a 1.33 ms gap took 1.1 ms, 17% fast; asyncio's wakes late), summed over the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from wattserve.core.cost import token_usd
from wattserve.core.fleet import HostedSpec
from wattserve.serve.backends.base import Backend, Event, Finish, GenRequest, Piece
from wattserve.serve.backends.synthetic import SyntheticText, stop_for

TIMER_FLOOR_S = 0.001  # the shortest timer `_until` sets (uvloop's resolution)


class EmulatedHostedBackend(Backend):
    kind = "emulated-hosted"

    def __init__(self, spec: HostedSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.name, self.site, self.model = spec.name, spec.site, spec.model
        self.clock = clock

    async def _until(self, t: float) -> None:
        """Wait until the clock reads `t` (a timer may end early: uvloop rounds it to whole
        milliseconds, so a remainder is waited for again, a millisecond at least: uvloop
        runs a shorter timer at once, and the wait spun, 65 sleeps and 21% of a core per
        750-token/s stream; a token up to a millisecond late, the next one's deadline
        keeps the pace)."""
        while (left := t - self.clock()) > 0:
            await asyncio.sleep(max(left, TIMER_FLOOR_S))

    async def generate(self, req: GenRequest) -> AsyncIterator[Event]:
        s = self.spec
        tokens, keep = stop_for(req.body, req.max_tokens)  # billed to its stop sequence
        text = SyntheticText(keep)
        first = self.clock() + s.ttft_s
        gap = 1.0 / s.output_tokens_per_s
        for i in range(tokens):
            await self._until(first + i * gap)
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
