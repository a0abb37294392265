"""The ledger: every request in SQLite (WAL), and the API keys with their budgets.

Writes leave the event loop. In a gateway (`start`), `submit` appends a request's row to this
process's journal (wattserve.serve.journal: one `write()`, after which the row survives a
SIGKILL of the gateway) and queues it for a writer thread that commits whatever is queued in
one transaction; its future is complete at once. The gateway awaits it before a response's
last byte (see wattserve.serve.app), so a completed request's record survives a SIGKILL: in
SQLite, or in the journal, which the next open of the ledger replays (any wattserve command
that opens it). Where no journal can be written, the future completes once the row's commit
is done instead (the thread wakes the event loop once per commit, not once per row). With
`synchronous=NORMAL` in WAL mode a commit reaches the operating system, not the disk, as a
journal's `write()` does: a crash of the machine itself may lose the last records.

Content (prompts, outputs) is never stored. Keys are stored as SHA-256 hashes. The file is
created readable by its owner only (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattserve.errors import ConfigError
from wattserve.serve.journal import ROTATE_BYTES, Journal, journal_dir, recover
from wattserve.serve.ledger_rows import key_row_problem, usage_row, valid_row

log = logging.getLogger("wattserve.serve")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    key_id TEXT,
    model TEXT NOT NULL,
    backend TEXT,
    site TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    ttft_s REAL,
    duration_s REAL,
    energy_j REAL,
    usd REAL,
    status TEXT NOT NULL,
    error TEXT,
    billed_usd REAL,
    billed_j REAL,
    prompt_tokens_estimated INTEGER,
    completion_tokens_estimated INTEGER
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0,
    budget_usd REAL,
    budget_j REAL,
    rps REAL,
    spent_usd REAL NOT NULL DEFAULT 0,
    spent_j REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    metrics INTEGER NOT NULL DEFAULT 0
);
"""

# columns added since the first ledgers were written: (table, column, declaration)
ADDED_COLUMNS = (
    ("requests", "billed_usd", "REAL"),
    ("requests", "billed_j", "REAL"),
    ("keys", "metrics", "INTEGER NOT NULL DEFAULT 0"),
    ("requests", "prompt_tokens_estimated", "INTEGER"),
    ("requests", "completion_tokens_estimated", "INTEGER"),
)

INSERT = (
    "INSERT OR REPLACE INTO requests (id, ts, key_id, model, backend, site, prompt_tokens, "
    "completion_tokens, ttft_s, duration_s, energy_j, usd, status, error, billed_usd, billed_j, "
    "prompt_tokens_estimated, completion_tokens_estimated) "
    "VALUES (:id, :ts, :key_id, :model, :backend, :site, :prompt_tokens, :completion_tokens, "
    ":ttft_s, :duration_s, :energy_j, :usd, :status, :error, :billed_usd, :billed_j, "
    ":prompt_tokens_estimated, :completion_tokens_estimated)"
)
# the columns a row may leave out (written before they were added): null
OPTIONAL = dict.fromkeys(
    ("billed_usd", "billed_j", "prompt_tokens_estimated", "completion_tokens_estimated")
)
CHARGE = "UPDATE keys SET spent_usd = spent_usd + ?, spent_j = spent_j + ? WHERE id = ?"
KEY_CACHE_S = 1.0  # a key created or revoked by `wattserve keys` is seen within this long
BATCH = 512  # rows per commit at most
# the gateway's answer while `Ledger.unrecorded` rows wait (503, and /health)
CANNOT_RECORD = (
    "the gateway cannot record requests: its ledger and journal cannot be written (a full "
    "disk?); it serves again once they can"
)


COLUMNS = (
    "id", "ts", "key_id", "model", "backend", "site", "prompt_tokens", "completion_tokens",
    "ttft_s", "duration_s", "energy_j", "usd", "status", "error", "billed_usd", "billed_j",
    "prompt_tokens_estimated", "completion_tokens_estimated",
)  # fmt: skip


