"""Scale-out soak and throughput: N gateway replicas sharing a redis-server on loopback.

    python benchmarks/scale_soak.py soak [SECONDS] [REPLICAS] [CONCURRENCY]
    python benchmarks/scale_soak.py throughput [SECONDS] [CONCURRENCY]
    python benchmarks/scale_soak.py streams [STREAMS]
    python benchmarks/scale_soak.py power [SECONDS] [CONCURRENCY] [HEADROOM_W]

`soak`: two fake OpenAI-compatible backends (wattserve.serve.fake) behind N replicas
(`--state redis://...`), one of them killed and restarted every few seconds; an emulated
deployment at a power-capped site; a key with a dollar budget. Bounded load (CONCURRENCY
clients, round-robin over the replicas) for SECONDS. Prints requests served, errors by kind,
cap violations (the replicas' summed dynamic power over the site's headroom, sampled every
20 ms) and budget violations (the ledger's billed dollars over the budget): both must be 0;
p50/p99 latency; memory (RSS) growth per replica.

`throughput`: non-streaming requests with a budgeted key (every request holds its worst case
against the budget: in a slab of it, or in Redis) against one fake backend: 1 replica with
in-process state, 1 replica with Redis, 3 replicas with in-process state (the same processes
on the same cores, without coordination), 3 replicas with Redis. Prints req/s and p50/p99 per
setup; with one client, the p50 through the gateway and its overhead (less the p50 of the
same client sent to the fake backend directly); the CPU time per request of the gateways and
of Redis (from /proc: steady where the VM's speed is not); and what 3 replicas with Redis lose
against 1 replica and against 3 without Redis.
`streams`: STREAMS (default 1,000) concurrent streaming requests through one replica (with
Redis state and a budgeted key) to the fake backend: each must complete or get a clear 429/503
within 120 s (none may hang); prints the outcomes and the replica's RSS before, at the end and
after 5 s of rest.
`power`: 3 replicas with Redis in front of an emulated deployment (2 x H100, llama-3.2-1b) at a
site whose cap leaves HEADROOM_W (default 650 W; one request's decode adds about 190 W to an
idle H100 under the power curve of 2026-12-04, a 128-token prefill 345 W; 290 W and 128 W under
earlier curves, docs/model.md) above the devices' idle draw:
CONCURRENCY clients on one replica for SECONDS, then spread over all three. Prints per phase
the answers by kind, req/s, p50, the peak summed dynamic draw and (where the tree keeps power
leases) the peak sum of the leases in Redis, both against the headroom (violations must be 0).
Needs redis-server on PATH. Everything runs on this machine: figures are loopback figures.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import redis
from gateway_overhead import cpu_s, wait_up  # this directory: on sys.path when run as a script

from wattserve.serve.ledger import Ledger
from wattserve.serve.net import free_port

PY = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
BUDGET_USD = 0.5
CAP_W = 1300.0  # 210 W idle (2 x H100) and about 5.7 requests' decode (190 W each)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def start_redis(procs: list[subprocess.Popen[bytes]]) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    procs.append(
        subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
    )
    time.sleep(0.3)
    return f"redis://127.0.0.1:{port}/0"


def start_fake(port: int) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        [PY, "-m", "wattserve.serve.fake", "--port", str(port)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_up(f"http://127.0.0.1:{port}/v1/models", p, seconds=60)
    return p


def start_gateway(
    procs: list[subprocess.Popen[bytes]], fleet: Path, db: Path, state: str | None, tmp: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [PY, "-m", "wattserve", "serve", "--fleet", str(fleet), "--port", str(port)]
    args += ["--db", str(db), "--policy", "least_loaded", "--max-wait", "1"]
    if state:
        args += ["--state", state]
    log = open(tmp / f"gw-{port}.log", "wb")  # noqa: SIM115 - lives as long as the process
    p = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=log)
    procs.append(p)
    url = f"http://127.0.0.1:{port}"
    wait_up(f"{url}/health", p, seconds=60)
    return p, url


async def drive(
    urls: list[str], seconds: float, concurrency: int, key: str, bodies: list[dict[str, object]]
) -> tuple[list[float], collections.Counter[str]]:
    latencies: list[float] = []
    kinds: collections.Counter[str] = collections.Counter()
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < deadline:
                url = urls[i % len(urls)]
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    async with session.post(
                        f"{url}/v1/chat/completions",
                        json=body,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=30),
                    ) as r:
                        data = await r.read()
                        if r.status == 200:
                            kinds["ok"] += 1
                        else:
                            code = data.decode(errors="replace").split('"code":"')[-1][:24]
                            kinds[f"{r.status} {code.split(chr(34))[0]}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    kinds[f"client {exc.__class__.__name__}"] += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies, kinds


def soak(seconds: float, n: int, concurrency: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wattserve-soak-"))
    db = tmp / "ledger.db"
    key = Ledger(db).create_key("soak", budget_usd=BUDGET_USD)
    fports = [free_port(), free_port()]
    with processes() as procs:
        redis_url = start_redis(procs)
        fakes = [start_fake(p) for p in fports]
        fleet = tmp / "fleet.yaml"
        urls_yaml = ", ".join(f'"http://127.0.0.1:{p}/v1"' for p in fports)
        fleet.write_text(
            f"""sites:
  dc: {{kind: datacenter}}
  capped: {{kind: datacenter, power_cap_w: {CAP_W:g}}}
  acme: {{kind: cloud}}
