"""Any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama, a hosted API)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from wattserve.core.cost import token_usd
from wattserve.core.energy import request_energy_j
from wattserve.core.fleet import DeploymentSpec, HostedSpec, replica_name
from wattserve.core.workload import Request
from wattserve.errors import UpstreamError
from wattserve.serve.backends import answers
from wattserve.serve.backends.answers import carries_token, usage_count
from wattserve.serve.backends.base import (
    MAX_GONE,
    Backend,
    BackendKind,
    BuildContext,
    Built,
    Event,
    Finish,
    GenRequest,
)
from wattserve.serve.backends.http1 import Http1Pool, HTTPError
from wattserve.serve.backends.stream_lines import ReadAhead, made_tokens, server_lines
from wattserve.serve.targets import UpstreamTarget, server_draw

log = logging.getLogger("wattserve.serve")
# The client's own output-limit fields; the gateway sets them to the limit it held for.
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens")
# Statuses that say the backend is down or overloaded: another backend may serve the request.
UNAVAILABLE = (429, 502, 503, 504)
# Other 5xx answers may be caused by the request itself (llama-cpp-python answers a body its
# schema refuses with 500): a backend leaves the rotation after this many in a row.
SERVER_ERRORS_TO_EJECT = 3
# How long a server that answers 429 without a Retry-After is left alone (the cooldown of a
# failing server, router.COOLDOWN_S)
RATE_LIMITED_S = 10.0


class TimeShare:
    """A server's time split among the requests it serves at once, as processor sharing:
    while n are in flight each accrues 1/n of every second, so their shares add up to the
    time it was busy. A time-priced server's request pays its share. Before 2026-12-06 a
    request paid its wall time over the count in flight when it ended: identical requests
    paid by finish order, the last one all of it, and six at once were billed 2.8 times the
    server's price for the time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.n = 0  # requests in flight
        self.each_s = 0.0  # what one request in flight all along would have accrued
        self.at = clock()

    def _advance(self) -> None:
        now = self.clock()
        if self.n:
            self.each_s += (now - self.at) / self.n
        self.at = now

    def join(self) -> float:
        """A request starts: the mark its share is counted from."""
        self._advance()
        self.n += 1
        return self.each_s

    def leave(self, mark: float) -> float:
        """The request that joined at `mark` ends: its share, in seconds."""
        self._advance()
        self.n -= 1
        return self.each_s - mark


