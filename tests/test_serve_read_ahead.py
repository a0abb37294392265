"""A streamed answer is read from its server as the server sends it, not as the client takes
it: a time-priced server's request pays the server's time, not a slow client's reading time
(session 38's review billed a client that paused its reading 33 times its share), and the
server's load ends with its work. Over real sockets (wattserve's fake OpenAI server), the
gateway's backend in process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serving import fake_upstream

from wattserve.serve.backends.base import Finish, GenRequest, Piece
from wattserve.serve.backends.stream_lines import ReadAhead
from wattserve.serve.backends.upstream import OpenAIBackend

BODY = {"messages": [{"role": "user", "content": "hi"}], "stream": True}


async def _read_slowly(
    backend: OpenAIBackend, body: dict[str, object], pause_s: float, leave_after: int = 0
) -> tuple[list[object], list[int]]:
    """The events of one streamed request, taken `pause_s` apart, and the server's load seen
    after each (the client leaves after `leave_after` events, if given)."""
    events: list[object] = []
    load: list[int] = []
    stream = backend.generate(GenRequest("r", "chat", "m", BODY | body, 8, 2))
    try:
        async for event in stream:
            events.append(event)
            await asyncio.sleep(pause_s)
            load.append(backend.in_flight)
            if leave_after and len(events) == leave_after:
                break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return events, load


def test_a_client_that_reads_slowly_pays_the_servers_time_not_its_own() -> None:
    async def main(port: int) -> tuple[list[object], list[int], float, int]:
        url = f"http://127.0.0.1:{port}/v1"
        backend = OpenAIBackend("u/0", "dc", "m", url, "remote", usd_per_s=1.0)
        await backend.start()
        try:
            began = time.monotonic()
            events, load = await _read_slowly(backend, {"fake_gap_s": 0.1}, 0.8)
            took = time.monotonic() - began
            return events, load, took, backend.in_flight
        finally:
            await backend.stop()

    with fake_upstream() as port:
        events, load, took, after = asyncio.run(main(port))
    assert [type(e) for e in events] == [Piece, Piece, Finish]
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert took > 2.3  # the client took its time
    # the server's three 0.1 s gaps, not the client's 0.8 s pauses (before: 1.9 s of 2.4)
    assert finish.usd is not None and 0.25 < finish.usd < 0.7, finish.usd
    assert load[0] == 0 and after == 0  # the server's part ended while the client read


def test_a_client_that_leaves_mid_stream_stops_the_reading() -> None:
    """A server that never ends its answer (a byte every 0.05 s, no end of line): the client
    leaves after the first piece; the reading task stops and the connection closes."""

    async def main(port: int) -> tuple[list[object], int, int, dict[str, tuple[float, object]]]:
        url = f"http://127.0.0.1:{port}/v1"
        backend = OpenAIBackend("u/0", "dc", "m", url, "remote", usd_per_s=1.0)
        await backend.start()
        try:
            before = len(asyncio.all_tasks())
            events, _ = await _read_slowly(backend, {"fake_trickle_s": 0.05}, 0.3, 1)
            await asyncio.sleep(0.05)
            return events, len(asyncio.all_tasks()) - before, backend.in_flight, backend.ended_early
        finally:
            await backend.stop()

    with fake_upstream() as port:
        events, tasks_left, after, early = asyncio.run(main(port))
    assert len(events) == 1 and isinstance(events[0], Piece)
    assert tasks_left == 0 and after == 0
    usd, _ = early["r"]
    assert 0.2 < usd < 1.0, usd  # its share: until it left


async def _lines(n: int, size: int, read: list[int]) -> AsyncIterator[list[bytes]]:
    for _ in range(n):  # a line a read
        read.append(size)
        yield [b"x" * size]


def test_what_is_read_ahead_is_bounded() -> None:
    """A server that streams without end to a client that does not read: the reading stops at
    the limit (about one line past it), and goes on as the client takes lines."""

    async def main() -> tuple[int, int, list[bytes], bool]:
        ahead = ReadAhead(limit=10_000)
        read: list[int] = []
        ended: list[bool] = []
        task = asyncio.get_running_loop().create_task(
            ahead.fill(_lines(1_000_000, 1000, read), lambda: ended.append(True))
        )
        await asyncio.sleep(0.05)
        held = sum(read)
        taken = ahead.taken()
        got = [await anext(taken) for _ in range(5)]
        await asyncio.sleep(0.05)
        more = sum(read)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return held, more, got, bool(ended)

    held, more, got, ended = asyncio.run(main())
    assert 10_000 < held <= 11_000, held
    assert held < more <= held + 5_000 + 1000, (held, more)
    assert got == [b"x" * 1000] * 5 and ended


def test_a_failure_to_read_comes_after_the_lines_before_it() -> None:
    async def failing() -> AsyncIterator[list[bytes]]:
        yield [b"data: one"]
        raise TimeoutError()

    async def main() -> tuple[list[bytes], type[BaseException] | None]:
        ahead = ReadAhead()
        await ahead.fill(failing(), lambda: None)
        got: list[bytes] = []
        try:
            async for line in ahead.taken():
                got.append(line)
        except TimeoutError as exc:
            return got, type(exc)
        return got, None

    assert asyncio.run(main()) == ([b"data: one"], TimeoutError)


def test_the_servers_part_ends_the_targets_load_before_the_client_has_read() -> None:
    """The request's place in its target's load (and a server's modelled draw) ends when the
    server's part does, not when a slow client has read the answer (a review of this
    session's change: 339 W counted at a site for 5 s of a client's pause, the server idle)."""

    async def main(port: int) -> tuple[list[float], float]:
        url = f"http://127.0.0.1:{port}/v1"
        backend = OpenAIBackend("u/0", "dc", "m", url, "remote", usd_per_s=1.0)
        await backend.start()
        released: list[float] = []
        try:
            body = BODY | {"fake_gap_s": 0.05}
            greq = GenRequest("r", "chat", "m", body, 8, 2)
            greq.released = lambda: released.append(time.monotonic())
            async for _ in backend.generate(greq):
                await asyncio.sleep(0.5)  # the client reads slowly
            return released, time.monotonic()
        finally:
            await backend.stop()

    with fake_upstream() as port:
        released, read = asyncio.run(main(port))
    assert len(released) == 1 and read - released[0] > 0.8, (released, read)


def test_an_emulated_engines_last_step_ends_the_targets_load() -> None:
    """As simulate's pool counts a request until its engine's last step: an emulated
    request's place ends there, not when its client has read the answer."""
    from wattserve.core.fleet import load_fleet
    from wattserve.core.policy import make_policy
    from wattserve.serve.backends.emulated import EmulatedBackend
    from wattserve.serve.router import Router

    fleet = Path(__file__).resolve().parent.parent / "examples" / "fleet-hetero.yaml"
    router = Router(load_fleet(fleet), make_policy("least_loaded"))
    backend = router.backends["h100/0"]
    assert isinstance(backend, EmulatedBackend)

    async def run() -> tuple[int, int]:
        await backend.start()
        released: list[int] = []
        got = 0
        try:
            greq = GenRequest("r", "chat", "llama-3.1-8b", {}, 64, 8)
            greq.released = lambda: released.append(got)
            async for _ in backend.generate(greq):
                got += 1
                if got == 1:
                    await asyncio.sleep(1.0)  # the engine makes the other 7 meanwhile
            return released[0], got
        finally:
            await backend.stop()

    at, got = asyncio.run(run())
    assert at == 1 and got == 9, (at, got)  # released with one of 8 tokens (and the end) read


