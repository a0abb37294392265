"""Optional OpenAI fields sent as JSON null, and the wording of the 400s a body gets, over real
sockets. OpenAI reads `"stream": null`, `"n": null` (any optional field set to null) as the
field not given; the gateway answered 400. Its 400s said "Value error, " (pydantic's prefix)
and, for a body that is not UTF-8, named Python's surrogates instead of the byte at fault."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving import Server, raw_request, upstream_gateway

MODEL = "llama-3.2-1b"
UPSTREAM = "qwen2.5-0.5b"  # served by the fake OpenAI server, which refuses nulls
CHAT = "/v1/chat/completions"
# every optional field of the gateway's schema (serve/schema.py), each sent as null
OPTIONAL = (
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "stop",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fields")
    with upstream_gateway(tmp, "fields", {"u": UPSTREAM}, {"g": MODEL}) as s:
        yield s


def chat(model: str = MODEL, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def error_of(r: httpx.Response) -> dict[str, object]:
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    return dict(err)


@pytest.mark.parametrize("model", [MODEL, UPSTREAM])
@pytest.mark.parametrize("field", OPTIONAL)
def test_an_optional_field_sent_as_null_is_not_given(gw: Server, model: str, field: str) -> None:
    r = httpx.post(f"{gw.url}{CHAT}", json=chat(model, **{field: None}), timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()  # stream: null is no stream: one JSON answer
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("model", [MODEL, UPSTREAM])
def test_every_optional_field_null_at_once_and_in_a_completion(gw: Server, model: str) -> None:
    nulls = dict.fromkeys(OPTIONAL)
    r = httpx.post(f"{gw.url}{CHAT}", json=chat(model, **nulls), timeout=30)
    assert r.status_code == 200, r.text
    if model == MODEL:  # the fake server has no /v1/completions
        body = {"model": model, "prompt": "hi", "best_of": None, **nulls}
        r = httpx.post(f"{gw.url}/v1/completions", json=body, timeout=30)
        assert r.status_code == 200 and r.json()["object"] == "text_completion", r.text


@pytest.mark.parametrize("model", [MODEL, UPSTREAM])
def test_include_usage_null_is_false(gw: Server, model: str) -> None:
    body = chat(model, stream=True, stream_options={"include_usage": None}, max_tokens=3)
    with httpx.stream("POST", f"{gw.url}{CHAT}", json=body, timeout=30) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert not any("usage" in json.loads(e) for e in events[:-1])


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("stream", "yes", "got str"),
        ("n", "1", "got str"),
        ("n", 2, "less than or equal to 1"),
        ("max_tokens", True, "got bool"),
        ("temperature", "0.5", "got str"),
        ("stop", 3, "a string or a list of strings"),
        ("seed", 1.5, "got float"),
        ("user", 7, "got int"),
        ("stream_options", "x", "got str"),
    ],
)
def test_a_wrong_type_still_answers_400_naming_the_field(
    gw: Server, field: str, value: object, says: str
) -> None:
    r = httpx.post(f"{gw.url}{CHAT}", json=chat(**{field: value}), timeout=30)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == field and says in str(err["message"]), err


@pytest.mark.parametrize(
    ("path", "extra", "param", "message"),
    [
        (CHAT, {"stop": ["a"] * 5}, "stop", "stop: at most 4 stop sequences, got 5"),
        (
            CHAT,
            {"stream_options": {"include_usage": True}},
            "stream_options",
            "stream_options: only allowed with stream: true",
        ),
        (
            "/v1/completions",
            {"prompt": ["a", "b"]},
            "prompt",
            "prompt: batched prompts are not supported: send one prompt per request",
        ),
    ],
)
def test_a_validator_s_400_has_no_pydantic_prefix(
    gw: Server, path: str, extra: dict[str, object], param: str, message: str
) -> None:
    start = chat() if path == CHAT else {"model": MODEL, "prompt": "hi"}
    r = httpx.post(f"{gw.url}{path}", json={**start, **extra}, timeout=30)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == param and err["message"] == message, err


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b'{"model": "m\xff"}', 12),  # a byte no UTF-8 text holds
        (b'{"a": "\xed\xa0\x80"}', 7),  # a surrogate, encoded
        (b'{"a": "ok", "b": "x\xc3"}', 19),  # cut in the middle of a character
    ],
)
def test_a_body_that_is_not_utf8_names_the_byte(gw: Server, raw: bytes, offset: int) -> None:
    status, _, reply = raw_request(
        gw.port, "POST", CHAT, [(b"Content-Type", b"application/json")], raw
    )
    assert status == 400
    err = json.loads(reply)["error"]
    assert err["message"] == f"the body is not valid UTF-8 (byte {offset}: 0x{raw[offset]:02x})"
    assert err["code"] == "invalid_json"
    assert "surrogate" not in err["message"] and "\\u" not in err["message"]


def test_min_tokens_without_max_tokens_raises_the_default_limit(gw: Server) -> None:
    """Without max_tokens the gateway's limit is 256 tokens; a min_tokens above it was taken
    and the answer cut at 256 (a bench asking for 300 got 256). The limit is now at least
    min_tokens, as vLLM's default (the window less the prompt) would be."""
    body = chat(MODEL, min_tokens=300)
    r = httpx.post(f"{gw.url}{CHAT}", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 300
    # above the limit the client set, under whichever name it used (the message said
    # max_tokens for max_completion_tokens)
    for limit in ("max_tokens", "max_completion_tokens"):
        r = httpx.post(f"{gw.url}{CHAT}", json=chat(MODEL, min_tokens=40) | {limit: 10}, timeout=60)
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "min_tokens", r.text
        assert f"at most {limit} (10)" in err["message"], err


def test_zz_nothing_above_was_an_internal_error(gw: Server) -> None:
    log = (Path(gw.db).parent / "fields.log").read_text()
    assert "internal error" not in log and "Traceback" not in log
