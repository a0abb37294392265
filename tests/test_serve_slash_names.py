"""A deployment may be named with a '/' (a repository id such as `meta/up`), and its replicas
are then `meta/up/0`, ...: the gateway's accounting, dashboard and `bench` had found a
backend's deployment by the text before its first '/', so such a deployment's streams taught
its latency predictions nothing (`measured_ttft_s` stayed null), the dashboard showed it no
requests, and bench counted them under `meta`. A name that is another deployment's replica's
is refused. Real gateway and fake server processes on loopback sockets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from serving import upstream_gateway

from wattserve.bench.client import Result
from wattserve.bench.metrics import summarize
from wattserve.core.fleet import load_fleet, target_of
from wattserve.errors import ConfigError

MODEL = "llama-3.2-1b"
CHAT = "/v1/chat/completions"


def test_a_deployment_with_a_slash_in_its_name_is_accounted_as_itself(tmp_path: Path) -> None:
    with upstream_gateway(tmp_path, "slash", {"meta/up": MODEL}) as gw:
        body = {
            "model": MODEL,
            "max_tokens": 8,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}],
        }
        with httpx.stream("POST", f"{gw.url}{CHAT}", json=body, timeout=30) as r:
            assert r.status_code == 200
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        usage = json.loads(events[-2])["usage"]["wattserve"]
        assert usage["backend"] == "meta/up/0" and usage["target"] == "meta/up"
        whole = httpx.post(
            f"{gw.url}{CHAT}",
            json={k: v for k, v in body.items() if k not in ("stream", "stream_options")},
            timeout=30,
        )
        assert whole.json()["usage"]["wattserve"]["target"] == "meta/up"
        target = httpx.get(f"{gw.url}/v1/fleet", timeout=10).json()["targets"]["meta/up"]
        assert target["measured_ttft_s"] == pytest.approx(usage["ttft_s"], abs=1e-3)
        deadline = time.monotonic() + 10
        while True:  # the dashboard samples the ledger each second
            state = httpx.get(f"{gw.url}/dashboard/state", timeout=10).json()
            stats = state["targets"]["meta/up"]["stats"]
            if stats["requests"] == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert stats["requests"] == 2 and stats["ttft_p50_s"] is not None


def test_bench_counts_a_requests_deployment_as_the_gateway_names_it() -> None:
    rows = []
    for i, (backend, target) in enumerate(
        [("meta/up/0", "meta/up"), ("meta/up/1", "meta/up"), ("groq-8b/2", "groq-8b/2")]
    ):
        r = Result(i, i, 0.0, 10, 5)
        r.sent, r.ok, r.e2e_s, r.usage_completion_tokens = True, True, 1.0, 5
        r.backend, r.target = backend, target
        rows.append(r)
    deployments = summarize(rows, 10.0, {})["deployments"]
    assert {k: v["requests"] for k, v in deployments.items()} == {"meta/up": 2, "groq-8b/2": 1}


HETERO = Path(__file__).resolve().parents[1] / "examples" / "fleet-hetero.yaml"


def test_a_deployment_named_as_another_deployments_replica_is_refused(tmp_path: Path) -> None:
    text = HETERO.read_text()
    assert "\n  h100:" in text
    fleet = tmp_path / "f.yaml"
    fleet.write_text(
        text.replace(
            "\ndeployments:\n",
            "\ndeployments:\n  h100/1: {site: dc-east, model: llama-3.1-8b, hardware: h100-sxm}\n",
            1,
        )
    )
    with pytest.raises(ConfigError) as info:
        load_fleet(fleet)
    assert "a deployment may not be named as a replica of deployment 'h100'" in str(info.value)
    assert "field 'deployments.h100/1'" in str(info.value)


def test_target_of_reads_a_replica_as_its_deployment_and_anything_else_as_itself() -> None:
    deps = {"meta/up", "h100"}
    assert target_of("meta/up/3", deps) == "meta/up"
    assert target_of("h100/0", deps) == "h100"
    assert target_of("groq-8b/2", deps) == "groq-8b/2"  # a hosted API's own name
    assert target_of("meta/up", deps) == "meta/up"