async def _left_after_three(backend: OpenAIBackend) -> tuple[float, float | None]:
    """A client that reads one token, pauses while the server makes all 2,000, reads two more
    and leaves: what the backend keeps for the gateway to bill (`left_early`)."""
    await backend.start()
    try:
        stream = backend.generate(
            GenRequest("r", "chat", "m", BODY | {"fake_tokens": 2000}, 8, 2000)
        )
        n = 0
        async for _ in stream:
            n += 1
            if n == 1:
                await asyncio.sleep(1.0)  # the server finishes meanwhile
            if n == 3:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return backend.ended_early["r"]
    finally:
        await backend.stop()


def test_a_client_that_leaves_pays_the_energy_of_what_the_server_made() -> None:
    """The server ran ahead of a client that then left: the energy billed is that of the
    tokens the server made (its usage says 2,000), not of the 3 pieces read; and it is there
    for the gateway to read as soon as the stream is closed (it came a turn of the event loop
    later, after the gateway had billed the server's price for the wall time instead)."""

    with fake_upstream() as port:
        url = f"http://127.0.0.1:{port}/v1"
        backend = OpenAIBackend(
            "u/0", "dc", "m", url, "remote", usd_per_s=1.0, estimate_j=lambda p, o: float(o)
        )
        _, energy = asyncio.run(_left_after_three(backend))
    assert energy == 2000.0, energy


