"""What happens to a request before it reaches a backend (found by an audit of `serve`): the
data-residency header fails closed, a client that leaves while its request waits for power is
counted, and `GET /v1/models/{id}` answers as OpenAI's does. Real gateways on loopback
sockets."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from openai import NotFoundError, OpenAI
from serving import gateway, requests_total

CHAT = "/v1/chat/completions"
SMALL = "llama-3.2-1b"

EDGE_FLEET = f"""
sites:
  dc: {{kind: datacenter}}
  edge: {{kind: edge}}
  kiosk: {{kind: edge}}  # no devices: its requests travel, unless they must stay
deployments:
  big: {{site: dc, model: {SMALL}, hardware: h100-sxm}}
  small:
    site: edge
    model: {SMALL}
    hardware: jetson-agx-orin-64gb
    dtype: int8
    kv_dtype: fp16
aliases:
  small-llama: {SMALL}
"""

# 2 H100s idle at about 210 W together, one request needs about 190 W more: under a 300 W
# cap every request waits for power (then 429)
CAPPED_FLEET = f"""
sites:
  dc: {{kind: datacenter, power_cap_w: 300}}
deployments:
  gpus: {{site: dc, model: {SMALL}, hardware: h100-sxm, replicas: 2}}
"""


def post(url: str, headers: dict[str, str], **extra: object) -> httpx.Response:
    body = {"model": SMALL, "max_tokens": 3, "messages": [{"role": "user", "content": "x"}]}
    return httpx.post(f"{url}{CHAT}", headers=headers, json=body | extra, timeout=30)


def test_the_data_local_header_fails_closed(tmp_path: Path) -> None:
    with gateway(tmp_path, EDGE_FLEET) as s:
        for value in ("1", "true", "TRUE", "yes", "Yes"):  # nothing at kiosk: 503, no retry
            r = post(s.url, {"x-wattserve-site": "kiosk", "x-wattserve-data-local": value})
            assert r.status_code == 503, (value, r.text)
            assert "Retry-After" not in r.headers and "kiosk" in r.json()["error"]["message"]
        for value in ("0", "false", "False", "no", "NO"):  # may travel: served at the dc
            r = post(s.url, {"x-wattserve-site": "kiosk", "x-wattserve-data-local": value})
            assert r.status_code == 200, (value, r.text)
            assert r.json()["usage"]["wattserve"]["site"] == "dc"
        for value in ("on", "y", "2", "truthy", "", "true, false"):  # not understood: refused
            r = post(s.url, {"x-wattserve-site": "kiosk", "x-wattserve-data-local": value})
            err = r.json()["error"]
            assert r.status_code == 400, (value, r.text)
            assert err["param"] == "x-wattserve-data-local" and "yes" in err["message"]
        r = post(s.url, {"x-wattserve-data-local": "true"})  # kept local, but where?
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "x-wattserve-site", r.text
        assert "None" not in err["message"]
        r = post(s.url, {"x-wattserve-data-local": "no"})  # no origin and free to travel
        assert r.status_code == 200
        r = post(s.url, {"x-wattserve-site": "edge", "x-wattserve-data-local": "yes"})
        assert r.status_code == 200 and r.json()["usage"]["wattserve"]["site"] == "edge"
        # two sites: the first was taken, whichever it was, even for a request kept local
        two = [("x-wattserve-site", "edge"), ("x-wattserve-site", "dc")]
        for extra in ([], [("x-wattserve-data-local", "yes")]):
            body = {"model": SMALL, "max_tokens": 3, "messages": [{"role": "user", "content": "x"}]}
            r = httpx.post(f"{s.url}{CHAT}", headers=two + extra, json=body, timeout=30)
            err = r.json()["error"]
            assert r.status_code == 400 and err["param"] == "x-wattserve-site", r.text
            assert "one x-wattserve-site header" in err["message"]
        metrics = httpx.get(f"{s.url}/metrics", timeout=10).text
        assert 'wattserve_rejected_total{reason="invalid_request_error",status="400"}' in metrics


def rows(db: Path) -> list[tuple[str, str | None, str | None]]:
    con = sqlite3.connect(db)
    got = con.execute("SELECT status, backend, error FROM requests").fetchall()
    con.close()
    return got


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_waiting_for_power_is_counted(
    tmp_path: Path, stream: bool
) -> None:
    with gateway(tmp_path, CAPPED_FLEET, "--max-wait", "5") as s:
        for _ in range(2):
            with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.5 s
                httpx.post(
                    f"{s.url}{CHAT}",
                    json={
                        "model": SMALL,
                        "max_tokens": 3,
                        "stream": stream,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                    timeout=0.5,
                )
        deadline = time.monotonic() + 5
        while requests_total(s.url, "cancelled") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert requests_total(s.url, "cancelled") == 2
        assert requests_total(s.url, "rejected") == 0  # they left before their 429
        assert httpx.get(f"{s.url}/health", timeout=10).json()["in_flight"] == 0
        deadline = time.monotonic() + 5
        while len(rows(s.db)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (
            rows(s.db) == [("cancelled", None, "client disconnected while waiting for power")] * 2
        )
    log = (tmp_path / "gw.log").read_text()
    assert log.count("client disconnected while waiting for power") == 2
    assert "Traceback" not in log


def test_a_model_can_be_retrieved_by_its_id(tmp_path: Path) -> None:
    with gateway(tmp_path, EDGE_FLEET) as s:
        with OpenAI(base_url=f"{s.url}/v1", api_key="x", http_client=httpx.Client()) as client:
            model = client.models.retrieve(SMALL)
            assert model.id == SMALL and model.object == "model"
            listed = {m.id: m.model_dump() for m in client.models.list()}
            assert model.model_dump() == listed[SMALL]
            assert client.models.retrieve("small-llama").id == "small-llama"  # as listed
            with pytest.raises(NotFoundError) as exc:
                client.models.retrieve("no-such-model")
            assert exc.value.status_code == 404
            # a Hugging Face repository id (with its slash) is served as chat requests are
            hf = "meta-llama/Llama-3.2-1B-Instruct"
            assert client.models.retrieve(hf).id == hf
        r = httpx.get(f"{s.url}/v1/models/no-such-model", timeout=10)
        err = r.json()["error"]
        assert err["code"] == "model_not_found" and err["param"] == "model"
