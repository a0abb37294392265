"""The gateway under failure, load and abuse: power caps, a killed backend, a killed gateway,
keys and budgets. Real processes on loopback sockets."""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from serving import gateway

from wattserve.serve.ledger import Ledger

SMALL = "llama-3.2-1b"


def ask(url: str, max_tokens: int = 8, key: str | None = None, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers=headers,
        timeout=60,
        json={
            "model": SMALL,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hello " * 50}],
            **kw,
        },
    )


def cli(*args: str) -> str:
    p = subprocess.run(
        [sys.executable, "-m", "wattserve", *args], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_power_cap_holds_under_load(tmp_path: Path) -> None:
    fleet = f"""
sites:
  dc: {{kind: datacenter, power_cap_w: 650}}
deployments:
  gpus: {{site: dc, model: {SMALL}, hardware: h100-sxm, replicas: 2}}
"""
    with gateway(tmp_path, fleet, "--policy", "least_loaded", "--max-wait", "2") as s:
        peak = [0.0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                site = httpx.get(f"{s.url}/v1/fleet").json()["sites"]["dc"]
                peak[0] = max(peak[0], site["power_w"], site["peak_power_w"])
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                results = list(pool.map(lambda _: ask(s.url, 200), range(64)))
        finally:
            stop.set()
            watcher.join()
        assert peak[0] <= 650.0 + 1e-6
        codes = {r.status_code for r in results}
        assert codes <= {200, 429} and 200 in codes
        for r in results:
            if r.status_code == 429:
                assert r.headers["Retry-After"] and "power cap" in r.json()["error"]["message"]
        assert httpx.get(f"{s.url}/v1/fleet").json()["sites"]["dc"]["peak_power_w"] <= 650.0


def test_ledger_survives_sigkill(tmp_path: Path) -> None:
    fleet = (
        f"sites:\n  dc: {{kind: datacenter}}\ndeployments:\n"
        f"  g: {{site: dc, model: {SMALL}, hardware: h100-sxm}}\n"
    )
    with gateway(tmp_path, fleet) as s:
        ids = [ask(s.url, 4).json()["id"] for _ in range(20)]
        s.kill()
        Ledger(s.db).close()  # the next open replays the killed gateway's journal
        db = sqlite3.connect(s.db)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(db.execute("SELECT id, status FROM requests").fetchall())
        assert all(rows.get(i) == "ok" for i in ids)
        out = json.loads(cli("usage", "--db", str(s.db), "--by", "model", "--json"))
        assert out[0]["group"] == SMALL and out[0]["requests"] == 20 and out[0]["energy_j"] > 0


def test_backend_killed_mid_run(tmp_path: Path) -> None:
    upstream_fleet = (
        f"sites:\n  far: {{kind: datacenter}}\ndeployments:\n"
        f"  e: {{site: far, model: {SMALL}, hardware: h100-sxm}}\n"
    )
    with gateway(tmp_path, upstream_fleet, name="upstream") as up:
        fleet = f"""
sites:
  dc: {{kind: datacenter}}
  edge: {{kind: edge}}
deployments:
  remote:
    site: dc
    model: {SMALL}
    hardware: h100-sxm
    backend: {{kind: openai, url: "{up.url}/v1", timeout_s: 10}}
  local:
    site: edge
    model: {SMALL}
    hardware: jetson-agx-orin-64gb
    dtype: int8
    kv_dtype: fp16
"""
        db = tmp_path / "gw.db"
        admin = cli("keys", "create", "ops", "--admin", "--db", str(db))
        with gateway(tmp_path, fleet, "--policy", "slo") as gw:
            h = {"Authorization": f"Bearer {admin}"}
            r = httpx.post(
                f"{gw.url}/v1/fleet", headers=h, json={"action": "drain", "target": "local"}
            )
            assert r.status_code == 200 and r.json()["targets"]["local"]["drained"]
            outcomes: list[str] = []

            def stream() -> None:
                with httpx.stream(
                    "POST",
                    f"{gw.url}/v1/chat/completions",
                    headers=h,
                    timeout=30,
                    json={
                        "model": SMALL,
                        "max_tokens": 5000,
                        "stream": True,
                        "messages": [{"role": "user", "content": "long"}],
                    },
                ) as r:
                    last = ""
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            last = line
                    outcomes.append(last)

            threads = [threading.Thread(target=stream) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(1.0)  # the streams are running through the upstream
            up.kill()
            for t in threads:
                t.join(20)
                assert not t.is_alive(), "a stream hung after its backend died"
            assert len(outcomes) == 3
            assert all('"error"' in o and "mid-stream" in o for o in outcomes), outcomes
            httpx.post(
                f"{gw.url}/v1/fleet", headers=h, json={"action": "undrain", "target": "local"}
            )
            r = ask(gw.url, 4, key=admin)  # the dead upstream is retried elsewhere or ejected
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["wattserve"]["backend"] == "local/0"
        ledger = sqlite3.connect(db)
        statuses = [s for (s,) in ledger.execute("SELECT status FROM requests")]
        assert statuses.count("error") >= 3 and statuses.count("ok") >= 1


def test_keys_budgets_rate_limits_and_admin(tmp_path: Path) -> None:
    fleet = (
        f"sites:\n  dc: {{kind: datacenter, power_cap_w: 3000}}\ndeployments:\n"
        f"  g: {{site: dc, model: {SMALL}, hardware: h100-sxm}}\n"
    )
    db = tmp_path / "gw.db"
    cheap = cli("keys", "create", "cheap", "--budget-usd", "0.0000001", "--db", str(db))
    slow = cli("keys", "create", "slow", "--rps", "0.5", "--db", str(db))
    user = cli("keys", "create", "user", "--db", str(db))
    admin = cli("keys", "create", "root", "--admin", "--db", str(db))
    with gateway(tmp_path, fleet, "--require-keys") as s:
        r = ask(s.url)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert ask(s.url, key="ws-forged").status_code == 401
        r = ask(s.url, key=cheap)  # its worst case is over the budget: refused up front
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
        assert "may cost up to" in r.json()["error"]["message"]
        assert ask(s.url, key=slow).status_code == 200
        r = ask(s.url, key=slow)
        assert r.status_code == 429 and r.headers["Retry-After"]
        r = httpx.post(
            f"{s.url}/v1/fleet",
            headers={"Authorization": f"Bearer {user}"},
            json={"action": "set_cap", "site": "dc", "power_cap_w": 1000},
        )
        assert r.status_code == 403
        r = httpx.post(
            f"{s.url}/v1/fleet",
            headers={"Authorization": f"Bearer {admin}"},
            json={"action": "set_cap", "site": "dc", "power_cap_w": 1000},
        )
        assert r.status_code == 200 and r.json()["sites"]["dc"]["power_cap_w"] == 1000
        r = httpx.post(
            f"{s.url}/v1/fleet",
            headers={"Authorization": f"Bearer {admin}"},
            json={"action": "set_cap", "site": "dc", "power_cap_w": -3},
        )
        assert r.status_code == 400
    listed = json.loads(cli("keys", "list", "--db", str(db)))
    assert {k["name"] for k in listed} == {"cheap", "slow", "user", "root"}
    assert all("hash" not in k for k in listed)
    raw = sqlite3.connect(db).execute("SELECT hash FROM keys").fetchall()
    assert all(cheap not in h for (h,) in raw)


EDGE_FLEET = f"""
sites:
  dc: {{kind: datacenter}}
  edge: {{kind: edge}}
  kiosk: {{kind: edge}}  # no devices: its requests travel
links:
  - between: [edge, dc]
    rtt_ms: 20
deployments:
  big: {{site: dc, model: {SMALL}, hardware: h100-sxm}}
  small:
    site: edge
    model: {SMALL}
    hardware: jetson-agx-orin-64gb
    dtype: int8
    kv_dtype: fp16
"""


def test_origin_site_residency_and_draining(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    admin = cli("keys", "create", "ops", "--admin", "--db", str(db))
    auth = {"Authorization": f"Bearer {admin}"}
    with gateway(tmp_path, EDGE_FLEET, "--policy", "edge_first") as s:

        def where(headers: dict[str, str]) -> httpx.Response:
            return httpx.post(
                f"{s.url}/v1/chat/completions",
                headers={**auth, **headers},
                timeout=30,
                json={
                    "model": SMALL,
                    "max_tokens": 3,
                    "messages": [{"role": "user", "content": "x"}],
                },
            )

        r = where({"x-wattserve-site": "edge"})
        assert r.json()["usage"]["wattserve"]["site"] == "edge"  # served at its origin
        httpx.post(f"{s.url}/v1/fleet", headers=auth, json={"action": "drain", "target": "small"})
        r = where({"x-wattserve-site": "edge"})
        assert r.status_code == 200 and r.json()["usage"]["wattserve"]["site"] == "dc"
        r = where({"x-wattserve-site": "edge", "x-wattserve-data-local": "true"})
        assert r.status_code == 503 and r.headers["Retry-After"]  # may not leave the edge
        httpx.post(f"{s.url}/v1/fleet", headers=auth, json={"action": "undrain", "target": "small"})
        r = where({"x-wattserve-site": "edge", "x-wattserve-data-local": "true"})
        assert r.status_code == 200 and r.json()["usage"]["wattserve"]["site"] == "edge"
        r = where({"x-wattserve-site": "kiosk"})
        assert r.status_code == 200 and r.json()["usage"]["wattserve"]["site"] != "kiosk"
        r = where({"x-wattserve-site": "kiosk", "x-wattserve-data-local": "true"})
        assert r.status_code == 503 and "Retry-After" not in r.headers  # nothing will change
        assert "may not leave site kiosk" in r.json()["error"]["message"]


def test_graceful_shutdown_finishes_streams(tmp_path: Path) -> None:
    import signal

    fleet = (
        f"sites:\n  dc: {{kind: datacenter}}\ndeployments:\n"
        f"  g: {{site: dc, model: {SMALL}, hardware: h100-sxm}}\n"
    )
    with gateway(tmp_path, fleet) as s:
        lines: list[str] = []

        def stream() -> None:
            with httpx.stream(
                "POST",
                f"{s.url}/v1/chat/completions",
                timeout=30,
                json={
                    "model": SMALL,
                    "max_tokens": 300,
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                },
            ) as r:
                lines.extend(line for line in r.iter_lines() if line.startswith("data:"))

        t = threading.Thread(target=stream)
        t.start()
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert lines[-1] == "data: [DONE]" and len(lines) >= 300
        assert s.proc.wait(30) == 0
