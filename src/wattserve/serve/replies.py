"""The OpenAI response bodies the gateway sends: a whole completion, the chunks of a stream
(server-sent events), and `usage` with wattserve's figures."""

from __future__ import annotations

import time
from typing import Any

import orjson

from wattserve.serve.backends.base import Finish, GenRequest


def usage(
    fin: Finish, backend: Any, ttft_s: float | None, carbon_g: float | None
) -> dict[str, Any]:
    """OpenAI's usage fields, and `wattserve`: where it ran, joules, dollars, grams of CO2
    (None where energy or the site's carbon intensity is unknown), TTFT (None where the first
    token was not seen apart from the rest: a whole answer from a server), and whether each
    token count is the gateway's guess rather than a tokenizer's."""
    return {
        "prompt_tokens": fin.prompt_tokens,
        "completion_tokens": fin.completion_tokens,
        "total_tokens": fin.prompt_tokens + fin.completion_tokens,
        "wattserve": {
            "backend": backend.name,
            "site": backend.site,
            "energy_j": fin.energy_j,
            "usd": fin.usd,
            "carbon_g": carbon_g,
            "ttft_s": None if ttft_s is None else round(ttft_s, 6),
            "synthetic": fin.synthetic,
            "prompt_tokens_estimated": fin.prompt_estimated,
            "completion_tokens_estimated": fin.completion_estimated,
            **({"energy_basis": fin.energy_basis} if fin.energy_basis else {}),
        },
    }


def completion(
    greq: GenRequest, model: str, text: str, fin: Finish, used: dict[str, Any]
) -> dict[str, Any]:
    """A whole (non-streamed) chat.completion or text_completion."""
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
    return {
        "id": greq.id,
        "object": "chat.completion" if greq.kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": used,
    }


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

    def piece(self, text: str | None, finish: str | None, first: bool = False) -> bytes:
        """A piece of text (or, with `finish`, the end of the choice)."""
        if self.chat:
            delta: dict[str, Any] = {"content": text} if text is not None else {}
            if first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "finish_reason": finish,
                "logprobs": None,
            }
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return event({**self.head, "choices": [choice]})

    def usage(self, used: dict[str, Any]) -> bytes:
        """The last chunk when the client asked for usage."""
        return event({**self.head, "choices": [], "usage": used})


def model_object(name: str) -> dict[str, Any]:
    """A model as /v1/models lists it (OpenAI's model object)."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "wattserve"}
