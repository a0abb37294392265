"""Replay a workload against an OpenAI-compatible endpoint: check the server, calibrate prompt
lengths, send each request at its time (or at a fixed rate, or as fast as a concurrency limit
allows), and keep what happened to each.

The run stops early, keeping what completed, when the server stops answering (CONNECT_GIVE_UP
connection failures in a row) or the user interrupts it.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import yarl

from wattserve.bench.client import CONNECT, NOT_SENT, Client, Result
from wattserve.bench.prompts import Calibration, fit, prompt
from wattserve.core.workload import Request, Workload
from wattserve.errors import BenchError, ConfigError
from wattserve.serve.backends.http1 import Http1Pool

CONNECT_GIVE_UP = 20
SPIN_S = 0.0015  # the last stretch before a send time is waited out by yielding, not a timer
Progress = Callable[[int, int, int, float, bool], None]  # done, total, errors, elapsed s, final
PROBE_WORDS = (16, 144)
EXACT_FIELDS = ("ignore_eos", "min_tokens")
MAX_MODELS_BYTES = 16 << 20  # a model list is kilobytes; more is not one


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """How to send: where, what, how fast. Rates in requests/s, times in seconds."""

    url: str
    model: str | None = None
    endpoint: str = "chat"  # chat or completions
    stream: bool = True
    request_rate: float | None = None  # None: the trace's times; inf: all at once
    concurrency: int | None = None
    max_requests: int | None = None
    # with request_rate: keep the requests whose Poisson send time is under it (a trace's
    # own times are cut when it is read: load_workload's duration_s)
    duration_s: float | None = None
    api_key: str | None = None
    seed: int = 0
    timeout_s: float = 600.0
    probe_timeout_s: float = 10.0  # for /v1/models, the first thing asked (if timeout_s is more)
    exact_output: str = "auto"  # auto, on, off: send ignore_eos and min_tokens
    calibrate: bool = True


@dataclass
class Run:
    """A finished (or stopped) run."""

    results: list[Result]
    duration_s: float
    model: str
    calibration: Calibration
    exact_output: bool
    stopped: str | None = None  # why the run ended early
    notes: list[str] = field(default_factory=list)


def check_url(url: str) -> None:
    """An http(s) URL with a host and, if it gives one, a port from 1 to 65535."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"must start with http:// or https://, not '{url:.200}'", field="--url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        why = "the port must be a number from 1 to 65535" if "Port" in str(exc) else exc
        raise ConfigError(f"'{url:.200}' is not a URL: {why}", field="--url") from None
    if not parts.hostname:
        raise ConfigError(f"'{url:.200}' names no host", field="--url")
    # what the resolver will do with it (aiohttp encodes the host as yarl does, IDNA 2008): an
    # empty or 64-letter label fails there; IP literals and one trailing dot are fine
    try:
        host = yarl.URL(url).raw_host or ""
    except (ValueError, UnicodeError):
        host = ""
    labels = host.removesuffix(".").split(".")
    if ":" not in host and not all(0 < len(label.encode()) <= 63 for label in labels):
        raise ConfigError(
            f"'{url:.200}' is not a URL: the host {parts.hostname[:100]!r} is not a host name "
            "(a dot-separated label is empty or longer than 63 letters)",
            field="--url",
        )
    if parts.query or parts.fragment:  # /v1 would be added after them
        raise ConfigError(
            f"'{url:.200}': give the server's base URL without a ?query or #fragment",
            field="--url",
        )
    if port == 0:
        raise ConfigError(
            f"'{url:.200}' is not a URL: the port must be a number from 1 to 65535",
            field="--url",
        )
    endpoint = parts.path.rstrip("/")
    if endpoint.endswith(("/chat/completions", "/completions", "/models")):
        raise ConfigError(
            f"'{url:.200}' names an endpoint; give the server's base URL "
            f"(http://host:port or http://host:port/v1), bench adds the endpoint",
            field="--url",
        )


def base_url(url: str) -> str:
    """`http://host:port` or `.../v1` -> `.../v1`."""
    check_url(url)
    u = url.rstrip("/")
    return u if u.endswith("/v1") else u + "/v1"


