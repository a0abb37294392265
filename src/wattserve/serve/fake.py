"""Fakes that answer at once. Over HTTP, a fake OpenAI-compatible server: the fixed point the
gateway's overhead is measured against (benchmarks/gateway_overhead.py), and a test double
that breaks on cue (`completion_tokens` is 2, or 1 when the output limit it is sent is 1):

- `"fake_status": 500`: answered with that status and a traceback-like message;
- `"fake_break": "truncate"` (streams): the first chunk, then the body ends cleanly, with no
  finish_reason and no `[DONE]` (a server that died between chunks behind a proxy);
- `"fake_break": "error"` (streams): the first chunk, then `data: {"error": ...}` (a server
  that failed mid-answer, as vLLM reports it), then the end of the body;
- `"fake_break": "not_json"` (not streamed): a 200 whose body is not JSON;
- `"fake_delay_s": 2.5`: the answer (a stream's first chunk) only after that long (a server
  with a long queue);
- `"fake_gap_s": 0.4` (streams): that long before each chunk after the first, the usage
  chunk and `[DONE]` included (a slow server, each gap shorter than a read timeout);
- `"fake_trickle_s": 0.3` (streams): after the first chunk, one byte that long apart with no
  end of line, until the client leaves (a server that keeps a read timeout from firing);
- `"fake_tokens": 500` (streams): that many pieces (at most the output limit it is sent), as
  fast as it can write them (a fast engine, for the gateway's cost per streamed token);
- `"fake_usage": false`: no `usage`, streamed or not (llama-cpp-python's server 0.3.36 sends
  none in a stream, whatever `stream_options` says).

A stream ends with a usage chunk only when asked (`stream_options: {"include_usage": true}`),
as OpenAI and vLLM do. A field sent as null answers 422, as llama-cpp-python's server does for
`stream`, `temperature` or `top_p` (the gateway sends no nulls: null means "not given").

    python -m wattserve.serve.fake --port 9000

In process, `FakeBackend`: a Backend that streams a fixed number of tokens, or fails as told,
for unit tests of routing and admission without sockets."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator

from aiohttp import web

from wattserve.errors import UpstreamError
from wattserve.serve.backends.base import Backend, Event, Finish, GenRequest, Piece

ANSWER = "fake answer"
MID_STREAM_ERROR = "fake out of memory mid-stream"


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    nulls = sorted(k for k, v in body.items() if v is None)
    if nulls:
        return web.json_response(
            {"detail": f"fake: {', '.join(nulls)} may not be null"}, status=422
        )
    model = body.get("model", "fake")
    delay = body.get("fake_delay_s")
    if isinstance(delay, int | float) and not isinstance(delay, bool) and delay > 0:
        await asyncio.sleep(delay)
    status = body.get("fake_status")
    if isinstance(status, int) and status != 200:  # a test asks for a failure
        detail = 'Traceback (most recent call last):\n  File "/srv/fake/app.py", line 1'
        return web.json_response({"error": {"message": f"fake {status}\n{detail}"}}, status=status)
    # the answer says which output limit arrived (tests check what the gateway forwards)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    many = body.get("fake_tokens")
    completion = many if isinstance(many, int) and not isinstance(many, bool) and many > 2 else 2
    completion = min(completion, limit) if isinstance(limit, int) else completion
    usage: dict[str, int] | None = {
        "prompt_tokens": 8,
        "completion_tokens": completion,
        "total_tokens": 8 + completion,
    }
    if body.get("fake_usage") is False:
        usage = None
    broken = body.get("fake_break")
    gap = body.get("fake_gap_s")
    gap = gap if isinstance(gap, int | float) and not isinstance(gap, bool) and gap > 0 else 0
    if body.get("stream"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        pieces = [("fake ", None)] * (max(completion, 2) - 1) + [("answer", "stop")]
        for piece, finish in pieces:
            if piece == "answer" and broken == "error":
                error = {"error": {"message": MID_STREAM_ERROR, "type": "server_error"}}
                await resp.write(b"data: " + json.dumps(error).encode() + b"\n\n")
            if piece == "answer" and broken in ("truncate", "error"):
                await resp.write_eof()
                return resp
            if piece == "answer":
                await asyncio.sleep(gap)
            trickle = body.get("fake_trickle_s")
            if piece == "answer" and isinstance(trickle, int | float) and trickle > 0:
                await resp.write(b": ")
                while True:  # until the client leaves (the write fails)
                    await asyncio.sleep(trickle)
                    await resp.write(b".")
            chunk = {
                "id": "fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}],
            }
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if usage is not None and (body.get("stream_options") or {}).get("include_usage"):
            await asyncio.sleep(gap)
            tail = {
                "id": "fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await resp.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
        await asyncio.sleep(gap)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
    if broken == "not_json":
        return web.Response(text="<html>not json</html>", content_type="application/json")
    return web.json_response(
        {
            "id": "fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                }
            ],
            **({"usage": usage} if usage is not None else {}),
        }
    )


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


class FakeBackend(Backend):
    """An in-process backend: `tokens` pieces at once (fewer if max_tokens says so), each
    costing `joules_per_token` and `usd_per_token`; raises `fail` instead when it is set.
    `calls` counts the requests it was given."""

    kind = "fake"

    def __init__(
        self,
        name: str,
        site: str,
        model: str,
        *,
        tokens: int = 2,
        joules_per_token: float = 1.0,
        usd_per_token: float = 1e-6,
    ) -> None:
        self.name, self.site, self.model = name, site, model
        self.tokens = tokens
        self.joules_per_token, self.usd_per_token = joules_per_token, usd_per_token
        self.fail: UpstreamError | None = None
        self.calls = 0

    async def generate(self, req: GenRequest) -> AsyncIterator[Event]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        n = min(self.tokens, req.max_tokens)
        for i in range(n):
            yield Piece(f"fake{i} ")
        yield Finish(
            "length" if n == req.max_tokens else "stop",
            req.prompt_tokens,
            n,
            n * self.joules_per_token,
            n * self.usd_per_token,
            synthetic=True,
            prompt_estimated=True,
        )


def app() -> web.Application:
    a = web.Application()
    a.router.add_post("/v1/chat/completions", _chat)
    a.router.add_get("/v1/models", _models)
    return a


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    web.run_app(app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
