"""Hostile input the gateway refuses at the door, over real sockets (a second tester's report):
deep JSON nesting, a declared body over the limit, transfer codings other than chunked, bodies
that are not JSON by their Content-Type, slow headers, a union field's error, and the
Retry-After of a budget refusal."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving import Server, gateway, raw_request

from wattserve.serve.budgets import HELD_RETRY_S, Charge, Hold, LocalBudgets
from wattserve.serve.guard import MAX_DEPTH
from wattserve.serve.ledger import KeyRecord, Ledger

MODEL = "llama-3.2-1b"
FLEET = f"""\
name: hostile
sites:
  dc: {{kind: datacenter, power_cap_w: 5000}}
deployments:
  g: {{site: dc, model: {MODEL}, hardware: h100-sxm, replicas: 2}}
"""
CHAT = "/v1/chat/completions"
BODY_TIMEOUT_S = 2.0


def body(max_tokens: int = 2, **extra: object) -> dict[str, object]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello"}],
        **extra,
    }


def new_key(db: Path, name: str, **kw: object) -> str:
    ledger = Ledger(db)
    try:
        return ledger.create_key(name, **kw)  # type: ignore[arg-type]
    finally:
        ledger.close()


def error_of(raw: bytes) -> dict[str, object]:
    """The OpenAI error object of a response body (asserting its shape)."""
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    return dict(err)


def exchange(port: int, head: list[bytes], data: bytes = b"") -> tuple[int, bytes, float]:
    """Write a request head (no Content-Length added) and `data`; read the answer:
    (status, body, seconds until it began)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\r\n".join([*head, b"", b""]) + data)
        started = time.monotonic()
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read(), time.monotonic() - started


