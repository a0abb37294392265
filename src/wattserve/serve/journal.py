"""The ledger's journal: where a finished request's row becomes durable before its answer ends.

A gateway process appends each row, as one JSON line, to its own journal file
(`<ledger>.journal/<pid>-<random>.jsonl`, mode 0600) with one `write()` on the event loop: a
few microseconds, no lock shared with another process, no fsync, nothing that waits on SQLite.
Once `write()` returns, the row is in the operating system's page cache and survives a SIGKILL
of the gateway (not a crash of the machine: the same as SQLite's `synchronous=NORMAL`). The
ledger's writer thread then commits the rows to SQLite in batches, off the event loop, and the
answer does not wait for that.

Each live journal is held with an exclusive `flock`. Whoever opens the ledger next (a new
gateway, `wattserve usage`, `wattserve keys`) replays every journal whose lock it can take (its
writer is gone) into SQLite, a row and its charge together, skipping rows already there (so a
row committed before the kill is never charged twice), then deletes it. A torn last line (the
kill landed mid-`write()`: its answer had not ended) is skipped. A journal is rotated every
ROTATE_BYTES and deleted once every row in it is committed; on a clean stop the last one goes
too, so the folder is empty while no gateway runs and nothing crashed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from wattserve.errors import ConfigError

log = logging.getLogger("wattserve.serve")

ROTATE_BYTES = 8 << 20  # a new journal file after this many bytes


def journal_dir(ledger_path: str) -> Path:
    return Path(ledger_path + ".journal")


class Journal:
    """This process's open journal file (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp = folder / f".{name}.tmp"  # not a journal until locked: recovery skips it
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.path = folder / f"{name}.jsonl"
            os.rename(tmp, self.path)
        except OSError:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.size = 0

    def append(self, row: dict[str, Any]) -> None:
        """Write one row (raises OSError: disk full, I/O error)."""
        data = orjson.dumps(row) + b"\n"
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)

    def close(self, delete: bool) -> None:
        """Close it (releasing its lock); delete it when every row in it is committed."""
        if delete:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self.fd)


# Writes rows whose ids are not yet in the ledger, with their charges, in one transaction;
# returns how many were new.
Replay = Callable[[list[dict[str, Any]]], int]
# Journals rotate at 8 MiB (ledger.ROTATE_BYTES); anything much larger was not written here.
MAX_JOURNAL_BYTES = 64 * 1024 * 1024


def recover(folder: Path, replay: Replay, strict: bool = True) -> int:
    """Replay every journal in `folder` whose writer is gone (its lock can be taken) and
    delete it; returns the rows that were not yet in the ledger. A journal that cannot be
    replayed is kept for the next open, and `strict` (a gateway's open) stops this one."""
    try:
        paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    except OSError as exc:  # not ours to read: say so, the ledger itself still opens
        log.warning("wattserve: cannot read the ledger journals in %s: %s", folder, exc)
        return 0
    total = 0
    for path in paths:
        try:  # never a FIFO's wait nor a link's target: journals are files this code wrote
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except FileNotFoundError:  # another process replayed and deleted it meanwhile
            continue
        except OSError as exc:
            log.warning("wattserve: %s is not a ledger journal (%s): skipped", path, exc)
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_JOURNAL_BYTES:
                log.warning(
                    "wattserve: %s is not a ledger journal (%s): skipped",
                    path,
                    "not a regular file"
                    if not stat.S_ISREG(st.st_mode)
                    else f"{st.st_size} bytes, past {MAX_JOURNAL_BYTES}",
                )
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live gateway's journal
            if not path.exists():
                continue  # replayed and deleted by another process before the lock was ours
            with open(fd, "rb", closefd=False) as f:
                rows = _rows(f.read(MAX_JOURNAL_BYTES), path)
            try:
                total += replay(rows)
            except sqlite3.Error as exc:  # kept for the next open
                if not strict:  # a reader: what it shows lacks these rows, and says so
                    log.error("wattserve: cannot replay %s into the ledger: %s", path, exc)
                    continue
                # the keys' spend would start without these rows, and a gateway would let
                # them spend it again (until 2026-12-06 the error was only logged: a gateway
                # started while another process held the ledger's lock served a key past its
                # budget by the journal's 20 requests)
                raise ConfigError(
                    f"cannot replay the journal {path.name} into the ledger ({exc}): its "
                    f"{len(rows)} request record(s) would be missing from the keys' spend; "
                    "try again when no other process holds the ledger",
                    path=str(path),
                ) from None
            try:
                path.unlink()
            except OSError as exc:  # replayed again by the next open: rows are skipped then
                log.warning("wattserve: cannot delete %s after its replay: %s", path, exc)
        finally:
            os.close(fd)
    if total:
        log.warning("wattserve: %d request record(s) recovered from %s", total, folder)
    return total


def _rows(raw: bytes, path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line:
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("wattserve: %s line %d is cut short: skipped", path, n)
            continue
        if isinstance(row, dict) and isinstance(row.get("id"), str):
            rows.append(row)
    return rows
