"""Session 36's probe of `wattserve keys` and `usage`: two `keys create` of one name at once
both passed the check for a live key of that name (it ran before the insert, outside its
transaction); `keys create --db` on another program's SQLite database added the ledger's
tables to it and switched it to WAL; `usage` printed a model or site from the ledger as
written (an escape sequence, a line break that forged a row)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from wattserve.cli.app import app
from wattserve.serve.ledger import Ledger


def test_keys_created_at_once_under_one_name_give_one_live_key(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    Ledger(db).db.close()
    for round_ in range(3):
        name = f"dup{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "wattserve", "keys", "create", name, "--db", str(db)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(5)
        ]
        for p in procs:
            p.communicate(timeout=60)
        codes = [p.returncode for p in procs]
        assert codes.count(0) == 1, codes
        con = sqlite3.connect(db)
        live = con.execute("SELECT COUNT(*) FROM keys WHERE name = ? AND NOT revoked", (name,))
        assert live.fetchone()[0] == 1
        con.close()


def test_keys_create_leaves_another_programs_database_as_it_was(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE users (id, name)")
    con.commit()
    con.close()
    before = other.read_bytes()
    r = CliRunner().invoke(app, ["keys", "create", "z", "--db", str(other)])
    assert r.exit_code == 2 and "not a wattserve ledger: it holds other tables (users)" in r.output
    assert other.read_bytes() == before and not Path(f"{other}-wal").exists()
    # an empty SQLite file (or none) becomes a ledger, as before
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert CliRunner().invoke(app, ["keys", "create", "z", "--db", str(empty)]).exit_code == 0


def test_usage_shows_what_the_ledger_holds_escaped(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    Ledger(db).db.close()
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(requests)")]
    row = dict.fromkeys(cols)
    row.update(
        id="r1",
        ts=1.0,
        model="m\x1b[2JFORGED\nevil-model 999999",
        site="s\x1b]0;pwned\x07",
        status="ok",
    )
    row = {k: v for k, v in row.items() if v is not None}
    con.execute(
        f"INSERT INTO requests ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        tuple(row.values()),
    )
    con.commit()
    con.close()
    for by in ("model", "site"):
        r = CliRunner().invoke(app, ["usage", "--db", str(db), "--by", by])
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.output and "\x07" not in r.output
        assert "evil-model" not in r.output.splitlines()[-1].split()[0:1]
