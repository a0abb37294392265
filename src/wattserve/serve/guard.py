"""What stands between a socket and the gateway's handlers: OpenAI-style error responses,
header and body checks, and one rule for all of them, that no input answers 5xx.

- a header value that is not UTF-8: 400 (before any handler echoes or hashes it);
- a declared Content-Length over the body limit: 413 at once, without waiting for the body;
- a Transfer-Encoding other than plain `chunked` (`gzip, chunked`): 400, and the connection is
  closed, since a proxy in front may have framed the body otherwise (request smuggling);
- a JSON body whose Content-Type is not JSON: 415. A CORS "simple request" from a web page
  (text/plain, a form, or a typeless blob, which has no Content-Type but an Origin header)
  must not reach a gateway that needs no key; curl and SDKs that send no Content-Type and no
  Origin are read as JSON;
- a JSON body nested deeper than MAX_DEPTH (64): 400 before it is validated (forwarding it to
  an upstream would fail: orjson writes at most 255 levels, the json module about 1,000);
- `Content-Encoding` other than one of identity, gzip or deflate: 415 (also when sent twice:
  codings applied in turn are not decoded). Bodies are decoded here, not by
  aiohttp (whose decoder fails outside any handler): the size limit applies to the body as sent
  and again as decoded, and decoding stops at the limit, so a compressed bomb answers 413
  without being inflated; a body that does not decode: 400;
- a body not received within the body timeout: 408 (and the connection is closed);
- a request that is not valid HTTP (a bad header character, a duplicate Content-Type) never
  reaches the gateway: aiohttp's parser answers 400 in plain text, and ParserNoise logs it in
  one line instead of a traceback;
- every error the gateway answers itself is counted in `wattserve_rejected_total` by status
  and reason (the error's code, or its type).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from wattserve.errors import ConfigError
from wattserve.serve.metrics import Metrics
from wattserve.serve.schema import error_body

log = logging.getLogger("wattserve.serve")

ENCODINGS = ("", "identity", "gzip", "deflate", "x-gzip")
# JSON nesting a body may have: no OpenAI request nests past ~10 (a tool's JSON Schema perhaps
# 20), and the forwarded body (one level more) stays far under orjson's 255.
MAX_DEPTH = 64
MAX_RETRY_AFTER_S = 86400  # a day: the longest Retry-After the gateway sends
# requests served at once (serve's --max-in-flight); more get 503 with Retry-After
MAX_IN_FLIGHT = 1024
REASON = "wattserve_reason"  # where an error response keeps its reason for the metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# the first orjson whose loads stops at 1,024 levels (CVE-2024-27454): older ones overflow the
# C stack on a body of 140,000 brackets (310 bytes gzipped), and the gateway dies with it
ORJSON_FLOOR = (3, 9, 15)


def check_parser(version: str = orjson.__version__) -> None:
    """Refuse to serve with an orjson that a deep body crashes (pip may keep an old one that
    another package pinned)."""
    parts = version.split(".")[:3]
    if all(p.isdigit() for p in parts) and tuple(int(p) for p in parts) < ORJSON_FLOOR:
        raise ConfigError(
            f"orjson {version} crashes on deeply nested JSON (CVE-2024-27454); the gateway "
            f"needs {'.'.join(map(str, ORJSON_FLOOR))} or later: pip install -U orjson"
        )


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    *,  # param and code by name: one passed in the other's place went unnoticed
    param: str | None = None,
    code: str | None = None,
    retry_after_s: float | None = None,
) -> web.Response:
    """An OpenAI-style error response."""
    headers = {"Retry-After": _retry_after(retry_after_s)} if retry_after_s else None
    resp = web.json_response(
        error_body(message, type_, param, code), status=status, headers=headers, dumps=_dumps
    )
    resp[REASON] = code or type_
    return resp


def _retry_after(seconds: float) -> str:
    """Retry-After in whole seconds, from 1 to MAX_RETRY_AFTER_S: a key limited to 1e-300
    requests/s was told to wait a 301-digit number of seconds, and one under 1e-308 an
    infinite wait, which no integer holds (a 500)."""
    if not seconds < MAX_RETRY_AFTER_S:  # infinite or NaN too
        return str(MAX_RETRY_AFTER_S)
    return str(max(1, round(seconds)))


class BodyError(Exception):
    """A request body that cannot be read: carries the response to send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


