"""One request to an OpenAI-compatible endpoint, timed: TTFT, the gaps between tokens,
end to end, the server's `usage` (and wattserve's `usage.wattserve`), or why it failed.

Times come from `time.perf_counter()`; TTFT is taken at the first chunk that carries text (a
chat stream's role-only first chunk is not a token). A stream is complete only once the server
says so (a `finish_reason` or `[DONE]`), as the gateway holds its upstreams to it: a body that
ends before either was cut short, and the request failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from wattserve.core.records import per_token_s
from wattserve.core.traces import MAX_TOKENS
from wattserve.serve.backends.http1 import Http1Pool, HTTPError
from wattserve.serve.schema import approx_tokens

# Error kinds, reported with their counts (`errors_by_kind`); not_sent: the run stopped first.
CONNECT, TIMEOUT, DISCONNECTED, BAD_RESPONSE, STREAM_ERROR, EMPTY, NOT_SENT = (
    "connect",
    "timeout",
    "disconnected",
    "bad_response",
    "stream_error",
    "empty",
    "not_sent",
)


@dataclass(slots=True)
class Result:
    """What happened to one request. Times in seconds from the start of the run."""

    index: int
    row: int
    scheduled_s: float
    prompt_tokens: int  # asked for
    output_tokens: int  # asked for
    slo: str = "default"
    sent_s: float = 0.0
    sent: bool = False  # it left (a request waiting for a --concurrency slot has not)
    ok: bool = False
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    chunks: int = 0
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    backend: str | None = None
    # the deployment or hosted API the backend serves, as the gateway names it (None from a
    # server that does not: the backend's own name stands for it)
    target: str | None = None
    site: str | None = None
    energy_j: float | None = None
    usd: float | None = None
    carbon_g: float | None = None
    error_kind: str | None = None
    error: str | None = None

    @property
    def input_len(self) -> int:
        return self.usage_prompt_tokens or self.prompt_tokens

    @property
    def output_len(self) -> int:
        """The server's count; the chunks seen when it gives none."""
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        return self.chunks

    @property
    def tpot_s(self) -> float | None:
        return per_token_s(self.ttft_s, self.e2e_s, self.output_len)

    def fail(self, kind: str, message: str) -> None:
        self.ok, self.error_kind, self.error = False, kind, message[:300]


MAX_ERROR_BYTES = 64 << 10  # of a refusal's body: its message is at the start of it


async def _head(resp: aiohttp.ClientResponse) -> bytes:
    """The start of a refusal's body, at most MAX_ERROR_BYTES: a server may send gigabytes."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) >= MAX_ERROR_BYTES:
            break
    return bytes(body[:MAX_ERROR_BYTES])


def _message(raw: bytes) -> str:
    """The `error.message` of an OpenAI error body, or the start of the body."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:  # not JSON: the start of the body says what it is
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    if isinstance(err, str):
        return err
    return raw[:200].decode("utf-8", "replace").strip() or "(empty body)"


# what a choice's delta or message carries as output: the answer, a reasoning model's
# thoughts (vLLM's and SGLang's reasoning parsers send them apart, as `reasoning_content`,
# newer vLLM as `reasoning`) and tool calls. Read as the answer alone, a reasoning model's
# first token came when its thoughts ended (TTFT 1.06 s for 0.05), its gaps were lost, and an
# answer all thoughts was counted `empty`.
OUTPUT_FIELDS = ("content", "reasoning_content", "reasoning")


def _text(choice: Any) -> str:
    """The output a choice (a stream's delta, or a whole answer) carries."""
    if not isinstance(choice, dict):
        return ""
    part = choice.get("delta")
    if not isinstance(part, dict):
        part = choice.get("message")
    if not isinstance(part, dict):
        return str(choice.get("text") or "")
    text = "".join(str(part.get(k) or "") for k in OUTPUT_FIELDS)
    if not text and part.get("tool_calls"):
        return str(part["tool_calls"])
    return text


MAX_REPORTED = 1e15  # J, $ or gCO2 for one request; past it the server's figure is not one


def _number(v: Any) -> float | None:
    """A per-request figure the server reports, or None (unknown) when it is not a number
    from 0 to MAX_REPORTED: the sums of a run must stay finite."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= MAX_REPORTED:
        return None
    return float(v)


def _count(v: Any) -> int | None:
    """A token count the server reports, or None (not counted) when it is not a whole number
    from 0 to MAX_TOKENS, a trace's own limit: a negative count would make the run's totals
    and throughputs negative, and one of 2^62 put them past what `compare` reads."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_TOKENS:
        return None
    return v


def take_usage(res: Result, usage: Any) -> None:
    """Token counts, and where wattserve ran it and what it cost, from a `usage` object. A
    prompt count wattserve marks as its own guess (`usage.wattserve.prompt_tokens_estimated`:
    no tokenizer counted it, four characters a token) is not taken: the prompt stays nominal,
    and prompt sizing is not fitted to the guess. (An output it marks was counted in the
    stream's chunks, as bench would count them, or from the text of a whole answer.) A count
    that is not one (`_count`) is not taken either."""
    if not isinstance(usage, dict):
        return
    ws = usage.get("wattserve")
    ws = ws if isinstance(ws, dict) else {}
    p, c = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if p is not None and ws.get("prompt_tokens_estimated") is not True:
        res.usage_prompt_tokens = p
    if c is not None:
        res.usage_completion_tokens = c
    if ws:
        res.backend = str(ws["backend"]) if ws.get("backend") is not None else None
        res.target = str(ws["target"]) if ws.get("target") is not None else None
        res.site = str(ws["site"]) if ws.get("site") is not None else None
        res.energy_j = _number(ws.get("energy_j"))
        res.usd = _number(ws.get("usd"))
        res.carbon_g = _number(ws.get("carbon_g"))  # gateways that know their grid's intensity