def why_not(exc: aiohttp.ClientError) -> str:
    """Why a connection failed, in words ('Connection refused'), not aiohttp's repr."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        if isinstance(err.errno, int) and err.errno > 0:  # a resolver's errno is negative
            return os.strerror(err.errno).lower()
        return str(err.strerror or err).lower()
    return str(exc) or type(exc).__name__


# The longest schedule a load test may have: a rate of 1e-300 requests/s (or a replay slowed
# as much) would otherwise wait, in effect, forever between two requests.
MAX_SCHEDULE_S = 30 * 86400.0


def arrivals(requests: list[Request], rate: float | None, seed: int) -> list[float]:
    """Send times: the trace's, or Poisson at `rate` (all at 0 when it is infinite)."""
    if rate is None:
        return [r.arrival_s for r in requests]
    if math.isinf(rate):
        return [0.0] * len(requests)
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in requests:
        out.append(t)
        t += rng.expovariate(rate)
    return out


class Bench:
    def __init__(self, opts: BenchOptions, session: aiohttp.ClientSession) -> None:
        self.opts = opts
        self.root = base_url(opts.url)
        path = "/chat/completions" if opts.endpoint == "chat" else "/completions"
        headers = {"Content-Type": "application/json"}
        if opts.api_key:
            headers["Authorization"] = f"Bearer {opts.api_key}"
        self.headers = headers
        pool = None
        if not opts.stream and self.root.startswith("http://"):
            pool = Http1Pool(self.root, limit=max(opts.concurrency or 0, 256))
        self.client = Client(session, self.root + path, headers, opts.timeout_s, pool)
        self.session = session
        self.rng = random.Random(opts.seed)
        self.exact = opts.exact_output == "on"
        # whether the server's usage.prompt_tokens are taken as the prompts' lengths (not
        # when the probes' counts fit no line: `prepare`)
        self.prompt_counts = True

    def body(self, model: str, words: int, max_tokens: int, stream: bool) -> dict[str, Any]:
        text = prompt(words, self.rng)
        b: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": stream}
        if self.opts.endpoint == "chat":
            b["messages"] = [{"role": "user", "content": text}]
        else:
            b["prompt"] = text
        if stream:
            b["stream_options"] = {"include_usage": True}
        if self.exact:
            b["ignore_eos"] = True
            b["min_tokens"] = max_tokens
        return b

    # -- before the run --------------------------------------------------------------------

    async def discover_model(self) -> str:
        """The model to ask for: --model, or the first the server lists."""
        wait_s = min(self.opts.timeout_s, self.opts.probe_timeout_s)
        try:
            async with self.session.get(
                self.root + "/models",
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=wait_s),
            ) as resp:
                status = resp.status
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_MODELS_BYTES:
                        raise BenchError(
                            f"{self.root}/models answered more than "
                            f"{MAX_MODELS_BYTES >> 20} MiB: not a model list"
                        )
                raw = bytes(body)
        except TimeoutError:  # before ClientError: aiohttp's timeouts are both
            raise BenchError(
                f"{self.root}/models did not answer within {wait_s:g} s: is a server that "
                "speaks HTTP listening there?"
            ) from None
        except aiohttp.ClientError as exc:
            raise BenchError(f"cannot reach {self.root}: {why_not(exc)}") from None
        if self.opts.model:
            return self.opts.model
        try:
            data = orjson.loads(raw)["data"]
            return str(data[0]["id"])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise BenchError(
                f"{self.root}/models answered {status} without an OpenAI model list "
                f"({raw[:80]!r}): is this an OpenAI-compatible server? Give --model to skip "
                "this check"
            ) from None

    async def probe(self, model: str, words: int) -> Result:
        res = Result(-1, 0, 0.0, words, 1)
        await self.client.send(res, self.body(model, words, 1, False), time.perf_counter())
        return res

    async def prepare(self, model: str) -> tuple[Calibration, list[str]]:
        """Check the server answers like OpenAI, whether it takes ignore_eos/min_tokens, and
        how many tokens it counts per prompt word."""
        notes: list[str] = []
        if self.opts.exact_output == "auto":
            self.exact = True
            first = await self.probe(model, PROBE_WORDS[0])
            if not first.ok and (first.error_kind or "").startswith("http_4"):
                self.exact = False
                notes.append(
                    f"the server refused ignore_eos/min_tokens ({first.error}); output lengths "
                    "are limited by max_tokens only and counted from usage"
                )
        first = await self.probe(model, PROBE_WORDS[0])
        if not first.ok:
            raise BenchError(
                f"a probe request to {self.client.url} failed ({first.error_kind}): {first.error}"
            )
        if not self.opts.calibrate:
            return Calibration(), notes
        second = await self.probe(model, PROBE_WORDS[1])
        points = [
            (r.prompt_tokens, r.usage_prompt_tokens)
            for r in (first, second)
            if r.usage_prompt_tokens is not None
        ]
        cal = fit(points)
        if not cal.measured:
            notes.append(unfitted_note(points))
            # counts that no line fits are not the prompt's: the asked lengths stand
            self.prompt_counts = not points
        return cal, notes

    # -- the run ---------------------------------------------------------------------------

    async def run(
        self,
        workload: Workload,
        progress: Progress | None = None,
    ) -> Run:
        reqs = workload.requests
        if self.opts.max_requests is not None:
            reqs = reqs[: self.opts.max_requests]
        times = arrivals(reqs, self.opts.request_rate, self.opts.seed)
        if self.opts.duration_s is not None and self.opts.request_rate is not None:
            kept = sum(t < self.opts.duration_s for t in times)  # the times only grow
            reqs, times = reqs[:kept], times[:kept]
        if times and not times[-1] <= MAX_SCHEDULE_S:  # before a request is sent
            poisson = self.opts.request_rate is not None
            raise ConfigError(
                f"the last request would be sent {times[-1]:.3g} s after the first, more than "
                f"{MAX_SCHEDULE_S / 86400:g} days: raise it, or send fewer requests with "
                + ("--max-requests" if poisson else "--duration or --max-requests"),
                field="--request-rate" if poisson else "--rate-scale",
            )
        model = await self.discover_model()
        cal, notes = await self.prepare(model)
        results = [
            Result(r.id, r.row, t, r.prompt_tokens, r.output_tokens, r.slo)
            for r, t in zip(reqs, times, strict=True)
        ]
        sem = asyncio.Semaphore(self.opts.concurrency) if self.opts.concurrency else None
        stream = self.opts.stream
        state = {"done": 0, "errors": 0, "connect_run": 0}
        stop = asyncio.Event()

        async def one(res: Result, body: dict[str, Any], where: dict[str, str]) -> None:
            if sem is not None:
                async with sem:
                    if stop.is_set():
                        res.fail(NOT_SENT, "the run stopped before this request was sent")
                        return
                    await self.client.send(res, body, t0, where)
            else:
                await self.client.send(res, body, t0, where)
            state["done"] += 1
            if not res.ok:
                state["errors"] += 1
                state["connect_run"] = state["connect_run"] + 1 if res.error_kind == CONNECT else 0
                if state["connect_run"] >= CONNECT_GIVE_UP:
                    stop.set()
            else:
                state["connect_run"] = 0

        tasks: list[asyncio.Task[None]] = []
        stopped: str | None = None
        t0 = time.perf_counter()
        ticker = asyncio.create_task(self._tick(progress, state, len(results), t0))
        try:
            for r, res in zip(reqs, results, strict=True):
                # built as it goes: a long trace's prompts need not all sit in memory at once;
                # a row's own model, else --model, else the server's first
                body = self.body(
                    r.model or model, cal.words_for(r.prompt_tokens), r.output_tokens, stream
                )
                due = t0 + res.scheduled_s
                if due - time.perf_counter() > SPIN_S:
                    await asyncio.sleep(due - time.perf_counter() - SPIN_S)
                while time.perf_counter() < due:  # the loop's timers are only ms-accurate
                    await asyncio.sleep(0)
                if stop.is_set():
                    break
                tasks.append(asyncio.create_task(one(res, body, residency_headers(r))))
            if tasks:
                await asyncio.wait(tasks)
        except asyncio.CancelledError:
            stopped = "interrupted"
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            ticker.cancel()
        duration = time.perf_counter() - t0
        if stop.is_set():
            stopped = (
                f"the server stopped answering ({CONNECT_GIVE_UP} connection failures in a row)"
            )
        sent = len(tasks)
        for res in results[sent:]:
            res.fail(NOT_SENT, "the run stopped before this request was sent")
        for task, res in zip(tasks, results, strict=False):
            if task.cancelled() and res.error_kind is None and not res.ok:
                if res.sent:
                    res.fail("cancelled", "interrupted before it finished")
                else:  # it waited for a --concurrency slot: never sent, not failed
                    res.fail(NOT_SENT, "the run stopped before this request was sent")
        if progress is not None:
            progress(state["done"], len(results), state["errors"], duration, True)
        if not self.prompt_counts:  # input_lens as the note says: the lengths asked for
            for res in results:
                res.usage_prompt_tokens = None
        uncounted = sum(r.ok and r.usage_completion_tokens is None for r in results)
        if uncounted:  # said, as the prompts' nominal lengths are
            notes.append(
                f"{uncounted} of {sum(r.ok for r in results)} completed answers gave no "
                "usage.completion_tokens: their outputs are counted by the client (the stream's "
                "chunks of text, or a whole answer's text at 4 characters a token)"
            )
        return Run(results, duration, model, cal, self.exact, stopped, notes)

    async def _tick(
        self,
        progress: Progress | None,
        state: dict[str, int],
        total: int,
        t0: float,
    ) -> None:
        if progress is None:
            return
        while True:
            progress(state["done"], total, state["errors"], time.perf_counter() - t0, False)
            await asyncio.sleep(0.25)