deployments:
  fakes:
    site: dc
    model: llama-3.2-1b
    hardware: h100-sxm
    backend: {{kind: openai, urls: [{urls_yaml}], model_name: fake, timeout_s: 5}}
  emulated: {{site: capped, model: smollm2-135m, hardware: h100-sxm, replicas: 2}}
providers:
  acme:
    site: acme
    model: acme-large
    usd_per_mtok_input: 100
    usd_per_mtok_output: 100
    backend: {{kind: openai, url: "http://127.0.0.1:{fports[0]}/v1", timeout_s: 5}}
"""
        )
        gws = [start_gateway(procs, fleet, db, redis_url, tmp) for _ in range(n)]
        urls = [u for _, u in gws]
        time.sleep(1.5)  # every replica has counted the others
        idle = [httpx.get(f"{u}/v1/fleet").json()["sites"]["capped"]["power_w"] for u in urls]
        rss0 = [rss_kb(p.pid) for p, _ in gws]
        stop = threading.Event()
        peak = [0.0]

        def watch() -> None:
            with httpx.Client() as c:
                while not stop.is_set():
                    with contextlib.suppress(httpx.HTTPError):
                        sites = [c.get(f"{u}/v1/fleet").json()["sites"]["capped"] for u in urls]
                        dyn = sum(s["power_w"] - i for s, i in zip(sites, idle, strict=True))
                        peak[0] = max(peak[0], dyn)
                    time.sleep(0.02)

        def chaos() -> None:  # one fake backend dies and comes back, again and again
            while not stop.wait(3.0):
                fakes[1].kill()
                fakes[1].wait()
                if stop.wait(2.0):
                    break
                fakes[1] = start_fake(fports[1])

        threads = [threading.Thread(target=watch), threading.Thread(target=chaos)]
        for t in threads:
            t.start()
        msg = [{"role": "user", "content": "hello"}]
        bodies: list[dict[str, object]] = [
            {"model": "llama-3.2-1b", "max_tokens": 4, "messages": msg},
            {"model": "acme-large", "max_tokens": 4, "messages": msg},
            {"model": "smollm2-135m", "max_tokens": 16, "messages": msg},
            {"model": "llama-3.2-1b", "max_tokens": 4, "messages": msg, "stream": True},
        ]
        lat, kinds = asyncio.run(drive(urls, seconds, concurrency, key, bodies))
        stop.set()
        for t in threads:
            t.join()
        rss1 = [rss_kb(p.pid) for p, _ in gws]
        if fakes[1].poll() is None:
            fakes[1].terminate()
        fakes[0].terminate()
    with sqlite3.connect(db) as conn:
        billed, rows = conn.execute(
            "SELECT COALESCE(SUM(billed_usd), 0), COUNT(*) FROM requests"
        ).fetchone()
    a = np.asarray(lat) * 1e3
    print(
        f"soak: {n} replicas, {concurrency} clients, {seconds:g} s, one of 2 fakes killed every 5 s"
    )
    print(f"  requests {len(a)}  served {kinds['ok']}  ledger rows {rows}")
    print(
        "  errors by kind: "
        + (", ".join(f"{k}: {v}" for k, v in kinds.items() if k != "ok") or "none")
    )
    headroom = CAP_W - idle[0]
    over_cap = int(peak[0] > headroom + 1e-6)
    print(f"  cap violations: {over_cap} (peak dynamic {peak[0]:.1f} W of {headroom:.1f} W)")
    over_budget = int(billed > BUDGET_USD + 1e-9)
    print(f"  budget violations: {over_budget} (billed ${billed:.4f} of ${BUDGET_USD})")
    print(f"  latency p50 {np.percentile(a, 50):.1f} ms  p99 {np.percentile(a, 99):.1f} ms")
    print(
        "  RSS growth per replica: "
        + ", ".join(f"{(b - s) / 1024:+.1f} MiB" for s, b in zip(rss0, rss1, strict=True))
    )


def throughput(seconds: float, concurrency: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wattserve-tput-"))
    fport = free_port()
    msg = [{"role": "user", "content": "hello"}]
    body: dict[str, object] = {"model": "llama-3.2-1b", "max_tokens": 2, "messages": msg}
    with processes() as procs:
        redis_url = start_redis(procs)
        procs.append(start_fake(fport))
        fleet = tmp / "fleet.yaml"
        fleet.write_text(
            f"""sites:
  dc: {{kind: datacenter}}
