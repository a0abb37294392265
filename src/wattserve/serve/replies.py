"""The OpenAI response bodies the gateway sends: a whole completion, the chunks of a stream
(server-sent events), and `usage` with wattserve's figures."""

from __future__ import annotations

import time
from typing import Any

import orjson

from wattserve.serve.backends.base import Finish, GenRequest, Piece


def usage(fin: Finish, backend: Any, router: Any, ttft_s: float | None) -> dict[str, Any]:
    """OpenAI's usage fields, and `wattserve`: where it ran (the backend, and the deployment or
    hosted API it serves: `router.target_of`), joules, dollars, grams of CO2 (None where energy
    or the site's carbon intensity is unknown: `router.carbon_g`), TTFT (None where the first
    token was not seen apart from the rest: a whole answer from a server), and whether each
    token count is the gateway's guess rather than a tokenizer's."""
    return {
        "prompt_tokens": fin.prompt_tokens,
        "completion_tokens": fin.completion_tokens,
        "total_tokens": fin.prompt_tokens + fin.completion_tokens,
        "wattserve": {
            "backend": backend.name,
            "target": router.target_of[backend.name],
            "site": backend.site,
            "energy_j": fin.energy_j,
            "usd": fin.usd,
            "carbon_g": router.carbon_g(backend.site, fin.energy_j),
            "ttft_s": None if ttft_s is None else round(ttft_s, 6),
            "synthetic": fin.synthetic,
            "prompt_tokens_estimated": fin.prompt_estimated,
            "completion_tokens_estimated": fin.completion_estimated,
            **({"energy_basis": fin.energy_basis} if fin.energy_basis else {}),
        },
    }


def completion(
    greq: GenRequest, model: str, pieces: list[Piece], fin: Finish, used: dict[str, Any]
) -> dict[str, Any]:
    """A whole (non-streamed) chat.completion or text_completion, from the pieces the
    backend sent: their text, tool calls and logprobs. As OpenAI answers, a chat message
    that calls tools and says nothing has `content: null`."""
    text = "".join(p.text for p in pieces)
    calls = [c for p in pieces for c in p.tool_calls or ()]
    called = [p.function_call for p in pieces if p.function_call is not None]
    lp = _logprobs([p.logprobs for p in pieces if p.logprobs is not None])
    choice: dict[str, Any] = {"index": 0}
    if greq.kind == "chat":
        says = text or (None if calls or called or any(p.texts for p in pieces) else "")
        message: dict[str, Any] = {"role": "assistant", "content": says}
        for p in pieces:  # reasoning, a refusal: joined as the content is
            for field, value in (p.texts or {}).items():
                message[field] = message.get(field, "") + value
        if called:  # the functions API's one call, as the server sent it
            message["function_call"] = {
                "name": "".join(c.get("name", "") for c in called),
                "arguments": "".join(c.get("arguments", "") for c in called),
            }
        choice["message"] = message | ({"tool_calls": calls} if calls else {})
    else:
        choice["text"] = text
    choice |= {"finish_reason": fin.finish_reason, "logprobs": lp}
    return {
        "id": greq.id,
        "object": "chat.completion" if greq.kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": used,
    }


def _logprobs(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The logprobs of an answer sent in several pieces: their lists joined, key by key
    (chat's `content`, completions' `tokens`, `token_logprobs`, ...); one piece's as sent."""
    if len(parts) <= 1:
        return parts[0] if parts else None
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            have = out.get(key)
            if key not in out:  # a list is copied once, then extended: linear in the pieces
                out[key] = list(value) if isinstance(value, list) else value
            elif isinstance(value, list) and isinstance(have, list):
                have.extend(value)
    return out


def event(payload: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


class Chunks:
    """The chunks of one stream."""

    def __init__(self, greq: GenRequest, model: str) -> None:
        self.chat = greq.kind == "chat"
        self.head = {
            "id": greq.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    def piece(self, piece: Piece | None, finish: str | None, first: bool = False) -> bytes:
        """A piece's chunk: its text, tool call fragments and logprobs (or, with `finish` and
        no piece, the end of the choice). The first chunk of a chat says the role, as
        OpenAI's does (`content: null` when it opens with a tool call)."""
        text = None if piece is None else piece.text
        lp = None if piece is None else piece.logprobs
        if self.chat:
            calls = None if piece is None else piece.tool_calls
            called = None if piece is None else piece.function_call
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text or (text is not None and not calls and called is None):
                delta["content"] = text
            elif first:
                delta["content"] = None
            if calls:
                delta["tool_calls"] = calls
            if called is not None:
                delta["function_call"] = called
            if piece is not None and piece.texts:
                delta |= piece.texts
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "finish_reason": finish,
                "logprobs": lp,
            }
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": lp}
        return event({**self.head, "choices": [choice]})

    def usage(self, used: dict[str, Any]) -> bytes:
        """The last chunk when the client asked for usage."""
        return event({**self.head, "choices": [], "usage": used})


def model_object(name: str) -> dict[str, Any]:
    """A model as /v1/models lists it (OpenAI's model object)."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "wattserve"}