def unfitted_note(points: list[tuple[int, int]]) -> str:
    """Why the probes' (words, usage.prompt_tokens) gave no line, and what bench did instead.
    Until 2026-12-07 counts that did not grow with the prompt (one server counted every
    prompt 5 tokens) were reported as no counts at all, and input_lens took them."""
    if not points:
        return (
            "the server reports no counted usage.prompt_tokens (none, or wattserve's "
            "guess of 4 characters a token): prompt lengths are nominal"
        )
    if len(points) < 2:
        ((words, tokens),) = points
        why = (
            f"the server counted usage.prompt_tokens on one of the two probe prompts only "
            f"({tokens} tokens for {words} words)"
        )
    else:
        (w1, t1), (w2, t2) = points[0], points[-1]
        why = (
            f"the server's usage.prompt_tokens do not grow with the prompt as a tokenizer's "
            f"do ({t1} tokens for {w1} words, {t2} for {w2}; each word is about one token)"
        )
    return (
        f"{why}: they are not the prompts' lengths, so prompts are sized at one token a "
        "word and input_lens keeps the lengths asked for (prompt lengths are nominal)"
    )


def residency_headers(req: Request) -> dict[str, str]:
    """Where a trace row comes from, as a wattserve gateway reads it (docs/serve.md): its
    origin site in `x-wattserve-site`, `x-wattserve-data-local: true` when it may not leave
    it, and its SLO class in `x-wattserve-slo`. `simulate` routes rows by them, so the gateway
    must see them too (other servers ignore the headers); a local-only row without an origin
    is sent as one, for the gateway's 400, as simulate rejects it."""
    where = {} if req.origin is None else {"x-wattserve-site": req.origin}
    if req.local_only:
        where["x-wattserve-data-local"] = "true"
    if req.slo != "default":  # its class, which a gateway started with --slos routes by
        where["x-wattserve-slo"] = req.slo
    return where


def progress_bar() -> Progress:
    """A one-line progress bar on stderr."""

    def show(done: int, total: int, errors: int, elapsed_s: float, final: bool) -> None:
        frac = done / total if total else 1.0
        n = int(frac * 30)
        sys.stderr.write(
            f"\rbench [{'#' * n}{'.' * (30 - n)}] {done}/{total} errors {errors} {elapsed_s:7.1f} s"
        )
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
