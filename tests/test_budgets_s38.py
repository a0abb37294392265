"""Budgets that a key could spend twice (a review of 2026-12-06, each case first run against
the code before its fix): Redis back from an older snapshot, a replica stopped while Redis
hung with its settlements queued, a gateway started while another process held the ledger,
a ledger that cannot be written."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from redis_server import redis_server

from wattserve import ConfigError
from wattserve.serve.budgets import Charge, Hold, Refusal
from wattserve.serve.journal import Journal, journal_dir
from wattserve.serve.ledger import KeyRecord, Ledger
from wattserve.serve.shared_budgets import RedisBudgets
from wattserve.serve.state import SharedState


def test_redis_back_from_an_older_snapshot_counts_the_ledgers_spend() -> None:
    """$0.90 spent of $1 (the ledger has it); Redis restarts from a snapshot taken at $0.30,
    as RDB persistence does. The next reservation took Redis's $0.30 and seven more $0.10
    requests ran: $1.60 billed of $1."""
    key = KeyRecord("kr", "rolled", False, 1.0, None, None, 0.9, 0.0)  # the ledger's $0.90

    async def run(url: str) -> None:
        state = SharedState(url, replica_id="r0", heartbeat_ttl_s=10)
        await state.connect()
        await state.redis.hset(state.key("spent", key.id), mapping={"usd": "0.3", "j": "0"})
        budgets = RedisBudgets(state)
        got = [await budgets.reserve(key, Charge(0.1, 0.0)) for _ in range(3)]
        assert sum(isinstance(h, Hold) for h in got) <= 1, got  # $0.10 left, not $0.70
        assert any(isinstance(h, Refusal) for h in got)
        await state.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))


def test_a_replica_stopped_while_redis_hung_leaves_its_holds_charged() -> None:
    """R holds 9 x $0.10 of $1 one request at a time; Redis hangs, the requests finish (their
    settlements queued), R stops, Redis returns, R's heartbeat expires. Its holds were dropped
    uncharged and B spent the $1 again ($1.90 in all)."""
    key = KeyRecord("kq", "queued", False, 1.0, None, None, 0.0, 0.0)

    async def run(server_pid: int, url: str) -> None:
        r = SharedState(url, replica_id="R", heartbeat_ttl_s=2.0, op_timeout_s=0.5)
        b = SharedState(url, replica_id="B", heartbeat_ttl_s=2.0, op_timeout_s=0.5)
        await r.connect()
        await b.connect()
        br, bb = RedisBudgets(r), RedisBudgets(b)
        holds = [await br.reserve(key, Charge(0.1, 0.0)) for _ in range(9)]
        assert all(isinstance(h, Hold) for h in holds)
        os.kill(server_pid, signal.SIGSTOP)
        try:
            try:
                await r._beat()
            except Exception as exc:  # Redis not answering: counted lost
                r.lost(exc)
            billed = sum(br.settle(h, Charge(0.1, 0.0)).usd for h in holds)  # type: ignore[arg-type]
            await asyncio.sleep(0.1)
            await r.stop()  # a rolling restart while Redis is away
        finally:
            os.kill(server_pid, signal.SIGCONT)
        await asyncio.sleep(2.5)  # R's heartbeat key expires
        b.up = True
        await b._beat()
        key.spent_usd = billed  # the ledger has R's spend
        more = [await bb.reserve(key, Charge(0.1, 0.0)) for _ in range(12)]
        billed += sum(bb.settle(h, Charge(0.1, 0.0)).usd for h in more if isinstance(h, Hold))
        assert billed <= 1.0 + 1e-9, billed
        await b.stop()

    with redis_server() as srv:
        assert srv.proc is not None
        asyncio.run(run(srv.proc.pid, srv.url))


def _journal_with_a_row(db: Path) -> str:
    ledger = Ledger(db)
    key = ledger.create_key("k", budget_usd=1.0)
    ledger.close()
    journal = Journal(journal_dir(str(db)))
    row = {
        "id": "req-1", "ts": 1.0, "key_id": None, "model": "m", "backend": "b", "site": "s",
        "prompt_tokens": 1, "completion_tokens": 1, "ttft_s": 0.1, "duration_s": 0.2,
        "energy_j": 1.0, "usd": 0.5, "status": "ok", "error": None, "billed_usd": 0.5,
        "billed_j": 1.0,
    }  # fmt: skip
    journal.append(row)
    journal.close(delete=False)
    return key


def test_a_ledger_locked_at_start_stops_the_gateway_rather_than_forget_its_journal(
    tmp_path: Path,
) -> None:
    """Another process held the ledger's write lock: the journal's replay failed, was only
    logged, and the gateway started with the keys' spend missing its rows (a key served 20
    requests past its budget)."""
    db = tmp_path / "ledger.db"
    _journal_with_a_row(db)
    other = sqlite3.connect(db, timeout=0.1, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ConfigError, match="cannot replay the journal") as err:
            Ledger(db)
        assert "1 request record(s)" in str(err.value)
        reader = Ledger(db, create=False)  # usage, keys list: shown without it, logged
        assert reader.recovered == 0
        reader.close()
    finally:
        other.execute("ROLLBACK")
        other.close()
    ledger = Ledger(db)  # free again: replayed
    assert ledger.recovered == 1
    ledger.close()


def test_a_ledger_that_cannot_be_written_stops_the_gateway(tmp_path: Path) -> None:
    """No journal folder, and no write the ledger takes (a read-only mount, which a root test
    cannot make of a file: here another process's exclusive lock): the gateway started with a
    warning, answered 15 keyed requests and recorded none."""
    db = tmp_path / "ledger.db"
    Ledger(db).close()
    journal_dir(str(db)).write_text("not a folder")  # the journal folder cannot be made
    ledger = Ledger(db)
    other = sqlite3.connect(db, timeout=0.1, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ConfigError, match="cannot be written") as err:
            ledger.start()
        assert "no request could be recorded" in str(err.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
        ledger.close()


def test_a_replica_counted_dead_that_settles_later_is_charged_once() -> None:
    """Redis away past the heartbeat's TTL (or a partition): a live replica's request hold
    ($0.40) is charged in full as a dead one's; its settlement ($0.10) then came on top: the
    key locked out at $0.60 spent of $1 as if $1.00 (found in review, 2026-12-06). The full
    charge is now taken back when the hold settles."""
    key = KeyRecord("kl", "late", False, 1.0, None, None, 0.5, 0.0)

    async def run(url: str) -> None:
        a = SharedState(url, replica_id="A", heartbeat_ttl_s=0.6)
        b = SharedState(url, replica_id="B", heartbeat_ttl_s=10)
        await a.connect()
        await b.connect()
        ba, bb = RedisBudgets(a), RedisBudgets(b)
        hold = await ba.reserve(key, Charge(0.4, 0.0))
        assert isinstance(hold, Hold)
        await asyncio.sleep(0.8)  # A's heartbeat key expires (A beats no more meanwhile)
        assert isinstance(await bb.reserve(key, Charge(0.2, 0.0)), Refusal)  # A's hold charged
        ba.settle(hold, Charge(0.1, 0.0))
        await a._beat()  # A is back: its settlement goes out
        spent = await b.redis.hget(b.key("spent", key.id), "usd")
        assert float(spent) == pytest.approx(0.6), spent  # 0.5 + 0.1, not 0.5 + 0.4 + 0.1
        assert isinstance(await bb.reserve(key, Charge(0.2, 0.0)), Hold)
        await a.stop()
        await b.stop()

    with redis_server() as r:
        asyncio.run(run(r.url))