async def read_json(request: web.Request, timeout_s: float, max_bytes: int) -> Any:
    """The request's body, decoded, parsed as JSON (orjson: no NaN) and nested at most
    MAX_DEPTH deep, or BodyError."""
    if (refused := _not_json(request)) is not None:
        raise BodyError(refused)
    try:
        if request.content.is_eof():  # the whole body has arrived (the usual case): no timer
            raw = await request.read()
        else:
            async with asyncio.timeout(timeout_s):  # no task per call, unlike wait_for
                raw = await request.read()
    except TimeoutError:
        response = error(
            408, f"the request body did not arrive within {timeout_s:g} s", code="timeout"
        )
        response.force_close()  # do not wait for the rest of a slow body
        raise BodyError(response) from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyError(_too_large(max_bytes)) from None
    except RequestPayloadError:
        raise BodyError(error(400, "the body was cut short", code="invalid_body")) from None
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        raw = _inflate(raw, encoding, max_bytes)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson stops at 1,024 levels itself ("depth limit exceeded"; "recursion depth
        # exceeded" in 3.9.15-3.10): pyproject asks for a version that does
        if "depth" in str(exc):
            raise BodyError(_too_deep(None)) from None
        raise BodyError(error(400, _not_json_why(raw, exc), code="invalid_json")) from None
    # fewer brackets than MAX_DEPTH (nearly every body, even when quoted) cannot nest that deep
    if isinstance(parsed, (dict, list)) and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_depth(parsed)
    return parsed


def _not_json_why(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why a body is not JSON: for one that is not UTF-8, where its first bad byte is and
    what it is (orjson's own words speak of Python's surrogates, not of the bytes sent)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"the body is not valid UTF-8 (byte {bad.start}: 0x{raw[bad.start]:02x})"
    return f"body is not valid JSON: {exc}"


def _check_depth(body: dict[str, Any] | list[Any]) -> None:
    """BodyError (400, naming the top-level field where it can) if `body` nests lists and
    objects deeper than MAX_DEPTH, the body itself being level 1."""
    if isinstance(body, dict):
        field = next((k for k, v in body.items() if _nests_deeper(v, MAX_DEPTH - 1)), None)
        too_deep = field is not None
    else:
        field, too_deep = None, _nests_deeper(body, MAX_DEPTH)
    if too_deep:
        raise BodyError(_too_deep(field))


def _too_deep(field: str | None) -> web.Response:
    where = "" if field is None else f" (in '{field[:100]}')"
    return error(
        400,
        f"the body nests JSON deeper than {MAX_DEPTH} levels{where}",
        param=field,
        code="too_deep",
    )


def _nests_deeper(value: Any, levels: int) -> bool:
    """Whether `value` (level 1) holds a list or an object below level `levels`. Level by
    level, without recursion."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(levels):
        below: list[Any] = []
        for node in level:
            children = node.values() if isinstance(node, dict) else node
            below += [c for c in children if isinstance(c, (dict, list))]
        if not below:
            return False
        level = below
    return bool(level)


def _not_json(request: web.Request) -> web.Response | None:
    """415 for a body that does not say it is JSON: see the module docstring."""
    declared = request.headers.get("Content-Type")
    if declared is None and "Origin" not in request.headers:
        return None
    mime = request.content_type  # lower case, parameters (charset) dropped
    if declared is not None and (
        mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))
    ):
        return None
    sent = f"'{declared[:100]}'" if declared is not None else "none, from a web page (Origin)"
    response = error(
        415,
        f"Content-Type must be application/json, got {sent}",
        param="Content-Type",
        code="unsupported_media_type",
    )
    if not request.content.is_eof():
        response.force_close()  # do not wait for a body that will not be read
    return response


def _inflate(raw: bytes, encoding: str, max_bytes: int) -> bytes:
    """A gzip or deflate body decoded, at most `max_bytes` of it (413 past that)."""
    if encoding == "deflate":  # zlib-wrapped as the RFC says, or raw as some clients send
        wbits = zlib.MAX_WBITS if raw[:1] and raw[0] & 0x0F == 8 else -zlib.MAX_WBITS
    else:
        wbits = 16 + zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, max_bytes + 1)
    except zlib.error:
        raise BodyError(
            error(400, f"the body is not valid {encoding} data", code="invalid_body")
        ) from None
    if len(out) > max_bytes:
        raise BodyError(_too_large(max_bytes, decoded=True))
    if not inflater.eof or inflater.unused_data:
        raise BodyError(
            error(400, f"the body is not one complete {encoding} stream", code="invalid_body")
        )
    return out


def _too_large(max_bytes: int, *, decoded: bool = False) -> web.Response:
    what = "request body, decoded," if decoded else "request body"
    response = error(413, f"{what} over {max_bytes} bytes", code="body_too_large")
    response.force_close()
    return response


def _bad_header(request: web.Request) -> str | None:
    for name, value in request.headers.items():
        try:
            name.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:
            return name.encode("utf-8", "replace").decode("ascii", "replace")
    return None


def _bad_framing(request: web.Request, max_bytes: int) -> web.Response | None:
    """413 for a declared Content-Length over the limit, 400 for a transfer coding other than
    plain chunked; either closes the connection after the answer."""
    if request.content_length is not None and request.content_length > max_bytes:
        return _too_large(max_bytes)
    codings = [
        c.strip().lower()
        for value in request.headers.getall("Transfer-Encoding", ())
        for c in value.split(",")
    ]
    if not codings or codings == ["chunked"]:
        return None
    sent = ", ".join(request.headers.getall("Transfer-Encoding"))[:100]
    response = error(
        400,
        f"Transfer-Encoding '{sent}' is not supported: send the body chunked or with a "
        "Content-Length",
        param="Transfer-Encoding",
        code="unsupported_transfer_encoding",
    )
    response.force_close()
    return response


def guard(metrics: Metrics, max_bytes: int) -> Any:
    """The middleware: checks headers, maps every failure to an OpenAI-style error, counts
    the errors, and answers 500 (logged in one line with its traceback) only for a bug."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await _guarded(request, handler, max_bytes)
        if response.status >= 400:
            metrics.inc(
                "wattserve_rejected_total",
                status=str(response.status),
                reason=str(response.get(REASON, "http")),
            )
        return response

    return middleware


async def _guarded(request: web.Request, handler: Handler, max_bytes: int) -> web.StreamResponse:
    bad = _bad_header(request)
    if bad is not None:
        return error(400, f"header '{bad}' is not valid UTF-8", param=bad, code="invalid_header")
    framing = _bad_framing(request, max_bytes)
    if framing is not None:
        return framing
    sent = request.headers.getall("Content-Encoding", [])
    if len(sent) > 1:  # the codings stacked in turn: a body compressed twice, or a smuggling probe
        return error(
            415,
            f"{len(sent)} Content-Encoding headers: send one (identity, gzip or deflate)",
            code="unsupported_encoding",
        )
    encoding = sent[0].strip().lower() if sent else ""
    if encoding not in ENCODINGS:
        return error(
            415,
            f"Content-Encoding '{encoding}' is not supported: send identity, gzip or deflate",
            code="unsupported_encoding",
        )
    try:
        return await handler(request)
    except BodyError as exc:
        return exc.response
    except web.HTTPRequestEntityTooLarge:
        return _too_large(max_bytes)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, exc.reason or "error", code=f"http_{exc.status}")
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("wattserve: internal error on %s %s", request.method, request.path)
        return error(500, "internal error (logged by the gateway)", type_="server_error")


class ParserNoise(logging.Filter):
    """Logs a malformed HTTP request that aiohttp's parser refused in one line: a client's
    mistake (or probe) is not a server error, and a traceback per probe floods the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "wattserve: malformed HTTP refused: %s", (exc.message,)
            record.exc_info = record.exc_text = None
        return True
