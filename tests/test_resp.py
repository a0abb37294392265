"""The lean Redis client of the budget scripts (wattserve.serve.resp): the RESP parser on whole,
partial and hostile replies, and the pipelined connection against a real redis-server (replies
matched in order under concurrency and cancellation, NOSCRIPT after a restart, a password and a
database, a server that never answers)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError
from redis_server import RedisServer, redis_server

from wattserve.serve.net import free_port
from wattserve.serve.resp import Resp, encode, parse

SCRIPT = "return {ARGV[1], tonumber(ARGV[2]) + 1, redis.call('INCR', KEYS[1])}"


def test_encode_and_parse() -> None:
    assert encode("GET", b"k\r\n") == b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n"
    whole = b"*4\r\n$3\r\nabc\r\n:-7\r\n$-1\r\n*2\r\n+OK\r\n$0\r\n\r\n"
    assert parse(whole) == ([b"abc", -7, None, [b"OK", b""]], len(whole))
    for i in range(len(whole)):  # every prefix asks for more
        assert parse(whole[:i]) is None
    err, _ = parse(b"-NOSCRIPT No matching script\r\n")  # type: ignore[misc]
    assert isinstance(err, NoScriptError)
    err, _ = parse(b"-ERR wrong\r\n")  # type: ignore[misc]
    assert isinstance(err, ResponseError) and str(err) == "ERR wrong"


@pytest.mark.parametrize("raw", [b"?what\r\n", b":12x\r\n", b"$abc\r\n", b"*z\r\n"])
def test_garbage_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw)


def test_pipelined_calls_get_their_own_replies() -> None:
    async def run(url: str) -> None:
        r = Resp(url, 1.0, 2.0)
        sha = await r.call("SCRIPT", "LOAD", SCRIPT)
        assert isinstance(sha, bytes)
        calls = [r.evalsha(sha.decode(), SCRIPT, ["n"], [f"v{i}", str(i)]) for i in range(200)]
        got = await asyncio.gather(*calls)
        assert [g[:2] for g in got] == [[f"v{i}".encode(), i + 1] for i in range(200)]
        assert sorted(g[2] for g in got) == list(range(1, 201))
        # a call cancelled while others wait: its reply is dropped, the others' stay in step
        tasks = [asyncio.create_task(r.call("ECHO", f"e{i}")) for i in range(50)]
        await asyncio.sleep(0)
        tasks[10].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[10], asyncio.CancelledError)
        assert [d for i, d in enumerate(done) if i != 10] == [
            f"e{i}".encode() for i in range(50) if i != 10
        ]
        with pytest.raises(ResponseError):
            await r.evalsha("0" * 40, "return redis.call('NOSUCH')", [], [])
        r.close()

    with redis_server() as srv:
        asyncio.run(run(srv.url))


def test_a_restarted_redis_gets_the_script_again_and_a_stopped_one_is_an_error() -> None:
    async def run(srv: RedisServer) -> None:
        r = Resp(srv.url, 1.0, 2.0)
        sha = (await r.call("SCRIPT", "LOAD", SCRIPT)).decode()
        assert (await r.evalsha(sha, SCRIPT, ["n"], ["a", "1"]))[2] == 1
        srv.stop()
        with pytest.raises(ConnectionError):
            await r.evalsha(sha, SCRIPT, ["n"], ["a", "1"])
        srv.start()  # empty: no script cached, the counter gone
        assert (await r.evalsha(sha, SCRIPT, ["n"], ["a", "1"]))[2] == 1  # reconnected, EVAL
        r.close()

    server = RedisServer(free_port())
    server.start()
    try:
        asyncio.run(run(server))
    finally:
        server.stop()


def test_password_and_database_from_the_url() -> None:
    async def run(port: int) -> None:
        r = Resp(f"redis://:s%3Acret@127.0.0.1:{port}/3", 1.0, 2.0)
        assert await r.call("SET", "k", "3") == b"OK"
        r0 = Resp(f"redis://:s%3Acret@127.0.0.1:{port}/0", 1.0, 2.0)
        assert await r0.call("GET", "k") is None  # database 3 it was
        bad = Resp(f"redis://:wrong@127.0.0.1:{port}/0", 1.0, 2.0)
        with pytest.raises(ResponseError):
            await bad.call("GET", "k")
        for c in (r, r0, bad):
            c.close()

    server = RedisServer(free_port())
    server.extra = ["--requirepass", "s:cret"]
    server.start()
    try:
        asyncio.run(run(server.port))
    finally:
        server.stop()


def test_a_server_that_never_answers_is_a_timeout_not_a_hang() -> None:
    async def run() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await reader.read()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r = Resp(f"redis://127.0.0.1:{port}/0", 0.2, 1.0)
        calls = [r.call("PING") for _ in range(3)]
        got = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(g, TimeoutError) for g in got), got
        r.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)

    asyncio.run(run())