class Client:
    """Sends request bodies to one endpoint over one connection pool. Whole (non-streamed)
    answers from plain-HTTP servers go through the gateway's small HTTP/1.1 client, which
    costs a fraction of aiohttp's CPU per request, so that bench is not the bottleneck."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        timeout_s: float = 600.0,
        pool: Http1Pool | None = None,
    ) -> None:
        self.session, self.url, self.headers = session, url, headers
        self.timeout_s, self.pool = timeout_s, pool
        self.path = "/" + url.rstrip("/").rsplit("/v1/", 1)[-1]

    async def send(
        self, res: Result, body: dict[str, Any], t0: float, where: dict[str, str] | None = None
    ) -> None:
        """Send `body` (with the headers `where` adds), fill `res` in; never raises (but for
        cancellation)."""
        headers = self.headers | where if where else self.headers
        stream = bool(body.get("stream"))
        start = time.perf_counter()
        res.sent_s = start - t0
        res.sent = True
        if not stream and self.pool is not None:
            await self._plain(res, body, start, headers)
            return
        try:
            async with self.session.post(
                self.url, data=orjson.dumps(body), headers=headers
            ) as resp:
                if resp.status != 200:
                    res.fail(f"http_{resp.status}", _message(await _head(resp)))
                    return
                if stream:
                    await self._stream(res, resp, start)
                else:
                    await self._whole(res, resp, start)
        except TimeoutError:
            res.fail(TIMEOUT, "no answer within the request timeout")
        except aiohttp.ClientConnectorError as exc:
            res.fail(CONNECT, str(exc))
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            res.fail(DISCONNECTED, f"the server closed the connection: {exc}")
        except aiohttp.ClientError as exc:
            res.fail(DISCONNECTED, f"{type(exc).__name__}: {exc}")
        except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            res.fail(BAD_RESPONSE, f"not an OpenAI response: {exc}")
        except HttpProcessingError as exc:  # a stream line past aiohttp's 512 KiB, for one
            res.fail(BAD_RESPONSE, f"not an OpenAI response: {exc.message}")

    async def _plain(
        self, res: Result, body: dict[str, Any], start: float, headers: dict[str, str]
    ) -> None:
        assert self.pool is not None
        try:
            status, raw = await self.pool.post(
                self.path, orjson.dumps(body), headers, self.timeout_s
            )
            res.e2e_s = time.perf_counter() - start
            if status != 200:
                res.fail(f"http_{status}", _message(raw))
                return
            self._answer(res, raw)
        except HTTPError as exc:
            text = str(exc)
            if text.startswith("cannot connect"):
                res.fail(CONNECT, text)
            elif text.startswith("no answer within"):  # past --timeout, as a stream's is
                res.fail(TIMEOUT, text)
            else:
                res.fail(DISCONNECTED, text)
        except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            res.fail(BAD_RESPONSE, f"not an OpenAI response: {exc}")

    async def _whole(self, res: Result, resp: aiohttp.ClientResponse, start: float) -> None:
        raw = await resp.read()
        res.e2e_s = time.perf_counter() - start
        self._answer(res, raw)

    def _answer(self, res: Result, raw: bytes) -> None:
        obj = orjson.loads(raw)
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list) or not choices:
            res.fail(BAD_RESPONSE, f"no 'choices' in the answer: {raw[:120]!r}")
            return
        # a whole answer is one chunk: where no usage counts it, its text is the count (it
        # had been 1 token, whatever its length)
        text = _text(choices[0])
        res.chunks = approx_tokens(text) if text else 0  # the gateway's rule of thumb
        take_usage(res, obj.get("usage"))
        res.ok = True

    async def _stream(self, res: Result, resp: aiohttp.ClientResponse, start: float) -> None:
        last = start
        done = finished = False
        async for line in resp.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            now = time.perf_counter()
            obj = orjson.loads(payload)
            if not isinstance(obj, dict):
                raise ValueError(f"a stream chunk is not an object: {payload[:80]!r}")
            if obj.get("error") is not None:  # `"error": null` is no error
                res.fail(STREAM_ERROR, _message(payload))
                return
            choices = obj.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                finished = finished or bool(choices[0].get("finish_reason"))
            if isinstance(choices, list) and choices and _text(choices[0]):
                if res.ttft_s is None:
                    res.ttft_s = now - start
                else:
                    res.itl_s.append(now - last)
                last = now
                res.chunks += 1
            if obj.get("usage"):
                take_usage(res, obj["usage"])
        res.e2e_s = time.perf_counter() - start
        if res.chunks == 0:
            res.fail(EMPTY if done or finished else BAD_RESPONSE, "the stream carried no tokens")
            return
        if not (done or finished):  # a connection that closed (or was reset) mid-answer
            res.fail(
                DISCONNECTED,
                f"the stream ended after {res.chunks} chunk(s) of text, without a finish_reason or "
                "[DONE]: the answer was cut short",
            )
            return
        res.ok = True
