"""Reading a server's streamed answer: its lines, within a time spent waiting for the server,
and read as the server sends them, ahead of a client that reads more slowly."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable

import aiohttp

from wattserve.serve.backends import answers

MAX_LINE_BYTES = 1 << 20  # a stream's line longer than this is a broken server
# The most of an answer held for a client that reads more slowly than the server sends: past
# it the gateway stops reading the server until the client catches up (a server that streams
# without end must not fill the gateway's memory: 1,024 streams in flight hold 1 GiB at most).
# An answer of 2,048 tokens is about 0.5 MB of chunks; with 20 top logprobs, several MB.
AHEAD_BYTES = 1 << 20


async def server_lines(
    resp: aiohttp.ClientResponse, left: float
) -> AsyncGenerator[list[bytes], None]:
    """The lines of a streamed answer, those of each read together, within `left` seconds of
    waiting for the server,
    summed over its reads: each read is bounded by sock_read (which stops while the gateway
    does not read), and the time spent at a `yield` is not counted. Until 2026-12-05 the
    whole stream had `timeout_s` of wall time, so a client that paused reading for that long
    failed the stream and took a healthy server out of rotation. Reading what has arrived
    rather than a line at a time bounds a server that trickles bytes with no end of line too
    (each byte restarts sock_read), with no timer per line."""
    buf = b""
    while True:
        waited = time.monotonic()
        data = await resp.content.readany()
        left -= time.monotonic() - waited
        if left < 0:
            raise TimeoutError()
        if not data:
            if buf:
                yield [buf]
            return
        *whole, buf = (buf + data).split(b"\n")
        if whole:
            yield whole
        if len(buf) > MAX_LINE_BYTES:
            raise aiohttp.ClientPayloadError(f"a line of over {MAX_LINE_BYTES} bytes")


def is_done(line: bytes) -> bool:
    """Whether a line is the stream's `data: [DONE]`, after which a server sends nothing."""
    line = line.strip()
    return line.startswith(b"data:") and line[5:].strip() == b"[DONE]"


class ReadAhead:
    """A stream's lines, read from the server as it sends them by a task of their own
    (`fill`), for the request's own reader to take at its client's pace. The server's part of
    a request ends when its last line arrives, not when a client that reads slowly has taken
    it: a time-priced server's request pays the time the server spent on it (until
    2026-12-06 the lines were read only as the client took them, so a client that paused its
    reading paid for the pause: 33 times its share in a review's run), and the server's draw
    and load end with its work. At most `limit` bytes wait: past it the filling stops until
    the reader takes some (the server is read at the client's pace again)."""

    def __init__(self, limit: int = AHEAD_BYTES) -> None:
        self.limit = limit
        self.lines: collections.deque[bytes] = collections.deque()
        self.size = 0  # bytes waiting
        self.arrived = asyncio.Event()  # a line waits, or the filling ended
        self.room = asyncio.Event()  # the waiting lines are within the limit
        self.room.set()
        self.ended = False
        self.error: Exception | None = None  # what ended the filling, if it failed

    async def fill(
        self, reads: AsyncIterator[list[bytes]], server_done: Callable[[], None]
    ) -> None:
        """Read the lines of `reads` (those of one read together) to their end (or
        `[DONE]`), then call `server_done`; a failure to read is kept for the reader, raised
        after the lines that came before it."""
        try:
            async for lines in reads:
                self.lines.extend(lines)
                self.size += sum(map(len, lines))
                self.arrived.set()
                if any(b"[DONE]" in line and is_done(line) for line in lines):
                    break  # a server sends nothing after it
                if self.size > self.limit:
                    self.room.clear()
                    await self.room.wait()
        except Exception as exc:  # the reader raises it in its place
            self.error = exc
        finally:
            self.ended = True
            self.arrived.set()
            server_done()

    async def taken(self) -> AsyncGenerator[bytes, None]:
        """The lines in the order they came, then the failure that ended them, if any."""
        while True:
            while self.lines:
                line = self.lines.popleft()
                self.size -= len(line)
                if self.size <= self.limit:
                    self.room.set()
                yield line
            if self.ended:
                if self.error is not None:
                    raise self.error
                return
            self.arrived.clear()
            await self.arrived.wait()


def made_tokens(kind: str, produced: int, unread: Iterable[bytes]) -> int:
    """The tokens a server made for a client that left: the `produced` it took, and those in
    the lines it left unread, counted as the stream counts them, or the server's own count
    where its usage is among them."""
    made = produced
    for raw in unread:
        line = raw.strip()
        if not line.startswith(b"data:") or is_done(line):
            continue
        try:
            obj = json.loads(line[5:])
        except (ValueError, RecursionError):
            continue
        if not isinstance(obj, dict):
            continue
        if isinstance(usage := obj.get("usage"), dict):
            total = answers.usage_count(usage, "completion_tokens")
            if total is not None:
                return max(produced, total)
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            try:
                piece = answers.piece(kind, choice, streamed=True)
            except answers.Malformed:
                continue
            made += piece is not None and answers.carries_token(piece)
    return made
