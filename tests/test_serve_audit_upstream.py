"""What the gateway makes of an OpenAI-compatible server that breaks (found by an audit of
`serve`): a stream cut short or ended by an error event is an error, not a finished answer;
a non-streamed answer's first token is not seen, so no TTFT or TPOT is made up for it; a 200
whose body is not JSON is a 502. Real gateway and fake server processes on loopback sockets
(the fake breaks on cue: wattserve.serve.fake)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from serving import Server, ledger_row, requests_total, upstream_gateway

from wattserve.serve.fake import MID_STREAM_ERROR

CHAT = "/v1/chat/completions"
MODEL = "llama-3.2-1b"
OTHER = "qwen2.5-0.5b"  # served by the same fake, through a target of its own


@pytest.fixture(scope="module")
def upstream_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("upstream")
    with upstream_gateway(tmp, "up", {"u": MODEL, "w": OTHER}) as s:
        yield s


def chat(s: Server, model: str = MODEL, **extra: object) -> httpx.Response:
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{s.url}{CHAT}", json=body | extra, timeout=30)


def stream_events(s: Server, model: str = MODEL, **extra: object) -> list[str]:
    body = {
        "model": model,
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    with httpx.stream("POST", f"{s.url}{CHAT}", json=body | extra, timeout=30) as r:
        assert r.status_code == 200
        return [line[6:] for line in r.iter_lines() if line.startswith("data: ")]


@pytest.mark.parametrize("cue", ["truncate", "error"])
def test_a_broken_upstream_stream_ends_with_an_error_event(upstream_gw: Server, cue: str) -> None:
    errors_before = requests_total(upstream_gw.url, "error")
    events = stream_events(upstream_gw, fake_break=cue)
    objs = [json.loads(e) for e in events if e != "[DONE]"]
    assert "[DONE]" not in events  # a cut-off answer never looks finished
    assert objs[0]["choices"][0]["delta"]["content"] == "fake "  # what arrived was passed on
    assert not any(c.get("finish_reason") for o in objs for c in o.get("choices", []))
    assert not any("usage" in o for o in objs)
    last = objs[-1]
    assert set(last) == {"error"}  # OpenAI's error shape
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["type"] == "server_error" and last["error"]["code"] == "backend_error"
    assert MID_STREAM_ERROR not in last["error"]["message"]  # a server's words stay in the log
    record = ledger_row(upstream_gw.db, objs[0]["id"])
    assert record["status"] == "error" and record["completion_tokens"] == 1
    assert requests_total(upstream_gw.url, "error") == errors_before + 1


def test_a_whole_upstream_stream_is_still_a_success(upstream_gw: Server) -> None:
    events = stream_events(upstream_gw)
    assert events[-1] == "[DONE]"
    objs = [json.loads(e) for e in events[:-1]]
    assert objs[-1]["usage"]["completion_tokens"] == 2
    assert ledger_row(upstream_gw.db, objs[0]["id"])["status"] == "ok"


def test_the_mid_stream_error_is_in_the_gateway_log(upstream_gw: Server) -> None:
    stream_events(upstream_gw, fake_break="error")
    log = (upstream_gw.db.parent / "up.log").read_text()
    assert MID_STREAM_ERROR in log


def test_a_non_streamed_upstream_answer_reports_no_ttft(upstream_gw: Server) -> None:
    """Its first token is not seen apart from the last: TTFT is unknown (null), no TPOT is
    made up, and the target's latency predictions learn nothing from it."""
    for _ in range(3):
        r = chat(upstream_gw, OTHER)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["wattserve"]["ttft_s"] is None
    record = ledger_row(upstream_gw.db, r.json()["id"])
    assert record["status"] == "ok" and record["ttft_s"] is None
    assert record["duration_s"] > 0  # what was measured: the whole request
    metrics = httpx.get(f"{upstream_gw.url}/metrics", timeout=10).text
    assert f'wattserve_request_seconds_count{{model="{OTHER}"}} 3\n' in metrics
    assert f'wattserve_ttft_seconds_count{{model="{OTHER}"}}' not in metrics
    assert f'wattserve_tpot_seconds_count{{model="{OTHER}"}}' not in metrics
    target = httpx.get(f"{upstream_gw.url}/v1/fleet", timeout=10).json()["targets"]["w"]
    assert target["measured_ttft_s"] is None and target["measured_tpot_s"] is None
    events = stream_events(upstream_gw, OTHER)
    usage = json.loads(events[-2])["usage"]["wattserve"]
    assert usage["ttft_s"] is not None and usage["ttft_s"] > 0  # a stream's first token is seen
    target = httpx.get(f"{upstream_gw.url}/v1/fleet", timeout=10).json()["targets"]["w"]
    assert target["measured_ttft_s"] == pytest.approx(usage["ttft_s"], abs=1e-3)
    metrics = httpx.get(f"{upstream_gw.url}/metrics", timeout=10).text
    assert f'wattserve_ttft_seconds_count{{model="{OTHER}"}} 1\n' in metrics


def test_an_upstream_200_that_is_not_json_is_a_502(upstream_gw: Server) -> None:
    r = chat(upstream_gw, fake_break="not_json")
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "backend_error" and "JSON" in err["message"]
    assert "JSONDecodeError" not in err["message"] and "<html>" not in err["message"]
    assert chat(upstream_gw).status_code == 200  # one bad answer leaves it in rotation
