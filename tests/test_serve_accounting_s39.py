"""The gateway's views agree (session 39's review of the ledger, /metrics, usage and the
dashboard for the same traffic): a key whose budget is spent is refused at the door and not
written, as docs/serve.md says (each retry was a `rejected` row), and the dashboard says
unknown where the energy of what it served is unknown (it read 0 J and 0 g). Real gateway
processes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
from serving import gateway

from wattserve.serve.ledger import Ledger

CHAT = "/v1/chat/completions"


def _ask(url: str, model: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return httpx.post(f"{url}{CHAT}", json=body, headers=headers, timeout=30)


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


H100 = (
    "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
    "  d: {site: dc, model: llama-3.2-1b, hardware: h100-sxm}\n"
)


def test_a_key_whose_budget_is_spent_is_refused_at_the_door_and_not_written(
    tmp_path: Path,
) -> None:
    """A key with nothing left (a budget of $0 here, or one lowered under its spend): each
    retry had been a `rejected` row, although docs/serve.md says such a key is refused at the
    door and not written (a client retrying as fast as it can would fill the disk)."""
    db = tmp_path / "gw.db"  # the ledger serving.gateway gives the gateway
    ledger = Ledger(db)
    key = ledger.create_key("spent", budget_usd=0.0)
    watcher = ledger.create_key("prometheus", metrics=True)
    ledger.close()
    with gateway(tmp_path, H100, "--require-keys") as gw:
        for _ in range(20):
            again = _ask(gw.url, "llama-3.2-1b", key)
            assert again.status_code == 429, again.text
            assert again.json()["error"]["code"] == "insufficient_quota"
            assert "has spent its $0 budget" in again.json()["error"]["message"]
        auth = {"Authorization": f"Bearer {watcher}"}
        metrics = httpx.get(f"{gw.url}/metrics", headers=auth, timeout=10).text
        time.sleep(1.5)  # anything written is committed
        assert _rows(db) == 0
    assert 'wattserve_rejected_total{reason="insufficient_quota",status="429"} 20' in metrics


TPU = (
    "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
    "  t: {site: dc, model: llama-3.2-1b, hardware: tpu-v5e}\n"  # no TDP: power unknown
)


def test_the_dashboard_says_unknown_for_energy_nobody_knows(tmp_path: Path) -> None:
    with gateway(tmp_path, TPU) as gw:
        for _ in range(3):
            r = _ask(gw.url, "llama-3.2-1b")
            assert r.status_code == 200 and r.json()["usage"]["wattserve"]["energy_j"] is None
        deadline = time.monotonic() + 10
        while (state := httpx.get(f"{gw.url}/dashboard/state", timeout=10).json())["totals"][
            "ok"
        ] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    totals = state["totals"]
    assert totals["energy_j"] is None and totals["gco2"] is None, totals
    assert totals["energy_unknown_requests"] == 3
    assert totals["usd"] is not None and totals["usd_unknown_requests"] == 0


def test_a_server_on_owned_devices_is_billed_their_electricity_too(tmp_path: Path) -> None:
    """An RTX 4090 (owned: a list price, no hourly price) behind an OpenAI-compatible server:
    its requests are billed their share of the capex and the electricity of their energy, as
    an emulated one's are (it was billed the capex alone: $2.3e-08 of this answer's $8.2e-08)."""
    from serving import fake_upstream

    from wattserve.core.fleet import load_fleet

    with fake_upstream() as port:
        fleet = (
            "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
            "  own: {site: dc, model: llama-3.2-1b, hardware: rtx-4090, "
            f"backend: {{kind: openai, url: 'http://127.0.0.1:{port}/v1'}}}}\n"
        )
        (tmp_path / "probe.yaml").write_text(fleet)
        cost = load_fleet(tmp_path / "probe.yaml").deployments[0].cost
        assert cost.basis == "own"
        per_s, per_j = cost.billable()
        with gateway(tmp_path, fleet) as gw:
            r = _ask(gw.url, "llama-3.2-1b")
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]["wattserve"]
    electricity = per_j * usage["energy_j"]
    assert electricity > 0
    assert electricity <= usage["usd"] <= electricity + per_s * 5.0, (usage, per_s, per_j)


def _row(i: int, status: str, tokens: int, joules: float | None, site: str) -> dict[str, object]:
    return {
        "id": f"c-{i}", "ts": time.time(), "key_id": None, "model": "m", "backend": f"{site}/0",
        "site": site, "prompt_tokens": 8, "completion_tokens": tokens, "ttft_s": 0.1,
        "duration_s": 1.0, "energy_j": joules, "usd": 0.1, "status": status, "error": None,
        "billed_usd": None, "billed_j": None,
    }  # fmt: skip


def test_the_dashboards_totals_read_as_usage_sums_them(tmp_path: Path) -> None:
    """A request that made tokens counts as served, whatever its status, and a sum with any
    figure known is that figure with `+?` (the dashboard had counted only `ok` rows, and said
    unknown where a cancelled row's joules were known)."""
    import asyncio
    import types

    from wattserve.serve.dashboard import Dashboard

    for rows, energy, unknown in (
        ([_row(1, "ok", 4, 40.0, "dc"), _row(2, "cancelled", 50, None, "tpu")], 40.0, 1),
        ([_row(1, "ok", 4, None, "tpu"), _row(2, "cancelled", 50, 50.0, "dc")], 50.0, 1),
        ([_row(1, "ok", 4, None, "tpu"), _row(2, "rejected", 0, None, "tpu")], None, 1),
    ):
        db = tmp_path / f"l{energy}.db"
        ledger = Ledger(db)

        async def write(ledger: Ledger = ledger, rows: list[dict[str, object]] = rows) -> None:
            for row in rows:
                await ledger.submit(row)

        asyncio.run(write())
        usage = ledger.usage("model")[0]
        assert (usage["energy_j"], usage["energy_unknown_requests"]) == (energy, unknown)
        router = types.SimpleNamespace(
            fleet_state=lambda: {"sites": {}, "targets": {}},
            fleet=types.SimpleNamespace(sites={}),
            target_of={},
            policy=types.SimpleNamespace(name="p"),
        )
        dash = Dashboard(types.SimpleNamespace(ledger=ledger, router=router, in_flight=0))  # type: ignore[arg-type]
        dash.db = sqlite3.connect(db)
        dash.sample()
        totals = dash.state()["totals"]
        dash.db.close()
        ledger.close()
        assert (totals["energy_j"], totals["energy_unknown_requests"]) == (energy, unknown)
