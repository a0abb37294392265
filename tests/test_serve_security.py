"""The gateway as a hostile but fair user tries it (issue #8): budgets under concurrency,
early-ended requests billed, no 5xx from any input, strict types, disconnects, explicit auth,
durability under SIGKILL. Real gateway processes over loopback sockets."""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import re
import socket
import sqlite3
import stat
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import Server, gateway, raw_request

from wattserve.core.fleet import load_fleet
from wattserve.serve.journal import journal_dir
from wattserve.serve.ledger import Ledger

MODEL = "llama-3.2-1b"
FLEET = f"""\
name: security
sites:
  dc: {{kind: datacenter, power_cap_w: 5000}}
deployments:
  g: {{site: dc, model: {MODEL}, hardware: h100-sxm, replicas: 2}}
"""
CHAT = "/v1/chat/completions"


def body(max_tokens: int = 8, **extra: object) -> dict[str, object]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello " * 20}],
        **extra,
    }


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def new_key(db: Path, name: str, **kw: object) -> str:
    ledger = Ledger(db)
    try:
        return ledger.create_key(name, **kw)  # type: ignore[arg-type]
    finally:
        ledger.close()


def key_id(db: Path, name: str) -> str:
    row = sqlite3.connect(db).execute("SELECT id FROM keys WHERE name = ?", (name,)).fetchone()
    return str(row[0])


def is_openai_error(raw: bytes) -> bool:
    err = json.loads(raw)["error"]
    return set(err) == {"message", "type", "param", "code"} and bool(err["message"])


