"""What every backend does: stream the tokens of one request, and say what it cost."""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from wattserve.core.fleet import DeploymentSpec, Fleet, HostedSpec
from wattserve.core.governor import PowerGovernor
from wattserve.core.targets import Target
from wattserve.core.workload import Request
from wattserve.errors import ConfigError


@dataclass
class GenRequest:
    """One request as the gateway hands it to a backend."""

    id: str
    kind: str  # "chat" or "completion"
    model: str  # wattserve model id
    body: dict[str, Any]  # the client's OpenAI body, forwarded to OpenAI-compatible backends
    prompt_tokens: int  # the gateway's guess, about 4 characters a token (schema.approx_tokens)
    max_tokens: int  # a limit the emulated backends also use as the output length
    origin: str | None = None
    # lower runs first where an emulated engine schedules by priority: the request's SLO
    # class's TTFT target, as simulate's (until 2026-12-06 every request here had 0, so
    # `scheduling: priority` served in arrival order)
    priority: float = 0.0
    # ends the request's place in its target's load (and a server's modelled draw) when the
    # backend's server is done with it (set by the gateway for each try: Release)
    released: Callable[[], None] | None = None


class Release:
    """A request's place in its target's load (target.add: a server's modelled draw too),
    counted from its placement and ended once, by whichever comes first: the backend, when
    its server's part ends (an answer read ahead of a slow client, an emulated engine's last
    step), or the gateway, when the request does. Until 2026-12-06 only the gateway ended it,
    after the client had read the whole answer: a site went on counting a server's draw for a
    client's reading time (339 W while it paused, the server idle), and its load stayed up,
    where simulate's ends with the engine's last step."""

    __slots__ = ("done", "target")

    def __init__(self, target: Any) -> None:
        self.target, self.done = target, False
        target.add(1)

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.target.add(-1)


@dataclass
class Piece:
    """A piece of generated text, with what a server sent beside it: tool calls (whole in an
    answer, OpenAI's `delta.tool_calls` fragments in a stream) and the choice's `logprobs`,
    passed on as the server gave them once `backends.answers` has checked their shape."""

    text: str
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: dict[str, Any] | None = None
    # the deprecated functions API's call (`message.function_call`, a stream's fragments)
    function_call: dict[str, str] | None = None
    # a message's other text: vLLM's reasoning (`reasoning_content`, `reasoning`), OpenAI's
    # `refusal` (answers.TEXT_FIELDS)
    texts: dict[str, str] | None = None


