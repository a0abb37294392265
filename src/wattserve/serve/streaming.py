"""Writing streams to clients that may stop reading, and closing a backend's stream.

A client that stops reading a stream fills the socket's buffers, and a write then waits until
it reads again: with no bound the request stays in flight for as long as the client holds the
connection, keeping its budget hold, its share of the target's load and one of the gateway's
in-flight places (a few hundred such clients would make it refuse everyone). So a stream
whose client takes nothing queued for it for the send timeout, while data waits for the
socket, has its connection dropped (nginx's `send_timeout`, 60 s by default, is the rule), and
the request ends as a client that left. A watchdog looks at the streams once a second, rather
than each write arming a timer of its own (a timer per token cost the gateway about 3 us of
its 15 us a streamed token, a coroutine around each write about 1 us: measured 2026-12-05,
benchmarks/gateway_stream_cpu.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wattserve.core.workload import Request
from wattserve.serve.backends.base import Event, GenRequest
from wattserve.serve.budgets import Hold
from wattserve.serve.ledger import KeyRecord
from wattserve.serve.schema import ChatRequest, CompletionRequest

log = logging.getLogger("wattserve.serve")

SEND_TIMEOUT_S = 60.0  # longest a write may wait for a client that does not read
if sys.platform == "linux":
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
else:  # the transport's buffer alone: coarser, as nginx's rule is
    _OUTQ = None


class Sender:
    """The gateway's streams, watched for clients that stopped reading. A stream marks the
    time each write begins (`watch`'s mark); a watchdog drops a connection whose transport
    still holds data the socket has not taken and whose mark is older than the timeout, the
    mark moved on whenever the client took some of what is queued for it since the last look
    (a client reading slowly but steadily is not one that stopped)."""

    def __init__(self, timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        # by id(request): the request, its mark, the data its transport held at the last look
        self.streams: dict[int, tuple[web.Request, list[float], list[int]]] = {}
        self.dropped: dict[int, str] = {}  # requests the gateway dropped, and why
        self.task: asyncio.Task[None] | None = None

    def watch(self, request: web.Request) -> list[float]:
        """Watch a stream: set the mark's one item to time.monotonic() as each write begins."""
        mark = [time.monotonic()]
        self.streams[id(request)] = (request, mark, [0])
        return mark

    def drop(self, request: web.Request, why: str) -> None:
        """Close a request's connection at once (whatever its buffers hold), saying why."""
        self.dropped[id(request)] = why
        transport = request.transport
        if transport is not None:
            transport.abort()

    def gone(self, request: web.Request) -> str:
        """Why a request's client is gone, once it ended early: dropped by the gateway, else
        the client disconnected."""
        return self.dropped.pop(id(request), "client disconnected")

    def forget(self, request: web.Request) -> None:
        self.streams.pop(id(request), None)
        self.dropped.pop(id(request), None)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def _watch(self) -> None:
        every = min(1.0, self.timeout_s / 4)
        while True:
            await asyncio.sleep(every)
            try:
                self._look()
            except Exception:  # never silently: a dead watchdog would end the send timeout
                log.exception("wattserve: the send-timeout watchdog failed a look")

    def _look(self) -> None:
        now = time.monotonic()
        for request, mark, held in list(self.streams.values()):
            transport = request.transport
            if transport is None:
                continue
            waiting = transport.get_write_buffer_size()  # what the socket has not taken
            queued = waiting + _sent_unread(transport) if waiting else 0
            if queued < held[0]:  # the client took some since the last look
                mark[0] = now
            held[0] = queued
            if waiting and mark[0] <= now - self.timeout_s:
                self.drop(request, f"client stopped reading for {self.timeout_s:g} s")


def _sent_unread(transport: asyncio.BaseTransport) -> int:
    """The bytes in a connection's kernel send queue (not yet acknowledged by the client),
    where the system tells (Linux: TIOCOUTQ), else 0. The socket takes more of the
    transport's buffer only once a third of its own is free again (Linux), which a client
    reading slowly takes seconds to make: between, its reading shows only here."""
    sock = transport.get_extra_info("socket")
    if sock is None or _OUTQ is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0" * 4))[0])
    except (OSError, ValueError):
        return 0


async def close_events(events: AsyncIterator[Event]) -> None:
    """Close a backend's event stream: the backend cancels its work (see Backend.generate)."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except (Exception, asyncio.CancelledError) as exc:  # already gone: nothing to cancel
            log.debug("wattserve: closing a backend stream: %r", exc)


@dataclass
class Call:
    """One request on the backend chosen for it, from its first event on."""

    body: ChatRequest | CompletionRequest
    req: Request
    greq: GenRequest
    key: KeyRecord | None
    hold: Hold | None
    target: Any
    backend: Any
    first: Event
    rest: AsyncIterator[Event]
    started: float
    seen: bool  # whether the first event came with the first token (Backend.sees_first_token)
    ttft: float | None = field(init=False)  # None: not seen, so unknown

    def __post_init__(self) -> None:
        self.ttft = time.monotonic() - self.started if self.seen else None

    async def events(self) -> AsyncIterator[Event]:
        """The first event, then the rest."""
        yield self.first
        async for event in self.rest:
            yield event
