"""A lean Redis client for the shared state's hot path: the budget scripts a keyed request
runs (EVALSHA), pipelined on one connection.

redis-py's asyncio client spends a large part of a keyed request's CPU per call (a connection
pool with a timeout scope, retries, command packing and a reply parser in Python), and the
budget scripts are the hot path (a slab's refresh, a request's own hold near the end of a
budget, its rate-limit token: wattserve.serve.shared_budgets). This one writes each command
to one connection and resolves the calls' futures in order as replies arrive (Redis answers
in order), with a timer per call. Commands sent in one turn of the event loop go out in one
write (one system call here and one read in Redis, which answers them in one write too).
Everything else (heartbeats, scans, overrides, power leases) stays on redis-py.

Errors are redis-py's, so callers handle both alike: a connection that fails or a reply that
does not come within `op_timeout_s` is `ConnectionError`/`TimeoutError` (the connection is
closed and every call waiting on it fails: their replies can no longer be matched); an error
reply is `ResponseError` (`NoScriptError` for NOSCRIPT: the script is loaded and the call sent
once more, as after Redis restarted empty).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.exceptions import (
    ConnectionError,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

Reply = Any  # int, bytes, None, a list of replies, or a ResponseError


def encode(*parts: str | bytes) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def parse(buf: bytes | bytearray, pos: int = 0) -> tuple[Reply, int] | None:
    """One reply from `buf` at `pos`: (reply, position after it), or None when incomplete.
    Raises ValueError for what is not RESP."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return None
    kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : eol])
    nxt = eol + 2
    if kind == b"+":
        return line, nxt
    if kind == b"-":
        text = line.decode("utf-8", "replace")
        if text.startswith("NOSCRIPT"):
            return NoScriptError(text), nxt
        return ResponseError(text), nxt
    if kind == b":":
        return int(line), nxt
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, nxt
        if len(buf) < nxt + n + 2:
            return None
        return bytes(buf[nxt : nxt + n]), nxt + n + 2
    if kind == b"*":
        n = int(line)
        if n < 0:
            return None, nxt
        items = []
        for _ in range(n):
            got = parse(buf, nxt)
            if got is None:
                return None
            item, nxt = got
            items.append(item)
        return items, nxt
    raise ValueError(f"not a RESP reply: {bytes(buf[pos : pos + 20])!r}")


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiting: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self.out: list[bytes] = []  # commands to send at the end of this turn of the loop
        self.closed = False

    def send(self, command: bytes) -> None:
        if not self.out:
            asyncio.get_running_loop().call_soon(self.flush)
        self.out.append(command)

    def flush(self) -> None:
        out, self.out = self.out, []
        if out and not self.closed and self.transport is not None:
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        pos = 0
        try:
            while self.waiting:
                got = parse(self.buf, pos)
                if got is None:
                    break
                reply, pos = got
                w = self.waiting.popleft()
                if not w.done():
                    w.set_result(reply)
        except ValueError as exc:
            self.fail(ConnectionError(f"Redis sent what is not RESP: {exc}"))
            return
        del self.buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"Redis closed the connection: {exc or 'EOF'}"))

    def fail(self, exc: Exception) -> None:
        self.closed = True
        self.out = []
        if self.transport is not None:
            self.transport.close()
        while self.waiting:
            w = self.waiting.popleft()
            if not w.done():
                w.set_exception(exc)


class Resp:
    """One pipelined connection to the Redis at `url` (redis:// or unix://), made on first
    use and again after a failure."""

    def __init__(self, url: str, op_timeout_s: float, connect_timeout_s: float) -> None:
        parts = urlsplit(url)
        self.unix = parts.path if parts.scheme == "unix" else None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        db = parse_qs(parts.query).get("db", ["0"])[0]
        if parts.scheme == "redis" and parts.path.strip("/"):
            db = parts.path.strip("/")
        self.db = db
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.op_timeout_s = op_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.conn: _Conn | None = None
        self._connecting: asyncio.Lock | None = None

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith(("redis://", "unix://"))

    async def _connection(self) -> _Conn:
        conn = self.conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self.conn is not None and not self.conn.closed:
                return self.conn
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    if self.unix is not None:
                        _, conn = await loop.create_unix_connection(_Conn, self.unix)
                    else:
                        _, conn = await loop.create_connection(_Conn, self.host, self.port)
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(f"cannot connect to Redis: {exc}") from None
            self.conn = conn
            if self.password is not None:
                auth = ("AUTH", self.user, self.password) if self.user else ("AUTH", self.password)
                await self._check(await self.call(*auth))
            if self.db not in ("", "0"):
                await self._check(await self.call("SELECT", self.db))
            return conn

    @staticmethod
    async def _check(reply: Reply) -> None:
        if isinstance(reply, ResponseError):
            raise reply

    async def call(self, *parts: str | bytes) -> Reply:
        """Send one command; its reply (an error reply is returned, not raised)."""
        conn = self.conn if self.conn is not None and not self.conn.closed else None
        if conn is None:
            conn = await self._connection()
        assert conn.transport is not None
        loop = asyncio.get_running_loop()
        w: asyncio.Future[Reply] = loop.create_future()
        conn.waiting.append(w)
        conn.send(encode(*parts))
        timer = loop.call_later(self.op_timeout_s, _expire, conn, w, self.op_timeout_s)
        try:
            return await w  # cancelled (its client left): its reply, when it comes, is dropped
        finally:
            timer.cancel()

    async def evalsha(self, sha: str, body: str, keys: list[str], args: list[str]) -> Reply:
        """Run a script by its SHA1 (loading it when Redis does not have it); raises an error
        reply as ResponseError."""
        reply = await self.call("EVALSHA", sha, str(len(keys)), *keys, *args)
        if isinstance(reply, NoScriptError):
            reply = await self.call("EVAL", body, str(len(keys)), *keys, *args)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def close(self) -> None:
        if self.conn is not None:
            self.conn.fail(ConnectionError("closed"))
            self.conn = None


def _expire(conn: _Conn, w: asyncio.Future[Reply], timeout_s: float) -> None:
    if not w.done():  # the connection is out of step with its replies from here: close it
        conn.fail(TimeoutError(f"Redis did not answer within {timeout_s:g} s"))