@dataclass
class _Rotated:
    """Queued after the last row of a journal: once those rows are committed, it may go."""

    journal: Journal


# a queued row: the row, the future its request awaits (None: journaled, nobody waits), and
# that future's event loop; or the end of a rotated journal
_Queued = (
    tuple[dict[str, Any], "asyncio.Future[None] | None", asyncio.AbstractEventLoop | None]
    | _Rotated
)


RETRY_S = 1.0  # how often the writer tries rows whose commit failed, while none come
MAX_HELD_JOURNALED = 100_000  # journaled rows held past this wait for the next open's replay


# What SQLite answers a row it will not take (a constraint, a value of no type it stores, a
# missing binding), as against the file failing (full, locked, read-only, damaged: an
# OperationalError or a DatabaseError), whose rows are held and written again.
REFUSED_ROW = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
)


def _in_ledger(db: sqlite3.Connection, row_id: str) -> bool:
    """Whether a request's row is in the ledger already (replayed from its journal, or
    committed before its journal's writer stopped)."""
    return db.execute("SELECT 1 FROM requests WHERE id = ?", (row_id,)).fetchone() is not None


def _charge(row: dict[str, Any]) -> tuple[float, float, str] | None:
    """What a row adds to its key's spend (CHARGE's arguments), None where nothing."""
    usd, joules = row.get("billed_usd") or 0.0, row.get("billed_j") or 0.0
    if row.get("key_id") and (usd or joules):
        return (usd, joules, row["key_id"])
    return None


def _keep(rows: list[tuple[dict[str, Any], bool]]) -> list[tuple[dict[str, Any], bool]]:
    """The rows a failed commit holds: every row in no journal (the gateway refuses new
    requests while there are any), and the newest journaled ones up to MAX_HELD_JOURNALED
    (the rest are in their journal, which the next open of the ledger replays)."""
    journaled = sum(j for _, j in rows)
    if journaled <= MAX_HELD_JOURNALED:
        return rows
    drop = journaled - MAX_HELD_JOURNALED
    kept = []
    for row, j in rows:
        if j and drop:
            drop -= 1
            continue
        kept.append((row, j))
    return kept


def _settle(waiting: list[asyncio.Future[None]], failure: sqlite3.Error | None) -> None:
    """Complete the futures of one commit (on their event loop)."""
    for done in waiting:
        if done.done():  # its waiter was cancelled
            continue
        if failure is None:
            done.set_result(None)
        else:
            done.set_exception(failure)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class KeyRecord:
    id: str
    name: str
    admin: bool
    budget_usd: float | None
    budget_j: float | None
    rps: float | None
    spent_usd: float
    spent_j: float
    revoked: bool = False
    metrics: bool = False  # may read /metrics and /v1/fleet when keys are required
    # what is wrong with the key's row, if anything (a figure edited by hand into text, a
    # negative budget): the gateway refuses such a key rather than guess (see key_row_problem)
    damaged: str | None = None


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _tables(path: str) -> set[str]:
    """The tables of the SQLite file at `path`, read without writing anything."""
    try:
        # as_uri() escapes a '?' or '#' in the path, which would end a bare file: URI's path
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(_open_failure(path, exc), path=path) from None


def _open_failure(path: str, exc: sqlite3.DatabaseError) -> str:
    """Why SQLite could not open the ledger at `path`: a folder it cannot write (a read-only
    mount, where it cannot make its -wal and -shm files beside the ledger) said as much, not
    taken for another program's file."""
    folder = os.path.dirname(os.path.realpath(path)) or "."
    if isinstance(exc, sqlite3.OperationalError) and not (
        os.access(folder, os.W_OK) and os.access(path, os.W_OK)
    ):
        return (
            f"cannot open the ledger: {exc} (it or its folder is read-only, and SQLite writes "
            "its -wal and -shm files beside it: copy the ledger to a writable place)"
        )
    return f"not a wattserve ledger (SQLite): {exc}"


