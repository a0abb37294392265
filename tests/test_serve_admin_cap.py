"""The admin API's set_cap refuses a cap under which no request could ever run, over real
sockets. A cap above the site's idle draw but below that draw plus what one request adds on
the site's least hungry deployment was taken, after which every request waited for power and
got 429; now it answers 400 naming `power_cap_w` and the least cap that lets one run."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from serving import gateway

MODEL = "llama-3.2-1b"
FLEET = f"""\
sites:
  dc: {{kind: datacenter, power_cap_w: 5000}}
  gcp: {{kind: cloud, power_cap_w: 1000}}
deployments:
  big: {{site: dc, model: llama-3.1-8b, hardware: h100-sxm}}
  small: {{site: dc, model: {MODEL}, hardware: h100-sxm, replicas: 2}}
  tpu: {{site: gcp, model: qwen2.5-0.5b, hardware: tpu-v6e}}
"""
IDLE = re.compile(r"the ([0-9.]+) W the devices at dc draw idle")
LEAST = re.compile(r"the least cap that lets one run is ([0-9.]+) W")


def set_cap(url: str, admin: str, site: str, cap_w: float | None) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/fleet",
        json={"action": "set_cap", "site": site, "power_cap_w": cap_w},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )


def chat(url: str, model: str = MODEL) -> httpx.Response:
    body = {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def test_a_cap_no_request_can_run_under_is_refused_with_the_least_that_can(
    tmp_path: Path,
) -> None:
    from wattserve.serve.ledger import Ledger

    ledger = Ledger(tmp_path / "gw.db")
    admin = ledger.create_key("ops", admin=True)
    ledger.close()
    with gateway(tmp_path, FLEET, "--max-wait", "1") as s:
        found = IDLE.search(set_cap(s.url, admin, "dc", 1).json()["error"]["message"])
        assert found, "the idle rule's message changed"
        idle_w = float(found.group(1))
        r = set_cap(s.url, admin, "dc", idle_w + 1)  # above idle: taken before, then every 429
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "power_cap_w" and err["type"] == "invalid_request_error"
        assert "'small'" in err["message"], err  # the least hungry deployment there
        found = LEAST.search(err["message"])
        assert found, err
        least_w = float(found.group(1))
        assert idle_w + 1 < least_w < 5000
        assert set_cap(s.url, admin, "dc", least_w - 0.5).status_code == 400
        assert chat(s.url).status_code == 200  # refused caps changed nothing
        r = set_cap(s.url, admin, "dc", least_w)
        assert r.status_code == 200 and r.json()["sites"]["dc"]["power_cap_w"] == least_w
        r = chat(s.url)  # the least cap given lets a request run
        assert r.status_code == 200, r.text
        assert set_cap(s.url, admin, "dc", None).status_code == 200  # lifting it is fine
        # no power figures for the TPU: one request's draw is unknown, any cap is taken
        assert set_cap(s.url, admin, "gcp", 1).status_code == 200
        assert chat(s.url, "qwen2.5-0.5b").status_code == 200


def test_a_fleet_file_cap_no_request_can_start_under_is_warned_about_at_start_up(
    tmp_path: Path,
) -> None:
    """The fleet file's own cap: one above the idle draw (the loader's rule) but under what one
    request adds is loaded, as simulate loads it, and serve says at start-up what simulate
    reports as the site's cap_note (core.governor.cap_blocks, one decision for both clocks)
    instead of leaving every request to wait and get 429 unexplained."""
    from wattserve.core.fleet import load_fleet

    probe = tmp_path / "probe.yaml"
    fleet = f"""\
sites:
  dc: {{kind: datacenter, power_cap_w: CAP}}
deployments:
  small: {{site: dc, model: {MODEL}, hardware: h100-sxm}}
"""
    probe.write_text(fleet.replace("CAP", "1e9"))
    idle = sum(d.replicas * d.perf.idle_power_w for d in load_fleet(probe).deployments)
    with gateway(tmp_path, fleet.replace("CAP", f"{idle + 1:.1f}"), "--max-wait", "0.5") as s:
        r = chat(s.url)
        assert r.status_code == 429, r.text
    log = (tmp_path / "gw.log").read_text()
    assert "WARNING: at dc, its cap" in log and "no request can start there" in log, log
