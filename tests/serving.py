"""Helpers for the serve tests: real gateway processes on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
from aiohttp import web

from wattserve.core.fleet import load_fleet
from wattserve.core.records import RequestRecord
from wattserve.core.workload import load_workload
from wattserve.serve.net import free_port
from wattserve.simulate import simulate

FAST_FLEET = """\
name: test
sites:
  dc: {kind: datacenter, power_cap_w: 5000}
  edge: {kind: edge}
deployments:
  fast:
    site: dc
    model: llama-3.2-1b
    hardware: h100-sxm
    replicas: 2
  edge-small:
    site: edge
    model: llama-3.2-1b
    hardware: jetson-agx-orin-64gb
    dtype: int8
    kv_dtype: fp16
"""


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, db: Path) -> None:
        self.proc, self.port, self.db = proc, port, db
        self.url = f"http://127.0.0.1:{port}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@contextlib.contextmanager
def gateway(tmp: Path, fleet_yaml: str, *args: str, name: str = "gw") -> Iterator[Server]:
    fleet = tmp / f"{name}-fleet.yaml"
    fleet.write_text(fleet_yaml)
    port = free_port()
    db = tmp / f"{name}.db"
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattserve",
            "serve",
            "--fleet",
            str(fleet),
            "--port",
            str(port),
            "--db",
            str(db),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = Server(proc, port, db)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / f"{name}.log").read_text())
            time.sleep(0.1)
        try:
            yield server
        except BaseException:  # what the gateway logged shows in the failed test's report
            log.flush()
            tail = (tmp / f"{name}.log").read_text(errors="replace").splitlines()[-40:]
            print(f"--- the last lines of gateway {name}'s log ---", *tail, sep="\n")
            raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def raw_request(
    port: int,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    timeout_s: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request written byte for byte (header values need not be UTF-8, which
    HTTP client libraries refuse to send): (status, headers, body)."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    head += [name + b": " + value for name, value in headers]
    head.append(f"Content-Length: {len(body)}".encode())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


@contextlib.contextmanager
def fake_upstream() -> Iterator[int]:
    """wattserve's fake OpenAI-compatible server (wattserve.serve.fake) on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattserve.serve.fake", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "the fake did not start"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def upstream_gateway(
    tmp: Path, name: str, upstream: dict[str, str], emulated: dict[str, str] | None = None
) -> Iterator[Server]:
    """A gateway at one site whose `upstream` deployments (name: model) send to one fake
    OpenAI server (fake_upstream) and whose `emulated` ones are emulated H100s."""
    with fake_upstream() as port:
        lines = [
            f"  {n}: {{site: dc, model: {m}, hardware: h100-sxm}}\n"
            for n, m in (emulated or {}).items()
        ] + [
            f"  {n}: {{site: dc, model: {m}, hardware: h100-sxm, "
            f"backend: {{kind: openai, url: 'http://127.0.0.1:{port}/v1'}}}}\n"
            for n, m in upstream.items()
        ]
        fleet = "sites:\n  dc: {kind: datacenter}\ndeployments:\n" + "".join(lines)
        with gateway(tmp, fleet, name=name) as s:
            yield s


def ledger_row(db: Path, rid: str) -> dict[str, Any]:
    """A request's ledger row, once the writer thread has committed it (within 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        con = sqlite3.connect(db)
        con.row_factory = sqlite3.Row
        found = con.execute("SELECT * FROM requests WHERE id = ?", (rid,)).fetchone()
        con.close()
        if found is not None or time.monotonic() > deadline:
            assert found is not None, rid
            return dict(found)
        time.sleep(0.05)


def metric(url: str, name: str, label: str = "") -> float:
    """The gateway's metric `name` summed over its series (those with `label`, e.g.
    'status="ok"', where given)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if (line.startswith(name + " ") or line.startswith(name + "{")) and label in line
    )


def requests_total(url: str, status: str) -> float:
    """The gateway's wattserve_requests_total for `status`, summed over its other labels."""
    return metric(url, "wattserve_requests_total", f'status="{status}"')


def local_fleet(tmp: Path, *lines: str, backend: str = "") -> str:
    """A fleet of the real local model (llama.cpp serving SmolLM2-135M's Q4_1 GGUF, so w4a16)
    at one edge site, on this machine's `local-cpu` entry (written into `tmp`); `lines`: more
    lines of its deployment (`max_num_seqs: 1`), `backend`: more keys of its backend."""
    from wattserve.serve.backends.local import local_cpu_hardware

    hw = local_cpu_hardware(tmp)
    more = "".join(f"    {line}\n" for line in lines)
    keys = f", {backend}" if backend else ""
    return (
        f"hardware_files: [{hw}]\nsites:\n  edge: {{kind: edge}}\ndeployments:\n  smol:\n"
        "    site: edge\n    model: smollm2-135m\n    hardware: local-cpu\n    dtype: w4a16\n"
        f"{more}    backend: {{kind: local-llama{keys}}}\n"
    )


class ThreadedApp:
    """An aiohttp application on a real loopback socket, served from a thread of its own: a
    scripted upstream for a gateway under test, answering on `routes` (aiohttp route defs)."""

    def __init__(self, routes: list[web.RouteDef]) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.route_defs = routes

    def __enter__(self) -> Self:
        app = web.Application()
        app.add_routes(self.route_defs)
        self.runner = web.AppRunner(app, access_log=None)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", self.port)
            self.loop.run_until_complete(site.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10), f"{type(self).__name__} did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def write_trace(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bench(url: str, trace: Path, out: Path) -> dict[str, Any]:
    """`wattserve bench` against the gateway, as a user runs it; its JSON result (it exits 1
    when a request failed, and still writes it)."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "wattserve", "bench", "--url", url),
            *("--trace", str(trace), "--out", str(out), "--no-progress"),
        ],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode in (0, 1) and out.exists(), done.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def simulated(
    tmp: Path, fleet_yaml: str, trace: Path, policy: str, **options: Any
) -> dict[int, RequestRecord]:
    """`simulate --requests-out`'s records of the same fleet, trace and policy, by trace row
    (`options`: simulate's keywords, such as max_queue_s)."""
    fleet_file = tmp / "sim-fleet.yaml"
    fleet_file.write_text(fleet_yaml)
    fleet = load_fleet(fleet_file)
    workload = load_workload(trace, default_model=sorted(fleet.models)[0])
    records: list[RequestRecord] = []
    simulate(fleet, workload, policy, on_request=records.append, **options)
    return {r.row: r for r in records}
