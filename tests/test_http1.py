"""The gateway's small HTTP/1.1 client (wattserve.serve.backends.http1): the response parser on
whole and partial answers, and the pool against real loopback servers that answer in pieces,
close idle connections, send garbage or nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from wattserve.serve.backends.http1 import Closed, Http1Pool, HTTPError, parse_response

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: t\r\n\r\n"
)


def test_whole_answers() -> None:
    assert parse_response(OK, eof=False) == (200, b"hello", True)
    assert parse_response(CHUNKED, eof=False) == (200, b"hello", True)
    http10 = b"HTTP/1.0 404 Not Found\r\nContent-Length: 2\r\n\r\nno"
    assert parse_response(http10, eof=False) == (404, b"no", False)
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    assert parse_response(close, eof=False) == (200, b"ok", False)
    assert parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", eof=False) == (204, b"", True)
    to_eof = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    assert parse_response(to_eof, eof=False) is None
    assert parse_response(to_eof, eof=True) == (200, b"until the end", False)


def test_every_prefix_of_an_answer_asks_for_more() -> None:
    for whole in (OK, CHUNKED):
        for i in range(len(whole)):
            assert parse_response(whole[:i], eof=False) is None, whole[:i]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "connection closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "cut short in the headers"),
        (OK[:-2], "cut short in the body"),
        (CHUNKED[:-9], "cut short in a chunked body"),
    ],
)
def test_answers_cut_short_by_a_close(raw: bytes, message: str) -> None:
    with pytest.raises(HTTPError, match=message):
        parse_response(raw, eof=True)


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1e9\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_garbage_is_an_http_error(raw: bytes) -> None:
    with pytest.raises(HTTPError):
        parse_response(raw, eof=False)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def with_server(handler: Handler, body: Callable[[Http1Pool], Awaitable[None]]) -> None:
    tasks: set[asyncio.Task[None]] = set()

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http1Pool(f"http://127.0.0.1:{port}/v1")
    try:
        await body(pool)
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
        for t in tasks:  # the handlers end (and close their sockets) before the loop does
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.01)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


def test_keep_alive_answers_in_pieces_and_a_stale_connection_retried() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        for i in range(0, len(CHUNKED), 7):  # the answer in small pieces
            writer.write(CHUNKED[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        if len(seen) == 1:  # keep the first connection open for a second request
            seen.append(await read_request(reader))
            writer.write(OK)
            await writer.drain()
        writer.close()  # then close it while the pool holds it idle

    async def body(pool: Http1Pool) -> None:
        assert await pool.post("/chat", b"{}", {"X-A": "1"}, 5) == (200, b"hello")
        assert await pool.post("/chat", b"{}", {}, 5) == (200, b"hello")
        await asyncio.sleep(0.05)  # the server has closed the idle connection
        assert await pool.post("/chat", b"[1]", {}, 5) == (200, b"hello")  # on a fresh one
        assert seen[0].startswith(b"POST /v1/chat HTTP/1.1\r\n") and b"X-A: 1" in seen[0]
        assert seen[-1].endswith(b"[1]")

    asyncio.run(with_server(handler, body))


def test_a_server_that_closes_or_stalls_is_an_error_not_a_hang() -> None:
    async def closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK[:20])
        await reader.read()  # until the client gives up and closes
        writer.close()

    async def closed(pool: Http1Pool) -> None:
        with pytest.raises(Closed):
            await pool.post("/chat", b"{}", {}, 5)

    async def stalled(pool: Http1Pool) -> None:
        with pytest.raises(HTTPError, match=r"no answer within 0\.2 s"):
            await pool.post("/chat", b"{}", {}, 0.2)
        assert not pool.idle  # that connection is not reused

    asyncio.run(with_server(closes, closed))
    asyncio.run(with_server(stalls, stalled))

    async def refused() -> None:
        pool = Http1Pool("http://127.0.0.1:9/v1")  # nothing listens on the discard port
        with pytest.raises(HTTPError, match="cannot connect"):
            await pool.post("/chat", b"{}", {}, 2)

    asyncio.run(refused())


def test_an_answer_in_many_pieces_is_walked_once_and_a_huge_one_refused() -> None:
    """The connection walks a chunked body's sizes as they arrive and parses the answer once
    it may be whole (parsing the whole buffer at every read was quadratic: 4 MB in 16-byte
    chunks held the event loop for 2 s); a bad size after good chunks is still an error; an
    answer past MAX_ANSWER_BYTES is refused, not gathered until the timeout."""
    from wattserve.serve.backends.http1 import MAX_ANSWER_BYTES

    pieces = [b"%x;e=1\r\n%s\r\n" % (n, b"y" * n) for n in range(1, 200)]
    body = b"".join(b"y" * n for n in range(1, 200))

    def chunked(tail: bytes) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for p in pieces:
                writer.write(p)
                await writer.drain()
            writer.write(tail)
            await writer.drain()
            await reader.read()

        return handler

    async def whole(pool: Http1Pool) -> None:
        assert await pool.post("/chat", b"{}", {}, 5) == (200, body)

    async def broken(pool: Http1Pool) -> None:
        with pytest.raises(HTTPError, match="bad chunk size"):
            await pool.post("/chat", b"{}", {}, 5)

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * MAX_ANSWER_BYTES))
        with contextlib.suppress(ConnectionError):
            for _ in range(2 * MAX_ANSWER_BYTES >> 20):
                writer.write(b"z" * (1 << 20))
                await writer.drain()

    async def refused(pool: Http1Pool) -> None:
        with pytest.raises(HTTPError, match="an answer of more than 64 MiB"):
            await pool.post("/chat", b"{}", {}, 30)

    asyncio.run(with_server(chunked(b"0\r\nX-T: 1\r\n\r\n"), whole))
    asyncio.run(with_server(chunked(b"zz\r\n"), broken))
    asyncio.run(with_server(huge, refused))
