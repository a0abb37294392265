"""A small HTTP/1.1 keep-alive client for JSON POSTs to plain-HTTP backends.

The gateway's hot path is one non-streaming call per request; aiohttp's client spends about
0.3 ms of CPU on each, this one a fraction of that: an asyncio Protocol per connection that
collects the answer in one buffer and parses it when it is complete (no stream reader, no
task, a timer instead of a timeout scope). HTTPS, streaming and anything unusual go through
aiohttp instead.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple
from urllib.parse import urlsplit

from wattserve.errors import UpstreamError


class HTTPError(UpstreamError):
    """The connection failed or the answer was not HTTP/1.1 we understand (before any byte of
    an answer reached the client, so the request may be retried elsewhere)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, before_first_byte=True)


class Closed(HTTPError):
    """The server closed the connection before any byte of an answer (a keep-alive connection
    it had already closed: the request may be sent again on a fresh one)."""


# An answer as far as it has arrived: complete (status, body, keep-alive) or None for more.
Parsed = tuple[int, bytes, bool] | None


# The most an answer may take on the wire: a whole OpenAI answer is kilobytes to a few
# megabytes (128k tokens of text with 20 logprobs each stays under it); one that keeps coming
# would hold the gateway's memory until the request's timeout
MAX_ANSWER_BYTES = 64 << 20

# The framing of an answer once its headers are in: (status, body start, Content-Length,
# chunked, keep-alive)
Head = tuple[int, int, int | None, bool, bool]


