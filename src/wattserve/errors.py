"""The one error tree of wattserve.

    WattserveError
    ├── ConfigError          a file or value the user gave is malformed (says file, line, field)
    ├── UnknownNameError     a hardware, provider or model id that no catalog holds
    ├── MissingFigureError   a figure the model needs is not in the catalog (never a silent zero)
    ├── CalibrationError     a calibration could not be fitted or applied
    ├── PlanInfeasibleError  no fleet meets the workload's SLOs within the limits (says which
    │                        constraint binds and the smallest change that would do)
    ├── BenchError           a benchmark cannot run: the server is unreachable or not OpenAI
    ├── NoBackendAvailable   `serve`: no target can take a request now (status, retry-after)
    └── UpstreamError        `serve`: a backend failed (before its first byte: retry elsewhere)
        └── HTTPError        the gateway's HTTP/1.1 client could not talk to a backend

Every message says what went wrong and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WattserveError(Exception):
    """Root of every error wattserve raises on purpose."""


class ConfigError(WattserveError):
    """A user-supplied file or value is malformed."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.detail = message  # without the where: a caller may name the field its own way
        where = []
        if path is not None:
            where.append(path if line is None else f"{path}:{line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class UnknownNameError(WattserveError):
    """An id that no catalog holds; the message names the closest matches."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.suggestions = closest(name, known)
        hint = (
            f" Did you mean: {', '.join(self.suggestions)}?"
            if self.suggestions
            else f" See `wattserve {'models' if kind == 'model' else 'catalog'}` for the list."
        )
        if kind == "hardware" and name in ("local-cpu", "local-gpu"):
            hint += (
                f" {name} is the device `wattserve profile` measured: pass the {name}.yaml it "
                "wrote with --hardware-file (default folder ~/.cache/wattserve/profile)."
            )
        # escaped (`printable`): a BEL and backspaces sent as a model id printed "unknown model
        # 'llama-3.1-8b'" on a terminal
        super().__init__(f"unknown {kind} '{printable(name)[:200]}'.{hint}")


class MissingFigureError(WattserveError):
    """A figure the model needs is absent from the catalog entry."""


class CalibrationError(WattserveError):
    """Calibration could not be fitted or applied."""


class PlanInfeasibleError(WattserveError):
    """`plan` found no fleet; `reasons` name each binding constraint and the change it needs.
    `status` is "infeasible", or "stopped" where the solver ran out of time before it found a
    plan or proved there is none."""

    def __init__(self, reasons: list[str], status: str = "infeasible") -> None:
        self.reasons, self.status = reasons, status
        super().__init__(f"{self.headline}: " + "; ".join(reasons))

    @property
    def headline(self) -> str:
        return "infeasible" if self.status == "infeasible" else "no plan found"


class NoBackendAvailable(WattserveError):
    """No target can take a request now: the HTTP status to answer, the reason (the
    admission's refusal in words) and, when waiting may help, after how long to retry."""

    def __init__(self, status: int, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.retry_after_s = status, reason, retry_after_s


class UpstreamError(WattserveError):
    """A backend failed. `before_first_byte` tells the gateway whether it may retry the
    request elsewhere (nothing reached the client yet); `status` is what to answer if not;
    `backend_down` whether the backend itself is at fault (down, overloaded, failing every
    request), so that it leaves the rotation for a while: by default any 5xx. `code` and
    `param` are OpenAI's error code and the request field at fault, where the backend knows
    them (None: `backend_error`, no field); `type_` OpenAI's error type (by default
    `invalid_request_error` for a 4xx, `server_error` otherwise). `retry_after_s`: how long a
    backend that answered 429 asked to be left alone (its Retry-After, bounded), else None."""

    def __init__(
        self,
        message: str,
        *,
        before_first_byte: bool,
        status: int = 502,
        backend_down: bool | None = None,
        code: str | None = None,
        param: str | None = None,
        type_: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.before_first_byte = before_first_byte
        self.status = status
        self.backend_down = status >= 500 if backend_down is None else backend_down
        self.code, self.param = code, param
        self.type_ = type_ or ("invalid_request_error" if status < 500 else "server_error")
        self.retry_after_s = retry_after_s


class BenchError(WattserveError):
    """`bench` cannot run: the endpoint is unreachable or does not answer like OpenAI."""


def in_any_case(name: str, known: Iterable[str]) -> str | None:
    """The one known name that is `name` in another case, else None (ids are lower case;
    `H100-SXM` is what a person types; two matches are ambiguous)."""
    folded = name.lower()
    found = [k for k in known if k.lower() == folded]
    return found[0] if len(found) == 1 else None


def printable(text: str) -> str:
    """`text` for a terminal, on one line: a control character (an escape sequence, a BEL, a
    backspace that rewrites what came before, a line break that starts a forged line) or a
    lone surrogate shown as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def field_key(key: str) -> str:
    """A file's key for an error's field name: as written where it is plain text, else escaped
    (an escape sequence in a key would reach the terminal with the error), cut to 60
    characters."""
    return f"{key:.60}" if key.isprintable() else f"{key!r:.60}"


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names nearest to `name`, best first (substring matches count too), and
    those of its last part after a vendor's or an organisation's prefix ('nvidia-h100',
    'nvidia/h100', 'meta-llama/Meta-Llama-3-8B': no suggestion had been found for them)."""
    pool = list(known)
    lowered = name.lower()
    tries = [lowered]
    for sep in ("/", " ", "-", "_"):
        head, found, tail = lowered.partition(sep)
        if found and head and tail and tail not in tries:
            tries.append(tail)
    hits: list[str] = []
    for t in tries:
        hits += [k for k in pool if k not in hits and (t in k.lower() or k.lower() in t)]
        for k in difflib.get_close_matches(t, pool, n=n, cutoff=0.5):
            if k not in hits:
                hits.append(k)
        if hits:
            break
    return hits[:n]