def nested(levels: int) -> bytes:
    """A JSON value that is `levels` lists deep."""
    return b"[" * levels + b"]" * levels


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A gateway without --require-keys, with an admin key and a 2 s body timeout."""
    tmp = tmp_path_factory.mktemp("hostile")
    admin = new_key(tmp / "hostile.db", "ops", admin=True)
    with gateway(tmp, FLEET, "--body-timeout", str(BODY_TIMEOUT_S), name="hostile") as s:
        yield s, admin


# -- nesting depth ---------------------------------------------------------------------------


def _with_field(value: bytes) -> bytes:
    return json.dumps(body()).encode()[:-1] + b', "x": ' + value + b"}"


@pytest.mark.parametrize("path", [CHAT, "/v1/completions"])
def test_nesting_up_to_the_limit_is_served_and_deeper_answers_400_naming_the_field(
    gw: tuple[Server, str], path: str
) -> None:
    s, _ = gw
    start = body() if path == CHAT else {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    head = json.dumps(start).encode()[:-1] + b', "x": '
    fits = httpx.post(f"{s.url}{path}", content=head + nested(MAX_DEPTH - 1) + b"}")
    assert fits.status_code == 200, fits.text  # the body is level 1: x's lists reach MAX_DEPTH
    # 200,000: orjson before 3.9.15 overflowed the C stack past about 130,000 levels (a
    # segfault that took the gateway down: pyproject's floor)
    for levels in (MAX_DEPTH, 300, 100_000, 200_000):
        r = httpx.post(f"{s.url}{path}", content=head + nested(levels) + b"}")
        assert r.status_code == 400, r.text
        err = error_of(r.content)
        # newer orjson refuses past 1,024 levels while parsing: no field to name then
        named = ("x",) if levels <= 1024 else ("x", None)
        assert err["code"] == "too_deep" and err["param"] in named
        assert f"deeper than {MAX_DEPTH} levels" in str(err["message"])


def test_deep_nesting_is_refused_in_any_body_and_after_decoding(gw: tuple[Server, str]) -> None:
    s, admin = gw
    deep = nested(100_000)
    for path, raw, headers in (
        (CHAT, deep, {}),  # the body itself: no field to name
        (CHAT, gzip.compress(_with_field(deep)), {"Content-Encoding": "gzip"}),
        (CHAT, gzip.compress(nested(400_000)), {"Content-Encoding": "gzip"}),  # 0.8 MB
        (
            "/v1/fleet",
            b'{"action": "drain", "target": ' + deep + b"}",
            {"Authorization": f"Bearer {admin}"},
        ),
        (  # an object a level: the same limit
            CHAT,
            _with_field(b'{"a":' * 100 + b"1" + b"}" * 100),
            {},
        ),
    ):
        r = httpx.post(f"{s.url}{path}", content=raw, headers=headers)
        assert r.status_code == 400 and error_of(r.content)["code"] == "too_deep", (path, r.text)
    # brackets inside strings are not nesting
    r = httpx.post(f"{s.url}{CHAT}", json=body(messages=[{"role": "user", "content": "[" * 5000}]))
    assert r.status_code == 200, r.text


# -- framing: Content-Length, Transfer-Encoding ----------------------------------------------


def test_a_declared_content_length_over_the_limit_answers_413_at_once(
    gw: tuple[Server, str],
) -> None:
    s, _ = gw
    for length in (b"99999999999", str((1 << 20) + 1).encode()):
        head = [f"POST {CHAT} HTTP/1.1".encode(), b"Host: x", b"Content-Length: " + length]
        status, raw, first_s = exchange(s.port, head, b'{"model": ')
        assert status == 413 and error_of(raw)["code"] == "body_too_large"
        assert first_s < BODY_TIMEOUT_S / 2  # not after the body timeout


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate,chunked", b"identity, chunked"])
def test_a_transfer_coding_other_than_chunked_answers_400(
    gw: tuple[Server, str], coding: bytes
) -> None:
    s, _ = gw
    data = json.dumps(body()).encode()
    head = [f"POST {CHAT} HTTP/1.1".encode(), b"Host: x", b"Transfer-Encoding: " + coding]
    status, raw, _ = exchange(s.port, head, _chunked(data))
    assert status == 400, raw
    err = error_of(raw)
    assert err["code"] == "unsupported_transfer_encoding" and err["param"] == "Transfer-Encoding"
    ok = [f"POST {CHAT} HTTP/1.1".encode(), b"Host: x", b"Connection: close"]
    status, raw, _ = exchange(s.port, [*ok, b"Transfer-Encoding: chunked"], _chunked(data))
    assert status == 200, raw


# -- Content-Type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"Content-Type", b"text/plain")], 415),  # a CORS simple request from a web page
        ([(b"Content-Type", b"text/plain;charset=UTF-8")], 415),
        ([(b"Content-Type", b"application/x-www-form-urlencoded")], 415),  # plain curl -d
        ([(b"Content-Type", b"multipart/form-data; boundary=x")], 415),
        ([(b"Content-Type", b";;;===;")], 415),
        ([(b"Content-Type", b"text/json+xml")], 415),
        ([(b"Origin", b"https://evil.example")], 415),  # fetch() of a typeless Blob
        ([(b"Origin", b"null")], 415),
        ([(b"Content-Type", b"application/json")], 200),
        ([(b"Content-Type", b"Application/JSON; charset=utf-8")], 200),
        ([(b"Content-Type", b"application/json"), (b"Origin", b"http://127.0.0.1")], 200),
        ([], 200),  # curl or a script that sends no Content-Type and is no browser
    ],
)
def test_a_body_whose_content_type_is_not_json_answers_415(
    gw: tuple[Server, str], headers: list[tuple[bytes, bytes]], status: int
) -> None:
    s, _ = gw
    got, _, raw = raw_request(s.port, "POST", CHAT, headers, json.dumps(body()).encode())
    assert got == status, raw
    if status == 415:
        err = error_of(raw)
        assert err["code"] == "unsupported_media_type" and err["param"] == "Content-Type"
        assert "application/json" in str(err["message"])


def test_the_admin_endpoint_refuses_a_text_body_too(gw: tuple[Server, str]) -> None:
    s, admin = gw
    r = httpx.post(
        f"{s.url}/v1/fleet",
        content=b'{"action": "undrain", "target": "g"}',
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "text/plain"},
    )
    assert r.status_code == 415 and error_of(r.content)["code"] == "unsupported_media_type"


# -- union fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "extra", "param", "accepts"),
    [
        (CHAT, {"stop": 1}, "stop", "a string or a list of strings, got int"),
        (CHAT, {"stop": ["a", 1]}, "stop", "a string or a list of strings, got list of int"),
        (CHAT, {"stop": {"a": 1}}, "stop", "a string or a list of strings, got dict"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": 1}]},
            "messages.0.content",
            "a string or a list of content parts",
        ),
        (
            "/v1/completions",
            {"prompt": [1, 2]},
            "prompt",
            "a string or a list of one string (token ids are not supported), got list of int",
        ),
        ("/v1/completions", {"prompt": None}, "prompt", "got null"),
    ],
)
def test_a_union_field_is_named_without_pydantic_tags_and_says_what_it_accepts(
    gw: tuple[Server, str], path: str, extra: dict[str, object], param: str, accepts: str
) -> None:
    s, _ = gw
    start = body() if path == CHAT else {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    r = httpx.post(f"{s.url}{path}", json={**start, **extra})
    assert r.status_code == 400, r.text
    err = error_of(r.content)
    assert err["param"] == param and accepts in str(err["message"]), err
    assert not re.search(r"\.(str|list)", str(err["message"]))


# -- slow headers ------------------------------------------------------------------------------


def test_headers_trickled_a_byte_at_a_time_are_dropped_after_the_body_timeout(
    gw: tuple[Server, str],
) -> None:
    s, _ = gw
    with socket.create_connection(("127.0.0.1", s.port), timeout=0.25) as sock:
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nX-A: ".encode())
        started = time.monotonic()
        closed_s = None
        while time.monotonic() - started < 10 * BODY_TIMEOUT_S:
            try:
                sock.sendall(b"a")
                if sock.recv(100) == b"":
                    closed_s = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:  # reset
                closed_s = time.monotonic() - started
                break
    assert closed_s is not None and BODY_TIMEOUT_S * 0.8 < closed_s < BODY_TIMEOUT_S + 2


def test_a_kept_alive_connection_serves_requests_sent_in_time(gw: tuple[Server, str]) -> None:
    s, _ = gw
    with httpx.Client(base_url=s.url) as c:
        for _ in range(3):
            assert c.post(CHAT, json=body()).status_code == 200
            time.sleep(BODY_TIMEOUT_S / 4)


def test_zz_nothing_above_was_an_internal_error(gw: tuple[Server, str]) -> None:
    """Runs last in this module: the shared gateway's log holds no 500 and no traceback."""
    s, _ = gw
    log = (s.db.parent / "hostile.log").read_text()
    assert "internal error" not in log and "Traceback" not in log