def _check_existing(path: str) -> None:
    """Refuse, without writing anything, a path that is not an existing wattserve ledger."""
    if not os.path.isfile(path):
        raise ConfigError("no ledger here (a path that `wattserve serve` has written)", path=path)
    if not {"requests", "keys"} <= _tables(path):
        raise ConfigError("not a wattserve ledger: it has no requests and keys tables", path=path)


class Ledger:
    """One SQLite file: requests and keys."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """Open the ledger at `path`. With `create` (serve, keys create) a missing file
        becomes a new ledger; without (usage, keys list, keys revoke) only a file that is
        already a wattserve ledger is opened: another program's database, an empty file or a
        mistyped path is an error, left as it was."""
        self.path = str(path)
        if not create:
            _check_existing(self.path)
        elif os.path.isfile(self.path) and os.path.getsize(self.path) > 0:
            # another program's database is left as it was: keys create had added its tables
            # to it and switched it to WAL (a ledger always has a requests table)
            tables = _tables(self.path)
            if tables and "requests" not in tables:
                shown = ", ".join(sorted(tables)[:5])
                raise ConfigError(
                    f"not a wattserve ledger: it holds other tables ({shown})", path=self.path
                )
        # created 0600 before SQLite opens it (its -wal and -shm files take the same mode);
        # through a symbolic link, its target (O_EXCL refuses any link, a dangling one too,
        # and SQLite then created the target with the umask's 0644)
        with contextlib.suppress(FileExistsError):
            real = os.path.realpath(self.path)
            os.close(os.open(real, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        try:
            self.db = _connect(self.path)
            self.db.executescript(SCHEMA)
            for table, column, decl in ADDED_COLUMNS:
                have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            have = {row[1] for row in self.db.execute("PRAGMA table_info(requests)")}
        except sqlite3.DatabaseError as exc:  # --db names some other file: say so, no traceback
            raise ConfigError(_open_failure(self.path, exc), path=self.path) from None
        if lacking := [c for c in COLUMNS if c not in have]:  # a table of the same name
            self.db.close()
            raise ConfigError(
                f"not a wattserve ledger: its requests table has no {', '.join(lacking)}",
                path=self.path,
            )
        self._keys: dict[str, tuple[float, KeyRecord | None]] = {}
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._journal: Journal | None = None
        self._failed = False  # a commit failed since the current journal was opened
        # rows in no journal whose commit failed, held by the writer (see _write_loop)
        self.unrecorded = 0
        self.rotate_bytes = ROTATE_BYTES  # a new journal file after this many bytes
        # a ledger opened to serve from (or write to) stops on a journal it cannot replay; a
        # reader's (usage, keys list) says so and shows the ledger without those rows
        self.recovered = recover(journal_dir(self.path), self._replay, strict=create)

    def start(self) -> None:
        """Open this process's journal and start the writer thread (`submit` writes inline
        until then)."""
        if self._writer is None:
            try:
                self._journal = Journal(journal_dir(self.path))
            except OSError as exc:
                self._check_writable(exc)
                log.warning(
                    "wattserve: no ledger journal (%s): each answer waits for its commit", exc
                )
            self._writer = threading.Thread(
                target=self._write_loop, args=(_connect(self.path),), name="ledger", daemon=True
            )
            self._writer.start()

    def _check_writable(self, why: OSError) -> None:
        """Without a journal every record is a commit: a ledger that cannot take one (a
        read-only mount) would answer every request and record none (until 2026-12-06 a
        gateway started so served 15 keyed requests and recorded 0)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise ConfigError(
                f"the ledger cannot be written ({exc}) and its journal folder cannot be "
                f"created ({why}): no request could be recorded",
                path=self.path,
            ) from None

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the file (and delete the journal
        when every row in it is committed)."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        if self._journal is not None:
            self._journal.close(delete=not self._failed)
            self._journal = None
        self.db.close()

    def _replay(self, rows: list[dict[str, Any]]) -> int:
        """Write the journaled rows not yet in the ledger, with their charges, in one
        transaction (wattserve.serve.journal.recover); returns how many were new."""
        new = 0
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                if not valid_row(row):
                    log.warning("wattserve: journal row %r is not a request record: skipped", row)
                    continue
                if _in_ledger(db, row["id"]):
                    continue  # committed before the journal's writer stopped
                clean = {c: row.get(c) for c in COLUMNS}
                db.execute(INSERT, clean)
                if (charge := _charge(clean)) is not None:
                    db.execute(CHARGE, charge)
                new += 1
            db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return new

    # -- requests --------------------------------------------------------------------------

    def submit(self, row: dict[str, Any]) -> asyncio.Future[None]:
        """Queue one finished request's row (called on the event loop); the future completes
        once the row survives a SIGKILL: at once when journaled, else once it is committed.
        `billed_usd` and `billed_j`, when present, are added to the key's spend in the same
        transaction."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._writer is None:
            _settle([done], self._commit(self.db, [row]))
            return done
        journal = self._journal
        if journal is not None:
            try:
                journal.append(row)
            except OSError as exc:  # disk full or the like: this answer waits for its commit
                log.error("wattserve: %s: cannot write the ledger journal: %s", row["id"], exc)
            else:
                done.set_result(None)
                self._queue.put((row, None, None))
                if journal.size >= self.rotate_bytes:
                    self._rotate()
                return done
        self._queue.put((row, done, loop))
        return done

    def _rotate(self) -> None:
        """Start a new journal; the writer deletes the old one once its rows are committed."""
        try:
            fresh = Journal(journal_dir(self.path))
        except OSError:
            return  # keep appending to this one
        assert self._journal is not None
        self._queue.put(_Rotated(self._journal))
        self._journal = fresh

    def _write_loop(self, db: sqlite3.Connection) -> None:
        """Commit what is queued, a batch at a time. Rows whose commit fails (a full disk, a
        ledger locked past SQLite's timeout) are held and written again with the next batch,
        or after RETRY_S when none comes: until 2026-12-06 they were dropped, and a request
        whose journal line could not be written either (the same full disk) had no record at
        all. Rows that are in no journal are counted in `unrecorded` meanwhile, and the
        gateway takes no new request while there are any."""
        held: list[tuple[dict[str, Any], bool]] = []  # (row, journaled) not yet committed
        stop = False
        while not stop:
            more = True  # rows came (else the wait ended: the held rows are written again)
            try:
                item = self._queue.get(timeout=RETRY_S) if held else self._queue.get()
            except queue.Empty:
                item, more = None, False
            batch: list[tuple[dict[str, Any], Any, Any]] = []
            rotated: _Rotated | None = None
            while more:
                if item is None:
                    stop = True
                    break
                if isinstance(item, _Rotated):
                    rotated = item
                    break
                batch.append(item)
                if len(batch) >= BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            rows = held + [(row, done is None) for row, done, _ in batch]
            # a waiter that gave up (its client left) cannot cancel the write: it is made anyway
            failure = self._commit(db, [row for row, _ in rows], len(held)) if rows else None
            if isinstance(failure, REFUSED_ROW):
                # not the file but a row SQLite refuses: one at a time, so that one such row
                # neither holds up the rest nor is retried for ever
                rows = [
                    (row, journaled)
                    for i, (row, journaled) in enumerate(rows)
                    if self._commit_alone(db, row, i < len(held))
                ]
                if not rows:  # each written, or dropped and logged
                    failure = None
            if failure is not None:
                self._failed = True  # the journal keeps its rows for the next open
                if batch or stop:
                    log.error(
                        "wattserve: ledger commit of %d row(s) failed (%s): held, written "
                        "again every %g s",
                        len(rows),
                        failure,
                        RETRY_S,
                    )
                held = _keep(rows)
            elif held:
                log.warning("wattserve: %d held ledger row(s) committed", len(held))
                held = []
            self.unrecorded = sum(not journaled for _, journaled in held)
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for _, done, loop in batch:
                if done is not None:
                    by_loop.setdefault(loop, []).append(done)
            for loop, waiting in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                    loop.call_soon_threadsafe(_settle, waiting, failure)
            if rotated is not None:
                rotated.journal.close(delete=not self._failed)
                self._failed = False
        for row, journaled in held:  # the last trace of a record in no journal: the log
            if not journaled:
                log.error("wattserve: a request's record could not be written: %s", row)
        db.close()

    def _commit_alone(self, db: sqlite3.Connection, row: dict[str, Any], retried: bool) -> bool:
        """Write one row of a batch SQLite refused; True when it is to be held (the file
        failed), False when it is written or dropped (a row SQLite refuses, logged whole)."""
        failure = self._commit(db, [row], int(retried))
        if failure is None:
            return False
        if not isinstance(failure, REFUSED_ROW):
            return True
        log.error("wattserve: a request's record was refused by SQLite (%s): %s", failure, row)
        return False

    @staticmethod
    def _commit(
        db: sqlite3.Connection, rows: list[dict[str, Any]], retried: int = 0
    ) -> sqlite3.Error | None:
        """Write `rows` and their charges in one transaction; the error when it failed. The
        first `retried` rows are ones a failed commit held: any that another open of the
        ledger replayed from their journal meanwhile is in already, with its charge, and is
        left as it is (written again, its key was charged twice)."""
        try:
            if len(rows) == 1 and not retried and not _charge(rows[0]):
                db.execute(INSERT, {**OPTIONAL, **rows[0]})  # one statement commits on its own
                return None
            db.execute("BEGIN")
            written = [
                row for i, row in enumerate(rows) if i >= retried or not _in_ledger(db, row["id"])
            ]
            for row in written:
                db.execute(INSERT, {**OPTIONAL, **row})
            if charges := [c for row in written if (c := _charge(row)) is not None]:
                db.executemany(CHARGE, charges)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            return exc
        return None

    def usage(self, by: str) -> list[dict[str, Any]]:
        """Totals grouped by key, model, site, backend or day. `energy_j` and `usd` sum the
        known figures of serving (None where none is known); `*_unknown_requests` count the
        served requests without one; `*_tokens_estimated_requests` the requests whose count is
        the gateway's guess, not a tokenizer's; `billed_usd` and `billed_j` what keys were
        charged (a key's spend: holds cap a charge, so it may be less than the cost)."""
        column = {
            "key": "COALESCE(k.name, r.key_id, '-')",
            "model": "r.model",
            "site": "COALESCE(r.site, '-')",
            "backend": "COALESCE(r.backend, '-')",
            "day": "date(r.ts, 'unixepoch')",
        }[by]
        # a served request without a figure (a backend that reports none) is counted apart:
        # the sums add what is known, and a group with nothing known stays unknown (null)
        served = "(r.status = 'ok' OR COALESCE(r.completion_tokens, 0) > 0)"
        # TOTAL: a float sum, which cannot overflow as SUM of integers does
        rows = self._read(
            f"SELECT {column} AS grp, COUNT(*), SUM(r.status = 'ok'), "
            "TOTAL(r.prompt_tokens), TOTAL(r.completion_tokens), "
            "SUM(r.energy_j), SUM(r.usd), AVG(r.ttft_s), "
            f"SUM(r.energy_j IS NULL AND {served}), SUM(r.usd IS NULL AND {served}), "
            "TOTAL(r.prompt_tokens_estimated), TOTAL(r.completion_tokens_estimated), "
            "SUM(r.billed_usd), SUM(r.billed_j) "
            "FROM requests r LEFT JOIN keys k ON k.id = r.key_id GROUP BY grp ORDER BY grp",
            (),
        )
        keys = (
            "group",
            "requests",
            "ok",
            "prompt_tokens",
            "completion_tokens",
            "energy_j",
            "usd",
            "mean_ttft_s",
            "energy_unknown_requests",
            "usd_unknown_requests",
            "prompt_tokens_estimated_requests",
            "completion_tokens_estimated_requests",
            "billed_usd",
            "billed_j",
        )
        return [usage_row(dict(zip(keys, row, strict=True))) for row in rows]

    # -- keys ------------------------------------------------------------------------------

    def create_key(
        self,
        name: str,
        *,
        admin: bool = False,
        budget_usd: float | None = None,
        budget_j: float | None = None,
        rps: float | None = None,
        metrics: bool = False,
        unique_name: bool = False,
    ) -> str:
        """Store a new key's hash; return the key itself (shown once). With `unique_name`, a
        live key of the same name is a ConfigError, checked in the same transaction as the
        insert (checked before it, two `keys create` at once both passed the check)."""
        key = "ws-" + secrets.token_urlsafe(24)
        kid = secrets.token_hex(6)
        self._write("BEGIN IMMEDIATE", ())
        try:
            if unique_name:
                same = self._read(
                    "SELECT id FROM keys WHERE name = ? AND NOT revoked LIMIT 1", (name,)
                )
                if same:
                    raise ConfigError(
                        f"a key named {name!r:.100} exists (id {same[0][0]}); revoke it "
                        "(`wattserve keys revoke ID`) or give another name",
                        field="name",
                    )
            self._write(
                "INSERT INTO keys (id, name, hash, admin, budget_usd, budget_j, rps, created, "
                "metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kid,
                    name,
                    hash_key(key),
                    int(admin),
                    budget_usd,
                    budget_j,
                    rps,
                    time.time(),
                    int(metrics),
                ),
            )
            self._write("COMMIT", ())
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise
        return key

    def lookup(self, key: str) -> KeyRecord | None:
        """The key's record (revoked ones too, flagged), or None for a key never issued.
        Answers are kept for KEY_CACHE_S so that a request costs no query."""
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._keys.get(digest)
        if hit is not None and now - hit[0] < KEY_CACHE_S:
            return hit[1]
        row = self.db.execute(
            "SELECT id, name, admin, budget_usd, budget_j, rps, spent_usd, spent_j, revoked, "
            "metrics FROM keys WHERE hash = ?",
            (digest,),
        ).fetchone()
        record = (
            None
            if row is None
            else KeyRecord(
                row[0],
                row[1],
                bool(row[2]),
                row[3],
                row[4],
                row[5],
                row[6],
                row[7],
                bool(row[8]),
                bool(row[9]),
                key_row_problem(row),
            )
        )
        if record is not None and record.damaged is not None:  # once a second at most: cached
            log.warning(
                "wattserve: key %s: its row in %s is damaged: %s", row[0], self.path, record.damaged
            )
        if len(self._keys) > 65536:  # bounded: unknown keys sent by attackers are cached too
            self._keys.clear()
        self._keys[digest] = (now, record)
        return record

    def list_keys(self) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT id, name, admin, metrics, budget_usd, budget_j, rps, spent_usd, "
            "spent_j, revoked FROM keys ORDER BY created",
            (),
        )
        cols = (
            "id",
            "name",
            "admin",
            "metrics",
            "budget_usd",
            "budget_j",
            "rps",
            "spent_usd",
            "spent_j",
            "revoked",
        )
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def live_keys(self) -> int:
        """How many keys are not revoked."""
        return int(self._read("SELECT COUNT(*) FROM keys WHERE revoked = 0", ())[0][0])

    def revoke(self, key_id: str) -> bool:
        return self._write("UPDATE keys SET revoked = 1 WHERE id = ?", (key_id,)).rowcount > 0

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The rows of a query; a file SQLite cannot read (damaged: 'database disk image is
        malformed') is an error naming it, not one without the path."""
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read the ledger: {exc}", path=self.path) from None

    def _write(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        """One statement that changes the file; a file that cannot be written (read-only,
        full, locked past the busy timeout) is an error naming it."""
        try:
            return self.db.execute(sql, args)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot write the ledger: {exc}", path=self.path) from None