deployments:
  fake:
    site: dc
    model: llama-3.2-1b
    hardware: h100-sxm
    backend: {{kind: openai, url: "http://127.0.0.1:{fport}/v1", model_name: fake}}
"""
        )
        served: dict[str, float] = {}
        fake_url = f"http://127.0.0.1:{fport}"
        asyncio.run(drive([fake_url], 1.0, 1, "-", [body]))  # warm up
        direct, _ = asyncio.run(drive([fake_url], seconds / 2, 1, "-", [body]))
        direct_ms = float(np.percentile(direct, 50)) * 1e3
        print(f"the fake backend directly, one client: p50 {direct_ms:.2f} ms")
        for label, state, n in (
            ("1 replica, local", None, 1),
            ("1 replica, redis", redis_url, 1),
            ("3 replicas, local", None, 3),  # the same processes without coordination
            ("3 replicas, redis", redis_url, 3),
        ):
            db = tmp / f"{label.replace(' ', '').replace(',', '-')}.db"
            key = Ledger(db).create_key("bench", budget_usd=1e6)
            gws = [start_gateway(procs, fleet, db, state, tmp) for _ in range(n)]
            urls = [u for _, u in gws]
            time.sleep(1.5)
            asyncio.run(drive(urls, 1.0, concurrency, key, [body]))  # warm up
            lat1, _ = asyncio.run(drive(urls[:1], seconds / 2, 1, key, [body]))
            pids = [p.pid for p, _ in gws]
            cpu0 = [cpu_s(pid) for pid in (*pids, procs[0].pid)]
            lat, kinds = asyncio.run(drive(urls, seconds, concurrency, key, [body]))
            cpu1 = [cpu_s(pid) for pid in (*pids, procs[0].pid)]
            per_req = [(b - a) / max(1, kinds["ok"]) * 1e6 for a, b in zip(cpu0, cpu1, strict=True)]
            a, one = np.asarray(lat) * 1e3, np.asarray(lat1) * 1e3
            errors = sum(v for k, v in kinds.items() if k != "ok")
            p50, p99 = np.percentile(a, [50, 99])
            print(
                f"{label:20} {kinds['ok'] / seconds:7.0f} req/s (c={concurrency})  p50 {p50:6.2f}"
                f" ms  p99 {p99:6.2f} ms   one client: p50 {np.percentile(one, 50):5.2f} ms"
                f" (overhead {np.percentile(one, 50) - direct_ms:4.2f})"
                f"   errors {errors}   CPU/request: gateways {sum(per_req[:-1]):4.0f} us,"
                f" Redis {per_req[-1]:3.0f} us"
            )
            served[label] = kinds["ok"] / seconds
            for p, _ in gws:
                p.send_signal(signal.SIGTERM)
                p.wait(20)
        one, three = served["1 replica, redis"], served["3 replicas, redis"]
        print(
            f"3 replicas with Redis: {three / one - 1:+.0%} against 1 replica with Redis, "
            f"{three / served['3 replicas, local'] - 1:+.0%} against 3 replicas with local "
            "state (what coordination costs)"
        )


def streams(count: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wattserve-streams-"))
    fport = free_port()
    body = {
        "model": "llama-3.2-1b",
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }
    with processes() as procs:
        redis_url = start_redis(procs)
        procs.append(start_fake(fport))
        fleet = tmp / "fleet.yaml"
        fleet.write_text(
            f"""sites:
  dc: {{kind: datacenter}}
deployments:
  fake:
    site: dc
    model: llama-3.2-1b
    hardware: h100-sxm
    backend: {{kind: openai, url: "http://127.0.0.1:{fport}/v1", model_name: fake}}
