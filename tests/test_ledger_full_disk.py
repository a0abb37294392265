"""A full disk loses no record: a row that neither its journal nor SQLite could take is held
and written again once they can (until 2026-12-06 it was dropped after the one failed
commit), and the gateway takes no new request while such a row waits. A real gateway on a
real full filesystem (a 2 MiB tmpfs, where the machine lets a test mount one), and the ledger's
writer with a journal that fails and a table that is away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving import gateway
from test_journal import ids, row

from wattserve.serve.ledger import Ledger

FLEET = (
    "sites:\n  dc: {kind: datacenter}\ndeployments:\n"
    "  d: {site: dc, model: llama-3.2-1b, hardware: h100-sxm}\n"
)
BODY = {"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def test_a_row_no_journal_or_commit_took_is_held_and_written_later(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    ledger = Ledger(db)
    ledger.start()
    assert ledger._journal is not None
    os.close(ledger._journal.fd)  # every append now fails, as on a full disk
    ledger._journal.fd = os.open(os.devnull, os.O_RDONLY)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("ALTER TABLE requests RENAME TO requests_away")  # every commit fails

    async def submit() -> BaseException | None:
        done = ledger.submit(row(40))
        try:
            await asyncio.wait_for(done, 10)
        except sqlite3.Error as exc:  # the answer goes on; the record is held
            return exc
        return None

    assert asyncio.run(submit()) is not None
    assert ledger.unrecorded == 1
    other.execute("ALTER TABLE requests_away RENAME TO requests")
    deadline = time.monotonic() + 10
    while ledger.unrecorded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.unrecorded == 0
    ledger.close()
    other.close()
    assert ids(db) == {"chatcmpl-40"}


def test_a_held_row_replayed_meanwhile_by_another_open_is_charged_once(tmp_path: Path) -> None:
    """A failed commit keeps its journal (closed at rotation, so unlocked): another open of
    the ledger (another replica, `wattserve usage`) replays it; the writer's retry then found
    the row in, and wrote it and its charge again: $2 spent for a $1 request (a review of this
    session's change)."""
    db = tmp_path / "l.db"
    ledger = Ledger(db)
    kid = ledger.lookup(ledger.create_key("k", budget_usd=10.0)).id  # type: ignore[union-attr]
    ledger.rotate_bytes = 1  # every row ends its journal
    ledger.start()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("ALTER TABLE requests RENAME TO requests_away")  # commits fail

    async def submit() -> None:
        await ledger.submit(row(1, kid, 1.0))  # journaled: complete at once

    asyncio.run(submit())
    time.sleep(0.3)  # the writer's commit failed: the row is held
    other.execute("ALTER TABLE requests_away RENAME TO requests")
    second = Ledger(db)  # replays the rotated journal
    assert second.recovered == 1
    second.close()
    time.sleep(1.5)  # the writer's retry
    ledger.close()
    assert other.execute("SELECT spent_usd FROM keys WHERE id = ?", (kid,)).fetchone() == (1.0,)
    other.close()


def test_a_row_sqlite_refuses_is_dropped_alone_not_retried_for_ever(tmp_path: Path) -> None:
    """Two held rows written again together, one of which SQLite refuses (a status of null):
    the other is written, the refused one logged and dropped, and nothing stays held."""
    db = tmp_path / "l.db"
    ledger = Ledger(db)
    ledger.start()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("ALTER TABLE requests RENAME TO requests_away")

    async def submit() -> None:
        ledger.submit(row(50))
        ledger.submit({**row(51), "status": None})

    asyncio.run(submit())
    time.sleep(0.3)
    other.execute("ALTER TABLE requests_away RENAME TO requests")
    time.sleep(1.5)
    ledger.close()
    other.close()
    assert ids(db) == {"chatcmpl-50"}


@contextlib.contextmanager
def small_disk(folder: Path) -> Iterator[Path]:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)]
    if subprocess.run(mount, check=False, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(path: Path) -> None:
    """Take every byte the filesystem has left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def test_a_gateway_on_a_full_disk_stops_taking_work_and_loses_no_record(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "gw.db"
        with gateway(tmp_path, FLEET, "--db", str(db)) as gw:
            url = f"{gw.url}/v1/chat/completions"
            codes = [httpx.post(url, json=BODY, timeout=30).status_code]
            fill(disk / "filler")
            # answered while a journal page or the WAL had room, until a record had none
            for _ in range(200):
                r = httpx.post(url, json=BODY, timeout=30)
                codes.append(r.status_code)
                if r.status_code != 200:
                    break
            assert r.status_code == 503, codes
            assert "cannot record" in r.json()["error"]["message"]
            assert r.headers["Retry-After"] == "5"
            health = httpx.get(f"{gw.url}/health", timeout=10)
            assert health.status_code == 503 and "cannot record" in health.json()["ledger"]
            os.unlink(disk / "filler")
            deadline = time.monotonic() + 10
            while httpx.get(f"{gw.url}/health", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "the held rows were not written"
                time.sleep(0.1)
            codes.append(httpx.post(url, json=BODY, timeout=30).status_code)
        assert codes[-1] == 200
        with contextlib.closing(sqlite3.connect(db)) as conn:
            (ok,) = conn.execute("SELECT count(*) FROM requests WHERE status = 'ok'").fetchone()
        assert ok == codes.count(200), codes  # every answer has its record
