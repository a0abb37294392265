"""The ledger's journal (wattserve.serve.journal): rows are durable once written there, the next
open replays a dead writer's journal (a row and its charge once, a torn or hostile line
skipped), a live writer's journal is left alone, rotated journals go once committed, and a
failed commit keeps its rows for the next open. Real files, real SQLite, real flock; the
SIGKILL of a real gateway is in test_serve_security and test_serve_reliability."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from wattserve.serve.journal import Journal, journal_dir
from wattserve.serve.ledger import Ledger


def row(i: int, key_id: str | None = None, usd: float | None = None) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{i}",
        "ts": time.time(),
        "key_id": key_id,
        "model": "m",
        "backend": "b",
        "site": "s",
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "ttft_s": 0.1,
        "duration_s": 0.2,
        "energy_j": 1.5,
        "usd": usd,
        "status": "ok",
        "error": None,
        "billed_usd": usd,
        "billed_j": None,
    }


def ids(db: Path) -> set[str]:
    return {r[0] for r in sqlite3.connect(db).execute("SELECT id FROM requests")}


def spent(db: Path, kid: str) -> float:
    (usd,) = (
        sqlite3.connect(db).execute("SELECT spent_usd FROM keys WHERE id = ?", (kid,)).fetchone()
    )
    return float(usd)


def recovered(db: Path) -> int:
    """Open the ledger (replaying what can be) and close it: the rows it recovered."""
    ledger = Ledger(db)
    ledger.close()
    return ledger.recovered


def key_id(db: Path) -> str:
    ledger = Ledger(db)
    ledger.create_key("team", budget_usd=10.0)
    (kid,) = ledger.db.execute("SELECT id FROM keys").fetchone()
    ledger.close()
    return str(kid)


def dead_journal(db: Path, lines: list[bytes]) -> Path:
    """A journal left by a writer that is gone (written by a process that has exited)."""
    folder = journal_dir(str(db))
    code = (
        "import os, sys\nfrom pathlib import Path\nfrom wattserve.serve.journal import Journal\n"
        "j = Journal(Path(sys.argv[1]))\n"
        "for h in sys.argv[2:]:\n    os.write(j.fd, bytes.fromhex(h))\n"
        "print(j.path)\n"  # and exit without closing it: its lock goes with the process
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder), *(x.hex() for x in lines)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def test_the_next_open_replays_a_dead_writers_journal_once(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    kid = key_id(db)
    committed = row(1, kid, 0.5)
    ledger = Ledger(db)
    ledger.db.execute(  # committed with its charge before the writer was killed
        "INSERT INTO requests (id, ts, model, status, key_id, billed_usd) VALUES (?,?,?,?,?,?)",
        (committed["id"], committed["ts"], "m", "ok", kid, 0.5),
    )
    ledger.db.execute("UPDATE keys SET spent_usd = 0.5")
    ledger.close()
    lines = [orjson.dumps(r) + b"\n" for r in (committed, row(2, kid, 0.25), row(3))]
    path = dead_journal(db, [*lines, b'{"id": "chatcmpl-4", "ts": 1.0, "mo'])  # torn last line
    reopened = Ledger(db)
    assert reopened.recovered == 2  # rows 2 and 3; row 1 was there; row 4 never completed
    reopened.close()
    assert ids(db) == {"chatcmpl-1", "chatcmpl-2", "chatcmpl-3"}
    assert spent(db, kid) == pytest.approx(0.75)  # row 1's charge not counted twice
    assert not path.exists()
    assert recovered(db) == 0  # nothing left to replay


def test_hostile_journal_lines_are_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    kid = key_id(db)
    bad: list[dict[str, Any]] = [
        {**row(10), "ts": "yesterday"},
        {**row(11), "model": None},
        {**row(12, kid), "billed_usd": -100.0},  # a negative charge would refund the key
        {**row(13, kid), "billed_usd": True},
        {**row(14), "key_id": 7},
        {"id": ["x"]},
        {**row(15), "evil); DROP TABLE keys; --": 1},  # an unknown column: not written
    ]
    lines = [orjson.dumps(r) + b"\n" for r in bad] + [b"[1, 2]\n", b"\xff\xfe\n", b"null\n"]
    dead_journal(db, [*lines, orjson.dumps(row(16, kid, 0.125)) + b"\n"])
    ledger = Ledger(db)
    assert ledger.recovered == 2
    ledger.close()
    assert ids(db) == {"chatcmpl-15", "chatcmpl-16"}
    assert spent(db, kid) == pytest.approx(0.125)


def test_a_live_writers_journal_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    Ledger(db).close()
    live = Journal(journal_dir(str(db)))  # held (flock) by this process, as by a live gateway
    live.append(row(20))
    assert recovered(db) == 0 and live.path.exists()
    live.close(delete=False)  # its writer stops without committing: now it is a dead one
    assert recovered(db) == 1 and not live.path.exists()
    assert ids(db) == {"chatcmpl-20"}


def test_journaled_rows_are_durable_at_once_and_committed_in_the_background(
    tmp_path: Path,
) -> None:
    db = tmp_path / "l.db"
    ledger = Ledger(db)
    ledger.rotate_bytes = 2_000  # a few rows per journal file
    ledger.start()

    async def submit_all() -> None:
        for i in range(40):
            done = ledger.submit(row(100 + i))
            assert done.done()  # in the journal: the answer need not wait for SQLite

    asyncio.run(submit_all())
    folder = journal_dir(str(db))
    ledger.close()
    assert ids(db) == {f"chatcmpl-{100 + i}" for i in range(40)}
    assert not list(folder.glob("*.jsonl"))  # rotated ones deleted once committed, the last too


def test_a_failed_commit_keeps_its_rows_for_the_next_open(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    ledger = Ledger(db)
    ledger.start()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("ALTER TABLE requests RENAME TO requests_away")  # every commit now fails

    async def submit() -> None:
        assert ledger.submit(row(30)).done()

    asyncio.run(submit())
    ledger.close()
    assert len(list(journal_dir(str(db)).glob("*.jsonl"))) == 1  # kept: not committed
    other.execute("ALTER TABLE requests_away RENAME TO requests")
    assert recovered(db) == 1
    assert ids(db) == {"chatcmpl-30"}


def test_rows_of_the_wrong_type_are_skipped_one_by_one(tmp_path: Path) -> None:
    # one such row used to make the whole journal fail (kept forever, its good rows with it)
    # or the ledger unopenable (an integer past 64 bits)
    db = tmp_path / "l.db"
    kid = key_id(db)
    bad = [
        {**row(20), "prompt_tokens": 2**64 - 1},
        {**row(21), "prompt_tokens": [1, 2]},
        {**row(22), "energy_j": "lots"},
        {**row(23), "backend": {"a": 1}},
        {**row(24), "ttft_s": -1.0},
        {**row(25), "completion_tokens": True},
    ]
    lines = [orjson.dumps(r) + b"\n" for r in bad]
    dead_journal(db, [*lines, orjson.dumps(row(26, kid, 0.5)) + b"\n"])
    assert recovered(db) == 1
    assert ids(db) == {"chatcmpl-26"} and spent(db, kid) == pytest.approx(0.5)


def test_what_is_not_a_journal_in_its_folder_is_skipped_at_once(tmp_path: Path) -> None:
    import os

    db = tmp_path / "l.db"
    Ledger(db).close()
    folder = journal_dir(str(db))
    folder.mkdir(exist_ok=True)
    os.mkfifo(folder / "1-fifo.jsonl")  # an open would wait for a writer forever
    (folder / "2-dir.jsonl").mkdir()
    (folder / "3-zero.jsonl").symlink_to("/dev/zero")  # an endless read
    dead_journal(db, [orjson.dumps(row(30)) + b"\n"])
    start = time.monotonic()
    assert recovered(db) == 1 and time.monotonic() - start < 10
    assert ids(db) == {"chatcmpl-30"}


def test_read_only_commands_open_only_a_ledger_and_change_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wattserve.cli.app import app
    from wattserve.errors import ConfigError

    other = tmp_path / "app.sqlite"  # another program's database
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE things (x)")
    con.commit()
    con.close()
    before = other.read_bytes()
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (other, empty, tmp_path / "typo.db"):
        with pytest.raises(ConfigError, match="ledger"):
            Ledger(path, create=False)
    assert other.read_bytes() == before and empty.stat().st_size == 0
    assert not (tmp_path / "typo.db").exists()
    old = tmp_path / "old.db"  # a requests table of another shape
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, ts REAL)")
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match=r"no .*prompt_tokens"):
        Ledger(old)
    runner = CliRunner()
    for args in (["usage"], ["keys", "list"], ["keys", "revoke", "k1"]):
        out = runner.invoke(app, [*args, "--db", str(other)])
        assert out.exit_code != 0 and "ledger" in out.output and "Traceback" not in out.output
    assert other.read_bytes() == before


def test_a_ledger_that_cannot_be_written_is_an_error_naming_it(tmp_path: Path) -> None:
    from wattserve.errors import ConfigError

    ledger = Ledger(tmp_path / "l.db")
    ledger.db.execute("PRAGMA query_only = ON")  # as a read-only file answers writes
    with pytest.raises(ConfigError, match="cannot write the ledger"):
        ledger.create_key("x")
    ledger.close()


def test_usage_totals_past_integer_range_are_summed(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    ledger = Ledger(db)
    for i in range(3):
        ledger.db.execute(
            "INSERT INTO requests (id, ts, model, status, prompt_tokens, energy_j) "
            "VALUES (?, 1, 'm', 'ok', ?, 1e308)",
            (f"r{i}", 2**62),
        )
    (total,) = ledger.usage("model")
    ledger.close()
    assert total["prompt_tokens"] == 3 * 2**62  # SUM of integers overflowed
    assert total["energy_j"] is None  # past float range: null, not inf (JSON has none)
