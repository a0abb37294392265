"""The OpenAI-compatible gateway (aiohttp): /v1/chat/completions, /v1/completions (SSE and
not), /v1/models, /health, /metrics, /v1/fleet.

Per request: authenticate (hashed API keys, $ and J budgets, rate limits), validate, route
with the policy and the power governor, call the backend (retrying elsewhere when it fails
before the first byte), stream back, account tokens, joules and dollars in `usage` and the
ledger. A client that goes away cancels the backend's work.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from wattserve.core.workload import Request
from wattserve.serve.backends.base import BackendError, Event, Finish, GenRequest, Piece
from wattserve.serve.ledger import KeyRecord, Ledger
from wattserve.serve.metrics import Metrics
from wattserve.serve.router import NoTarget, Router
from wattserve.serve.schema import (
    ChatRequest,
    CompletionRequest,
    approx_tokens,
    error_body,
    validation_message,
)

MAX_BODY_BYTES = 1 << 20
MAX_IN_FLIGHT = 1024
RETRIES = 2


def _error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    retry_after_s: float | None = None,
) -> web.Response:
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s else None
    return web.json_response(
        error_body(message, type_, param, code), status=status, headers=headers, dumps=_dumps
    )


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


@dataclass
class _Call:
    """One request on the backend chosen for it, from its first event on."""

    body: ChatRequest | CompletionRequest
    greq: GenRequest
    key: KeyRecord | None
    backend: Any
    first: Event
    rest: AsyncIterator[Event]
    started: float
    ttft: float = field(init=False)

    def __post_init__(self) -> None:
        self.ttft = time.monotonic() - self.started

    async def events(self) -> AsyncIterator[Event]:
        """The first event, then the rest."""
        yield self.first
        async for event in self.rest:
            yield event


class Gateway:
    def __init__(
        self,
        router: Router,
        ledger: Ledger,
        *,
        require_keys: bool = False,
        default_max_tokens: int = 256,
    ) -> None:
        self.router, self.ledger = router, ledger
        self.require_keys = require_keys
        self.default_max_tokens = default_max_tokens
        self.metrics = Metrics()
        self.metrics.gauges.append(self._gauges)
        self.in_flight = 0
        self.draining = False
        self.buckets: dict[str, tuple[float, float]] = {}

    # -- plumbing --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
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
        await self.router.start()

    async def _shutdown(self, app: web.Application) -> None:
        self.draining = True
        deadline = time.monotonic() + 30
        while self.in_flight and time.monotonic() < deadline:  # let streams finish
            await asyncio.sleep(0.05)

    async def _cleanup(self, app: web.Application) -> None:
        await self.router.stop()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body over {MAX_BODY_BYTES} bytes", code="body_too_large")
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason or "error", type_="invalid_request_error")
            raise

    def _gauges(self) -> list[tuple[str, str, dict[str, str], float]]:
        out: list[tuple[str, str, dict[str, str], float]] = []
        for name, acct in self.router.gov.sites.items():
            out.append(
                ("wattserve_site_power_watts", "Site power now.", {"site": name}, acct.power_w)
            )
            if acct.cap_w is not None:
                out.append(
                    (
                        "wattserve_site_power_cap_watts",
                        "Site power cap.",
                        {"site": name},
                        acct.cap_w,
                    )
                )
        for b in self.router.backends.values():
            out.append(
                (
                    "wattserve_backend_up",
                    "1 if the backend is healthy.",
                    {"backend": b.name, "site": b.site},
                    1.0 if b.healthy else 0.0,
                )
            )
        out.append(("wattserve_in_flight_requests", "Requests in flight.", {}, self.in_flight))
        return out

    def _auth(self, request: web.Request) -> KeyRecord | web.Response | None:
        header = request.headers.get("Authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        needed = self.require_keys or self.ledger.has_keys()
        if not key:
            if needed:
                return _error(
                    401,
                    "missing API key: send Authorization: Bearer <key>",
                    type_="authentication_error",
                    code="invalid_api_key",
                )
            return None
        record = self.ledger.lookup(key)
        if record is None:
            if needed:
                return _error(
                    401, "invalid API key", type_="authentication_error", code="invalid_api_key"
                )
            return None
        return record

    def _rate_ok(self, key: KeyRecord) -> bool:
        if not key.rps:
            return True
        now = time.monotonic()
        burst = max(1.0, key.rps)  # at least one request, then `rps` a second
        tokens, last = self.buckets.get(key.id, (burst, now))
        tokens = min(burst, tokens + (now - last) * key.rps)
        if tokens < 1.0:
            self.buckets[key.id] = (tokens, now)
            return False
        self.buckets[key.id] = (tokens - 1.0, now)
        return True

    # -- simple endpoints ------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "wattserve"}
            for m in self.router.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def health(self, request: web.Request) -> web.Response:
        healthy = [b.name for b in self.router.backends.values() if b.healthy]
        status = 200 if healthy and not self.draining else 503
        return web.json_response(
            {
                "status": "ok" if status == 200 else "unavailable",
                "healthy_backends": len(healthy),
                "backends": len(self.router.backends),
                "in_flight": self.in_flight,
            },
            status=status,
        )

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def fleet(self, request: web.Request) -> web.Response:
        auth = self._auth(request)
        if isinstance(auth, web.Response):
            return auth
        return web.json_response(self.router.fleet_state())

    async def fleet_change(self, request: web.Request) -> web.Response:
        auth = self._auth(request)
        if isinstance(auth, web.Response):
            return auth
        if auth is None or not auth.admin:
            return _error(
                403,
                "changing the fleet needs an admin key",
                type_="permission_error",
                code="admin_required",
            )
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        action = body.get("action")
        if action in ("drain", "undrain"):
            target = body.get("target")
            if target not in self.router.targets:
                return _error(404, f"no target '{target}'", param="target")
            (self.router.drained.add if action == "drain" else self.router.drained.discard)(target)
        elif action == "set_cap":
            site, cap = body.get("site"), body.get("power_cap_w")
            if site not in self.router.gov.sites:
                return _error(404, f"no site '{site}'", param="site")
            if cap is not None and (
                isinstance(cap, bool) or not isinstance(cap, int | float) or cap <= 0
            ):
                return _error(
                    400, "power_cap_w must be a positive number or null", param="power_cap_w"
                )
            self.router.gov.sites[site].cap_w = None if cap is None else float(cap)
        else:
            return _error(400, "action must be drain, undrain or set_cap", param="action")
        return web.json_response(self.router.fleet_state())

    # -- generation ------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        started = time.monotonic()
        auth = self._auth(request)
        if isinstance(auth, web.Response):
            return auth
        key = auth
        if key is not None:
            if (why := key.over_budget()) is not None:
                return _error(429, why, type_="insufficient_quota", code="insufficient_quota")
            if not self._rate_ok(key):
                return _error(
                    429,
                    f"key '{key.name}' is over its {key.rps:g} requests/s limit",
                    type_="rate_limit_error",
                    code="rate_limit_exceeded",
                    retry_after_s=1.0,
                )
        if self.draining:
            return _error(
                503, "the gateway is shutting down", type_="server_error", retry_after_s=5.0
            )
        if self.in_flight >= MAX_IN_FLIGHT:
            return _error(
                503, "the gateway is at its request limit", type_="server_error", retry_after_s=1.0
            )
        try:
            raw = orjson.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "body is not valid JSON")
        if not isinstance(raw, dict):
            return _error(400, "body must be a JSON object")
        try:
            body: ChatRequest | CompletionRequest = (
                ChatRequest.model_validate(raw)
                if kind == "chat"
                else CompletionRequest.model_validate(raw)
            )
        except ValidationError as exc:
            message, param = validation_message(exc)
            return _error(400, message, param=param)
        if body.model not in self.router.view.by_model:
            return _error(
                404,
                f"the model '{body.model}' is not served here; see /v1/models",
                param="model",
                code="model_not_found",
            )
        origin = request.headers.get("x-wattserve-site")
        if origin is not None and origin not in self.router.fleet.sites:
            return _error(
                400,
                f"x-wattserve-site '{origin}' is not a site of this fleet "
                f"({', '.join(self.router.fleet.sites)})",
                param="x-wattserve-site",
            )
        local_only = request.headers.get("x-wattserve-data-local", "").lower() in ("1", "true")
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        prompt_tokens = approx_tokens(body.prompt_text())
        max_tokens = body.output_limit or self.default_max_tokens
        req = Request(
            0,
            self.router.now(),
            prompt_tokens,
            max_tokens,
            body.model,
            origin,
            local_only=local_only,
        )
        greq = GenRequest(rid, kind, body.model, raw, prompt_tokens, max_tokens, origin)
        self.in_flight += 1
        try:
            return await self._run(request, body, req, greq, key, started)
        finally:
            self.in_flight -= 1

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
        for _ in range(RETRIES + 1):
            try:
                placement = await self.router.place(req, failed)
            except NoTarget as exc:
                self._account(greq, key, None, None, started, None, "rejected", exc.reason)
                extra = f" (after: {'; '.join(errors)})" if errors else ""
                return _error(
                    exc.status,
                    exc.reason + extra,
                    type_="server_error" if exc.status >= 500 else "rate_limit_error",
                    code="no_capacity",
                    retry_after_s=exc.retry_after_s,
                )
            target, backend = placement.target, placement.backend
            target.add(1)
            events = backend.generate(greq).__aiter__()
            try:
                first = await events.__anext__()
            except BackendError as exc:
                target.add(-1)
                if exc.before_first_byte and exc.status >= 500:
                    failed.add(backend.name)
                    self.router.eject(backend)
                    errors.append(str(exc))
                    continue
                self._account(greq, key, backend, None, started, None, "error", str(exc))
                return _error(
                    exc.status,
                    str(exc),
                    type_="invalid_request_error" if exc.status < 500 else "server_error",
                    code="backend_error",
                )
            except StopAsyncIteration:
                target.add(-1)
                errors.append(f"{backend.name} produced nothing")
                failed.add(backend.name)
                continue
            call = _Call(body, greq, key, backend, first, events, started)
            try:
                if body.stream:
                    return await self._stream(request, call)
                return await self._collect(call)
            finally:
                target.add(-1)
        self._account(greq, key, None, None, started, None, "error", "; ".join(errors))
        return _error(
            502,
            "every backend tried failed: " + "; ".join(errors),
            type_="server_error",
            code="backend_error",
        )

    def _usage(self, fin: Finish, backend: Any, ttft: float) -> dict[str, Any]:
        return {
            "prompt_tokens": fin.prompt_tokens,
            "completion_tokens": fin.completion_tokens,
            "total_tokens": fin.prompt_tokens + fin.completion_tokens,
            "wattserve": {
                "backend": backend.name,
                "site": backend.site,
                "energy_j": fin.energy_j,
                "usd": fin.usd,
                "ttft_s": round(ttft, 6),
                "synthetic": fin.synthetic,
            },
        }

    def _failed(self, call: _Call, exc: BackendError) -> None:
        """A backend that failed after its first byte: eject it and record the failure."""
        self.router.eject(call.backend)
        self._account(
            call.greq, call.key, call.backend, call.ttft, call.started, None, "error", str(exc)
        )

    async def _collect(self, call: _Call) -> web.Response:
        body, greq, backend, ttft = call.body, call.greq, call.backend, call.ttft
        parts: list[str] = []
        fin: Finish | None = None
        try:
            async for event in call.events():
                if isinstance(event, Piece):
                    parts.append(event.text)
                else:
                    fin = event
        except BackendError as exc:
            self._failed(call, exc)
            return _error(
                502,
                f"the backend failed mid-answer: {exc}",
                type_="server_error",
                code="backend_error",
            )
        fin = fin or Finish("stop", greq.prompt_tokens, len(parts), None, None)
        self._account(greq, call.key, backend, ttft, call.started, fin, "ok", None)
        text = "".join(parts)
        choice: dict[str, Any] = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": fin.finish_reason,
                "logprobs": None,
            }
            if greq.kind == "chat"
            else {"index": 0, "text": text, "finish_reason": fin.finish_reason, "logprobs": None}
        )
        return web.json_response(
            dumps=_dumps,
            data={
                "id": greq.id,
                "object": "chat.completion" if greq.kind == "chat" else "text_completion",
                "created": int(time.time()),
                "model": body.model,
                "choices": [choice],
                "usage": self._usage(fin, backend, ttft),
            },
        )

    async def _stream(self, request: web.Request, call: _Call) -> web.StreamResponse:
        body, greq, backend, ttft = call.body, call.greq, call.backend, call.ttft
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        created = int(time.time())
        obj = "chat.completion.chunk" if greq.kind == "chat" else "text_completion"

        def chunk(text: str | None, finish: str | None, first_piece: bool = False) -> bytes:
            if greq.kind == "chat":
                delta: dict[str, Any] = {"content": text} if text is not None else {}
                if first_piece:
                    delta["role"] = "assistant"
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish,
                    "logprobs": None,
                }
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            payload = {
                "id": greq.id,
                "object": obj,
                "created": created,
                "model": body.model,
                "choices": [choice],
            }
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        fin: Finish | None = None
        n = 0
        try:
            async for event in call.events():
                if isinstance(event, Piece):
                    await resp.write(chunk(event.text, None, n == 0))
                    n += 1
                else:
                    fin = event
        except BackendError as exc:
            self._failed(call, exc)
            err = error_body(
                f"the backend failed mid-stream: {exc}", "server_error", code="backend_error"
            )
            await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
            await resp.write_eof()
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            await call.rest.aclose()  # type: ignore[attr-defined]
            self._account(
                greq,
                call.key,
                backend,
                ttft,
                call.started,
                None,
                "cancelled",
                "client disconnected",
            )
            raise
        fin = fin or Finish("stop", greq.prompt_tokens, n, None, None)
        await resp.write(chunk(None, fin.finish_reason))
        if body.include_usage:
            payload = {
                "id": greq.id,
                "object": obj,
                "created": created,
                "model": body.model,
                "choices": [],
                "usage": self._usage(fin, backend, ttft),
            }
            await resp.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self._account(greq, call.key, backend, ttft, call.started, fin, "ok", None)
        return resp

    def _account(
        self,
        greq: GenRequest,
        key: KeyRecord | None,
        backend: Any,
        ttft: float | None,
        started: float,
        fin: Finish | None,
        status: str,
        error: str | None,
    ) -> None:
        duration = time.monotonic() - started
        labels: dict[str, str] = {
            "model": greq.model,
            "backend": backend.name if backend else "-",
            "site": backend.site if backend else "-",
        }
        self.metrics.inc("wattserve_requests_total", 1.0, status=status, **labels)
        if fin is not None:
            self.metrics.inc(
                "wattserve_tokens_total", fin.prompt_tokens, direction="input", **labels
            )
            self.metrics.inc(
                "wattserve_tokens_total", fin.completion_tokens, direction="output", **labels
            )
            if fin.energy_j:
                self.metrics.inc("wattserve_energy_joules_total", fin.energy_j, **labels)
            if fin.usd:
                self.metrics.inc("wattserve_cost_usd_total", fin.usd, **labels)
            if ttft is not None:
                self.metrics.observe("wattserve_ttft_seconds", ttft, model=greq.model)
                if fin.completion_tokens > 1:
                    tpot = (duration - ttft) / (fin.completion_tokens - 1)
                    self.metrics.observe("wattserve_tpot_seconds", tpot, model=greq.model)
                    target = self.router.targets.get(backend.name.split("/")[0])
                    if target is not None and hasattr(target, "observe"):
                        target.observe(ttft, tpot)
        self.ledger.record(
            {
                "id": greq.id,
                "ts": time.time(),
                "key_id": key.id if key else None,
                "model": greq.model,
                "backend": backend.name if backend else None,
                "site": backend.site if backend else None,
                "prompt_tokens": fin.prompt_tokens if fin else None,
                "completion_tokens": fin.completion_tokens if fin else None,
                "ttft_s": ttft,
                "duration_s": duration,
                "energy_j": fin.energy_j if fin else None,
                "usd": fin.usd if fin else None,
                "status": status,
                "error": error,
            }
        )