"""
        )
        db = tmp / "ledger.db"
        key = Ledger(db).create_key("bench", budget_usd=1e6)
        proc, url = start_gateway(procs, fleet, db, redis_url, tmp)
        rss0 = rss_kb(proc.pid)

        async def run() -> tuple[collections.Counter[str], float]:
            kinds: collections.Counter[str] = collections.Counter()
            headers = {"Authorization": f"Bearer {key}"}
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as session:

                async def one() -> None:
                    try:
                        async with session.post(
                            f"{url}/v1/chat/completions",
                            json=body,
                            headers=headers,
                            timeout=aiohttp.ClientTimeout(total=120),
                        ) as r:
                            data = await r.read()
                            done = r.status == 200 and b"[DONE]" in data
                            kinds["completed" if done else f"status {r.status}"] += 1
                    except TimeoutError:
                        kinds["hung (no answer in 120 s)"] += 1
                    except aiohttp.ClientError as exc:
                        kinds[f"client {exc.__class__.__name__}"] += 1

                t0 = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(count)))
                return kinds, time.perf_counter() - t0

        print(f"streams: {count} at once through one replica (Redis state), three rounds")
        print(f"  RSS at start {rss0 / 1024:.1f} MiB")
        for round_ in range(3):  # a leak grows every round; the allocator's arenas do not
            kinds, took = asyncio.run(run())
            time.sleep(2)
            print(
                f"  round {round_ + 1}: {took:.1f} s, "
                + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
                + f"; RSS 2 s later {rss_kb(proc.pid) / 1024:.1f} MiB"
            )


def watch_power(
    urls: list[str], r: redis.Redis, idle_w: float, stop: threading.Event, peak: list[float]
) -> None:
    """Until `stop`: the peak summed dynamic draw of site `dc` over the replicas (peak[0]) and
    the peak sum of their leases in Redis (peak[1]), sampled every 20 ms."""
    with httpx.Client() as c:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                sites = [c.get(f"{u}/v1/fleet").json()["sites"]["dc"] for u in urls]
                peak[0] = max(peak[0], sum(x["power_w"] - idle_w for x in sites))
                held: dict[bytes, bytes] = r.hgetall("ws:lease:dc")  # type: ignore[assignment]
                peak[1] = max(peak[1], sum(float(v.split()[0]) for v in held.values()))
            time.sleep(0.02)


def power(seconds: float, concurrency: int, headroom_w: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wattserve-power-"))
    db = tmp / "ledger.db"
    key = Ledger(db).create_key("power")  # no budget: only power is shared here
    idle_w = 210.0
    fleet = tmp / "fleet.yaml"
    fleet.write_text(
        f"""sites:
  dc: {{kind: datacenter, power_cap_w: {idle_w + headroom_w:g}}}
deployments:
  gpus: {{site: dc, model: llama-3.2-1b, hardware: h100-sxm, replicas: 2}}
"""
    )
    msg = [{"role": "user", "content": "hello " * 50}]
    body: dict[str, object] = {"model": "llama-3.2-1b", "max_tokens": 48, "messages": msg}
    with processes() as procs:
        redis_url = start_redis(procs)
        r = redis.Redis.from_url(redis_url)
        urls = [start_gateway(procs, fleet, db, redis_url, tmp)[1] for _ in range(3)]
        time.sleep(1.5)  # every replica has counted the others
        for label, targets in (("one replica busy", urls[:1]), ("all three busy", urls)):
            stop = threading.Event()
            peak = [0.0, 0.0]  # summed dynamic draw, summed leases
            watcher = threading.Thread(target=watch_power, args=(urls, r, idle_w, stop, peak))
            watcher.start()
            lat, kinds = asyncio.run(drive(targets, seconds, concurrency, key, [body]))
            stop.set()
            watcher.join()
            a = np.asarray(lat) * 1e3
            print(
                f"{label:17} {kinds['ok'] / seconds:6.1f} req/s  p50 {np.percentile(a, 50):7.1f} ms"
                "  answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
            )
            over = int(peak[0] > headroom_w + 1e-6) + int(peak[1] > headroom_w + 1e-3)
            leases = f"{peak[1]:.1f} W" if peak[1] else "none (no leases in this tree)"
            print(
                f"{'':17} peak draw {peak[0]:.1f} W, peak leases {leases}, of {headroom_w:g} W;"
                f" violations {over}"
            )
            time.sleep(2.0)  # the replicas go idle between phases


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "soak"
    nums = [float(x) for x in sys.argv[2:]]
    if mode == "soak":
        soak(
            nums[0] if nums else 20.0,
            int(nums[1]) if len(nums) > 1 else 3,
            int(nums[2]) if len(nums) > 2 else 32,
        )
    elif mode == "streams":
        streams(int(nums[0]) if nums else 1000)
    elif mode == "throughput":
        throughput(nums[0] if nums else 5.0, int(nums[1]) if len(nums) > 1 else 16)
    elif mode == "power":
        power(
            nums[0] if nums else 10.0,
            int(nums[1]) if len(nums) > 1 else 16,
            nums[2] if len(nums) > 2 else 650.0,
        )
    else:
        sys.exit("usage: scale_soak.py soak|throughput|streams|power [SECONDS|STREAMS] ...")


if __name__ == "__main__":
    main()
