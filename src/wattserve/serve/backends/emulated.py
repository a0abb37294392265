"""Emulated devices: the simulator's EngineModel on the wall clock.

An "H100 running Llama-3.1-8B" answers with that hardware's timing, batching contention and
power: each engine step sleeps for the PerfModel's step time, every sequence in the step gets
its token when the step ends, and the step's energy is shared among the tokens it produced.
The text is synthetic and marked as such: the same words for every request, so that where it
meets a stop sequence is known when the request arrives (`synthetic.stop_point`), and the
sequence is submitted to end at that token, as an engine's would. Steps reserve their power with the
PowerGovernor first, exactly as in `simulate`: power a step gives back goes first to the
steps already waiting for it at the site, in the order they began to wait.

A request's time-priced dollars are its shares of the device time of the steps it was in: a
step's device time is the time it waited for power (the devices held and idle) plus its
PerfModel time (slowed where a cap demanded it), split equally among the sequences in the
step. The shares of all requests add up to the engine's `device_s`: nothing is counted twice,
nothing lost. The devices' time is the emulated hardware's: an engine loop that wakes later
than its step's end (a busy host) delays the tokens, but neither its own step nor a step
waiting for its power is billed that delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from wattserve.core.engine import EngineModel, Seq
from wattserve.core.fleet import DeploymentSpec, HostedSpec
from wattserve.core.governor import PowerGovernor
from wattserve.core.targets import EnginePool, HostedPool, make_engines
from wattserve.core.workload import Request
from wattserve.errors import UpstreamError
from wattserve.serve.backends.base import (
    MAX_GONE,
    Backend,
    BackendKind,
    BuildContext,
    Built,
    Event,
    Finish,
    GenRequest,
    Piece,
)
from wattserve.serve.backends.hosted_emulated import EmulatedHostedBackend
from wattserve.serve.backends.synthetic import SyntheticText, stop_for
from wattserve.serve.stretch import StepStretch

log = logging.getLogger("wattserve.serve")
POWER_WAIT_WARN_S = 5.0  # a step that waits for power longer than this is logged
# the longest a replica holds the power promised for a request that has not reached it (one
# crossing a link is handed over by a task of its own; one whose key's budget refuses it never
# comes): then given back
PROMISE_S = 0.5


def _logprobs(req: GenRequest, text: str, offset: int) -> dict[str, Any] | None:
    """A token's logprobs where the request asks for them, in OpenAI's shape (chat's, or
    completions' with `text_offset`): the emulated engine's text is certain, so the token's
    logprob is 0.0 and it is its own only alternative (no other has any probability)."""
    asked = req.body.get("logprobs")
    if req.kind == "chat":
        if asked is not True:
            return None
        entry = {"token": text, "logprob": 0.0, "bytes": list(text.encode())}
        top = [entry] if req.body.get("top_logprobs") else []
        return {"content": [entry | {"top_logprobs": top}], "refusal": None}
    if asked is None:
        return None
    return {
        "tokens": [text],
        "token_logprobs": [0.0],
        "top_logprobs": [{text: 0.0} if asked else {}],
        "text_offset": [offset],
    }


class _Stream(SyntheticText):
    """The per-request queue between the engine loop and the HTTP handler, and the text its
    tokens carry (SyntheticText)."""

    __slots__ = ("device_s", "energy_j", "queue", "released", "seq")

    def __init__(
        self, seq: Seq, keep: int = -1, released: Callable[[], None] | None = None
    ) -> None:
        super().__init__(keep)
        self.seq = seq
        self.released = released  # GenRequest.released: called at the engine's last step
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.energy_j = 0.0
        self.device_s = 0.0  # its shares of the steps' device time


class EmulatedBackend(Backend):
    """One emulated engine replica."""

    kind = "emulated"
    device_s: float = 0.0  # see the module's docstring

    def __init__(
        self,
        name: str,
        site: str,
        model: str,
        engine: EngineModel,
        governor: PowerGovernor,
        usd_per_s: float,
        usd_per_j: float,
        clock: Callable[[], float] = time.monotonic,
        power_changed: asyncio.Condition | None = None,
        power_waits: deque[EmulatedBackend] | None = None,
        priced: bool = True,
    ) -> None:
        self.name, self.site, self.model = name, site, model
        self.engine = engine
        self.governor = governor
        self.usd_per_s, self.usd_per_j = usd_per_s, usd_per_j
        self.priced = priced  # False: its devices have no price, its dollars are unknown
        self.clock = clock
        self.streams: dict[int, _Stream] = {}
        self.wake = asyncio.Event()
        self.power_changed = power_changed  # notified when this engine's step power falls
        # the site's engines whose steps wait for power, in the order they began to wait
        self.power_waits: deque[EmulatedBackend] = deque() if power_waits is None else power_waits
        self.want_w = 0.0  # the power this engine's waiting step needs above idle
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.device_s = 0.0
        self.stretched = StepStretch()  # how much the cap stretches this engine's steps
        # requests whose client left: their shares so far, until the gateway reads them
        self.gone: dict[str, tuple[float | None, float | None]] = {}
        self.in_step: dict[int, tuple[float, float]] = {}  # the running step's dues by sequence
        self.promised_w = 0.0  # power promised to this idle replica's first step (`promise`)
        self.promise_due = 0.0  # when it is given back if no request has come (`promise`)
        self.busy = False  # its loop holds a step (planned, waiting for power or running)
        self.placed = 0  # requests placed here whose sequences are not yet submitted (`place`)

    def power_w(self) -> float:
        return self.engine.power_w

    def honours(self, capability: str) -> bool:
        return capability in ("chat.logprobs", "completion.logprobs")  # `_logprobs`

    def stretch(self) -> float:
        return self.stretched.ratio

    def left_early(self, request_id: str) -> tuple[float | None, float | None] | None:
        return self.gone.pop(request_id, None)

    def unread(self, request_id: str, fin: Finish) -> None:
        # the engine made the whole answer (its steps are spent): billed as one the engine
        # finished and its client left before reading (until 2026-12-06, across a link, the
        # devices' price for the whole wall time: 220 times the answer's cost)
        self._keep(request_id, (fin.usd, fin.energy_j))

    def _keep(self, request_id: str, cost: tuple[float | None, float | None]) -> None:
        if len(self.gone) >= MAX_GONE:  # read by the gateway at once; never unbounded
            self.gone.pop(next(iter(self.gone)))
        self.gone[request_id] = cost

    def _charge(self, stream: _Stream) -> tuple[float | None, float | None]:
        """A request's dollars and joules: its shares of its steps (the module's docstring);
        None where the devices' price or power is unknown."""
        usd = self.usd_per_s * stream.device_s + self.usd_per_j * stream.energy_j
        return usd if self.priced else None, stream.energy_j if self.engine.power_known else None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"engine {self.name}")
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("wattserve: engine %s stopped", self.name, exc_info=task.exception())

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _wait_for_power(self, delta_w: float) -> None:
        cond = self.power_changed
        if cond is None:
            return
        gov, site = self.governor, self.site

        def ready() -> bool:  # its turn, or it could never fit alone: then throttled to the cap
            return self._may_start(delta_w) or gov.slows(site, delta_w)

        async with cond:
            try:
                async with asyncio.timeout(POWER_WAIT_WARN_S):
                    await cond.wait_for(ready)
                return
            except TimeoutError:
                acct = gov.sites[site]
                log.warning(
                    "wattserve: %s: a step adding %.1f W has waited %.0f s for power at %s "
                    "(draw %.1f W, cap %s W, idle %.1f W, floor %.1f W)",
                    self.name,
                    delta_w,
                    POWER_WAIT_WARN_S,
                    site,
                    acct.power_w,
                    "none" if acct.cap_w is None else f"{acct.cap_w:.1f}",
                    acct.base_w,
                    acct.floor_w,
                )
            await cond.wait_for(ready)

    def idle(self) -> bool:
        """No step planned, waiting for power or running on this replica: as simulate's idle
        engine, whose next step is planned the instant one ends. (A promise made between the
        plan and its start had counted against the replica's own step, which then waited for
        power its own promise held.)"""
        return not self.busy

    def promise(self, delta_w: float) -> None:
        """Promise this idle replica's first step the power `delta_w` a request placed on it
        adds, as simulate does on placement (PowerGovernor.reserve): requests admitted before
        the step takes its power see it, so two waiting for power at a capped site do not
        wake two replicas where the cap lets one run. Held until the replica plans a step
        with the request, where the step takes the real figure, or PROMISE_S after the first
        promise without one (`abandon`: at once)."""
        if not self.promised_w:
            self.promise_due = self.clock() + PROMISE_S
        self.promised_w += delta_w
        self.governor.reserve(self.site, delta_w)
        self.wake.set()  # so that the loop gives it back if the request never comes

    def place(self) -> None:
        """A request is placed here: counted in the engine's outstanding requests at once, as
        simulate submits its sequence at placement, until `generate` submits it (or
        `abandon`). Until 2026-12-06 only the submission counted, which comes later where
        anything is awaited between (a link to the client's site, a budget asked of Redis):
        eight requests from an edge site at once all saw four idle replicas and went to one
        or two of them (simulate: two on each)."""
        self.placed += 1
        self.engine.outstanding += 1

    def _unplace(self) -> None:
        if self.placed:
            self.placed -= 1
            self.engine.outstanding -= 1

    def abandon(self) -> None:
        # a request placed here will not come (its key's budget refused it): its place, and
        # its promise now, not PROMISE_S later (refused requests 0.3 s apart had piled up
        # promises on one idle replica until the site's cap was spoken for)
        self._unplace()
        if self.promised_w:
            self.promise_due = -math.inf
            self.wake.set()

    def release_promise(self) -> bool:
        """Give back what `promise` held; whether there was any."""
        if not self.promised_w:
            return False
        self.governor.reserve(self.site, -self.promised_w)
        self.promised_w = 0.0
        return True

    async def _release_promise(self) -> None:
        """`release_promise`, and tell the steps waiting for power at the site: one may fit
        now (another replica's step waits on this promise, and nothing else would wake it)."""
        if self.release_promise() and self.power_changed is not None:
            async with self.power_changed:
                self.power_changed.notify_all()

    def _may_start(self, delta_w: float) -> bool:
        """Whether a step adding `delta_w` may take its power now (PowerGovernor.may_start,
        the simulator's rule): a step in the site's queue waits for those ahead of it."""
        waits = self.power_waits
        if not waits or waits[0] is self:
            return self.governor.may_start(self.site, delta_w, None)
        if self in waits:
            return False
        return self.governor.may_start(self.site, delta_w, waits[0].want_w)

    async def _loop(self) -> None:
        engine = self.engine
        while not self.stopping:
            planned = self.clock()
            plan, rejected = engine.next_plan(planned)
            for s in rejected:
                stream = self.streams.pop(id(s), None)
                if stream is not None:
                    stream.queue.put_nowait(None)
            if plan is None:
                self.busy = False
                self.wake.clear()
                if not self.promised_w:
                    await self.wake.wait()
                    continue
                # promised for a request on its way: held until it comes (a wake) or is due
                left = self.promise_due - self.clock()
                if left > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await self.wake.wait()
                    continue
                await self._release_promise()
                continue
            self.busy = True  # no promise from here: the step takes the real figure
            await self._release_promise()
            model_s = plan.end_s - plan.start_s  # at full power, as the predictions assume
            self.governor.throttle(self.site, plan, engine.idle_w)
            delta = plan.power_w - engine.idle_w
            waited = False
            try:
                while not self._may_start(delta):
                    if not waited:
                        waited = True
                        self.power_waits.append(self)
                    self.want_w = delta
                    await self._wait_for_power(delta)
                    # the cap may have fallen meanwhile (a shared power lease returned): slow
                    # the step to fit it rather than wait for power that will not come
                    self.governor.throttle(self.site, plan, engine.idle_w)
                    delta = plan.power_w - engine.idle_w
            finally:
                if waited:
                    self.power_waits.remove(self)
            start = self.clock()
            wait_s = 0.0
            if waited:  # until the power it waited for was due back (SitePower.ready_t)
                due = min(start, self.governor.account(self.site).ready_t)
                wait_s = max(0.0, due - planned)
            duration = plan.end_s - plan.start_s
            plan.start_s, plan.end_s = start, start + duration
            engine.start(plan)
            self.governor.change(self.site, start, delta)
            if waited and self.power_waits and self.power_changed is not None:
                async with self.power_changed:  # the next waiting step's turn: it may fit too
                    self.power_changed.notify_all()
            decoding = [s for s in engine.running.values() if s.decoding]
            before = {id(s): s.generated for s, _ in plan.chunks}
            step_s = wait_s + duration  # the devices are held while the step waits
            tokens = sum(q for _, q in plan.chunks) + len(decoding)
            per_token_j = plan.energy_j / tokens if tokens else 0.0
            share_s = step_s / max(1, len(plan.chunks) + len(decoding))
            # each sequence's share of this step, known before it runs: a request whose
            # client leaves meanwhile takes its share with it (generate's finally)
            dues = {id(s): (share_s, q * per_token_j) for s, q in plan.chunks}
            for s in decoding:
                got_s, got_j = dues.get(id(s), (0.0, 0.0))
                dues[id(s)] = (got_s + share_s, got_j + per_token_j)
            self.in_step = dues
            await asyncio.sleep(max(0.0, plan.end_s - self.clock()))
            end = self.clock()
            _, finished = engine.complete(end)
            self.governor.change(self.site, end, -delta)
            self.governor.freed(self.site, plan.end_s)
            if self.power_changed is not None:
                async with self.power_changed:
                    self.power_changed.notify_all()
            self.stretched.add(end, model_s, step_s)
            self.device_s += step_s
            self.in_step = {}
            for key, (due_s, due_j) in dues.items():
                stream = self.streams.get(key)
                if stream is not None:
                    stream.device_s += due_s
                    stream.energy_j += due_j
            emitted = decoding + [s for s, _ in plan.chunks if s.generated > before[id(s)]]
            for s in emitted:
                stream = self.streams.get(id(s))
                if stream is None:
                    continue
                stream.queue.put_nowait(stream.next_text())
            for s in finished:
                stream = self.streams.pop(id(s), None)
                if stream is not None:
                    stream.queue.put_nowait(None)
                    if stream.released is not None:  # as simulate's pool counts it
                        stream.released()

    async def generate(self, req: GenRequest) -> AsyncIterator[Event]:
        self._unplace()  # counted by the engine itself from its submission, below
        if self.stopping:
            raise UpstreamError(f"{self.name} is shutting down", before_first_byte=True, status=503)
        tokens, keep = stop_for(req.body, req.max_tokens)
        r = Request(
            id=0,
            arrival_s=self.clock(),
            prompt_tokens=req.prompt_tokens,
            output_tokens=tokens,  # to its stop sequence: the sequence leaves the batch there
            model=req.model,
            origin=req.origin,
        )
        seq = Seq(r, priority=req.priority)
        stream = _Stream(seq, keep, req.released)
        self.streams[id(seq)] = stream
        self.engine.submit(seq)
        self.wake.set()
        produced = offset = 0  # tokens, and characters of text, sent
        read_all = False
        asked = req.body.get("logprobs") is not None  # else no token has any (`_logprobs`)
        try:
            while True:
                piece = await stream.queue.get()
                if piece is None:
                    break
                produced += 1
                yield Piece(piece, logprobs=_logprobs(req, piece, offset) if asked else None)
                offset += len(piece)
            read_all = True
        finally:
            if not read_all:  # the client left early: its share of the steps it was in
                if self.streams.pop(id(seq), None) is not None:  # still running: stop it
                    self.engine.abort(seq)
                    due_s, due_j = self.in_step.get(id(seq), (0.0, 0.0))  # the step it is in
                    stream.device_s += due_s
                    stream.energy_j += due_j
                # else the engine had finished it and the client left before reading it all
                # (until 2026-12-05 that was billed the devices' price for the wall time)
                self._keep(req.id, self._charge(stream))
        if produced == 0:  # refused by the engine (EngineModel.refusal): say why, as simulate
            why = self.engine.refusal(r) or "its KV cache cannot hold it"
            raise UpstreamError(
                f"{self.name} cannot serve a {req.prompt_tokens}-token prompt with up to "
                f"{tokens} output tokens: {why}",
                before_first_byte=True,
                status=400,
            )
        usd, joules = self._charge(stream)
        yield Finish(
            finish_reason="stop" if keep >= 0 else "length",
            prompt_tokens=req.prompt_tokens,
            completion_tokens=produced,
            energy_j=joules,
            usd=usd,
            synthetic=True,
            prompt_estimated=True,  # the gateway's guess is the length it emulated
        )