class OpenAIBackend(Backend):
    """Forwards the client's body (model renamed) and streams the answer back.

    Energy and dollars: per-token prices when given (hosted APIs); otherwise `estimate_j`
    (the PerfModel's energy for this request on the deployment's hardware) and the device's
    $/s over the request's share of time.
    """

    kind = "openai"
    probed = True
    measures_energy = False  # True: estimate_j reads a meter, so never reuse its answers
    pieces_are_tokens = False  # a chunk of a stream may hold several tokens

    def __init__(
        self,
        name: str,
        site: str,
        model: str,
        base_url: str,
        remote_model: str,
        api_key_env: str | None = None,
        *,
        usd_per_mtok_input: float | None = None,
        usd_per_mtok_output: float | None = None,
        estimate_j: Callable[[int, int], float | None] | None = None,
        energy_basis: str | None = None,
        usd_per_s: float = 0.0,
        usd_per_j: float = 0.0,
        priced: bool = True,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 5.0,
    ):
        self.name, self.site, self.model = name, site, model
        self.base_url = base_url.rstrip("/")
        self.remote_model = remote_model
        self.api_key_env = api_key_env
        self.prices = (usd_per_mtok_input, usd_per_mtok_output)
        self.estimate_j = estimate_j
        self.energy_basis = energy_basis  # what estimate_j rests on, when answers say it
        self.usd_per_s = usd_per_s
        # an owned device's electricity (its capex is usd_per_s), as an emulated one bills it;
        # until 2026-12-06 a server on owned devices was billed its capex alone
        self.usd_per_j = usd_per_j
        self.priced = priced  # False: time-priced devices with no price (dollars unknown)
        self.timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=connect_timeout_s, sock_read=timeout_s
        )
        # a stream's bound is the time spent waiting for the server (`_streamed`), not its
        # wall time: that includes the gateway's waits for a client that reads slowly
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=timeout_s
        )
        self.timeout_s = timeout_s
        self.session: aiohttp.ClientSession | None = None
        self.fast = Http1Pool(self.base_url) if self.base_url.startswith("http://") else None
        self.share = TimeShare()
        self.ended_early: dict[str, tuple[float | None, float | None]] = {}  # see left_early
        self.server_errors = 0  # 5xx answers in a row (see _refused)
        self._energy_memo: dict[tuple[int, int], float | None] = {}

    @property
    def in_flight(self) -> int:
        return self.share.n

    def left_early(self, request_id: str) -> tuple[float | None, float | None] | None:
        return self.ended_early.pop(request_id, None)

    def _left(self, req: GenRequest, produced: int, share_s: float, answered: bool) -> None:
        """A request that ended before its answer did (the client left, the server failed):
        what the server `produced` of it, read ahead of the client or not, for the gateway to
        bill: at the server's token prices, or, time-priced, its share of the server's time
        and the energy of those tokens. (Else `budgets.delivered`, which prices the tokens
        the client was sent, and the whole wall time at the server's $/s: a token-priced
        server read ahead of a client that left was billed only what the client had read,
        until 2026-12-06.) A token-priced server bills nothing it did not answer (`answered`:
        a 200 came): a refusal or a failed connection is recorded by the gateway as such."""
        p_in, p_out = self.prices
        energy = self._energy_of(req.prompt_tokens, produced)
        usd: float | None
        if p_in is not None and p_out is not None:  # priced by tokens, as _finish bills
            if not answered:
                return
            usd = token_usd(req.prompt_tokens, produced, p_in, p_out)
        elif self.usd_per_s:
            usd = self._time_usd(share_s, energy)
        else:
            return
        if len(self.ended_early) >= MAX_GONE:
            self.ended_early.pop(next(iter(self.ended_early)))
        self.ended_early[req.id] = (usd, energy)

    def _time_usd(self, share_s: float, energy: float | None) -> float | None:
        """The dollars of a request on devices priced by time: its share of their time, and
        the electricity of its energy where the devices are owned (and the energy known);
        None where the devices have no price."""
        if not self.priced:
            return None
        return self.usd_per_s * share_s + self.usd_per_j * (energy or 0.0)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.fast is not None:
            await self.fast.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    async def check(self) -> bool:
        assert self.session is not None
        try:
            async with self.session.get(
                f"{self.base_url}/models",
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=3),
            ) as r:
                self.healthy = r.status < 500
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.healthy = False
        return self.healthy

    def _body(self, req: GenRequest) -> dict[str, Any]:
        """What the backend is sent: the client's body, the model renamed, and the output
        limit the gateway checked, routed and reserved for (`req.max_tokens`: the client's,
        else the default, within the context window): a backend that generated more than was
        held for would run unbilled. The limit goes in the field the server reads
        (`limit_fields`)."""
        body = {**req.body, "model": self.remote_model}
        fields = limit_fields(self.base_url, req.kind, [f for f in OUTPUT_LIMITS if f in body])
        for name in OUTPUT_LIMITS:
            body.pop(name, None)
        for name in fields:
            body[name] = req.max_tokens
        return body

    def _payload(self, body: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(body)
        except (TypeError, ValueError) as exc:  # too deep, or not JSON: the client's body
            raise UpstreamError(
                f"the request cannot be forwarded to {self.name}: {exc}",
                before_first_byte=True,
                status=400,
            ) from None

    def honours(self, capability: str) -> bool:
        """Every field is passed on: the server honours it or refuses it itself."""
        return True

    def _refused(self, status: int, raw: bytes, retry_after: str | None = None) -> UpstreamError:
        """The error for a non-200 answer. A backend down or overloaded (429, 502-504) is
        retried elsewhere; a 429 says for how long (`retry_after`, its Retry-After header),
        and that is how long it is left alone (router.eject); another 5xx is answered as 502
        without the backend's body (it may hold its tracebacks: logged instead), and only the
        third in a row takes the backend out of rotation; a 4xx is the request's fault,
        passed on with the backend's message, error type, param and code."""
        if status == 429:
            wait = answers.retry_after_s(retry_after) or RATE_LIMITED_S
            return UpstreamError(
                f"{self.name} answered 429 (rate limited; retry after {wait:g} s)",
                before_first_byte=True,
                backend_down=True,
                status=429,
                retry_after_s=wait,
            )
        if status in UNAVAILABLE:
            return UpstreamError(
                f"{self.name} answered {status}", before_first_byte=True, backend_down=True
            )
        text = raw[:2000].decode("utf-8", "replace")
        if status >= 500:
            self.server_errors += 1
            log.warning("wattserve: %s answered %d: %s", self.name, status, text[:500])
            return UpstreamError(
                f"{self.name} answered {status} (its body is in the gateway's log)",
                before_first_byte=True,
                backend_down=self.server_errors >= SERVER_ERRORS_TO_EJECT,
            )
        message, kind, param, code = answers.error_fields(text)
        return UpstreamError(
            f"{self.name} answered {status}: {message}",
            before_first_byte=False,
            status=status,
            type_=kind,
            param=param,
            code=code,
        )

    async def generate(self, req: GenRequest) -> AsyncIterator[Event]:
        # closed with this one: an answer left early is billed (`_left`) before the gateway
        # reads it (Backend.left_early); delegated with a bare `async for`, the inner one was
        # closed only when collected, a turn of the event loop later, and the gateway billed
        # the time-priced server's whole price for the wall time instead (budgets.delivered)
        inner = self._streamed(req) if req.body.get("stream") else self._whole(req)
        async with contextlib.aclosing(inner) as events:
            async for event in events:
                yield event

    async def _whole(self, req: GenRequest) -> AsyncGenerator[Event, None]:
        """A non-streaming request: one upstream call, one JSON answer (the cheap path)."""
        assert self.session is not None
        path = "/chat/completions" if req.kind == "chat" else "/completions"
        payload = self._payload(self._body(req))
        mark = self.share.join()
        finished = False  # the Finish yielded: else the request ended early
        share_s, produced, answered = 0.0, 0, False
        try:
            try:
                if self.fast is not None:
                    answer = await self.fast.send(
                        path, payload, self._headers(), self.timeout.total or 300.0
                    )
                    status, raw, wait = answer.status, answer.body, answer.header("Retry-After")
                else:
                    async with self.session.post(
                        f"{self.base_url}{path}", data=payload, headers=self._headers()
                    ) as resp:
                        status, raw = resp.status, await resp.read()
                        wait = resp.headers.get("Retry-After")
                if status != 200:
                    raise self._refused(status, raw, wait)
                answered = True
            except (aiohttp.ClientError, HTTPError, TimeoutError, OSError) as exc:
                raise self._failed(exc, before_first_byte=True) from None
            finally:
                share_s = self.share.leave(mark)
                if req.released is not None:  # the server's part is over
                    req.released()
            obj = self._answer(raw)
            choices = obj.get("choices")
            choice = choices[0] if isinstance(choices, list) and choices else {}
            try:
                piece = answers.piece(req.kind, choice, streamed=False)
            except answers.Malformed as exc:
                raise self._broken(
                    f"an answer not in OpenAI's shape ({exc})", raw, before_first_byte=True
                ) from None
            self.healthy, self.server_errors = True, 0
            produced = 0 if piece is None else 1
            if piece is not None:
                yield piece
            reason = str(choice.get("finish_reason") or "stop")
            usage = await self._counted(req, obj.get("usage"))
            finished = True
            yield self._finish(req, usage, reason, produced, share_s)
        finally:
            if not finished:  # the client left, or the server failed: see _left
                self._left(req, produced, share_s, answered)

    def _answer(self, raw: bytes) -> dict[str, Any]:
        """A 200's body: a JSON object that is not an error (else `_broken`)."""
        try:
            obj = orjson.loads(raw)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("error") is None:
            return obj
        raise self._broken("a body that is not a JSON completion", raw, before_first_byte=True)

    def _broken(self, why: str, raw: bytes, *, before_first_byte: bool) -> UpstreamError:
        """The error for a 200 that is no completion (a proxy's HTML page, a server's bug, a
        choice's tool calls or logprobs not in OpenAI's shape): answered 502 as another 5xx
        is, the body logged, not echoed; only the third in a row takes the server out of
        rotation."""
        self.server_errors += 1
        text = raw[:500].decode("utf-8", "replace")
        log.warning("wattserve: %s answered 200 with %s: %s", self.name, why, text)
        return UpstreamError(
            f"{self.name} answered 200 with {why} (its body is in the gateway's log)",
            before_first_byte=before_first_byte,
            backend_down=self.server_errors >= SERVER_ERRORS_TO_EJECT,
        )

    def sees_first_token(self, req: GenRequest) -> bool:
        """Only a stream shows when its first token came: a whole answer arrives at once."""
        return bool(req.body.get("stream"))

    def _failed(self, exc: BaseException, *, before_first_byte: bool) -> UpstreamError:
        self.healthy = False
        why = str(exc) or (
            f"no answer within timeout_s ({self.timeout_s:g} s waiting for the server)"
            if isinstance(exc, TimeoutError)
            else "no detail"
        )
        return UpstreamError(
            f"{self.name} failed: {exc.__class__.__name__}: {why}",
            before_first_byte=before_first_byte,
        )

    async def prompt_tokens(self, req: GenRequest) -> int | None:
        """The request's prompt tokens as the server counts them, where the gateway holds its
        tokenizer (the local model: LocalLlamaBackend); None elsewhere."""
        return None

    async def _counted(self, req: GenRequest, usage: Any) -> dict[str, Any]:
        """The server's `usage` (asked for in streams: `stream_options.include_usage`), its
        prompt count filled in by `prompt_tokens` where the server gave none (llama-cpp-python
        0.3.36 sends no usage in a stream, whatever stream_options asks)."""
        given: dict[str, Any] = usage if isinstance(usage, dict) else {}
        if usage_count(given, "prompt_tokens") is None:
            counted = await self.prompt_tokens(req)
            if counted is not None:
                given = {**given, "prompt_tokens": counted}
        return given

    def _finish(
        self, req: GenRequest, usage: dict[str, Any], reason: str, produced: int, share_s: float
    ) -> Finish:
        """The end of an answer, which had `share_s` of the server's time (TimeShare).
        Counts are the server's `usage`; where it gives none, the prompt is the gateway's
        guess and the output the pieces seen, both marked estimated."""
        prompt, completion = (
            usage_count(usage, "prompt_tokens"),
            usage_count(usage, "completion_tokens"),
        )
        guessed = (prompt is None, completion is None)
        prompt = req.prompt_tokens if prompt is None else prompt
        completion = produced if completion is None else completion
        p_in, p_out = self.prices
        energy = self._energy_of(prompt, completion)
        if p_in is not None and p_out is not None:
            usd: float | None = token_usd(prompt, completion, p_in, p_out)
        else:
            usd = self._time_usd(share_s, energy)
        basis = None if energy is None else self.energy_basis
        return Finish(
            reason,
            prompt,
            completion,
            energy,
            usd,
            energy_basis=basis,
            prompt_estimated=guessed[0],
            completion_estimated=guessed[1],
        )

    def _energy_of(self, prompt: int, completion: int) -> float | None:
        """Joules of a request of these counts: `estimate_j`'s (kept by counts, unless the
        backend measures energy), None where unknown."""
        energy = None
        if self.estimate_j is not None and not self.measures_energy:
            key = (prompt, completion)
            energy = self._energy_memo.get(key)
            if energy is None:
                energy = self.estimate_j(prompt, completion)
                if len(self._energy_memo) > 4096:
                    self._energy_memo.clear()
                self._energy_memo[key] = energy
        elif self.estimate_j is not None:
            energy = self.estimate_j(prompt, completion)
        if energy is not None and math.isnan(energy):
            energy = None  # the hardware's power figures are unknown
        return energy

    async def _streamed(self, req: GenRequest) -> AsyncGenerator[Event, None]:
        """A streaming request. The answer is complete only once the server says so (a
        `finish_reason`, or `[DONE]`): a body that ends before either was cut short, and an
        `error` object in the stream is the server failing mid-answer. Both raise
        UpstreamError, so the client's stream ends with an error event and the request is
        recorded as an error, billed for what was delivered."""
        assert self.session is not None
        path = "/chat/completions" if req.kind == "chat" else "/completions"
        body = self._body(req) | {"stream": True, "stream_options": {"include_usage": True}}
        payload = self._payload(body)
        first = True
        usage: dict[str, Any] = {}
        finish_reason: str | None = None
        done = False
        produced = 0
        left = self.timeout_s  # for waiting on the server; the client's time is not counted
        mark = self.share.join()
        finished = False  # the Finish yielded: else the request ended early
        share_s: list[float] = []  # the request's share, once the server's part has ended
        ahead: ReadAhead | None = None

        def server_done() -> None:
            if not share_s:
                share_s.append(self.share.leave(mark))
                if req.released is not None:  # its place in the target's load and draw
                    req.released()

        try:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    waited = time.monotonic()
                    async with asyncio.timeout(left):
                        resp = await stack.enter_async_context(
                            self.session.post(
                                f"{self.base_url}{path}",
                                data=payload,
                                headers=self._headers(),
                                timeout=self.stream_timeout,
                            )
                        )
                        if resp.status != 200:
                            raise self._refused(
                                resp.status,
                                await resp.content.read(2000),
                                resp.headers.get("Retry-After"),
                            )
                    left -= time.monotonic() - waited
                    ahead = ReadAhead()
                    read = await stack.enter_async_context(
                        contextlib.aclosing(server_lines(resp, left))
                    )
                    filling = asyncio.get_running_loop().create_task(ahead.fill(read, server_done))
                    stack.push_async_callback(_cancelled, filling)
                    lines = await stack.enter_async_context(contextlib.aclosing(ahead.taken()))
                    async for raw in lines:
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            break
                        try:
                            obj = json.loads(data)
                        except json.JSONDecodeError:
                            continue
                        except RecursionError:  # nested past the parser's limit: no chunk at all
                            raise self._broken(
                                "a chunk nested too deep to read", raw, before_first_byte=first
                            ) from None
                        if not isinstance(obj, dict):
                            continue
                        if obj.get("error") is not None:
                            raise self._error_event(obj["error"], before_first_byte=first)
                        if obj.get("usage"):
                            usage = obj["usage"]
                        choices = obj.get("choices")
                        for choice in choices if isinstance(choices, list) else ():
                            try:
                                piece = answers.piece(req.kind, choice, streamed=True)
                            except answers.Malformed as exc:
                                raise self._broken(
                                    f"a chunk not in OpenAI's shape ({exc})",
                                    raw,
                                    before_first_byte=first,
                                ) from None
                            if choice.get("finish_reason"):
                                finish_reason = str(choice["finish_reason"])
                            if piece is not None:
                                first = False
                                produced += carries_token(piece)
                                yield piece
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise self._failed(exc, before_first_byte=first) from None
            finally:
                server_done()
            if finish_reason is None and not done:  # the body ended mid-answer
                self.server_errors += 1  # the server is up (it ended the body): as another 5xx
                raise UpstreamError(
                    f"{self.name} ended its stream without a finish_reason or [DONE]: the "
                    "answer was cut short",
                    before_first_byte=first,
                    backend_down=self.server_errors >= SERVER_ERRORS_TO_EJECT,
                )
            self.healthy, self.server_errors = True, 0
            usage = await self._counted(req, usage)
            finished = True
            yield self._finish(req, usage, finish_reason or "stop", produced, share_s[0])
        finally:
            if not finished:  # the client left, or the server failed: see _left
                # what the server made counts, read ahead of the client or not
                made = produced if ahead is None else made_tokens(req.kind, produced, ahead.lines)
                self._left(req, made, share_s[0] if share_s else 0.0, ahead is not None)

    def _error_event(self, error: Any, *, before_first_byte: bool) -> UpstreamError:
        """The error for an `error` object in a stream: the server failed mid-answer. Its
        message is logged, not passed on (it may hold the server's internals, as a 5xx body
        may); like another 5xx, only the third failure in a row takes the server out."""
        self.server_errors += 1
        text = error if isinstance(error, str) else json.dumps(error)
        log.warning("wattserve: %s sent an error in its stream: %s", self.name, text[:500])
        return UpstreamError(
            f"{self.name} sent an error in its stream (its message is in the gateway's log)",
            before_first_byte=before_first_byte,
            backend_down=self.server_errors >= SERVER_ERRORS_TO_EJECT,
        )


def limit_fields(base_url: str, kind: str, sent: list[str]) -> list[str]:
    """The output-limit fields a server is sent. `max_tokens` is the one field every
    OpenAI-compatible server reads (vLLM, llama.cpp, TGI, SGLang) and the only one of the
    legacy completions API; llama-cpp-python ignores `max_completion_tokens`, so a chat asking
    for 5 tokens that way ran to its 2,048-token window (until 2026-12-06 the limit went only
    in the fields the client used). OpenAI's own chat API refuses `max_tokens` for its
    reasoning models and the two together for every model: there the client's field is kept
    (`max_completion_tokens` when it sent none)."""
    host = (urlsplit(base_url).hostname or "").lower()
    openai = host == "api.openai.com" or host.endswith(".openai.azure.com")
    if kind != "chat" or not openai:
        return ["max_tokens"]
    return sent[:1] if len(sent) == 1 else ["max_completion_tokens"]


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Stop a stream's reading task (the client left, or the answer ended) and wait for it."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _deployment_target(spec: DeploymentSpec, ctx: BuildContext) -> Built:
    """A deployment served by OpenAI-compatible servers (`url` or `urls`): priors and energy
    from the PerfModel of its hardware, dollars from its $/s (rent) or electricity (own)."""
    cfg = spec.backend
    pm = spec.perf
    usd_per_s, usd_per_j = spec.cost.billable()
    urls = cfg.get("urls") or [cfg.get("url")]

    def estimate_j(prompt: int, output: int) -> float:
        return request_energy_j(pm, prompt, output)

    backends: list[Backend] = [
        OpenAIBackend(
            replica_name(spec.name, i),
            spec.site,
            spec.model,
            str(url),
            str(cfg.get("model_name", spec.model)),
            cfg.get("api_key_env"),
            estimate_j=estimate_j,
            usd_per_s=usd_per_s,
            usd_per_j=usd_per_j,
            priced=spec.cost.known,
            timeout_s=float(cfg.get("timeout_s", 300.0)),
        )
        for i, url in enumerate(urls)
    ]
    target = UpstreamTarget(
        spec.name,
        spec.site,
        spec.model,
        backends,
        pm.prefill(1, 512).time_s,
        pm.decode_step(8, 1024).time_s,
        joules=lambda r: estimate_j(r.prompt_tokens, r.output_tokens),
        usd=lambda r: usd_per_j * estimate_j(r.prompt_tokens, r.output_tokens),
        rtt=ctx.fleet.rtt_s,
        draw=server_draw(ctx.governor, spec.site, pm, spec.replicas, ctx.power_changed),
        replicas=spec.replicas,
        max_num_seqs=pm.deployment.max_num_seqs,
    )
    return Built(target, backends, lambda req, avoid: target.pick(avoid))


class OpenAIKind(BackendKind):
    """`kind: openai`: any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama) for
    a deployment, or a hosted API's real endpoint (with its per-token prices)."""

    name = "openai"

    def deployment(self, spec: DeploymentSpec, ctx: BuildContext) -> Built:
        return _deployment_target(spec, ctx)

    def hosted(self, spec: HostedSpec, ctx: BuildContext) -> Built:
        cfg = spec.backend
        known = spec.energy_basis is not None
        backend = OpenAIBackend(
            spec.name,
            spec.site,
            spec.model,
            str(cfg.get("url", spec.base_url)),
            str(cfg.get("model_name", spec.remote_name)),
            cfg.get("api_key_env"),
            usd_per_mtok_input=spec.usd_per_mtok_input,
            usd_per_mtok_output=spec.usd_per_mtok_output,
            # the entry's joules per token, or its size on named hardware; otherwise energy
            # stays unknown (None)
            estimate_j=spec.energy_j if known else None,
            energy_basis=spec.energy_basis,
            timeout_s=float(cfg.get("timeout_s", 300.0)),
        )

        def joules(r: Request) -> float:
            j = spec.energy_j(r.prompt_tokens, r.output_tokens)
            return math.inf if j is None else j

        def usd(r: Request) -> float:
            return token_usd(
                r.prompt_tokens, r.output_tokens, spec.usd_per_mtok_input, spec.usd_per_mtok_output
            )

        target = UpstreamTarget(
            spec.name,
            spec.site,
            spec.model,
            [backend],
            spec.ttft_s,
            1.0 / spec.output_tokens_per_s,
            joules=joules,
            usd=usd,
            rtt=ctx.fleet.rtt_s,
            rate_limit_rps=spec.rate_limit_rps,
        )
        return Built(target, [backend], lambda req, avoid: target.pick(avoid))
