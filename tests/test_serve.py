"""The gateway over real sockets, with the official openai client."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI
from serving import FAST_FLEET, gateway


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with gateway(tmp_path_factory.mktemp("gw"), FAST_FLEET, "--policy", "least_loaded") as s:
        yield s


def client(server) -> OpenAI:  # type: ignore[no-untyped-def]
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", http_client=httpx.Client())


def test_openai_client_chat_and_completions(server) -> None:  # type: ignore[no-untyped-def]
    with client(server) as c:
        _chat_and_completions(c)


def _chat_and_completions(c: OpenAI) -> None:
    assert [m.id for m in c.models.list().data] == ["llama-3.2-1b"]
    r = c.chat.completions.create(
        model="llama-3.2-1b", max_tokens=12, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert r.choices[0].message.content and r.usage is not None
    assert r.usage.completion_tokens == 12 and r.usage.prompt_tokens >= 1
    ext = r.usage.model_extra["wattserve"]  # type: ignore[index]
    assert ext["backend"].startswith(("fast/", "edge-small/")) and ext["site"] in ("dc", "edge")
    assert ext["energy_j"] > 0 and ext["usd"] >= 0 and ext["ttft_s"] > 0 and ext["synthetic"]
    t = c.completions.create(model="llama-3.2-1b", prompt="Once upon a time", max_tokens=5)
    assert t.choices[0].text and t.usage is not None and t.usage.completion_tokens == 5


def test_openai_client_streaming_with_usage(server) -> None:  # type: ignore[no-untyped-def]
    with client(server) as c:
        stream = c.chat.completions.create(
            model="llama-3.2-1b",
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Count"}],
        )
        chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len(text.split()) == 8
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.model_extra["wattserve"]["energy_j"] > 0  # type: ignore[index]
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finish[-1] == "length"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"model": "llama-3.2-1b", "messages": "hi"}).encode(), 400, "messages"),
        (
            json.dumps(
                {
                    "model": "llama-3.2-1b",
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": "ten",
                }
            ).encode(),
            400,
            "max_tokens",
        ),
        (
            json.dumps(
                {
                    "model": "llama-3.2-1b",
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": -5,
                }
            ).encode(),
            400,
            "max_tokens",
        ),
        (
            json.dumps(
                {"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "x"}], "n": 1000}
            ).encode(),
            400,
            "n",
        ),
        (
            json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).encode(),
            404,
            "model",
        ),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
        (
            json.dumps(
                {"model": "llama-3.2-1b", "messages": [{"role": "wizard", "content": "x"}]}
            ).encode(),
            400,
            "messages.0.role",
        ),
    ],
)
def test_bad_input_is_a_4xx_with_an_openai_error(
    server,
    body: bytes,
    status: int,  # type: ignore[no-untyped-def]
    param: str | None,
) -> None:
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param


def test_oversized_body_and_bad_site_header(server) -> None:  # type: ignore[no-untyped-def]
    big = json.dumps(
        {"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    )
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and "error" in r.json()
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"x-wattserve-site": "mars"},
        json={"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-wattserve-site"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["llama-3.2-1b", "", "nope"]) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "system", "bad"]) | json_values,
                    "content": st.text(max_size=30) | json_values,
                }
            ),
            max_size=3,
        )
        | json_values,
        "max_tokens": st.integers(-5, 40) | json_values,
        "n": st.integers(-2, 5) | json_values,
        "stream": st.booleans() | json_values,
        "temperature": st.floats(-1, 3, allow_nan=False, allow_infinity=False) | json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_fuzzed_request_bodies_never_break_the_gateway(server, body) -> None:  # type: ignore[no-untyped-def]
    if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 0:
        body["max_tokens"] = min(body["max_tokens"], 8)
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_metrics_and_fleet_state(server) -> None:  # type: ignore[no-untyped-def]
    httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "llama-3.2-1b", "prompt": "hi", "max_tokens": 2},
    )
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "wattserve_requests_total",
        "wattserve_tokens_total",
        "wattserve_ttft_seconds",
        "wattserve_energy_joules_total",
        "wattserve_site_power_watts",
        "wattserve_site_power_cap_watts",
        "wattserve_backend_up",
    ):
        assert name in text
    state = httpx.get(f"{server.url}/v1/fleet").json()
    assert set(state["targets"]) == {"fast", "edge-small"}
    assert state["sites"]["dc"]["power_cap_w"] == 5000


def test_client_disconnect_cancels_the_work(server) -> None:  # type: ignore[no-untyped-def]
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        timeout=30,
        json={
            "model": "llama-3.2-1b",
            "max_tokens": 20000,
            "stream": True,
            "messages": [{"role": "user", "content": "go on forever"}],
        },
    ) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data:")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = httpx.get(f"{server.url}/v1/fleet").json()
        busy = sum(
            rep["batch"] + rep["waiting"]
            for t in state["targets"].values()
            for rep in t.get("replicas", [])
        )
        if busy == 0:
            break
        time.sleep(0.05)
    assert busy == 0


def test_usage_reports_grams_of_co2_where_the_site_gives_its_intensity(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fleet = (
        "sites:\n"
        "  green: {kind: datacenter, pue: 1.2, carbon_g_per_kwh: 400}\n"
        "  unknown: {kind: datacenter}\n"
        "deployments:\n"
        "  a: {site: green, model: llama-3.2-1b, hardware: h100-sxm}\n"
        "  b: {site: unknown, model: qwen2.5-0.5b, hardware: h100-sxm}\n"
    )
    with gateway(tmp_path, fleet) as s:
        for model, site in (("llama-3.2-1b", "green"), ("qwen2.5-0.5b", "unknown")):
            r = httpx.post(
                f"{s.url}/v1/chat/completions",
                json={
                    "model": model,
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                timeout=30,
            )
            assert r.status_code == 200, r.text
            w = r.json()["usage"]["wattserve"]
            assert w["site"] == site
            if site == "green":
                assert w["carbon_g"] == pytest.approx(w["energy_j"] * 1.2 * 400 / 3.6e6)
            else:
                assert w["carbon_g"] is None  # unknown intensity stays unknown
        metrics = httpx.get(f"{s.url}/metrics", timeout=10).text
        lines = [x for x in metrics.splitlines() if x.startswith("wattserve_carbon_grams_total{")]
        assert len(lines) == 1 and 'site="green"' in lines[0]


def test_histogram_buckets_are_cumulative_with_each_edge_inclusive() -> None:
    from wattserve.serve.metrics import LATENCY_BUCKETS, Metrics

    m = Metrics()
    values = (0.001, 0.005, 0.0051, 0.3, 100.0)
    for v in values:
        m.observe("wattserve_ttft_seconds", v, model="x")
    text = m.render()
    for edge in LATENCY_BUCKETS:  # Prometheus: le is "less than or equal", counts cumulate
        want = sum(v <= edge for v in values)
        assert f'wattserve_ttft_seconds_bucket{{model="x",le="{edge:g}"}} {want}\n' in text
    assert 'wattserve_ttft_seconds_bucket{model="x",le="+Inf"} 5\n' in text
    assert 'wattserve_ttft_seconds_count{model="x"} 5\n' in text