def parse_head(buf: bytes | bytearray, end: int) -> Head:
    """The status line and the headers before `end` (where the blank line is)."""
    lines = bytes(buf[:end]).split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HTTPError(f"not an HTTP response: {lines[0][:60]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    keep = parts[0] == b"HTTP/1.1"
    for h in lines[1:]:
        name, _, value = h.partition(b":")
        key = name.strip().lower()
        val = value.strip().lower()
        if key == b"content-length":
            if not val.isdigit():
                raise HTTPError(f"bad Content-Length: {val[:40]!r}")
            length = int(val)
        elif key == b"transfer-encoding" and b"chunked" in val:
            chunked = True
        elif key == b"connection":
            keep = val == b"keep-alive" or (keep and val != b"close")
    return status, end + 4, length, chunked, keep


def parse_response(buf: bytes | bytearray, eof: bool, head: Head | None = None) -> Parsed:
    """One HTTP/1.x response from the start of `buf`: (status, body, keep-alive), or None when
    more bytes are needed (`eof`: the peer closed, so a body without a length ends here).
    `head`: its headers, where parse_head has read them. Raises HTTPError for what is not an
    HTTP response."""
    if head is None:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if eof and not buf:
                raise Closed("connection closed")
            if eof:
                raise HTTPError("cut short in the headers")
            return None
        head = parse_head(buf, end)
    status, start, length, chunked, keep = head
    if no_body(status):  # no body, whatever the headers say
        return status, b"", keep and len(buf) == start
    if chunked:
        body = _chunks(buf, start)
        if body is None:
            if eof:
                raise HTTPError("cut short in a chunked body")
            return None
        data, used = body
        return status, data, keep and used == len(buf)
    if length is None:  # the body runs to the end of the connection
        return (status, bytes(buf[start:]), False) if eof else None
    if len(buf) - start < length:
        if eof:
            raise HTTPError("cut short in the body")
        return None
    return status, bytes(buf[start : start + length]), keep and len(buf) == start + length


def no_body(status: int) -> bool:
    return status in (204, 304) or 100 <= status < 200


def _chunk_head(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """The chunk whose size line starts at `pos`: (its size, where its data starts), or None
    while the line is incomplete. Raises HTTPError for a size that is not hexadecimal."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return None
    size_text = bytes(buf[pos:eol]).split(b";")[0].strip()
    try:
        return int(size_text, 16), eol + 2
    except ValueError:
        raise HTTPError(f"bad chunk size: {size_text[:20]!r}") from None


def _chunks(buf: bytes | bytearray, pos: int) -> tuple[bytes, int] | None:
    """A chunked body from `pos`: (data, bytes used up to its end), or None if incomplete."""
    out = bytearray()
    while True:
        head = _chunk_head(buf, pos)
        if head is None:
            return None
        size, pos = head
        if size == 0:  # then optional trailers, up to an empty line
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(out), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


class _Conn(asyncio.Protocol):
    """One keep-alive connection: a request at a time, its answer gathered in `buf`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.closed = False
        self.head: Head | None = None  # the answer's framing, once its headers are in
        self.walked = 0  # how far the headers were read; then where a chunk's size line starts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._check(eof=False)

    def eof_received(self) -> bool:
        self._check(eof=True)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._check(eof=True)

    def _check(self, eof: bool) -> None:
        w = self.waiter
        if w is None or w.done():
            return
        try:
            if len(self.buf) > MAX_ANSWER_BYTES:
                raise HTTPError(f"an answer of more than {MAX_ANSWER_BYTES >> 20} MiB")
            whole = eof or self._may_be_whole()
            done = parse_response(self.buf, eof, self.head) if whole else None
        except HTTPError as exc:
            w.set_exception(exc)
            return
        if done is not None:
            w.set_result(done)

    def _may_be_whole(self) -> bool:
        """Whether the answer may be complete, walking only what arrived since the last call:
        parsing the whole buffer at every read took quadratic time (4 MB in 16-byte chunks
        held the gateway's one event loop for 2 s). parse_response decides, and raises."""
        buf = self.buf
        if self.head is None:  # `walked`: how far the headers' end was looked for
            end = buf.find(b"\r\n\r\n", max(0, self.walked - 3))
            if end < 0:
                self.walked = len(buf)
                return False
            self.head = parse_head(buf, end)
            self.walked = self.head[1]
        status, start, length, chunked, _ = self.head
        if no_body(status):
            return True
        if not chunked:
            return length is not None and len(buf) - start >= length
        while True:  # the chunks' sizes, up to the last one (parse_response reads them all)
            head = _chunk_head(buf, self.walked)  # a bad size raises, as parse_response would
            if head is None:
                return False
            size, data = head
            if size == 0:
                return True
            if len(buf) < data + size + 2:
                return False
            self.walked = data + size + 2

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes, timeout_s: float) -> tuple[int, bytes, bool]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.buf.clear()
        self.head, self.walked = None, 0
        w: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        self.waiter = w
        timer = loop.call_later(timeout_s, _expire, w, timeout_s)
        try:
            self.transport.write(request)
            return await w
        except BaseException:
            self.close()  # cancelled or failed mid-answer: this connection's state is unknown
            raise
        finally:
            timer.cancel()
            self.waiter = None


class Answer(NamedTuple):
    """A whole answer: its status, body, and head (status line and headers, as sent)."""

    status: int
    body: bytes
    head: bytes

    def header(self, name: str) -> str | None:
        """The first header called `name` (any case), or None."""
        want = name.lower().encode()
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == want:
                return value.strip().decode("latin-1")
        return None


def _expire(w: asyncio.Future[tuple[int, bytes, bool]], timeout_s: float) -> None:
    if not w.done():
        w.set_exception(HTTPError(f"no answer within {timeout_s:g} s"))


class Http1Pool:
    """Keep-alive connections to one host:port."""

    def __init__(self, base_url: str, limit: int = 256) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError("Http1Pool speaks plain http only")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.idle: list[_Conn] = []
        self.limit = limit

    async def close(self) -> None:
        for c in self.idle:
            c.close()
        self.idle.clear()

    async def _connect(self, timeout_s: float) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(_Conn, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise HTTPError(f"cannot connect: {exc}") from None
        return conn

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> tuple[int, bytes]:
        """POST `body` to prefix + path; returns (status, response body)."""
        answer = await self.send(path, body, headers, timeout_s)
        return answer.status, answer.body

    async def send(
        self, path: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> Answer:
        """POST `body` to prefix + path; returns the answer with its headers. A connection
        the server closed while idle is retried once on a fresh one."""
        head = [
            f"POST {self.prefix}{path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
        ]
        for k, v in headers.items():
            if any(c in k or c in v for c in "\r\n\0"):  # a header of its own, or a cut head
                raise HTTPError(f"header {k[:40]!r} carries a line break or NUL")
            head.append(f"{k}: {v}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for attempt in (0, 1):
            conn = None
            while self.idle and conn is None:
                c = self.idle.pop()
                conn = None if c.closed else c
            reused = conn is not None
            if conn is None:
                conn = await self._connect(timeout_s)
            try:
                status, data, keep = await conn.exchange(request, timeout_s)
            except Closed:
                if reused and attempt == 0:
                    continue  # a stale keep-alive connection: once more on a fresh one
                raise
            end = conn.buf.find(b"\r\n\r\n")  # the answer's head, before the buffer is reused
            got = bytes(conn.buf[: end if end >= 0 else 0])
            if keep and not conn.closed and len(self.idle) < self.limit:
                self.idle.append(conn)
            else:
                conn.close()
            return Answer(status, data, got)
        raise HTTPError("no connection")
