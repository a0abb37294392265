"""What an OpenAI-compatible server's answer holds, read as hostile input: a choice's text,
tool calls and logprobs (passed on to the client in OpenAI's shapes only), an error's fields
and a Retry-After.

A server's answer is the client's answer, so what is passed on must be what OpenAI would send:
tool calls are rebuilt from OpenAI's fields (`index`, `id`, `type`, `function.name`,
`function.arguments`), logprobs pass as the server sent them if they are a JSON object of
OpenAI's depth. A field of another form is `Malformed`: the answer is not a completion, and
the backend treats it as a server's broken answer (502, body logged), never a 500.
"""

from __future__ import annotations

import email.utils
import math
import time
from datetime import UTC
from typing import Any

import orjson

from wattserve.serve.backends.base import Piece
from wattserve.serve.guard import MAX_RETRY_AFTER_S

MAX_TOOL_CALLS = 128  # in one answer or chunk; OpenAI's parallel calls are a handful
# logprobs nest 5 deep in OpenAI's shape (chat: content, a token, its top_logprobs, one of
# them, its bytes); deeper is not a logprobs object, and past 255 the gateway's JSON encoder
# could not send it (a 500)
MAX_LOGPROBS_DEPTH = 8
MAX_FIELD_CHARS = 256  # an error's type, param and code


class Malformed(ValueError):
    """A server's answer whose tool calls or logprobs are not in OpenAI's shape."""


def piece(kind: str, choice: Any, streamed: bool) -> Piece | None:
    """The Piece of one choice of a whole answer (chat: its `message`) or of a stream's chunk
    (its `delta`), `kind` chat or completion; None where it carries no text, tool call or
    logprobs. Raises Malformed."""
    if not isinstance(choice, dict):
        raise Malformed(f"a choice that is not an object: {_kind(choice)}")
    calls = call = texts = None
    if kind == "chat":
        message = choice.get("delta" if streamed else "message") or {}
        if not isinstance(message, dict):
            raise Malformed(f"a message that is not an object: {_kind(message)}")
        text = message.get("content")
        calls = tool_calls(message.get("tool_calls"), streamed)
        call = function_call(message.get("function_call"), streamed)
        texts = other_texts(message)
    else:
        text = choice.get("text")
    lp = logprobs(choice.get("logprobs"))
    if not text and calls is None and call is None and texts is None and lp is None:
        return None
    return Piece("" if text is None else str(text), calls, lp, call, texts)


# A chat message's text beside its content, passed on as sent: vLLM's reasoning parsers'
# thoughts (`reasoning_content`; `reasoning` in its newer releases) and OpenAI's `refusal`.
# Dropped until 2026-12-06: a reasoning model's client saw no thought.
TEXT_FIELDS = ("reasoning_content", "reasoning", "refusal")


def other_texts(message: dict[str, Any]) -> dict[str, str] | None:
    """TEXT_FIELDS a message (or a stream's delta) carries: strings, null read as absent."""
    out = {}
    for key in TEXT_FIELDS:
        value = message.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise Malformed(f"{key} must be a string, got {_kind(value)}")
        out[key] = value
    return out or None


