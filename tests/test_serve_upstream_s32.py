"""An OpenAI-compatible upstream's answers through the gateway (session 32, probe 4's fixes),
over real sockets: what a server sends in tool_calls and logprobs, garbage included; its
errors' fields; its 429s (routed around, then answered 429 with its Retry-After); and an
ejected server's cooldown, which a health probe no longer cuts short.

The upstreams are scripted servers in this process (aiohttp on real sockets): a request's
`script` field says what the choice (or each streamed chunk's choice) is, as sent."""

from __future__ import annotations

import email.utils
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from serving import Server, ThreadedApp, gateway, metric

MODEL = "llama-3.1-8b"
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


class Scripted(ThreadedApp):
    """An OpenAI-compatible server whose answer is the request's `script`: a choice (whole)
    or a list of choices (one chunk each, streamed). `limited`: a Retry-After value to answer
    429 with (None: answer). `status`: a status other than 200 to answer with."""

    def __init__(self) -> None:
        super().__init__(
            [
                web.post("/v1/chat/completions", self._answer),
                web.get("/v1/models", self._models),
            ]
        )
        self.limited: str | None = None
        self.status = 200
        self.seen = 0

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen += 1
        if self.limited is not None:
            err = {"message": "slow down", "type": "requests", "param": None, "code": "rl"}
            headers = {"Retry-After": self.limited}
            return web.json_response({"error": err}, status=429, headers=headers)
        if self.status != 200:
            return web.json_response(body.get("error_body", {}), status=self.status)
        script = body.get("script", {"index": 0, "message": {"role": "assistant", "content": "ok"}})
        if isinstance(script, dict) and "raw_deep" in script:  # past what json can write
            n = script["raw_deep"]
            raw = b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "logprobs": '
            return web.Response(
                body=raw + b"[" * n + b"]" * n + b"}]}", content_type="application/json"
            )
        if isinstance(script, dict) and "deep" in script:  # deeper than the gateway takes in
            script = message(content="ok") | {"logprobs": {"c": _nested(script["deep"])}}
        head = {"id": "x", "created": 1, "model": body.get("model")}
        if not body.get("stream"):
            choice = {"finish_reason": "stop", **script} if isinstance(script, dict) else script
            answer = {**head, "object": "chat.completion", "choices": [choice], "usage": USAGE}
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for choice in script:
            chunk = {**head, "object": "chat.completion.chunk", "choices": [choice]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        usage = {**head, "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
        await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})


def _nested(depth: int) -> Any:
    return json.loads("[" * depth + "]" * depth)


def fleet(*ups: Scripted) -> str:
    lines = [
        f"  up{i}: {{site: dc, model: {MODEL}, hardware: h100-sxm, "
        f"backend: {{kind: openai, url: 'http://127.0.0.1:{u.port}/v1'}}}}\n"
        for i, u in enumerate(ups)
    ]
    return "sites:\n  dc: {kind: datacenter}\ndeployments:\n" + "".join(lines)


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Scripted]]:
    tmp = tmp_path_factory.mktemp("s32up")
    with Scripted() as up, gateway(tmp, fleet(up)) as s:
        yield s, up