def wait_for_row(db: Path, rid: str, timeout_s: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    while time.monotonic() < deadline:
        row = con.execute("SELECT * FROM requests WHERE id = ?", (rid,)).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no ledger row for {rid}")


@pytest.fixture(scope="module")
def open_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A gateway without --require-keys, with an admin key and a 1 s body timeout."""
    tmp = tmp_path_factory.mktemp("open")
    admin = new_key(tmp / "open.db", "ops", admin=True)
    with gateway(tmp, FLEET, "--body-timeout", "1", name="open") as s:
        yield s, admin


# -- budgets: reservations under concurrency -----------------------------------------------


def _worst_case(s: Server, db: Path, unit: str) -> float:
    """The worst case the gateway holds for `body(64)`, read from its refusal of a key whose
    budget is almost nothing."""
    option = {"$": "budget_usd", "J": "budget_j"}[unit]
    key = new_key(db, f"probe-{unit}", **{option: 1e-15})
    r = httpx.post(f"{s.url}{CHAT}", json=body(64), headers=auth(key), timeout=60)
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    pattern = r"up to \$([0-9.e+-]+)" if unit == "$" else r"up to ([0-9.e+-]+) J"
    found = re.search(pattern, r.json()["error"]["message"])
    assert found, r.text
    return float(found.group(1))


@pytest.mark.parametrize("unit", ["$", "J"])
def test_fifty_parallel_requests_never_overrun_a_budget(tmp_path: Path, unit: str) -> None:
    db = tmp_path / "gw.db"
    with gateway(tmp_path, FLEET) as s:
        worst = _worst_case(s, db, unit)
        assert worst > 0
        budget = 4.5 * worst  # four requests' worst cases fit at once, not five
        option = {"$": "budget_usd", "J": "budget_j"}[unit]
        key = new_key(db, "tight", **{option: budget})
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            codes = list(
                pool.map(
                    lambda _: (
                        httpx.post(
                            f"{s.url}{CHAT}", json=body(64), headers=auth(key), timeout=60
                        ).status_code
                    ),
                    range(50),
                )
            )
        assert set(codes) <= {200, 429} and codes.count(200) >= 4 and 429 in codes
    # read after the gateway stopped: the ledger is written behind the replies (only the
    # journal is on disk before one), and a stop flushes it
    kid = key_id(db, "tight")
    con = sqlite3.connect(db)
    column = "billed_usd" if unit == "$" else "billed_j"
    billed, served, refused = con.execute(
        f"SELECT SUM({column}), SUM(status = 'ok'), SUM(status = 'rejected') FROM requests "
        "WHERE key_id = ?",
        (kid,),
    ).fetchone()
    spent = con.execute(
        f"SELECT {'spent_usd' if unit == '$' else 'spent_j'} FROM keys WHERE id = ?", (kid,)
    ).fetchone()[0]
    assert served == codes.count(200)
    # a request routed and then refused by the budget has its row (billed nothing); one
    # refused at the door, the budget already spent, is counted in /metrics only
    assert 1 <= refused <= codes.count(429)
    assert 0 < billed <= budget * (1 + 1e-9) and abs(spent - billed) <= 1e-9 * budget


def test_a_nano_dollar_budget_serves_nothing(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    key = new_key(db, "nano", budget_usd=1e-9)
    with gateway(tmp_path, FLEET) as s:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            codes = list(
                pool.map(
                    lambda _: (
                        httpx.post(
                            f"{s.url}{CHAT}", json=body(16), headers=auth(key), timeout=60
                        ).status_code
                    ),
                    range(50),
                )
            )
        assert codes == [429] * 50
    assert sqlite3.connect(db).execute("SELECT spent_usd FROM keys").fetchone()[0] == 0


CAPPED_FLEET = f"""\
name: capped
sites:
  dc: {{kind: datacenter, power_cap_w: 500}}
deployments:
  g: {{site: dc, model: {MODEL}, hardware: h100-sxm, replicas: 2}}
"""


def _gauges(text: str, name: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]


def test_a_capped_fleet_bills_each_request_its_share_of_the_device_time(tmp_path: Path) -> None:
    """Two H100s whose idle draw is 210 W under a 500 W cap (a request's decode adds about 190 W
    to an idle one, a 128-token prefill 345 W): steps wait for power. Each request is billed its
    shares of the steps it was in, waits included, and its hold counts its engine's measured
    stretch: what requests cost is billed (before, about 75% of it was not: a request's whole
    elapsed time over the batch it ended in, and a step could wait seconds for an engine that
    took its power back step after step), the budget is never passed, and the billed time is the
    engines' device time."""
    db = tmp_path / "capped.db"
    budget = 0.004
    key = new_key(db, "tight", budget_usd=budget)
    ops = new_key(db, "ops", metrics=True)
    fleet_file = tmp_path / "capped.yaml"
    fleet_file.write_text(CAPPED_FLEET)
    usd_per_s, usd_per_j = load_fleet(fleet_file).deployments[0].cost.billable()
    assert usd_per_s > 0 and usd_per_j == 0  # rented: a request's dollars are its time alone

    def one(i: int) -> int:
        return httpx.post(
            f"{s.url}{CHAT}", json=body(100, stream=bool(i % 2)), headers=auth(key), timeout=120
        ).status_code

    with gateway(tmp_path, CAPPED_FLEET, "--require-keys", name="capped") as s:
        with concurrent.futures.ThreadPoolExecutor(60) as pool:
            codes = list(pool.map(one, range(120)))
        metrics = httpx.get(f"{s.url}/metrics", headers=auth(ops), timeout=10).text
    assert set(codes) <= {200, 429} and codes.count(200) >= 5 and 429 in codes
    assert max(_gauges(metrics, "wattserve_engine_power_stretch{")) > 1.0  # steps waited
    device_s = sum(_gauges(metrics, "wattserve_engine_device_seconds{"))
    con = sqlite3.connect(db)
    served, usd, billed = con.execute(
        "SELECT COUNT(*), SUM(usd), SUM(billed_usd) FROM requests WHERE status = 'ok'"
    ).fetchone()
    spent = con.execute("SELECT spent_usd FROM keys WHERE name = 'tight'").fetchone()[0]
    assert served == codes.count(200)
    assert billed >= 0.98 * usd  # measured: 0% unbilled in 10 runs (before: 63% to 83%)
    assert spent <= budget * (1 + 1e-9) and abs(spent - billed) <= 1e-9 * budget
    assert usd / usd_per_s == pytest.approx(device_s, rel=1e-9)  # /metrics prints it exactly


def test_fifty_parallel_requests_never_overrun_a_rate_limit(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    key = new_key(db, "slow", rps=0.2)  # a burst of one, then one every 5 s
    with gateway(tmp_path, FLEET) as s:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            replies = list(
                pool.map(
                    lambda _: httpx.post(
                        f"{s.url}{CHAT}", json=body(2), headers=auth(key), timeout=60
                    ),
                    range(50),
                )
            )
        elapsed = time.monotonic() - started
    codes = [r.status_code for r in replies]
    assert codes.count(200) <= 1 + int(elapsed * 0.2) and codes.count(200) >= 1
    limited = [r for r in replies if r.status_code == 429]
    assert limited and all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in limited)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)


