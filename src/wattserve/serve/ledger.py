"""The ledger: every request in SQLite (WAL), committed when it ends, so a crash of the gateway
loses no completed request's record; and the API keys with their budgets.

Content (prompts, outputs) is never stored. Keys are stored as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    error TEXT
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
    revoked INTEGER NOT NULL DEFAULT 0
);
"""


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

    def over_budget(self) -> str | None:
        if self.budget_usd is not None and self.spent_usd >= self.budget_usd:
            return f"key '{self.name}' has spent its ${self.budget_usd:g} budget"
        if self.budget_j is not None and self.spent_j >= self.budget_j:
            return f"key '{self.name}' has spent its {self.budget_j:g} J energy budget"
        return None


class Ledger:
    """One SQLite file: requests and keys."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._keys_checked = float("-inf")
        self._has_keys = False

    def close(self) -> None:
        self.db.close()

    # -- requests --------------------------------------------------------------------------

    def record(self, row: dict[str, Any]) -> None:
        """Write one finished request (committed at once: autocommit mode)."""
        self.db.execute(
            "INSERT OR REPLACE INTO requests (id, ts, key_id, model, backend, site, "
            "prompt_tokens, completion_tokens, ttft_s, duration_s, energy_j, usd, status, error) "
            "VALUES (:id, :ts, :key_id, :model, :backend, :site, :prompt_tokens, "
            ":completion_tokens, :ttft_s, :duration_s, :energy_j, :usd, :status, :error)",
            row,
        )
        if row.get("key_id") and (row.get("usd") or row.get("energy_j")):
            self.db.execute(
                "UPDATE keys SET spent_usd = spent_usd + ?, spent_j = spent_j + ? WHERE id = ?",
                (row.get("usd") or 0.0, row.get("energy_j") or 0.0, row["key_id"]),
            )

    def usage(self, by: str) -> list[dict[str, Any]]:
        """Totals grouped by key, model, site, backend or day."""
        column = {
            "key": "COALESCE(k.name, r.key_id, '-')",
            "model": "r.model",
            "site": "COALESCE(r.site, '-')",
            "backend": "COALESCE(r.backend, '-')",
            "day": "date(r.ts, 'unixepoch')",
        }[by]
        cur = self.db.execute(
            f"SELECT {column} AS grp, COUNT(*), SUM(r.status = 'ok'), "
            "SUM(COALESCE(r.prompt_tokens, 0)), SUM(COALESCE(r.completion_tokens, 0)), "
            "SUM(COALESCE(r.energy_j, 0)), SUM(COALESCE(r.usd, 0)), AVG(r.ttft_s) "
            "FROM requests r LEFT JOIN keys k ON k.id = r.key_id GROUP BY grp ORDER BY grp"
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
        )
        return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]

    # -- keys ------------------------------------------------------------------------------

    def create_key(
        self,
        name: str,
        *,
        admin: bool = False,
        budget_usd: float | None = None,
        budget_j: float | None = None,
        rps: float | None = None,
    ) -> str:
        """Store a new key's hash; return the key itself (shown once)."""
        key = "ws-" + secrets.token_urlsafe(24)
        kid = secrets.token_hex(6)
        self.db.execute(
            "INSERT INTO keys (id, name, hash, admin, budget_usd, budget_j, rps, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kid, name, hash_key(key), int(admin), budget_usd, budget_j, rps, time.time()),
        )
        return key

    def lookup(self, key: str) -> KeyRecord | None:
        row = self.db.execute(
            "SELECT id, name, admin, budget_usd, budget_j, rps, spent_usd, spent_j FROM keys "
            "WHERE hash = ? AND revoked = 0",
            (hash_key(key),),
        ).fetchone()
        if row is None:
            return None
        return KeyRecord(row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6], row[7])

    def list_keys(self) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT id, name, admin, budget_usd, budget_j, rps, spent_usd, "
            "spent_j, revoked FROM keys ORDER BY created"
        )
        cols = (
            "id",
            "name",
            "admin",
            "budget_usd",
            "budget_j",
            "rps",
            "spent_usd",
            "spent_j",
            "revoked",
        )
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def revoke(self, key_id: str) -> bool:
        return self.db.execute("UPDATE keys SET revoked = 1 WHERE id = ?", (key_id,)).rowcount > 0

    def has_keys(self) -> bool:
        """Whether any live key exists (re-read at most once a second: keys are created by
        another process, `wattserve keys create`)."""
        now = time.monotonic()
        if now - self._keys_checked > 1.0:
            self._keys_checked = now
            row = self.db.execute("SELECT 1 FROM keys WHERE revoked = 0 LIMIT 1").fetchone()
            self._has_keys = row is not None
        return self._has_keys
