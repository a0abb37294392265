"""`wattserve usage`: sums of what the ledger knows, and an unknown figure kept unknown."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from wattserve.cli.app import app
from wattserve.serve.ledger import COLUMNS, INSERT, Ledger


def ledger_with(path: Path, rows: list[dict[str, object]]) -> None:
    Ledger(path).close()  # the schema
    db = sqlite3.connect(path)
    base = dict.fromkeys(COLUMNS)
    with db:
        for i, r in enumerate(rows):
            db.execute(INSERT, base | {"id": f"r{i}", "ts": 1.7e9 + i} | r)
    db.close()


def test_energy_and_dollars_nobody_reported_stay_unknown(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ok = {"status": "ok", "prompt_tokens": 10, "completion_tokens": 5}
    ledger_with(
        db,
        [
            ok | {"model": "gpu", "site": "dc", "energy_j": 2.0, "usd": 0.001},
            ok | {"model": "gpu", "site": "dc", "energy_j": 3.0, "usd": 0.002},
            ok | {"model": "local", "site": "edge"},  # a backend that reports no figures
            ok | {"model": "mixed", "site": "dc", "energy_j": 1.5, "usd": 0.5},
            ok | {"model": "mixed", "site": "dc"},
            {"model": "refused", "site": "dc", "status": "rejected"},  # nothing served
        ],
    )
    runner = CliRunner()
    out = runner.invoke(app, ["usage", "--db", str(db), "--by", "model", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["group"]: r for r in json.loads(out.output)}
    assert rows["gpu"]["energy_j"] == 5.0 and rows["gpu"]["energy_unknown_requests"] == 0
    assert rows["local"]["energy_j"] is None and rows["local"]["usd"] is None
    assert rows["local"]["energy_unknown_requests"] == 1
    assert rows["mixed"]["energy_j"] == 1.5 and rows["mixed"]["energy_unknown_requests"] == 1
    assert rows["refused"]["energy_j"] is None and rows["refused"]["energy_unknown_requests"] == 0
    text = runner.invoke(app, ["usage", "--db", str(db), "--by", "model"]).output
    lines = {ln.split()[0]: ln for ln in text.splitlines()[1:] if ln.strip()}
    assert "unknown" in lines["local"] and "0.00" not in lines["local"]
    assert "1.50+?" in lines["mixed"] and "+?" not in lines["gpu"]
    assert "some requests of the group have no figure" in text
    # the site grouping sums the dc rows that have figures and flags the one that does not
    by_site = json.loads(
        runner.invoke(app, ["usage", "--db", str(db), "--by", "site", "--json"]).output
    )
    dc = next(r for r in by_site if r["group"] == "dc")
    assert dc["energy_j"] == 6.5 and dc["energy_unknown_requests"] == 1


def test_usage_shows_what_keys_were_billed_beside_what_serving_cost(tmp_path: Path) -> None:
    """A hold caps a charge, so a key's spend can be far below the cost of its requests:
    `usage --by key` showed only the cost ($0.026589 for a key whose spend was $0.000825)
    and read as a key 32 times over its spend (found 2026-12-06)."""
    db = tmp_path / "ledger.db"
    ok = {"status": "ok", "prompt_tokens": 10, "completion_tokens": 5, "model": "m"}
    ledger_with(
        db,
        [
            ok | {"key_id": "k1", "usd": 0.02, "billed_usd": 0.0005, "billed_j": 2.0},
            ok | {"key_id": "k1", "usd": 0.006589, "billed_usd": 0.000325, "billed_j": 1.0},
        ],
    )
    runner = CliRunner()
    out = runner.invoke(app, ["usage", "--db", str(db), "--by", "key", "--json"])
    [row] = json.loads(out.output)
    assert row["usd"] == 0.026589 and row["billed_usd"] == 0.000825 and row["billed_j"] == 3.0
    text = runner.invoke(app, ["usage", "--db", str(db), "--by", "key"]).output
    assert "billed usd" in text.splitlines()[0] and "0.000825" in text, text