def test_what_a_client_left_unread_is_counted_as_the_stream_counts_tokens() -> None:
    """A role chunk, a finish alone or logprobs alone carry no token: a client that left after
    the one token of an answer was billed two (a review of this session's change); the
    server's usage, where it is among the unread lines, is its count."""
    from wattserve.serve.backends.stream_lines import made_tokens

    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + json.dumps({"choices": [choice]}).encode()

    unread = [chunk({}, "stop"), b"", b"data: [DONE]"]
    assert made_tokens("chat", 1, unread) == 1
    role = [chunk({"role": "assistant"}), chunk({"content": "Hi"}), chunk({}, "stop")]
    assert made_tokens("chat", 0, role) == 1
    usage = b'data: {"choices": [], "usage": {"completion_tokens": 7, "prompt_tokens": 3}}'
    assert made_tokens("chat", 2, [chunk({"content": "x"}), usage]) == 7
    huge = b'data: {"choices": [], "usage": {"completion_tokens": 1e300}}'
    assert made_tokens("chat", 2, [huge]) == 2  # not a count: the chunks are


def test_a_token_priced_server_bills_the_tokens_it_made_for_a_client_that_left() -> None:
    """A hosted API bills the tokens it generated: the server ran 2,000 tokens ahead of a
    client that read 3 and left, so the request costs 2,000 output tokens at the server's
    price (it was billed the 3 the client read, at the target's figures: session 39's note)."""
    from wattserve.core.cost import token_usd

    with fake_upstream() as port:
        url = f"http://127.0.0.1:{port}/v1"
        backend = OpenAIBackend(
            "u/0", "dc", "m", url, "remote", usd_per_mtok_input=1.0, usd_per_mtok_output=10.0
        )
        usd, energy = asyncio.run(_left_after_three(backend))
    assert usd == pytest.approx(token_usd(8, 2000, 1.0, 10.0)), usd
    assert energy is None  # a hosted API's energy is not known


def test_a_token_priced_server_that_never_answered_keeps_nothing_to_bill() -> None:
    """A refused connection is no answer: nothing is kept for the gateway (a review found a
    prompt's price kept for it, never read, until evicted)."""
    from wattserve.errors import UpstreamError
    from wattserve.serve.net import free_port

    async def main() -> dict[str, tuple[float, float | None]]:
        url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
        backend = OpenAIBackend(
            "u/0", "dc", "m", url, "remote", usd_per_mtok_input=1.0, usd_per_mtok_output=10.0
        )
        await backend.start()
        try:
            for body in ({}, {"stream": False}):
                stream = backend.generate(GenRequest("r", "chat", "m", BODY | body, 8, 8))
                with pytest.raises(UpstreamError):
                    await anext(stream)  # type: ignore[call-overload]
            return backend.ended_early
        finally:
            await backend.stop()

    assert asyncio.run(main()) == {}
