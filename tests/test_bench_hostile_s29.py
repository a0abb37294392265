"""`wattserve bench` against servers that answer wrong, on a real loopback socket: streams cut
short or reset, lines past aiohttp's limit, token counts that are not counts, a refusal whose
body never ends, and a server with known timing whose figures bench must reproduce; the text
bench sends and records (a model name, a key, a trace's file name); `catalog show` by any id."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result as Result_
from test_bench import silent_port
from typer.testing import CliRunner

from wattserve.bench.client import Result, take_usage
from wattserve.cli.app import app

MODELS = b'{"object": "list", "data": [{"id": "m"}]}'
TTFT_S, GAP_S = 0.2, 0.05  # the "timed" server: first token after TTFT_S, then one per GAP_S


def chunk(text: str | None, **extra: Any) -> bytes:
    """One SSE event of a chat stream: a text delta, or (None) no choice at all."""
    choices = [] if text is None else [{"index": 0, "delta": {"content": text}}]
    return b"data: " + json.dumps({"choices": choices, **extra}).encode() + b"\n\n"


def stream_of(mode: str, max_tokens: int) -> Iterator[bytes | float | None]:
    """What the server writes for a streamed request: bytes, a pause (s), or None: reset the
    connection there."""
    if mode == "timed":
        yield TTFT_S
        for i in range(max_tokens):
            if i:
                yield GAP_S
            yield chunk("tok ")
        yield chunk(None, usage={"prompt_tokens": 10, "completion_tokens": max_tokens})
        yield b"data: [DONE]\n\n"
    elif mode in ("cut", "reset"):  # one token, then the body ends (or the connection resets)
        yield chunk("a")
        if mode == "reset":
            yield None
    elif mode == "long_line":
        yield chunk("a") + b"data: " + b"x" * (1 << 20) + b"\n\n"
    elif mode in ("negative", "huge"):
        n = -7 if mode == "negative" else 2**62
        yield (
            chunk("a")
            + chunk("b")
            + chunk(None, usage={"prompt_tokens": n, "completion_tokens": n})
        )
        yield b"data: [DONE]\n\n"
    elif mode == "error_null":  # a proxy that writes `"error": null` into every chunk
        yield chunk("a", error=None) + chunk("b", error=None) + b"data: [DONE]\n\n"
    elif mode == "finish_only":  # a finish_reason and no [DONE]: complete (llama.cpp's way)
        yield chunk("a") + b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n'
    else:
        raise AssertionError(mode)


class Handler(socketserver.StreamRequestHandler):
    server: Hostile

    def handle(self) -> None:
        keep = True  # answer requests while the client keeps the connection
        with contextlib.suppress(ConnectionError, ValueError):
            while keep:
                keep = self.one()

    def one(self) -> bool:
        """Answer one request; whether the connection stays open."""
        head = [self.rfile.readline()]
        while head[-1] not in (b"\r\n", b""):
            head.append(self.rfile.readline())
        if head[-1] == b"":
            return False
        length = next(
            (int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length")), 0
        )
        body = json.loads(self.rfile.read(length)) if length else {}
        if b"/models" in head[0]:
            self.whole(MODELS)
            return True
        if not body.get("stream"):
            self.whole(b'{"choices": [{"message": {"content": "hi"}}]}')
            return True
        if self.server.mode == "refuse_endless":  # a 500 whose body never ends
            self.wfile.write(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n")
            self.wfile.write(b'{"error": {"message": "overloaded"}}' + b" " * (128 << 10))
            self.wfile.flush()
            self.rfile.read(1)  # until the client hangs up
            return False
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        for part in stream_of(self.server.mode, body.get("max_tokens", 4)):
            if part is None:  # RST, not FIN
                self.wfile.flush()
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                return False
            if isinstance(part, float):
                self.wfile.flush()
                time.sleep(part)
            else:
                self.wfile.write(part)
        return False

    def whole(self, data: bytes) -> None:
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(data)
            + data
        )
        self.wfile.flush()


class Hostile(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = mode
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-answer: what these tests are about


@contextlib.contextmanager
def hostile(mode: str) -> Iterator[Hostile]:
    srv = Hostile(mode)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def trace(path: Path, rows: int = 4, output: int = 4) -> Path:
    path.write_text(
        "".join(
            json.dumps({"timestamp": 50 * i, "input_length": 20, "output_length": output}) + "\n"
            for i in range(rows)
        )
    )
    return path


def run(*args: str) -> Result_:
    return CliRunner().invoke(app, list(args))


def bench(url: str, tmp_path: Path, *args: str) -> tuple[Result_, dict[str, Any]]:
    out = tmp_path / "r.json"
    r = run("bench", "--url", url, "--trace", str(trace(tmp_path / "t.jsonl")), "--out", str(out),
            *args)  # fmt: skip
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.stderr, r.stderr
    return r, json.loads(out.read_text())


@pytest.mark.parametrize("mode", ["cut", "reset"])
def test_a_stream_cut_short_is_a_failure_not_a_short_answer(tmp_path: Path, mode: str) -> None:
    """Before: one token then a closed (or reset) connection counted as a completed request of
    one token, with no [DONE] and no finish_reason (the gateway calls it cut short)."""
    with hostile(mode) as srv:
        r, res = bench(srv.url, tmp_path)
    assert r.exit_code == 1 and res["completed"] == 0 and res["failed"] == 4
    assert res["errors_by_kind"] == {"disconnected": 4}
    assert "without a finish_reason or [DONE]" in res["errors"][0]
    assert res["total_output_tokens"] == 0 and res["output_throughput"] == 0.0


def test_a_finish_reason_without_done_is_complete(tmp_path: Path) -> None:
    with hostile("finish_only") as srv:
        r, res = bench(srv.url, tmp_path)
    assert r.exit_code == 0 and res["completed"] == 4 and res["total_output_tokens"] == 4


def test_an_error_field_of_null_is_no_error(tmp_path: Path) -> None:
    """Before: any chunk with an `error` key, null or not, failed its request."""
    with hostile("error_null") as srv:
        r, res = bench(srv.url, tmp_path)
    assert r.exit_code == 0 and res["completed"] == 4 and res["output_lens"] == [2] * 4


def test_a_stream_line_too_long_is_a_bad_response(tmp_path: Path) -> None:
    """Before: aiohttp's LineTooLong escaped (a traceback per request on stderr) and each
    request was reported as an error of kind 'unknown' with the message None."""
    with hostile("long_line") as srv:
        r, res = bench(srv.url, tmp_path)
    assert r.exit_code == 1 and res["errors_by_kind"] == {"bad_response": 4}
    assert "not an OpenAI response" in res["errors"][0]


@pytest.mark.parametrize("mode", ["negative", "huge"])
def test_token_counts_that_are_not_counts_are_not_taken(tmp_path: Path, mode: str) -> None:
    """Before: usage of -7 tokens made the totals and output_throughput negative; 2^62 put
    total_output_tokens past 2^53, and `compare` refused bench's own file."""
    with hostile(mode) as srv:
        r, res = bench(srv.url, tmp_path)
    assert r.exit_code == 0 and res["completed"] == 4
    assert res["output_lens"] == [2] * 4 and res["total_output_tokens"] == 8  # the chunks
    assert res["input_lens"] == [20] * 4 and res["output_throughput"] > 0
    c = run("compare", str(tmp_path / "r.json"), str(tmp_path / "r.json"))
    assert c.exit_code == 0, c.stderr
    res_ = Result(0, 0, 0.0, 10, 3)
    take_usage(res_, {"prompt_tokens": 10_000_001, "completion_tokens": True})
    assert res_.usage_prompt_tokens is None and res_.usage_completion_tokens is None
    take_usage(res_, {"prompt_tokens": 0, "completion_tokens": 10_000_000})
    assert res_.usage_prompt_tokens == 0 and res_.usage_completion_tokens == 10_000_000