def function_call(value: Any, streamed: bool) -> dict[str, str] | None:
    """The deprecated functions API's call: `name` and `arguments` strings (a stream's
    fragment carries either). Dropped until 2026-12-06: the client got an empty message with
    `finish_reason: "function_call"`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Malformed(f"function_call must be an object, got {_kind(value)}")
    out = {}
    for key in ("name", "arguments"):
        if value.get(key) is not None or not streamed:
            item = value.get(key)
            if not isinstance(item, str):
                raise Malformed(f"function_call.{key} must be a string, got {_kind(item)}")
            out[key] = item
    return out


def tool_calls(value: Any, streamed: bool) -> list[dict[str, Any]] | None:
    """OpenAI's tool calls, rebuilt from their fields: whole in an answer (`id`, `type`,
    `function.name` and `.arguments`, all strings), a stream's fragments (an `index`, and
    whichever of the others this chunk carries, null read as absent). Arguments sent as a JSON
    object (some servers do) are sent on as its text, as OpenAI sends them. None for none."""
    if value is None or value == []:
        return None
    if not isinstance(value, list) or len(value) > MAX_TOOL_CALLS:
        raise Malformed(f"tool_calls must be a list of at most {MAX_TOOL_CALLS} objects")
    return [_tool_call(call, i, streamed) for i, call in enumerate(value)]


def _tool_call(call: Any, i: int, streamed: bool) -> dict[str, Any]:
    fn = call.get("function", {} if streamed else None) if isinstance(call, dict) else None
    if not isinstance(call, dict) or not isinstance(fn, dict):
        raise Malformed(f"tool_calls[{i}] is not an object with a 'function' object")
    out: dict[str, Any] = {}
    if streamed:
        index = call.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1 << 16:
            raise Malformed(f"tool_calls[{i}].index must be an integer, got {_kind(index)}")
        out["index"] = index
    for key in ("id", "type"):  # a stream's continuation may send them as null (vLLM, LiteLLM)
        if call.get(key) is not None or not streamed:
            out[key] = _string(call.get(key, "function" if key == "type" else None), key, i)
    function: dict[str, Any] = {}
    args = fn.get("arguments")
    if isinstance(args, dict):
        try:
            args = orjson.dumps(args).decode()
        except TypeError:  # nested past what JSON can be written at
            raise Malformed(f"tool_calls[{i}].function.arguments is nested too deep") from None
    for key, value in (("name", fn.get("name")), ("arguments", args)):
        if value is not None or not streamed:
            function[key] = _string(value, f"function.{key}", i)
    out["function"] = function
    return out


def _string(value: Any, name: str, i: int) -> str:
    if not isinstance(value, str):
        raise Malformed(f"tool_calls[{i}].{name} must be a string, got {_kind(value)}")
    return value


def logprobs(value: Any) -> dict[str, Any] | None:
    """A choice's logprobs as the server sent them: a JSON object (chat's `content` list,
    completions' `tokens`, `token_logprobs`, ...) nested at most MAX_LOGPROBS_DEPTH deep, or
    None."""
    if value is None:
        return None
    if not isinstance(value, dict) or not _within(value, MAX_LOGPROBS_DEPTH):
        raise Malformed(
            f"logprobs must be an object nested at most {MAX_LOGPROBS_DEPTH} deep, got "
            f"{_kind(value)}"
        )
    return value


def _within(value: Any, depth: int) -> bool:
    """Whether a JSON value nests at most `depth` levels of objects and lists."""
    if isinstance(value, dict):
        return depth > 0 and all(_within(v, depth - 1) for v in value.values())
    if isinstance(value, list):
        return depth > 0 and all(_within(v, depth - 1) for v in value)
    return True


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def error_fields(text: str) -> tuple[str, str | None, str | None, str | None]:
    """A server's error answer as the client is shown it: (message, type, param, code) from
    OpenAI's `{"error": {...}}` (or vLLM's bare object; `detail` for FastAPI's), each a
    string or None; where the body is no such JSON, its first 300 characters."""
    try:
        obj = orjson.loads(text)
    except ValueError:
        return text[:300], None, None, None
    inner = obj.get("error", obj) if isinstance(obj, dict) else None
    if not isinstance(inner, dict):
        return text[:300], None, None, None
    message = next(
        (v for k in ("message", "detail") if isinstance(v := inner.get(k), str) and v), text
    )
    short = [inner.get(k) for k in ("type", "param", "code")]
    kind, param, code = (v[:MAX_FIELD_CHARS] if isinstance(v, str) and v else None for v in short)
    return message[:300], kind, param, code


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header's wait in seconds (delta-seconds, or an HTTP date against `now`,
    the wall clock), from 1 to the gateway's own bound (a day); None where it is absent or
    not one of the two."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() takes and float() not
        wait = float(value[:12])
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT ("-0000" reads as no zone)
            when = when.replace(tzinfo=UTC)
        wait = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(wait):
        return None
    return float(min(MAX_RETRY_AFTER_S, max(1, math.ceil(wait))))


def usage_count(usage: dict[str, Any], name: str) -> int | None:
    """A token count of a server's `usage`, else None (not given): an integer from 0, or from
    1 for a prompt (a server that counts nothing may send 0; no prompt has no token)."""
    value = usage.get(name)
    least = 1 if name == "prompt_tokens" else 0
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value < 2**63:
        return None
    return value


def carries_token(piece: Piece) -> bool:
    """Whether a streamed piece is a token (a chunk of logprobs alone is not: its text came
    first; nor is a finish or a role alone)."""
    return bool(piece.text or piece.tool_calls or piece.function_call or piece.texts)
