"""Hostile figures in the gateway's own files and settings, over real sockets (a tester's
report): a key's requests/s limit so small that its wait has no integer, a key's row edited
by hand, a Redis that loses its data while a budget is half spent, a ledger row the dashboard
cannot read, key names that forge rows of `usage --by key`, and the start-up warning of every
replica sharing a capped site."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from redis_server import redis_server
from serving import gateway

from wattserve.serve.guard import MAX_RETRY_AFTER_S
from wattserve.serve.ledger import Ledger

MODEL = "llama-3.2-1b"
FLEET = f"""\
name: s29
sites:
  dc: {{kind: datacenter, power_cap_w: 5000}}
deployments:
  g: {{site: dc, model: {MODEL}, hardware: h100-sxm, replicas: 2}}
"""


def ask(url: str, key: str, max_tokens: int = 2) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": MODEL,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi " * 50}],
        },
        timeout=60,
    )


def spent_usd(db: Path, name: str) -> float:
    con = sqlite3.connect(db)
    try:
        return float(
            con.execute("SELECT spent_usd FROM keys WHERE name = ?", (name,)).fetchone()[0]
        )
    finally:
        con.close()


# -- a rate too small for its wait ------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["one gateway", "redis"])
def test_a_vanishing_requests_per_second_limit_answers_429_with_a_bounded_retry_after(
    tmp_path: Path, shared: bool
) -> None:
    """`--rps 5e-324` (which `keys create` takes) made the wait infinite: a 500 from the
    Retry-After's round(), and over Redis a script error that counted as Redis lost, so every
    keyed request on the replica was refused. `--rps 1e-300` sent a 301-digit Retry-After."""
    db = tmp_path / "gw.db"  # the ledger serving.gateway gives the gateway
    ledger = Ledger(db)
    keys = [ledger.create_key(f"slow{i}", rps=rps) for i, rps in enumerate((5e-324, 1e-300))]
    other = ledger.create_key("other", budget_usd=10.0, rps=100.0)
    ledger.close()
    with (
        redis_server() as r,
        gateway(tmp_path, FLEET, *(("--state", r.url) if shared else ())) as s,
    ):
        for key in keys:
            assert ask(s.url, key).status_code == 200  # the burst's one request
            refused = ask(s.url, key)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.headers["Retry-After"] == str(MAX_RETRY_AFTER_S)
        assert ask(s.url, other).status_code == 200  # the shared state was not lost over it
        if shared:
            assert httpx.get(f"{s.url}/health").json()["state"]["lost_total"] == 0
            client = redis.Redis.from_url(r.url)
            buckets = list(client.scan_iter("ws:rl:*"))
            assert len(buckets) == 3 and all(0 < client.pttl(b) <= 10**13 for b in buckets)


# -- a key's row edited by hand ---------------------------------------------------------------


def test_a_keys_damaged_row_is_refused_naming_the_column_not_500(tmp_path: Path) -> None:
    """Text in a REAL column failed the budget's arithmetic with a 500 on every request; a
    negative budget or rate was taken as given; `admin = 'no'` read as an admin key."""
    db = tmp_path / "gw.db"  # the ledger serving.gateway gives the gateway
    ledger = Ledger(db)
    cases = {
        "rps": ("'abc'", "rps is 'abc'"),
        "budget_usd": ("'ten'", "budget_usd is 'ten'"),
        "budget_j": ("-1", "budget_j is -1.0"),
        "spent_usd": ("'x'", "spent_usd is 'x'"),
        "admin": ("'no'", "admin is 'no'"),
    }
    keys = {}
    for column, (value, _) in cases.items():
        keys[column] = ledger.create_key(column, budget_usd=1.0)
        ledger.db.execute(f"UPDATE keys SET {column} = {value} WHERE name = ?", (column,))
    good = ledger.create_key("good", budget_usd=1.0, rps=100.0)
    ledger.close()
    with gateway(tmp_path, FLEET, "--require-keys") as s:
        for column, (_, said) in cases.items():
            r = ask(s.url, keys[column])
            assert r.status_code == 403, (column, r.text)
            err = r.json()["error"]
            assert err["code"] == "invalid_key_record" and said in err["message"], err
        admin = httpx.post(
            f"{s.url}/v1/fleet",
            headers={"Authorization": f"Bearer {keys['admin']}"},
            json={"action": "drain", "target": "g"},
        )
        assert admin.status_code == 403, admin.text  # not an admin key, whatever 'no' reads as
        assert ask(s.url, good).status_code == 200
    assert "damaged" in (tmp_path / "gw.log").read_text()
    assert "Traceback" not in (tmp_path / "gw.log").read_text()


# -- Redis losing its data --------------------------------------------------------------------


def test_redis_losing_its_data_refills_the_spend_from_the_ledger_as_it_is_now(
    tmp_path: Path,
) -> None:
    """The spend a Redis that lost its data is refilled with was the ledger's figure at the
    key's first use on the replica: a key that had spent 70% of its budget before a FLUSHALL
    (or a restart without persistence) could spend the whole budget again (measured: $0.00336
    of a $0.002 budget)."""
    db = tmp_path / "gw.db"  # the ledger serving.gateway gives the gateway
    budget = 0.002
    key = Ledger(db).create_key("team", budget_usd=budget)
    with redis_server() as r, gateway(tmp_path, FLEET, "--state", r.url) as s:
        while spent_usd(db, "team") < 0.7 * budget:
            assert ask(s.url, key, 64).status_code == 200
        time.sleep(1.5)  # the ledger's record of the key (cached for a second) is fresh
        redis.Redis.from_url(r.url).flushall()
        deadline = time.monotonic() + 15  # the new epoch's window: 503 state_recovering
        for _ in range(200):
            answer = ask(s.url, key, 64)
            if answer.status_code == 503 and time.monotonic() < deadline:
                assert answer.json()["error"]["code"] == "state_recovering", answer.text
                time.sleep(0.2)
                continue
            if answer.status_code != 200:
                break
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "insufficient_quota"
        time.sleep(1.5)  # the last rows committed
        assert spent_usd(db, "team") <= budget


# -- the dashboard and usage over rows they cannot read ---------------------------------------


def test_a_ledger_row_of_text_and_blobs_neither_stops_the_dashboard_nor_usage(
    tmp_path: Path,
) -> None:
    """One row with text figures stopped the dashboard's sampling for good (its totals and
    power history froze), and a blob as a model failed `usage --json` with a traceback."""
    db = tmp_path / "gw.db"  # the ledger serving.gateway gives the gateway
    with gateway(tmp_path, FLEET) as s:
        con = sqlite3.connect(db)
        con.execute(
            "INSERT INTO requests (id, ts, model, backend, site, prompt_tokens, "
            "completion_tokens, ttft_s, duration_s, energy_j, usd, status, error) VALUES "
            "('odd', 'q', x'00ff', 'g/0', 'dc', 1, 'x', 'y', 'z', 'e', 'u', 'ok', x'ff')"
        )
        con.commit()
        con.close()
        time.sleep(1.5)  # sampled once a second
        assert ask(s.url, "none").status_code == 200
        deadline = time.monotonic() + 10
        while True:
            state = httpx.get(f"{s.url}/dashboard/state").json()
            if state["totals"]["requests"] == 2:
                break
            assert time.monotonic() < deadline, state["totals"]
            time.sleep(0.2)
        odd = state["recent"][1]
        assert odd["model"] is None and odd["usd"] is None and odd["completion_tokens"] is None
    out = subprocess.run(
        [sys.executable, "-m", "wattserve", "usage", "--by", "model", "--json", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "b'\\\\x00\\\\xff'" in out.stdout


# -- key names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("", "needs a name"),
        ("   ", "needs a name"),
        ("a\nfake-row  999", "U+000A"),
        ("x\x1b[31m", "U+001B"),
        ("\u202eevil", "U+202E"),
        ("k" * 129, "at most 128"),
    ],
)
def test_keys_create_refuses_a_name_that_would_forge_the_usage_table(
    tmp_path: Path, name: str, said: str
) -> None:
    db = tmp_path / "keys.db"
    out = subprocess.run(
        [sys.executable, "-m", "wattserve", "keys", "create", name, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "ws-" not in out.stdout
    assert "name" in out.stderr and said in out.stderr, out.stderr


# -- the start-up warning with shared state ---------------------------------------------------


def test_replicas_sharing_a_capped_site_start_without_a_false_warning(tmp_path: Path) -> None:
    """With --state, the warning of a cap under which no request can start was computed after
    the site's local cap became idle + this replica's lease (none yet): every replica warned
    that its 5 kW site let no request run."""
    with redis_server() as r, gateway(tmp_path, FLEET, "--state", r.url) as s:
        assert ask(s.url, "none").status_code == 200
    assert "WARNING" not in (tmp_path / "gw.log").read_text()
