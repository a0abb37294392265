"""What stands between a socket and the gateway's handlers: OpenAI-style error responses,
header and body checks, and one rule for all of them, that no input answers 5xx.

- a header value that is not UTF-8: 400 (before any handler echoes or hashes it);
- `Content-Encoding` other than identity, gzip or deflate: 415; gzip and deflate bodies are
  decoded by aiohttp in bounded pieces and count against the body limit once decoded, so a
  compressed bomb answers 413 without being inflated in full; a body that does not decode: 400;
- a body not received within the body timeout: 408; over the size limit: 413;
- every error the gateway answers itself is counted in `wattserve_rejected_total` by status
  and reason (the error's code, or its type).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError

from wattserve.serve.metrics import Metrics
from wattserve.serve.schema import error_body

log = logging.getLogger("wattserve.serve")

ENCODINGS = ("", "identity", "gzip", "deflate", "x-gzip")
REASON = "wattserve_reason"  # where an error response keeps its reason for the metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    retry_after_s: float | None = None,
) -> web.Response:
    """An OpenAI-style error response."""
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s else None
    resp = web.json_response(
        error_body(message, type_, param, code), status=status, headers=headers, dumps=_dumps
    )
    resp[REASON] = code or type_
    return resp


class BodyError(Exception):
    """A request body that cannot be read: carries the response to send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


async def read_json(request: web.Request, timeout_s: float, max_bytes: int) -> Any:
    """The request's body parsed as JSON (orjson: no NaN, depth bounded), or BodyError."""
    try:
        raw = await asyncio.wait_for(request.read(), timeout_s)
    except TimeoutError:
        raise BodyError(
            error(408, f"the request body did not arrive within {timeout_s:g} s", code="timeout")
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyError(_too_large(max_bytes)) from None
    except (ContentEncodingError, HttpProcessingError) as exc:
        encoding = request.headers.get("Content-Encoding", "")
        raise BodyError(
            error(400, f"the body could not be decoded as {encoding or 'sent'}: {exc}")
        ) from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BodyError(error(400, f"body is not valid JSON: {exc}", code="invalid_json")) from None


def _too_large(max_bytes: int) -> web.Response:
    return error(413, f"request body over {max_bytes} bytes", code="body_too_large")


def _bad_header(request: web.Request) -> str | None:
    for name, value in request.headers.items():
        try:
            name.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:
            return name.encode("utf-8", "replace").decode("ascii", "replace")
    return None


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
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
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