def test_a_refusal_is_read_no_further_than_its_message(tmp_path: Path) -> None:
    """Before: each 500's body was read whole into memory (18 GB for five requests of 3 GB),
    or until the request timed out when it never ended."""
    with hostile("refuse_endless") as srv:
        r, res = bench(srv.url, tmp_path, "--timeout", "5")
    assert r.exit_code == 1 and res["errors_by_kind"] == {"http_500": 4}
    assert res["errors"][0] == "overloaded"  # the message at the start of the body
    assert res["duration"] < 4


def test_figures_of_a_server_with_known_timing(tmp_path: Path) -> None:
    with hostile("timed") as srv:
        r, res = bench(srv.url, tmp_path)
    assert r.exit_code == 0 and res["completed"] == 4 and res["output_lens"] == [4] * 4
    assert TTFT_S <= res["median_ttft_ms"] / 1e3 < TTFT_S + 0.1
    assert GAP_S <= res["median_tpot_ms"] / 1e3 < GAP_S + 0.03
    assert GAP_S * 0.9 <= res["median_itl_ms"] / 1e3 < GAP_S + 0.03
    assert len(res["itls"][0]) == 3  # 4 tokens: 3 gaps
    e2e = TTFT_S + 3 * GAP_S
    assert e2e <= res["median_e2el_ms"] / 1e3 < e2e + 0.1
    assert res["output_throughput"] == pytest.approx(16 / res["duration"])
    assert res["request_throughput"] == pytest.approx(4 / res["duration"])


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        # a byte that is not UTF-8 on the command line: orjson's TypeError was a traceback
        (["--model", "m\udcff"], {}, "field '--model': the model name holds the byte 0xff"),
        # a line break in a header: aiohttp's ValueError was a traceback
        (["--api-key-env", "WS_S29_KEY"], {"WS_S29_KEY": "ab\ncd"}, "holds U+000A"),
    ],
)
def test_text_bench_cannot_send_is_refused_before_anything_is_sent(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    t = trace(tmp_path / "t.jsonl")
    with silent_port() as (sock, url):
        r = CliRunner().invoke(app, ["bench", "--url", url, "--trace", str(t), *args], env=env)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection was made
            sock.accept()
    assert r.exit_code == 2 and message in r.stderr, r.stderr


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="file names of any bytes")
def test_a_trace_named_in_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """Before: the report's write failed with a UnicodeEncodeError after the whole run, and
    the --out file held a lone surrogate that `compare` refuses."""
    name = os.fsdecode(b"t\xff.jsonl")
    t = trace(tmp_path / name)
    out, report = tmp_path / "r.json", tmp_path / "r.html"
    with hostile("finish_only") as srv:
        r = run("bench", "--url", srv.url, "--trace", str(t), "--out", str(out),
                "--report", str(report))  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert json.loads(out.read_text())["trace"].endswith("t\\udcff.jsonl")
    assert "t\\udcff.jsonl" in report.read_text()
    assert run("compare", str(out), str(out)).exit_code == 0


def test_catalog_show_takes_a_provider_in_any_case() -> None:
    """Before: devices were found in any case and providers not ('GROQ-CLOUD' was unknown
    hardware, 'did you mean groq-lpu'); a typo of a provider was held against devices only;
    an id of 100,000 letters was echoed whole."""
    r = run("catalog", "show", "GROQ-CLOUD")
    assert r.exit_code == 0 and r.stdout.startswith("GroqCloud (groq-cloud)"), r.stderr
    r = run("catalog", "show", "groq-clod")
    assert r.exit_code == 2 and "unknown device or provider" in r.stderr
    assert "Did you mean: groq-cloud" in r.stderr
    r = run("catalog", "show", "H100-SXM", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["id"] == "h100-sxm"
    r = run("catalog", "show", "a" * 100_000)
    assert r.exit_code == 2 and len(r.stderr) < 300