# -- disconnects: cancelled and billed -----------------------------------------------------


def test_a_stream_closed_early_is_cancelled_billed_and_logged_once(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    key = new_key(db, "streamer", budget_usd=100.0, budget_j=1e9)
    with gateway(tmp_path, FLEET) as s:
        with (
            httpx.Client(timeout=60) as c,
            c.stream(
                "POST", f"{s.url}{CHAT}", json=body(3000, stream=True), headers=auth(key)
            ) as r,
        ):
            got = []
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    got.append(json.loads(line[6:]))
                if len(got) == 5:
                    break
        rid = str(got[0]["id"])
        row = wait_for_row(db, rid)
        assert row["status"] == "cancelled"
        assert 5 <= int(row["completion_tokens"]) < 3000  # type: ignore[call-overload]
        for column in ("usd", "energy_j", "billed_usd", "billed_j"):
            assert float(row[column]) > 0, column  # type: ignore[arg-type]
        spent = sqlite3.connect(db).execute("SELECT spent_usd, spent_j FROM keys").fetchone()
        assert spent[0] > 0 and spent[1] > 0
        time.sleep(0.3)
        fleet = httpx.get(f"{s.url}/v1/fleet").json()
        assert fleet["targets"]["g"]["in_flight"] == 0
    log = (tmp_path / "gw.log").read_text()
    assert log.count(f"{rid}: client disconnected") == 1 and "Traceback" not in log


def test_a_non_streaming_client_that_leaves_cancels_the_work(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    with gateway(tmp_path, FLEET) as s:
        payload = json.dumps(body(4000)).encode()
        sock = socket.create_connection(("127.0.0.1", s.port))
        sock.sendall(
            f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        time.sleep(0.5)
        sock.close()
        left = time.monotonic()
        deadline = left + 10
        con = sqlite3.connect(db)
        row = None
        while row is None and time.monotonic() < deadline:
            row = con.execute(
                "SELECT status, completion_tokens, duration_s, usd FROM requests"
            ).fetchone()
            time.sleep(0.05)
        assert row is not None and row[0] == "cancelled", row
        assert row[1] < 4000 and row[2] < 5.0 and row[3] > 0
        assert time.monotonic() - left < 5.0
    log = (tmp_path / "gw.log").read_text()
    assert log.count("client disconnected") == 1 and "Traceback" not in log


# -- no 5xx from any input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"x-wattserve-site", b"\xff\xfe"), (b"Authorization", b"Bearer \xff\xfe\xfd")],
)
def test_non_utf8_headers_answer_400(
    open_gw: tuple[Server, str], name: bytes, value: bytes
) -> None:
    s, _ = open_gw
    status, _, raw = raw_request(
        s.port, "POST", CHAT, [(name, value)], json.dumps(body(2)).encode()
    )
    assert status == 400 and is_openai_error(raw)
    assert json.loads(raw)["error"]["code"] == "invalid_header"


def test_compressed_bodies(open_gw: tuple[Server, str]) -> None:
    s, _ = open_gw
    plain = json.dumps(body(2)).encode()
    for encoding, data in (
        (b"gzip", gzip.compress(plain)),
        (b"deflate", zlib.compress(plain)),
        (b"identity", plain),
    ):
        status, _, raw = raw_request(s.port, "POST", CHAT, [(b"Content-Encoding", encoding)], data)
        assert status == 200, (encoding, raw)
    status, _, raw = raw_request(s.port, "POST", CHAT, [(b"Content-Encoding", b"gzip")], plain)
    assert status == 400 and is_openai_error(raw)
    status, _, raw = raw_request(s.port, "POST", CHAT, [(b"Content-Encoding", b"br")], plain)
    assert status == 415 and is_openai_error(raw)
    # two codings, each header one of ours: the body would need decoding twice (it was
    # decoded once, and a body compressed once was served as if that were all it claimed)
    twice = [(b"Content-Encoding", b"gzip"), (b"Content-Encoding", b"gzip")]
    for data in (gzip.compress(plain), gzip.compress(gzip.compress(plain))):
        status, _, raw = raw_request(s.port, "POST", CHAT, twice, data)
        assert status == 415 and is_openai_error(raw), raw
        assert json.loads(raw)["error"]["code"] == "unsupported_encoding"
    bomb = gzip.compress(b"{" + b" " * (200 << 20), 9)  # 200 MiB inflated, ~200 KiB sent
    status, _, raw = raw_request(s.port, "POST", CHAT, [(b"Content-Encoding", b"gzip")], bomb)
    assert status == 413 and is_openai_error(raw)
    assert httpx.get(f"{s.url}/health").status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"action": "drain", "target": ["g"]}, 400, "target"),
        ({"action": "drain", "target": {"a": 1}}, 400, "target"),
        ({"action": ["drain"]}, 400, "action"),
        ({"action": "set_cap", "site": ["dc"], "power_cap_w": 100}, 400, "site"),
        ({"action": "set_cap", "site": "dc", "power_cap_w": "100"}, 400, "power_cap_w"),
        ({"action": "set_cap", "site": "dc", "power_cap_w": True}, 400, "power_cap_w"),
        ({"action": "set_cap", "site": "dc", "power_cap_w": 1e400}, 400, None),
        ({"action": "set_cap", "site": "dc", "power_cap_w": 1}, 400, "power_cap_w idle"),
        # the fleet file's bound (1e13 W was taken here); a cap at the idle draw leaves nothing
        ({"action": "set_cap", "site": "dc", "power_cap_w": 1e13}, 400, "power_cap_w"),
        ({"action": "set_cap", "site": "mars", "power_cap_w": 100}, 404, "site"),
        ({"action": "drain", "target": "nope"}, 404, "target"),
        ({"action": "drain", "target": "g", "extra": 1}, 400, "extra"),
        ([1, 2], 400, None),
    ],
)
def test_admin_bodies_are_validated(
    open_gw: tuple[Server, str], payload: object, status: int, param: str | None
) -> None:
    s, admin = open_gw
    raw = json.dumps(payload).encode()  # 1e400 is written Infinity, which JSON has not
    r = httpx.post(f"{s.url}/v1/fleet", content=raw, headers=auth(admin))
    assert r.status_code == status, r.text
    assert is_openai_error(r.content)
    if param is not None:  # "FIELD WORD": the field, and a word the message must hold
        field, _, word = param.partition(" ")
        assert r.json()["error"]["param"] == field and word in r.json()["error"]["message"]