def post(s: Server, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{s.url}{CHAT}", json={"model": MODEL, "messages": HI} | body, timeout=30)


def sse(s: Server, body: dict[str, Any]) -> list[Any]:
    ask = {"model": MODEL, "messages": HI, "stream": True} | body
    with httpx.stream("POST", f"{s.url}{CHAT}", json=ask, timeout=30) as r:
        raw = r.read().decode()
    return [json.loads(b[6:]) for b in raw.strip().split("\n\n") if b[6:] != "[DONE]"]


def errors_recorded(s: Server, want: int = 0) -> int:
    """The ledger's `error` rows, once there are `want` (within 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        con = sqlite3.connect(s.db)
        n = int(con.execute("SELECT COUNT(*) FROM requests WHERE status = 'error'").fetchone()[0])
        con.close()
        if n >= want or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def message(**fields: Any) -> dict[str, Any]:
    return {"index": 0, "message": {"role": "assistant", **fields}}


def delta(finish: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"index": 0, "delta": fields, "finish_reason": finish}


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}


def test_tool_calls_and_logprobs_pass_through_in_openai_s_shape(
    one: tuple[Server, Scripted],
) -> None:
    s, _ = one
    # arguments sent as an object (some servers do) reach the client as its JSON text, and
    # fields OpenAI has not are left out
    odd = {"id": "c2", "type": "function", "extra": 1, "function": {"name": "g", "arguments": {}}}
    r = post(s, {"script": message(content=None, tool_calls=[CALL, odd])})
    got = r.json()["choices"][0]["message"]
    assert got["content"] is None and got["tool_calls"][0] == CALL, got
    assert got["tool_calls"][1] == {
        "id": "c2",
        "type": "function",
        "function": {"name": "g", "arguments": "{}"},
    }
    usage = r.json()["usage"]
    assert (usage["completion_tokens"], usage["wattserve"]["completion_tokens_estimated"]) == (
        4,
        False,
    )
    # streamed: the fragments in order, the first chunk with the role, the finish passed on
    frag = [
        delta(
            role="assistant",
            content=None,
            tool_calls=[{**CALL, "index": 0} | {"function": {"name": "f", "arguments": ""}}],
        ),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"a"'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}]),
        delta("tool_calls"),
    ]
    chunks = [c for c in sse(s, {"script": frag}) if c["choices"]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant" and deltas[0]["content"] is None
    pieces = [tc["function"].get("arguments", "") for d in deltas for tc in d.get("tool_calls", [])]
    assert "".join(pieces) == '{"a": 1}' and deltas[0]["tool_calls"][0]["id"] == "c1"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    lp = {"content": [{"token": "ok", "logprob": -0.5, "bytes": None, "top_logprobs": []}]}
    r = post(s, {"script": message(content="ok") | {"logprobs": lp}})
    assert r.json()["choices"][0]["logprobs"] == lp


GARBAGE_WHOLE = [
    message(content=None, tool_calls="call me"),
    message(content=None, tool_calls=[1, 2]),
    message(content=None, tool_calls=[{"id": "c", "type": "function", "function": "f()"}]),
    message(content=None, tool_calls=[{"id": 7, "type": "function", "function": {"name": "f"}}]),
    message(content="ok") | {"logprobs": "very likely"},
    message(content="ok") | {"logprobs": [1, 2]},
    {"deep": 300},  # past orjson's 255 levels: the gateway could not write it (a 500)
    {"deep": 20},
    {"index": 0, "message": "not an object"},
    "not a choice",
]


def test_an_answer_nested_past_the_parsers_stack_is_a_502_not_a_crash(
    one: tuple[Server, Scripted],
) -> None:
    """orjson before 3.9.15 overflowed the C stack on 200,000 levels: the gateway died."""
    s, _ = one
    r = post(s, {"script": {"raw_deep": 200_000}})
    assert r.status_code == 502, r.text
    assert "not a JSON completion" in r.json()["error"]["message"]
    assert httpx.get(f"{s.url}/health", timeout=5).status_code == 200
    assert post(s, {}).status_code == 200


@pytest.mark.parametrize("script", GARBAGE_WHOLE)
def test_garbage_in_a_whole_answer_is_a_502_and_recorded(
    one: tuple[Server, Scripted], script: Any
) -> None:
    s, _ = one
    before = errors_recorded(s)
    r = post(s, {"script": script})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "backend_error" and "OpenAI's shape" in err["message"], err
    assert "very likely" not in err["message"]  # the body goes to the log, not the client
    assert errors_recorded(s, before + 1) == before + 1
    assert post(s, {}).status_code == 200  # a good answer: the server stays in rotation


GARBAGE_CHUNKS = [
    [delta(tool_calls=[{"function": {"arguments": "x"}}])],  # a fragment without its index
    [delta(tool_calls=[{"index": "0", "function": {"arguments": "x"}}])],
    [delta(tool_calls={"index": 0})],
    [{"index": 0, "delta": {"content": "x"}, "logprobs": 5}],
]


@pytest.mark.parametrize("after_a_token", [False, True])
@pytest.mark.parametrize("garbage", GARBAGE_CHUNKS)
def test_garbage_in_a_stream_ends_it_as_a_failure(
    one: tuple[Server, Scripted], garbage: list[Any], after_a_token: bool
) -> None:
    s, _ = one
    before = errors_recorded(s)
    script = ([delta(role="assistant", content="fine")] if after_a_token else []) + garbage
    ask = {"model": MODEL, "messages": HI, "stream": True, "script": [*script, delta("stop")]}
    with httpx.stream("POST", f"{s.url}{CHAT}", json=ask, timeout=30) as r:
        raw = r.read().decode()
        status = r.status_code
    if after_a_token:  # the client's stream ends with an error event, no [DONE]
        assert status == 200 and "[DONE]" not in raw and '"backend_error"' in raw, raw
        assert '"content":"fine"' in raw
    else:
        assert status == 502 and json.loads(raw)["error"]["code"] == "backend_error", raw
    assert errors_recorded(s, before + 1) == before + 1
    assert post(s, {}).status_code == 200


def test_an_upstream_s_4xx_keeps_its_type_param_and_code(one: tuple[Server, Scripted]) -> None:
    s, up = one
    up.status = 404
    try:
        openai_shape = {
            "error": {
                "message": "The model `x` does not exist",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
        err = post(s, {"error_body": openai_shape}).json()["error"]
        assert "does not exist" in err["message"] and err["message"].startswith("up0/0")
        assert (err["type"], err["param"], err["code"]) == (
            "invalid_request_error",
            "model",
            "model_not_found",
        )
        # vLLM's bare object with an integer code: the code is no string, so it is not one
        vllm = {"object": "error", "message": "bad", "type": "BadRequestError", "code": 404}
        err = post(s, {"error_body": vllm}).json()["error"]
        assert (err["type"], err["param"], err["code"]) == (
            "BadRequestError",
            None,
            "backend_error",
        )
        err = post(s, {"error_body": {"error": {"type": ["x"], "param": {"a": 1}}}}).json()["error"]
        assert err["type"] == "invalid_request_error" and err["param"] is None
    finally:
        up.status = 200
    assert metric(s.url, "wattserve_requests_total", 'status="500"') == 0


def test_a_rate_limited_upstream_is_routed_around_then_answered_429(tmp_path: Path) -> None:
    with Scripted() as a, Scripted() as b, gateway(tmp_path, fleet(a, b)) as s:
        a.limited = "30"
        served = [post(s, {"max_tokens": 2}) for _ in range(6)]
        assert all(r.status_code == 200 for r in served), [r.text for r in served]
        assert a.seen <= 1  # one 429 at most: then it is left alone for its 30 s
        assert all(r.json()["usage"]["wattserve"]["backend"] == "up1/0" for r in served[1:])
        # both limited: a 429 with the server's wait (an HTTP date 20 s ahead here)
        when = email.utils.formatdate(time.time() + 20, usegmt=True)
        b.limited = when
        r = post(s, {"max_tokens": 2})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert 15 <= int(r.headers["retry-after"]) <= 30, r.headers
        fleet_state = httpx.get(f"{s.url}/v1/fleet", timeout=10).json()["targets"]
        assert not fleet_state["up0"]["healthy"] and not fleet_state["up1"]["healthy"]


def test_an_ejected_server_keeps_its_cooldown_through_health_probes(tmp_path: Path) -> None:
    """docs/serve.md: out of rotation for 10 s (router.COOLDOWN_S). The health probe every
    5 s answered 200 (the server's /models works while it refuses requests with 503) and put
    it back after 5 s at most."""
    with Scripted() as up, gateway(tmp_path, fleet(up)) as s:
        up.status = 503
        ejected = time.monotonic()
        assert post(s, {}).status_code in (502, 503)
        up.status = 200
        while time.monotonic() - ejected < 8.5:  # past a probe, inside the cooldown
            assert post(s, {}).status_code == 503
            time.sleep(1.0)
        time.sleep(max(0.0, 10.5 - (time.monotonic() - ejected)))
        assert post(s, {}).status_code == 200
