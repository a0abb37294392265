"""The link between a request's origin site and the site of the emulated backend that answers it.

`simulate` adds the link's round trip (`core.fleet.Fleet.rtt_s`) to the times the client sees
a request's first token and end: the request joins its engine when it arrives, and its tokens
reach the client a round trip after the engine made them. A real server's answer crosses a
real network, but an emulated backend's is made in the gateway itself and came that much
early (40 ms on examples/fleet-hetero.yaml's edge-to-datacenter link). `over_link` delays each
event of such a backend by the round trip from when the backend made it, so the answer's
stream is shifted whole and its gaps kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

from wattserve.serve.backends.base import Backend, Event, Finish

# backends whose answers are made in the gateway (the simulator's models on the wall clock):
# nothing but this module puts a link between them and the client
EMULATED_KINDS = frozenset({"emulated", "emulated-hosted"})

_END = object()  # the backend's answer ended


def link_rtt_s(backend: Backend, rtt_s: float) -> float:
    """The round trip the gateway adds to `backend`'s answers: the link's `rtt_s` for an
    emulated backend, 0 for one behind a real network."""
    return rtt_s if backend.kind in EMULATED_KINDS else 0.0


def over_link(
    events: AsyncIterator[Event],
    rtt_s: float,
    unread: Callable[[Finish], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    abandon: Callable[[], None] | None = None,
) -> AsyncIterator[Event]:
    """`events` (a backend's `generate`), each `rtt_s` after the backend made it; as they are
    where there is no round trip. A failure reaches the reader as late as an event would;
    closing the result early closes `events` (the backend's work is cancelled), and where the
    backend had already ended its answer, its Finish, never delivered, goes to `unread`
    (Backend.unread: the backend bills what it measured, not the wall time). Closed before
    `events` was begun (the client left at once), `abandon` (Backend.abandon) gives back
    what the request's placement holds."""
    if rtt_s <= 0.0:
        return events
    return _delayed(events, rtt_s, unread, clock, abandon)


async def _delayed(
    events: AsyncIterator[Event],
    rtt_s: float,
    unread: Callable[[Finish], None] | None,
    clock: Callable[[], float],
    abandon: Callable[[], None] | None = None,
) -> AsyncIterator[Event]:
    line: asyncio.Queue[tuple[float, object]] = asyncio.Queue()
    begun = False

    async def carry() -> None:  # reads the backend as it makes events, stamping each
        nonlocal begun
        begun = True
        try:
            async for event in events:
                line.put_nowait((clock(), event))
        except Exception as exc:  # the backend failed: passed on in its turn
            line.put_nowait((clock(), exc))
            return
        line.put_nowait((clock(), _END))

    task = asyncio.create_task(carry())
    held: object = None  # taken off the line, waiting out its round trip
    try:
        while True:
            made, held = await line.get()
            while (left := made + rtt_s - clock()) > 0:
                await asyncio.sleep(left)
            item, held = held, None
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield cast(Event, item)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not begun and abandon is not None:
            abandon()
        # closed early: the backend's end, carried but never delivered, is billed as measured
        carried = [held] + [line.get_nowait()[1] for _ in range(line.qsize())]
        for item in carried:
            if unread is not None and isinstance(item, Finish):
                unread(item)