def test_admin_nan_and_deep_nesting(open_gw: tuple[Server, str]) -> None:
    s, admin = open_gw
    for raw in (
        b'{"action": "set_cap", "site": "dc", "power_cap_w": NaN}',
        b'{"action": "set_cap", "site": "dc", "power_cap_w": Infinity}',
        b'{"action": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ):
        r = httpx.post(f"{s.url}/v1/fleet", content=raw, headers=auth(admin))
        assert r.status_code == 400 and is_openai_error(r.content)
    r = httpx.post(
        f"{s.url}/v1/fleet",
        json={"action": "set_cap", "site": "dc", "power_cap_w": 4000.5},
        headers=auth(admin),
    )
    assert r.status_code == 200 and r.json()["sites"]["dc"]["power_cap_w"] == 4000.5
    assert json.loads(httpx.get(f"{s.url}/v1/fleet").content)["sites"]["dc"]["power_cap_w"]


# -- strict schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream": "yes"}, "stream"),
        ({"max_tokens": "16"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"n": "1"}, "n"),
        ({"temperature": "0.5"}, "temperature"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ],
)
def test_wrong_types_answer_400_naming_the_field(
    open_gw: tuple[Server, str], extra: dict[str, object], param: str
) -> None:
    s, _ = open_gw
    r = httpx.post(f"{s.url}{CHAT}", json={**body(2), **extra})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"presence_penalty": 5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"seed": 1.5}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
        ({"logprobs": "x"}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        # content parts in OpenAI's forms: an image part without its URL went on upstream
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages.0.content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages.0.content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages.0.content",
        ),
        ({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, "messages.0.content"),
    ],
)
def test_openai_ranges_answer_400_naming_the_field(
    open_gw: tuple[Server, str], extra: dict[str, object], param: str
) -> None:
    """Each was answered 200 though OpenAI refuses it (an audit, 2026-12-04): a backend that
    ignores a field would hide the client's mistake."""
    s, _ = open_gw
    r = httpx.post(f"{s.url}{CHAT}", json={**body(2), **extra})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    ok = httpx.post(f"{s.url}{CHAT}", json={**body(2), "presence_penalty": 1, "seed": 3})
    assert ok.status_code == 200, ok.text
    parts = [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]
    fine = {"logprobs": True, "top_logprobs": 2, "messages": [{"role": "user", "content": parts}]}
    ok = httpx.post(f"{s.url}{CHAT}", json={**body(2), **fine})
    assert ok.status_code == 200, ok.text
    # a well-formed image part passes the schema, and the emulated engine, which reads no
    # image, refuses it (since 2026-12-06: it answered as if it had seen it)
    parts = [*parts, {"type": "image_url", "image_url": {"url": "x:"}}]
    seen = httpx.post(
        f"{s.url}{CHAT}", json={**body(2), "messages": [{"role": "user", "content": parts}]}
    )
    assert seen.status_code == 400 and seen.json()["error"]["code"] == "unsupported_parameter"
    prompt = {"model": body(2)["model"], "prompt": "hi", "max_tokens": 2}
    r = httpx.post(f"{s.url}/v1/completions", json={**prompt, "logprobs": 6})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs", r.text


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", 10**30), ("max_tokens", -(10**30)), ("max_completion_tokens", 2**64)],
)
def test_an_integer_past_64_bits_is_out_of_range_not_a_float(
    open_gw: tuple[Server, str], field: str, value: int
) -> None:
    """The JSON parser reads such an integer as a float; the 400 once said 'got float'."""
    s, _ = open_gw
    r = httpx.post(f"{s.url}{CHAT}", json={**body(2), field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and "out of range (1 to 32768)" in err["message"], err
    assert "float" not in err["message"]


def test_context_length_exceeded(open_gw: tuple[Server, str]) -> None:
    s, _ = open_gw
    long_prompt = {"model": MODEL, "messages": [{"role": "user", "content": "word " * 100_000}]}
    r = httpx.post(f"{s.url}{CHAT}", json={**long_prompt, "max_tokens": 30_000}, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and "131072" in err["message"]
    r = httpx.post(
        f"{s.url}/v1/completions", json={"model": MODEL, "prompt": "x" * 600_000, "max_tokens": 1}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


# -- slow clients, backlog -----------------------------------------------------------------


def test_a_slow_body_times_out_with_408(open_gw: tuple[Server, str]) -> None:
    s, _ = open_gw
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(
            f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode() + b"{"
        )
        started = time.monotonic()
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
    assert b'"code":"timeout"' in reply


def test_listen_backlog_is_2048(open_gw: tuple[Server, str]) -> None:
    s, _ = open_gw
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{s.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert int(out[2]) == min(2048, somaxconn)  # Send-Q of a listening socket: its backlog


# -- auth ------------------------------------------------------------------------------------


def test_required_keys_guard_metrics_and_fleet_and_never_lapse(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    user = new_key(db, "user")
    watcher = new_key(db, "prometheus", metrics=True)
    admin = new_key(db, "ops", admin=True)
    with gateway(tmp_path, FLEET, "--require-keys") as s:
        assert httpx.get(f"{s.url}/health").status_code == 200
        for path in ("/metrics", "/v1/fleet"):
            assert httpx.get(f"{s.url}{path}").status_code == 401
            assert httpx.get(f"{s.url}{path}", headers=auth(user)).status_code == 403
            assert httpx.get(f"{s.url}{path}", headers=auth(watcher)).status_code == 200
            assert httpx.get(f"{s.url}{path}", headers=auth(admin)).status_code == 200
        assert httpx.post(f"{s.url}{CHAT}", json=body(2), headers=auth(user)).status_code == 200
        ledger = Ledger(db)
        for name in ("user", "prometheus", "ops"):
            assert ledger.revoke(key_id(db, name))
        ledger.close()
        time.sleep(1.2)  # keys are re-read at most once a second
        for key in (None, user, admin):
            r = httpx.post(f"{s.url}{CHAT}", json=body(2), headers=auth(key))
            assert r.status_code == 401, key
        assert httpx.get(f"{s.url}/metrics", headers=auth(watcher)).status_code == 401
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_open_gateway_refuses_revoked_keys(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    key = new_key(db, "only")
    with gateway(tmp_path, FLEET) as s:
        assert httpx.post(f"{s.url}{CHAT}", json=body(2), headers=auth(key)).status_code == 200
        ledger = Ledger(db)
        assert ledger.revoke(key_id(db, "only"))
        ledger.close()
        time.sleep(1.2)
        r = httpx.post(f"{s.url}{CHAT}", json=body(2), headers=auth(key))
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        assert httpx.post(f"{s.url}{CHAT}", json=body(2)).status_code == 200  # stays open
        assert httpx.get(f"{s.url}/metrics").status_code == 200


def test_rejections_are_counted_by_reason(open_gw: tuple[Server, str]) -> None:
    s, _ = open_gw
    httpx.post(f"{s.url}{CHAT}", content=b"{nope")
    httpx.post(f"{s.url}{CHAT}", json={**body(2), "model": "gpt-9"})
    httpx.post(f"{s.url}{CHAT}", json=body(2), headers={"Authorization": "Bearer ws-gone"})
    text = httpx.get(f"{s.url}/metrics").text
    assert re.search(r'wattserve_rejected_total\{reason="invalid_json",status="400"\} \d', text)
    assert re.search(r'wattserve_rejected_total\{reason="model_not_found",status="404"\}', text)


# -- durability ------------------------------------------------------------------------------


def test_every_response_received_in_full_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    with gateway(tmp_path, FLEET) as s:
        ids = []
        for i in range(6):
            if i % 2:
                ids.append(httpx.post(f"{s.url}{CHAT}", json=body(4), timeout=60).json()["id"])
                continue
            with httpx.stream("POST", f"{s.url}{CHAT}", json=body(4, stream=True), timeout=60) as r:
                lines = list(r.iter_lines())
            assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
            ids.append(json.loads(next(x for x in lines if x.startswith("data: {"))[6:])["id"])
        s.kill()  # at once after the last byte of the last answer
    # the records are in SQLite or in the gateway's journal, which the next open replays
    Ledger(db).close()
    rows = dict(sqlite3.connect(db).execute("SELECT id, status FROM requests").fetchall())
    assert all(rows.get(i) == "ok" for i in ids), (ids, rows)
    assert not list(journal_dir(str(db)).iterdir())  # replayed, then deleted


# -- fuzz: headers, encodings, admin and request bodies --------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
header_bytes = st.binary(max_size=24).map(
    lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F).strip()
)
headers = st.lists(
    st.tuples(
        st.sampled_from(
            [b"Authorization", b"x-wattserve-site", b"x-wattserve-data-local", b"Content-Type"]
        ),
        header_bytes | st.sampled_from([b"Bearer ", b"Bearer ws-x", b"dc", b"true"]),
    ),
    max_size=3,
)
few_tokens = st.integers(-2, 4) | json_values.filter(  # no long generations: a fast test
    lambda v: not isinstance(v, int) or isinstance(v, bool) or v <= 4
)
chat_bodies = st.fixed_dictionaries(
    {
        "model": st.just(MODEL),
        "messages": st.just([{"role": "user", "content": "hi"}]) | json_values,
        "max_tokens": few_tokens,
    },
    optional={
        "n": json_values,
        "stream": json_values,
        "stream_options": json_values,
        "temperature": json_values,
        "stop": json_values,
        "prompt": json_values,
    },
)
admin_bodies = st.fixed_dictionaries(
    {"action": st.sampled_from(["drain", "undrain", "set_cap", "boom"]) | json_values},
    optional={
        "target": st.sampled_from(["g", "x"]) | json_values,
        "site": st.sampled_from(["dc", "x"]) | json_values,
        "power_cap_w": st.floats(-10, 1e6) | json_values,
    },
)
encodings = st.sampled_from([None, b"gzip", b"deflate", b"br", b"gzip-broken", b"\xff"])


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from([CHAT, "/v1/completions", "/v1/fleet", "/metrics", "/v1/nope"]),
    hdrs=headers,
    encoding=encodings,
    payload=chat_bodies | admin_bodies | json_values,
    garbage=st.booleans(),
    as_admin=st.booleans(),
)
def test_fuzz_no_5xx_and_openai_errors(
    open_gw: tuple[Server, str],
    path: str,
    hdrs: list[tuple[bytes, bytes]],
    encoding: bytes | None,
    payload: object,
    garbage: bool,
    as_admin: bool,
) -> None:
    s, admin = open_gw
    if path == "/v1/fleet" and isinstance(payload, dict) and payload.get("action") == "drain":
        payload = {**payload, "action": "undrain"}  # keep the one target in service
    data = b"\x00\xff{" if garbage else json.dumps(payload).encode()
    if as_admin:
        hdrs = [(b"Authorization", f"Bearer {admin}".encode()), *hdrs]
    if encoding is not None:
        hdrs = [*hdrs, (b"Content-Encoding", encoding.replace(b"-broken", b""))]
        if encoding == b"gzip":
            data = gzip.compress(data)
        elif encoding == b"deflate":
            data = zlib.compress(data)
    method = "GET" if path == "/metrics" else "POST"
    status, got, raw = raw_request(s.port, method, path, hdrs, data)
    assert status < 500, raw
    if status >= 400 and not got.get("content-type", "").startswith("application/json"):
        assert status == 400 and b"header" in raw.lower(), raw  # not HTTP: aiohttp's parser
    elif status >= 400:
        assert is_openai_error(raw), raw


def test_zz_nothing_above_was_an_internal_error(open_gw: tuple[Server, str]) -> None:
    """Runs last in this module: the shared gateway's log holds no 500 and no traceback."""
    s, _ = open_gw
    log = (s.db.parent / "open.log").read_text()
    assert "internal error" not in log and "Traceback" not in log


def test_a_request_that_would_queue_too_long_gets_a_503(tmp_path: Path) -> None:
    with gateway(tmp_path, FLEET, "--max-queue", "0.001") as s:
        r = httpx.post(f"{s.url}{CHAT}", json=body(4), timeout=30)
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert r.json()["error"]["code"] == "no_capacity" and "queue" in r.text