# -- Retry-After of a budget refusal --------------------------------------------------------


def _cost_j(reply: httpx.Response) -> float:
    """The joules a budget refusal says the request may cost."""
    found = re.search(r"up to ([0-9.e+-]+) J", reply.json()["error"]["message"])
    assert found, reply.text
    return float(found.group(1))


def test_a_budget_refusal_says_retry_after_only_while_requests_in_flight_hold_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gw.db"
    long_stream = body(3000, stream=True)
    with gateway(tmp_path, FLEET) as s:
        tiny = new_key(db, "tiny", budget_j=1e-12)  # a budget too small for anything
        r = httpx.post(
            f"{s.url}{CHAT}", json=long_stream, headers={"Authorization": f"Bearer {tiny}"}
        )
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
        assert "Retry-After" not in r.headers  # nothing in flight: waiting cannot help
        worst_j = _cost_j(r)
        key = new_key(db, "one-at-a-time", budget_j=1.5 * worst_j)
        auth = {"Authorization": f"Bearer {key}"}
        with (
            httpx.Client(timeout=60) as c,
            c.stream("POST", f"{s.url}{CHAT}", json=long_stream, headers=auth) as first,
        ):
            assert first.status_code == 200
            lines = first.iter_lines()  # kept: a generator dropped closes the stream
            next(lines)  # under way: its worst case is held
            second = httpx.post(f"{s.url}{CHAT}", json=long_stream, headers=auth)
        assert second.status_code == 429, second.text
        assert second.json()["error"]["code"] == "insufficient_quota"
        assert second.headers["Retry-After"] == str(round(HELD_RETRY_S))


def test_local_budgets_retry_after_follows_what_holds_the_budget() -> None:
    """The rule in each case: held room may come back (Retry-After), spent room does not."""
    key = KeyRecord("k", "k", False, 10.0, None, None, 0.0, 0.0)  # $10, nothing spent

    async def run() -> None:
        budgets = LocalBudgets()
        held = await budgets.reserve(key, Charge(6.0, 0.0))
        assert isinstance(held, Hold)
        refused = await budgets.reserve(key, Charge(6.0, 0.0))  # 6 + 6 > 10, 6 <= 10
        assert not isinstance(refused, Hold) and refused.retry_after_s == HELD_RETRY_S
        refused = await budgets.reserve(key, Charge(11.0, 0.0))  # more than the budget
        assert not isinstance(refused, Hold) and refused.retry_after_s is None
        budgets.settle(held, Charge(6.0, 0.0))  # now spent: 4 left, none held
        refused = await budgets.reserve(key, Charge(6.0, 0.0))
        assert not isinstance(refused, Hold) and refused.retry_after_s is None

    asyncio.run(run())


@pytest.mark.parametrize(
    ("version", "refused"),
    [("3.8.3", True), ("3.9.14", True), ("3.9.15", False), ("3.13.0", False), ("4.0", False)],
)
def test_serve_refuses_an_orjson_that_deep_nesting_crashes(version: str, refused: bool) -> None:
    from wattserve.errors import ConfigError
    from wattserve.serve.guard import check_parser

    if refused:
        with pytest.raises(ConfigError, match=r"CVE-2024-27454.*pip install -U orjson"):
            check_parser(version)
    else:
        check_parser(version)