@dataclass
class Finish:
    """The end of a generation with what it cost."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    energy_j: float | None
    usd: float | None
    synthetic: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    energy_basis: str | None = None  # said in answers when a backend states it (core.sized)
    # whether a count is a guess rather than a tokenizer's (said in answers, the ledger and
    # wattserve_estimated_tokens_total): a prompt counted at about 4 characters a token, an
    # output counted in a server's chunks
    prompt_estimated: bool = False
    completion_estimated: bool = False


Event = Piece | Finish


MAX_GONE = 4096  # what backends keep of early-ended requests for the gateway to read, at most


def guessed_finish(
    reason: str,
    req: GenRequest,
    produced: int,
    backend: Backend | None,
    energy_j: float | None = None,
    usd: float | None = None,
    prompt_tokens: int | None = None,
) -> Finish:
    """The end the gateway writes for a request whose backend sent none (it ended early, or
    said nothing of its counts): the prompt at `prompt_tokens` where a tokenizer counted it,
    else at the gateway's guess; the output in the pieces delivered, a guess too where a piece
    may hold several tokens (a server's chunks)."""
    in_chunks = backend is not None and not backend.pieces_are_tokens
    return Finish(
        reason,
        req.prompt_tokens if prompt_tokens is None else prompt_tokens,
        produced,
        energy_j,
        usd,
        prompt_estimated=prompt_tokens is None,
        completion_estimated=in_chunks,
    )


class Backend(ABC):
    """One place a request can run: an engine replica, a server, or a hosted API."""

    name: str
    site: str
    model: str
    kind: str
    healthy: bool = True
    probed: bool = False  # whether the gateway's health loop calls `check` on it
    # seconds its devices were held by its requests' steps, running or waiting for power (the
    # time its requests' time-priced dollars share out); None where it is not known
    device_s: float | None = None
    # whether each Piece it yields is one token (emulated engines), so that the pieces of an
    # answer cut short count its output; a server's chunk may hold several
    pieces_are_tokens: bool = True

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start what the backend needs (a task, a subprocess)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop it, letting in-flight work finish where it can."""

    @abstractmethod
    def generate(self, req: GenRequest) -> AsyncIterator[Event]:
        """Stream Pieces, then one Finish. Raise UpstreamError on failure. Closing the iterator
        early (the client went away) cancels the work upstream."""

    def honours(self, capability: str) -> bool:
        """Whether the backend does what a request's field asks (`serve.capabilities`: a
        name such as `chat.logprobs`), rather than ignore it. None by default: the router
        sends a request that needs one only to backends that say so, or refuses it (400)."""
        return False

    def sees_first_token(self, req: GenRequest) -> bool:
        """Whether `generate`'s first event comes when the request's first token does, so
        that its time is the request's TTFT. Not for a whole answer from a server (one event
        at the end): then TTFT is unknown, and no TTFT or TPOT is made up from the total."""
        return True

    def abandon(self) -> None:
        """A request placed here will not be sent (refused after its placement): give back
        what the placement holds (an emulated replica's promised power; nothing elsewhere)."""
        return None

    def left_early(self, request_id: str) -> tuple[float | None, float | None] | None:
        """What a request that ended early here cost up to then, where the backend measures
        it: (dollars or None where the devices have no price, joules or None where power is
        unknown); None elsewhere (the gateway then
        bills `budgets.delivered`). Read once: the backend forgets it."""
        return None

    def unread(self, request_id: str, fin: Finish) -> None:  # noqa: B027 - optional hook
        """The answer of `request_id` ended here with `fin`, but its client left before it
        was delivered (it waited on the link to the client's site: serve.link): what
        `left_early` gives for it, where the backend bills by what it measured."""

    def prompt_counted(self, request_id: str) -> int | None:
        """The prompt tokens of a request that ended early here, where the backend counted
        them with the model's tokenizer (the local model); None elsewhere (the gateway's guess
        stands). Read once: the backend forgets it."""
        return None

    def stretch(self) -> float:
        """How much a power cap stretches this backend's time now (serve.stretch): what a
        hold scales the time-priced dollars of a request here by; 1.0 where nothing waits."""
        return 1.0

    async def check(self) -> bool:
        """A health probe; the default trusts the last outcome."""
        return self.healthy

    def power_w(self) -> float:
        """Power the backend draws now, as well as it is known (0 for hosted APIs)."""
        return 0.0


@dataclass
class BuildContext:
    """What a backend kind may use while building a fleet entry's backends."""

    fleet: Fleet
    governor: PowerGovernor  # emulated engines reserve their steps' power with it
    rng: random.Random
    power_changed: asyncio.Condition  # notified when a site's power falls
    # by site: the backends whose steps wait for power there, in the order they began to wait
    power_waits: dict[str, deque[Any]] = field(default_factory=dict)


@dataclass
class Built:
    """A fleet entry, built: the target policies see, its backends, and `bind`, which gives
    the backend a request admitted to the target goes to (None: none of them can take it,
    e.g. every one already failed this request; the set holds backend names to avoid)."""

    target: Target
    backends: list[Backend]
    bind: Callable[[Request, set[str]], Backend | None]


class BackendKind(ABC):
    """One kind of backend (`backend: {kind: NAME}` in the fleet file): how a deployment or a
    hosted API entry of that kind is built. The gateway looks kinds up in
    `wattserve.serve.backends.registry`; it never names one."""

    name: str

    def deployment(self, spec: DeploymentSpec, ctx: BuildContext) -> Built:
        raise ConfigError(f"backend kind '{self.name}' cannot serve a deployment", field="backend")

    def hosted(self, spec: HostedSpec, ctx: BuildContext) -> Built:
        raise ConfigError(f"backend kind '{self.name}' cannot serve a hosted API", field="backend")
