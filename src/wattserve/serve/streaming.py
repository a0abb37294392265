"""Writing streams to clients that may stop reading, and closing a backend's stream.

A client that stops reading a stream fills the socket's buffers, and a write then waits until
it reads again: with no bound the request stays in flight for as long as the client holds the
connection, keeping its budget hold, its share of the target's load and one of the gateway's
in-flight places (a few hundred such clients would make it refuse everyone). So a write that
cannot hand its data to the connection within the send timeout has the connection dropped
(nginx's `send_timeout`, 60 s by default, is the same rule), and the request ends as a client
that left. A watchdog looks at the streams a few times per timeout, rather than each write
arming a timer of its own (a timer per token cost the gateway about 3 us of its 15 us a
streamed token, a coroutine around each write about 1 us: measured 2026-12-05,
benchmarks/gateway_stream_cpu.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from wattserve.serve.backends.base import Event

log = logging.getLogger("wattserve.serve")

SEND_TIMEOUT_S = 60.0  # longest a write may wait for a client that does not read


class Sender:
    """The gateway's streams, watched for clients that stopped reading. A stream marks the
    time each write begins (`watch`'s mark); a watchdog drops a connection whose latest write
    began more than the timeout ago and still has data the socket has not taken."""

    def __init__(self, timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.streams: dict[int, tuple[web.Request, list[float]]] = {}  # by id(request)
        self.stalled: set[int] = set()  # requests whose connection the watchdog dropped
        self.task: asyncio.Task[None] | None = None

    def watch(self, request: web.Request) -> list[float]:
        """Watch a stream: set the mark's one item to time.monotonic() as each write begins."""
        mark = [time.monotonic()]
        self.streams[id(request)] = (request, mark)
        return mark

    def gone(self, request: web.Request) -> str:
        """Why a watched stream's client is gone, once it ended early."""
        stalled = id(request) in self.stalled
        return (
            f"client stopped reading for {self.timeout_s:g} s"
            if stalled
            else ("client disconnected")
        )

    def forget(self, request: web.Request) -> None:
        self.streams.pop(id(request), None)
        self.stalled.discard(id(request))

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _watch(self) -> None:
        every = min(1.0, self.timeout_s / 4)
        while True:
            await asyncio.sleep(every)
            late = time.monotonic() - self.timeout_s
            for key, (request, mark) in list(self.streams.items()):
                transport = request.transport
                if mark[0] <= late and transport is not None and transport.get_write_buffer_size():
                    self.stalled.add(key)
                    drop(request)


def drop(request: web.Request) -> None:
    """Close a request's connection at once, whatever its buffers hold."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def close_events(events: AsyncIterator[Event]) -> None:
    """Close a backend's event stream: the backend cancels its work (see Backend.generate)."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except (Exception, asyncio.CancelledError) as exc:  # already gone: nothing to cancel
            log.debug("wattserve: closing a backend stream: %r", exc)
