"""The OpenAI-compatible gateway (aiohttp): /v1/chat/completions, /v1/completions (SSE and
not), /v1/models, /health, /metrics, /v1/fleet.

Per request: check headers and body (wattserve.serve.guard), authenticate (hashed API keys),
count it against the key's rate limit, validate, route with the policy and the power governor,
hold the request's worst-case dollars and joules against the key's budget
(wattserve.serve.budgets), call the backend (retrying elsewhere when it fails before the first
byte), stream back, then settle the hold to what was delivered and write the ledger.

Durability: a request's ledger record is committed before the last byte of its response (the
`[DONE]` event of a stream, the whole body otherwise) is sent, so every response a client
received in full is in the ledger even if the gateway is then killed. Requests that end early
(client gone, backend failed) are committed by the writer thread within one batch, without
holding anything up.

A client that goes away cancels the backend's work, streaming or not (the app is run with
aiohttp's handler cancellation), is logged in one line and billed for what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError
from redis.exceptions import RedisError

from wattserve.core.admission import MAX_QUEUE_S, no_first_token, queue_refusal
from wattserve.core.windows import context_windows
from wattserve.core.workload import Request
from wattserve.errors import NoBackendAvailable, UpstreamError
from wattserve.serve import replies
from wattserve.serve.accounting import Accounts, durable
from wattserve.serve.backends.base import Finish, GenRequest, Piece, Release, guessed_finish
from wattserve.serve.budgets import Budgets, Hold, LocalBudgets, Refusal, worst_case
from wattserve.serve.fleet_admin import CapChange, ChangeError, check_cap, parse_change
from wattserve.serve.gauges import live_gauges
from wattserve.serve.guard import MAX_IN_FLIGHT, error, guard, read_json
from wattserve.serve.ledger import CANNOT_RECORD, KeyRecord, Ledger
from wattserve.serve.link import link_rtt_s, over_link
from wattserve.serve.metrics import Metrics
from wattserve.serve.residency import HeaderError, residency
from wattserve.serve.router import Router
from wattserve.serve.schema import (
    DEFAULT_MAX_TOKENS,
    ChatRequest,
    CompletionRequest,
    WindowProblem,
    approx_tokens,
    error_body,
    given,
    output_room,
    parse_body,
    validation_message,
)
from wattserve.serve.shared_budgets import RedisBudgets
from wattserve.serve.state import SharedState, attach
from wattserve.serve.streaming import SEND_TIMEOUT_S, Call, Sender, close_events

log = logging.getLogger("wattserve.serve")

MAX_BODY_BYTES = 1 << 20
RETRIES = 2
BODY_TIMEOUT_S = 30.0


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class Gateway:
    def __init__(
        self,
        router: Router,
        ledger: Ledger,
        *,
        require_keys: bool = False,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        budgets: Budgets | None = None,
        body_timeout_s: float = BODY_TIMEOUT_S,
        max_queue_s: float = MAX_QUEUE_S,
        state: SharedState | None = None,
        send_timeout_s: float = SEND_TIMEOUT_S,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.router, self.ledger = router, ledger
        self.max_in_flight = max_in_flight
        self.state = state
        if state is not None:
            budgets = budgets or RedisBudgets(state)
            attach(router, state)
        self.require_keys = require_keys  # fixed for the gateway's life: see _key
        self.default_max_tokens = default_max_tokens
        self.budgets: Budgets = budgets or LocalBudgets()
        self.body_timeout_s = body_timeout_s
        self.max_queue_s = max_queue_s
        self.sender = Sender(send_timeout_s)
        self.metrics = Metrics()
        self.metrics.gauges.append(lambda: live_gauges(self.router, self.state, self.in_flight))
        self.live: dict[int, web.Request] = {}  # in flight, by id: dropped at shutdown
        self.draining = False
        self.context_tokens = context_windows(router.fleet)
        self.accounts = Accounts(
            self.metrics, ledger, self.budgets, router.targets, router.target_of, router.carbon_g
        )

    @property
    def in_flight(self) -> int:
        return len(self.live)

    # -- plumbing --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            middlewares=[guard(self.metrics, MAX_BODY_BYTES)],
            handler_args={"auto_decompress": False},  # bodies are decoded in guard.read_json
        )
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{name:.+}", self.model)  # repository ids hold a '/'
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/v1/fleet", self.fleet)
        app.router.add_post("/v1/fleet", self.fleet_change)
        from wattserve.serve.dashboard import add_dashboard  # the page at /, one registration

        add_dashboard(app, self)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app: web.Application) -> None:
        self.ledger.start()
        if self.state is not None:
            await self.state.connect()
            self.state.start()
        await self.router.start()
        self.sender.start()

    async def _shutdown(self, app: web.Application) -> None:
        self.draining = True
        deadline = time.monotonic() + 30
        while self.in_flight and time.monotonic() < deadline:  # let streams finish
            await asyncio.sleep(0.05)
        # then drop what is left (a client that does not read would hold aiohttp's own
        # shutdown, 30 s more and 30 s after that): each is recorded as cancelled
        for request in list(self.live.values()):
            self.sender.drop(request, "gateway shutting down")

    async def _cleanup(self, app: web.Application) -> None:
        await self.sender.stop()
        if self.state is not None:
            if isinstance(self.budgets, RedisBudgets):
                await self.budgets.drain()
            await self.state.stop()
        await self.router.stop()
        self.ledger.close()

    def _key(self, request: web.Request) -> KeyRecord | web.Response | None:
        """The request's key. With keys required, a request without a live key is refused.
        Without, a request with no key or a key never issued (OpenAI clients send
        placeholders) runs with no budget, but a revoked key is refused either way: revoking
        never lets a key through."""
        headers = request.headers.getall("Authorization", [])
        if len(headers) > 1:  # which one counts would be a guess: a proxy's, a revoked one
            return error(
                400,
                "send one Authorization header, not several",
                "invalid_request_error",
                param="Authorization",
            )
        header = headers[0] if headers else ""
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        record = self.ledger.lookup(token) if token else None
        if record is not None and record.revoked:
            return error(
                401, "this API key has been revoked", "authentication_error", code="invalid_api_key"
            )
        if record is not None and record.damaged is not None:  # fail closed (logged by lookup)
            return error(
                403,
                f"this API key's record in the gateway's ledger is damaged ({record.damaged}): "
                "ask the operator to revoke it and create another",
                "permission_error",
                code="invalid_key_record",
            )
        if record is None and self.require_keys:
            return error(
                401,
                "invalid API key" if token else "missing API key: send Authorization: Bearer <key>",
                "authentication_error",
                code="invalid_api_key",
            )
        return record

    def _observer(self, request: web.Request) -> web.Response | None:
        """None if the request may read /metrics and /v1/fleet: anyone without required keys,
        else a metrics-scoped or admin key."""
        if not self.require_keys:
            return None
        key = self._key(request)
        if isinstance(key, web.Response):
            return key
        if key is None or not (key.metrics or key.admin):
            return error(
                403,
                "reading the gateway's state needs a metrics or admin key",
                "permission_error",
                code="metrics_key_required",
            )
        return None

    # -- simple endpoints ------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        names = self.router.models + sorted(self.router.fleet.aliases)
        data = [replies.model_object(m) for m in names]
        return web.json_response({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.Response:
        """OpenAI's retrieve: any name a request may use (a model, an alias, a Hugging Face
        repository id of a built-in served here), described as the list describes it."""
        name = request.match_info["name"]
        if self.router.fleet.resolve_model(name) not in self.router.view.by_model:
            return error(
                404,
                f"the model '{name[:256]}' is not served here; see /v1/models",
                param="model",
                code="model_not_found",
            )
        return web.json_response(replies.model_object(name))

    async def health(self, request: web.Request) -> web.Response:
        healthy = [b.name for b in self.router.backends.values() if b.healthy]
        recording = not self.ledger.unrecorded
        status = 200 if healthy and recording and not self.draining else 503
        return web.json_response(
            {
                "status": "ok" if status == 200 else "unavailable",
                **({} if recording else {"ledger": CANNOT_RECORD}),
                "healthy_backends": len(healthy),
                "backends": len(self.router.backends),
                "in_flight": self.in_flight,
                **({"state": self.state.describe()} if self.state is not None else {}),
            },
            status=status,
        )

    async def metrics_page(self, request: web.Request) -> web.Response:
        if (refused := self._observer(request)) is not None:
            return refused
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def fleet(self, request: web.Request) -> web.Response:
        if (refused := self._observer(request)) is not None:
            return refused
        return web.json_response(self.router.fleet_state(), dumps=_dumps)

    async def fleet_change(self, request: web.Request) -> web.Response:
        key = self._key(request)
        if isinstance(key, web.Response):
            return key
        if key is None or not key.admin:
            return error(
                403,
                "changing the fleet needs an admin key",
                "permission_error",
                code="admin_required",
            )
        raw = await read_json(request, self.body_timeout_s, MAX_BODY_BYTES)
        try:
            change = parse_change(raw)
            if isinstance(change, CapChange):
                check_cap(change, self.router)
                if self.state is not None:
                    await self.state.set_cap(change.site, change.power_cap_w)
                    self.state.caps[change.site] = change.power_cap_w
                    self.state.sync_now()
                else:
                    self.router.gov.set_cap(change.site, change.power_cap_w, self.router.clock())
                    async with self.router.power_changed:  # steps waiting for power may go now
                        self.router.power_changed.notify_all()
            elif change.target not in self.router.targets:
                raise ChangeError(404, f"no target '{change.target}'", "target")
            elif self.state is not None:
                await self.state.set_drained(change.target, change.action == "drain")
                (
                    self.state.drained.add
                    if change.action == "drain"
                    else self.state.drained.discard
                )(change.target)
                self.state.sync_now()
            elif change.action == "drain":
                self.router.drained.add(change.target)
            else:
                self.router.drained.discard(change.target)
        except (RedisError, OSError) as exc:
            return error(503, f"the shared state (Redis) is unreachable: {exc}", "server_error")
        except ChangeError as exc:
            return error(exc.status, exc.message, param=exc.param)
        log.info("wattserve: fleet change by key %s: %s", key.id, change.model_dump())
        return web.json_response(self.router.fleet_state(), dumps=_dumps)

    # -- generation ------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        started = time.monotonic()
        key = self._key(request)
        if isinstance(key, web.Response):
            return key
        if key is not None and (refusal := await self.budgets.take_request(key)) is not None:
            return _refused(refusal)
        if (closed := self._closed()) is not None:
            return closed
        raw = await read_json(request, self.body_timeout_s, MAX_BODY_BYTES)
        if not isinstance(raw, dict):
            return error(400, "body must be a JSON object")
        raw = given(raw)  # null is "not given"
        try:
            body = parse_body(kind, raw)
        except ValidationError as exc:
            message, param = validation_message(exc)
            return error(400, message, param=param)
        model = self.router.fleet.resolve_model(body.model)
        if model is None or model not in self.router.view.by_model:
            return error(
                404,
                f"the model '{body.model[:256]}' is not served here; see /v1/models",
                param="model",
                code="model_not_found",
            )
        if (unable := self.router.unsupported(model, kind, raw)) is not None:  # else ignored
            return error(400, unable.message, param=unable.param, code="unsupported_parameter")
        headers = request.headers
        where = residency(
            headers.getall("x-wattserve-site", []),
            headers.getall("x-wattserve-data-local", []),
            self.router.fleet.sites,
            headers.getall("x-wattserve-slo", []),
            self.router.slo_names,
        )
        if isinstance(where, HeaderError):
            return error(400, where.message, param=where.header)
        origin, local_only = where.origin, where.local_only
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{os.urandom(12).hex()}"
        prompt_tokens = approx_tokens(body.prompt_text())
        max_tokens = output_room(
            body, kind, prompt_tokens, self.default_max_tokens, self.context_tokens.get(model)
        )
        if isinstance(max_tokens, WindowProblem):
            return error(400, max_tokens.message, param=max_tokens.param, code=max_tokens.code)
        req = Request(
            0,
            self.router.now(),
            prompt_tokens,
            max_tokens,
            model,
            origin,
            where.slo,
            local_only,
        )
        greq = GenRequest(
            rid,
            kind,
            model,
            raw,
            prompt_tokens,
            max_tokens,
            origin,
            self.router.view.slo(req).ttft_s,
        )
        # again, with nothing awaited before the request counts: any number had passed the
        # first check while they sent their bodies, past the limit or into a shutdown
        if (closed := self._closed()) is not None:
            return closed
        self.live[id(request)] = request  # (a web.Request is not hashable)
        try:
            return await self._run(request, body, req, greq, key, started)
        finally:
            self.live.pop(id(request), None)

    def _closed(self) -> web.Response | None:
        """The 503 for a request that comes while the gateway shuts down or is at its limit
        of requests in flight, else None."""
        if self.draining:
            return error(503, "the gateway is shutting down", "server_error", retry_after_s=5.0)
        if self.in_flight >= self.max_in_flight:
            return error(
                503, "the gateway is at its request limit", "server_error", retry_after_s=1.0
            )
        if self.ledger.unrecorded:  # a request served now might have no record (Ledger)
            return error(503, CANNOT_RECORD, "server_error", retry_after_s=5.0)
        return None

    async def _run(
        self,
        request: web.Request,
        body: ChatRequest | CompletionRequest,
        req: Request,
        greq: GenRequest,
        key: KeyRecord | None,
        started: float,
    ) -> web.StreamResponse:
        failed: set[str] = set()
        errors: list[str] = []
        queued: list[float] = []  # predicted first-token waits of the targets passed over
        while True:
            try:
                if len(errors) > RETRIES:  # spent: a 429, as place's, where servers rate limit
                    if (limited := self.router.rate_limited(req, greq)) is None:
                        break
                    raise limited
                placement = await self.router.place(req, failed, greq, self.max_queue_s, queued)
            except asyncio.CancelledError:
                # the client left while its request waited (for power, under a cap): counted
                # and recorded as any client that leaves is, with nothing to bill
                why = "client disconnected while waiting for power"
                self.accounts.record(greq, key, None, None, started, None, "cancelled", why)
                log.info("wattserve: %s: %s", greq.id, why)
                raise
            except NoBackendAvailable as exc:
                reason, status, retry_s = exc.reason, exc.status, exc.retry_after_s
                if queued:  # nothing left but replicas with long queues
                    reason = queue_refusal(req.model, self.max_queue_s)
                    status, retry_s = 503, min(30.0, min(queued))
                self.accounts.record(greq, key, None, None, started, None, "rejected", reason)
                extra = f" (after: {'; '.join(errors)})" if errors else ""
                return error(
                    status,
                    reason + extra,
                    "server_error" if status >= 500 else "rate_limit_error",
                    code="no_capacity",
                    retry_after_s=retry_s,
                )
            target, backend = placement.target, placement.backend
            # counted at once, before anything else is awaited: a server's modelled draw is
            # the site's from here (ServerDraw), so that requests admitted meanwhile see it
            greq.released = release = Release(target)
            hold: Hold | None = None
            if key is not None:
                worst = worst_case(target, req, backend.stretch())
                try:
                    reserved = await self.budgets.reserve(key, worst)
                except asyncio.CancelledError:  # the client left while its budget was asked
                    release()
                    backend.abandon()
                    why = "client disconnected while its budget was checked"
                    self.accounts.record(greq, key, None, None, started, None, "cancelled", why)
                    raise
                if isinstance(reserved, Refusal):  # routed, then refused: the key's row shows it
                    release()
                    backend.abandon()
                    self.accounts.record(
                        greq, key, None, None, started, None, "rejected", reserved.message
                    )
                    return _refused(reserved)
                hold = reserved
            rtt_s = link_rtt_s(backend, self.router.fleet.rtt_s(req.origin, backend.site))
            # as simulate times it
            gone = functools.partial(backend.unread, greq.id)
            events = over_link(
                backend.generate(greq), rtt_s, gone, abandon=backend.abandon
            ).__aiter__()
            # where the first token is seen on its own (Backend.sees_first_token: streams, and
            # emulated backends), a request that has none after max_queue_s gives up its
            # place: a 503, not a silent wait
            visible = backend.sees_first_token(greq)
            try:
                if visible:
                    async with asyncio.timeout(self.max_queue_s):
                        first = await events.__anext__()
                else:
                    first = await events.__anext__()
            except TimeoutError:
                release()
                self.accounts.release(hold)  # queued, not served: nothing is billed
                reason = no_first_token(self.max_queue_s)
                self.accounts.record(greq, key, backend, None, started, None, "rejected", reason)
                return error(503, reason, "server_error", code="no_capacity", retry_after_s=10.0)
            except UpstreamError as exc:
                release()
                self.accounts.release(hold)
                if exc.before_first_byte and exc.backend_down:
                    failed.add(backend.name)
                    self.router.eject(backend, exc.retry_after_s)
                    errors.append(str(exc))
                    continue
                # a 4xx is the request's fault (refused, as the gateway's own 4xx are), not the
                # backend failing: its row and requests_total say `rejected`, not `error`
                outcome = "error" if exc.status >= 500 else "rejected"
                self.accounts.record(greq, key, backend, None, started, None, outcome, str(exc))
                return error(
                    exc.status,
                    str(exc),
                    exc.type_,
                    param=exc.param,
                    code=exc.code or "backend_error",
                )
            except StopAsyncIteration:
                release()
                self.accounts.release(hold)
                errors.append(f"{backend.name} produced nothing")
                failed.add(backend.name)
                continue
            except (asyncio.CancelledError, ConnectionResetError):
                release()
                why = self.sender.gone(request)
                if self.draining and why != "client disconnected":
                    # dropped by the gateway before its first token: the client got nothing
                    # and pays nothing (until 2026-12-06 it paid the prompt's work, recorded
                    # as its own disconnect)
                    self.accounts.release(hold)
                    self.accounts.record(greq, key, backend, None, started, None, "cancelled", why)
                else:  # the client left before the first token: the prompt's work
                    self.accounts.ended(
                        greq,
                        key,
                        hold,
                        target,
                        backend,
                        req,
                        started,
                        None,
                        None,
                        0,
                        "cancelled",
                        why,
                    )
                _log_gone(greq.id, 0, why)
                raise
            except Exception as exc:  # a bug in a backend: undo what was taken, log it, 502
                release()
                self.accounts.release(hold)
                log.exception("wattserve: %s: %s failed", greq.id, backend.name)
                why = f"{backend.name} failed: {exc.__class__.__name__}"
                self.accounts.record(greq, key, backend, None, started, None, "error", why)
                return error(502, why, "server_error", code="backend_error")
            call = Call(
                body, req, greq, key, hold, target, backend, first, events, started, visible
            )
            try:
                if body.stream:
                    return await self._stream(request, call)
                return await self._collect(request, call)
            finally:
                release()
        self.accounts.record(greq, key, None, None, started, None, "error", "; ".join(errors))
        why = "every backend tried failed: " + "; ".join(errors)
        return error(502, why, "server_error", code="backend_error")

    def _ended(
        self, call: Call, fin: Finish | None, produced: int, status: str, why: str | None
    ) -> asyncio.Future[None]:
        return self.accounts.ended(
            call.greq,
            call.key,
            call.hold,
            call.target,
            call.backend,
            call.req,
            call.started,
            call.ttft,
            fin,
            produced,
            status,
            why,
        )

    async def _collect(self, request: web.Request, call: Call) -> web.Response:
        body, greq, backend, ttft = call.body, call.greq, call.backend, call.ttft
        parts: list[Piece] = []
        fin: Finish | None = None
        try:
            async for event in call.events():
                if isinstance(event, Piece):
                    parts.append(event)
                else:
                    fin = event
        except (asyncio.CancelledError, ConnectionResetError):
            await close_events(call.rest)
            why = self.sender.gone(request)
            self._ended(call, fin, len(parts), "cancelled", why)
            _log_gone(greq.id, len(parts), why)
            raise
        except Exception as exc:  # UpstreamError, or a bug in a backend (logged)
            if not isinstance(exc, UpstreamError):
                log.exception("wattserve: %s: %s failed mid-answer", greq.id, backend.name)
            if isinstance(exc, UpstreamError) and exc.backend_down:
                self.router.eject(backend)
            self._ended(call, None, len(parts), "error", _failure(exc))
            return error(
                502,
                f"the backend failed mid-answer: {_failure(exc)}",
                "server_error",
                code="backend_error",
            )
        fin = fin or guessed_finish("stop", greq, len(parts), backend)
        done = self._ended(call, fin, fin.completion_tokens, "ok", None)
        data = replies.completion(
            greq,
            body.model,
            parts,
            fin,
            replies.usage(fin, backend, self.router, ttft),
        )
        response = web.Response(body=orjson.dumps(data), content_type="application/json")
        await durable(done, greq.id)
        return response

    async def _stream(self, request: web.Request, call: Call) -> web.StreamResponse:
        body, greq, backend, ttft = call.body, call.greq, call.backend, call.ttft
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        chunks = replies.Chunks(greq, body.model)
        fin: Finish | None = None
        recorded = False
        n = 0
        mark = self.sender.watch(request)

        def send(data: bytes | None) -> Awaitable[None]:  # None: the response's end
            mark[0] = time.monotonic()
            return resp.write_eof() if data is None else resp.write(data)

        try:
            await resp.prepare(request)
            async for event in call.events():
                if isinstance(event, Piece):
                    await send(chunks.piece(event, None, n == 0))
                    n += 1
                else:
                    fin = event
            fin = fin or guessed_finish("stop", greq, n, backend)
            await send(chunks.piece(None, fin.finish_reason))
            if body.include_usage:
                await send(chunks.usage(replies.usage(fin, backend, self.router, ttft)))
            done = self._ended(call, fin, n, "ok", None)
            recorded = True
            await durable(done, greq.id)
            await send(replies.DONE)
            await send(None)
        except (asyncio.CancelledError, ConnectionResetError) as exc:
            await close_events(call.rest)
            if not recorded:  # once recorded, the request was complete
                why = self.sender.gone(request)
                self._ended(call, fin, n, "cancelled", why)
                _log_gone(greq.id, n, why)
            if isinstance(exc, asyncio.CancelledError):
                raise
        except Exception as exc:  # UpstreamError, or a bug in a backend (logged)
            if not isinstance(exc, UpstreamError):
                log.exception("wattserve: %s: %s failed mid-stream", greq.id, backend.name)
            if isinstance(exc, UpstreamError) and exc.backend_down:
                self.router.eject(backend)
            if not recorded:
                self._ended(call, None, n, "error", _failure(exc))
            err = error_body(
                f"the backend failed mid-stream: {_failure(exc)}",
                "server_error",
                code="backend_error",
            )
            with contextlib.suppress(ConnectionResetError):  # the client left too
                await send(replies.event(err))
                await send(None)
        finally:
            self.sender.forget(request)
        return resp


def _failure(exc: Exception) -> str:
    """What a client and the ledger are told of a backend's failure: an UpstreamError's own
    words, else only the exception's class (its details are in the gateway's log)."""
    return str(exc) if isinstance(exc, UpstreamError) else exc.__class__.__name__


def _log_gone(rid: str, produced: int, why: str = "client disconnected") -> None:
    log.info("wattserve: %s: %s after %d tokens; work cancelled", rid, why, produced)


def _refused(r: Refusal) -> web.Response:
    return error(r.status, r.message, r.type_, code=r.code, retry_after_s=r.retry_after_s)
