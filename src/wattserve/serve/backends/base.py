"""What every backend does: stream the tokens of one request, and say what it cost."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


class BackendError(Exception):
    """A backend failed. `before_first_byte` tells the gateway whether it may retry elsewhere."""

    def __init__(self, message: str, *, before_first_byte: bool, status: int = 502) -> None:
        super().__init__(message)
        self.before_first_byte = before_first_byte
        self.status = status


@dataclass
class GenRequest:
    """One request as the gateway hands it to a backend."""

    id: str
    kind: str  # "chat" or "completion"
    model: str  # wattserve model id
    body: dict[str, Any]  # the client's OpenAI body, forwarded to OpenAI-compatible backends
    prompt_tokens: int  # estimated (no tokenizer for every model at hand)
    max_tokens: int  # a limit the emulated backends also use as the output length
    origin: str | None = None


@dataclass
class Piece:
    """A piece of generated text."""

    text: str


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


Event = Piece | Finish


class Backend(ABC):
    """One place a request can run: an engine replica, a server, or a hosted API."""

    name: str
    site: str
    model: str
    kind: str
    healthy: bool = True

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start what the backend needs (a task, a subprocess)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop it, letting in-flight work finish where it can."""

    @abstractmethod
    def generate(self, req: GenRequest) -> AsyncIterator[Event]:
        """Stream Pieces, then one Finish. Raise BackendError on failure. Closing the iterator
        early (the client went away) cancels the work upstream."""

    async def check(self) -> bool:
        """A health probe; the default trusts the last outcome."""
        return self.healthy

    def power_w(self) -> float:
        """Power the backend draws now, as well as it is known (0 for hosted APIs)."""
        return 0.0