class EmulatedKind(BackendKind):
    """`kind: emulated` (the default): a deployment's replicas as EngineModels on the wall
    clock, routed as the simulator's EnginePool; a hosted API from its published profile,
    routed as the simulator's HostedPool."""

    name = "emulated"

    def deployment(self, spec: DeploymentSpec, ctx: BuildContext) -> Built:
        engines = make_engines(spec, exact=True)  # stepped: tokens stream per step
        # the site's cap may be set at run time: the pool asks for the room at each decision
        pool = EnginePool(spec, engines, ctx.rng, ctx.fleet.rtt_s, ctx.governor.room(spec.site))
        usd_per_s, usd_per_j = spec.cost.billable()
        by_engine: dict[int, EmulatedBackend] = {}
        for e in engines:
            by_engine[id(e)] = EmulatedBackend(
                e.name,
                spec.site,
                spec.model,
                e,
                ctx.governor,
                usd_per_s,
                usd_per_j,
                power_changed=ctx.power_changed,
                power_waits=ctx.power_waits.setdefault(spec.site, deque()),
                priced=spec.cost.known,
            )
            ctx.governor.add_base(spec.site, e.idle_w)

        gov = ctx.governor

        def bind(req: Request, avoid: set[str]) -> Backend | None:
            engine = pool.replica_for(req)
            b = by_engine[id(engine)]
            if b.name in avoid:
                return None
            if gov.capped(spec.site) and b.idle():  # what it adds, before it is outstanding
                b.promise(pool.replica_marginal_w(engine))
            b.place()
            return b

        return Built(pool, list(by_engine.values()), bind)

    def hosted(self, spec: HostedSpec, ctx: BuildContext) -> Built:
        backend = EmulatedHostedBackend(spec)

        def bind(req: Request, avoid: set[str]) -> Backend | None:
            return None if backend.name in avoid or not backend.healthy else backend

        return Built(HostedPool(spec, ctx.fleet.rtt_s), [backend], bind)
