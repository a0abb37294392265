"""Opaque upstream models (served by name with per-token prices) and model aliases: the fleet
file's checks, and a gateway over real sockets in front of the package's fake server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serving import fake_upstream, gateway

from wattserve.core.fleet import Fleet, parse_fleet
from wattserve.core.modelspec import builtin_model_id, load_model
from wattserve.core.yamlio import load_yaml_text
from wattserve.errors import ConfigError


def _fleet(text: str) -> Fleet:
    return parse_fleet(load_yaml_text(text, "f.yaml"), "f.yaml")


OPAQUE = """\
sites:
  dc: {{kind: datacenter, power_cap_w: 5000}}
  acme: {{kind: cloud}}
deployments:
  small:
    site: dc
    model: meta-llama/Llama-3.2-1B-Instruct
    hardware: h100-sxm
    backend: {{kind: openai, url: "http://127.0.0.1:{port}/v1", model_name: fake}}
providers:
  acme-large:
    site: acme
    model: acme-large-2025
    usd_per_mtok_input: 1.0
    usd_per_mtok_output: 4.0
    backend: {{kind: openai, url: "http://127.0.0.1:{port}/v1"}}
  acme-metered:
    site: acme
    model: acme-metered
    usd_per_mtok_input: 0.5
    usd_per_mtok_output: 2.0
    joules_per_token: 0.3
    backend: {{kind: openai, url: "http://127.0.0.1:{port}/v1"}}
aliases:
  house-model: acme-large-2025
"""


def test_catalog_aliases_name_the_builtin_model() -> None:
    assert builtin_model_id("meta-llama/Llama-3.1-8B-Instruct") == "llama-3.1-8b"
    assert builtin_model_id("META-LLAMA/llama-3.1-8b-instruct") == "llama-3.1-8b"
    assert builtin_model_id("llama-3.1-8b") == "llama-3.1-8b"
    assert builtin_model_id("acme/unknown") is None
    assert load_model("meta-llama/Llama-3.1-8B-Instruct").id == "llama-3.1-8b"


def test_an_opaque_provider_needs_only_prices() -> None:
    fleet = _fleet(OPAQUE.format(port=1))
    large = next(h for h in fleet.hosted if h.name == "acme-large")
    assert large.opaque and large.assumed_latency and large.joules_per_token is None
    assert large.remote_name == "acme-large-2025"
    assert fleet.deployments[0].model == "llama-3.2-1b"
    assert fleet.resolve_model("house-model") == "acme-large-2025"
    assert fleet.resolve_model("meta-llama/Llama-3.2-1B") == "llama-3.2-1b"
    assert fleet.resolve_model("meta-llama/Llama-3.1-8B") is None


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (
            "    usd_per_mtok_input: 1.0\n",
            "providers.acme-large.usd_per_mtok_input",
            "publishes no",
        ),
        (
            '    backend: {kind: openai, url: "http://127.0.0.1:1/v1"}\n',
            "providers.acme-large",
            "catalog provider",
        ),
        ("  house-model: acme-large-2025\n", "aliases.house-model", "not a model of this fleet"),
    ],
)
def test_bad_opaque_entries_name_the_field(edit: str, field: str, words: str) -> None:
    text = OPAQUE.format(port=1)
    if edit.startswith("  house"):
        text = text.replace(edit, "  house-model: nope-model\n")
    else:
        head, _, tail = text.partition("acme-metered:")
        text = head.replace(edit, "", 1) + "acme-metered:" + tail
    with pytest.raises(ConfigError) as info:
        _fleet(text)
    assert field in str(info.value) and words in str(info.value)


def test_gateway_serves_opaque_models_and_aliases(tmp_path: Path) -> None:
    with fake_upstream() as port, gateway(tmp_path, OPAQUE.format(port=port)) as gw:
        listed = {m["id"] for m in httpx.get(f"{gw.url}/v1/models").json()["data"]}
        assert {"acme-large-2025", "house-model", "llama-3.2-1b"} <= listed

        def chat(model: str, stream: bool = False) -> httpx.Response:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            return httpx.post(f"{gw.url}/v1/chat/completions", json={**body, "stream": stream})

        for name in ("acme-large-2025", "house-model"):
            r = chat(name)
            assert r.status_code == 200, r.text
            used = r.json()["usage"]["wattserve"]
            assert used["backend"] == "acme-large"
            assert used["energy_j"] is None  # unknown, never invented
            assert used["usd"] == pytest.approx((8 * 1.0 + 2 * 4.0) / 1e6)
            assert r.json()["model"] == name  # the client's own name comes back
        metered = chat("acme-metered").json()["usage"]["wattserve"]
        assert metered["energy_j"] == pytest.approx(0.3 * 10)
        hf = chat("meta-llama/Llama-3.2-1B-Instruct")
        assert hf.status_code == 200 and hf.json()["usage"]["wattserve"]["backend"] == "small/0"
        assert hf.json()["usage"]["wattserve"]["energy_j"] > 0  # a known architecture
        streamed = chat("house-model", stream=True)
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        missing = chat("meta-llama/Llama-3.1-8B-Instruct")
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"
