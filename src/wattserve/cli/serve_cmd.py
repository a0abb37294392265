"""`wattserve serve`, `wattserve usage`, `wattserve keys`."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import socket
import tempfile
import unicodedata
from pathlib import Path
from typing import Annotated

import typer

from wattserve.cli.common import print_json, reports_errors
from wattserve.core.admission import MIN_MAX_QUEUE_S
from wattserve.core.fleet import load_fleet
from wattserve.core.policy import make_policy
from wattserve.errors import ConfigError, printable
from wattserve.serve.guard import MAX_IN_FLIGHT
from wattserve.serve.schema import DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT

keys_app = typer.Typer(help="API keys: create (shown once, stored hashed), list, revoke.")
DbOption = Annotated[Path, typer.Option(help="The ledger (SQLite).")]
DEFAULT_DB = Path("wattserve-ledger.db")


@reports_errors
def serve_cmd(
    fleet: Annotated[
        Path | None, typer.Option(help="Fleet file (default: the built-in demo).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port.")] = 8000,
    policy: Annotated[str, typer.Option(help="Routing policy, as for simulate.")] = "cost",
    db: DbOption = DEFAULT_DB,
    require_keys: Annotated[
        bool,
        typer.Option(
            help="Refuse requests without a valid key, and /metrics and /v1/fleet without a "
            "metrics or admin key. Fixed for the gateway's life: creating or revoking keys "
            "never changes it."
        ),
    ] = False,
    no_governor: Annotated[
        bool, typer.Option("--no-governor", help="Do not enforce power caps.")
    ] = False,
    max_wait: Annotated[
        float, typer.Option(help="Longest a request waits for power, or a link that is down, s.")
    ] = 5.0,
    backlog: Annotated[
        int, typer.Option(min=1, help="Listen backlog: connections the kernel queues.")
    ] = 2048,
    max_queue: Annotated[
        float,
        typer.Option(
            min=MIN_MAX_QUEUE_S,
            help="Refuse (503) a request whose first token is predicted to take longer, s.",
        ),
    ] = 30.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Longest a client may take to send its body, s; also to send its headers (at "
            "least 1 s), and how long an idle keep-alive connection stays open.",
        ),
    ] = 30.0,
    send_timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="Longest a stream's client may take none of its data, s: then its connection "
            "is dropped and the request ends as a client that left (nginx's send_timeout).",
        ),
    ] = 60.0,
    slos: Annotated[
        Path | None,
        typer.Option(
            help="A workload file whose slos: block names the SLO classes requests may ask for "
            "in x-wattserve-slo, as simulate reads them (default: the default class only, "
            "whatever a request names)."
        ),
    ] = None,
    max_in_flight: Annotated[
        int,
        typer.Option(
            min=1,
            help="Requests served at once; more are answered 503 with Retry-After (each holds "
            "a connection, its body and its stream's buffers).",
        ),
    ] = MAX_IN_FLIGHT,
    default_max_tokens: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_TOKENS_LIMIT,
            help="Output tokens a request that sets no max_tokens (or max_completion_tokens) "
            "is held to and sent with, within what its model's context window leaves; its "
            "budget hold is priced for this many.",
        ),
    ] = DEFAULT_MAX_TOKENS,
    state: Annotated[
        str | None,
        typer.Option(
            help="Share budgets, rate limits, health and overrides with other replicas: "
            "redis://HOST:PORT or redis://HOST:PORT/DB (docs/scale-out.md). Default: this process "
            "only."
        ),
    ] = None,
    state_ttl: Annotated[
        float,
        typer.Option(
            min=0.5, help="Seconds after which a silent replica's reservations are released."
        ),
    ] = 10.0,
) -> None:
    """Run the OpenAI-compatible gateway."""
    from aiohttp import web

    from wattserve.core.governor import cap_blocks, check_max_wait
    from wattserve.core.targets import EnginePool
    from wattserve.core.workload import load_slos
    from wattserve.serve.app import Gateway
    from wattserve.serve.demo import demo_fleet_yaml
    from wattserve.serve.guard import ParserNoise, check_parser
    from wattserve.serve.ledger import Ledger
    from wattserve.serve.router import Router
    from wattserve.serve.targets import UpstreamTarget

    check_parser()
    check_max_wait(max_wait)
    for name, value in (
        ("--max-queue", max_queue),
        ("--body-timeout", body_timeout),
        ("--send-timeout", send_timeout),
    ):
        if not value >= 0:  # typer's min= lets NaN through
            raise ConfigError(f"must be a number of seconds, not negative, got {value}", field=name)
    if fleet is None:
        folder = Path(tempfile.mkdtemp(prefix="wattserve-demo-"))
        fleet = folder / "demo-fleet.yaml"
        fleet.write_text(demo_fleet_yaml(folder), encoding="utf-8")
    f = load_fleet(fleet)
    shared = None
    if state is not None:
        from wattserve.serve.state import SharedState

        asyncio.run(SharedState(state).probe())  # a wrong or unreachable URL stops here
        shared = SharedState(state, heartbeat_ttl_s=state_ttl)
    classes = None if slos is None else load_slos(slos)
    router = Router(
        f,
        make_policy(policy),
        enforce_caps=not no_governor,
        max_wait_s=max_wait,
        slos=classes,
    )
    # the check simulate reports as its sites' cap_note: a cap no request can start under.
    # Taken before the Gateway attaches the shared state, which sets each capped site's local
    # cap to idle + this replica's lease (none yet): every replica warned of its idle draw
    pools = [t for t in router.targets.values() if isinstance(t, EnginePool | UpstreamTarget)]
    blocked = cap_blocks(router.gov, pools)
    ledger = Ledger(db)
    gateway = Gateway(
        router,
        ledger,
        require_keys=require_keys,
        body_timeout_s=body_timeout,
        send_timeout_s=send_timeout,
        max_queue_s=max_queue,
        state=shared,
        max_in_flight=max_in_flight,
        default_max_tokens=default_max_tokens,
    )
    model = router.models[0]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("aiohttp.server").addFilter(ParserNoise())
    if not require_keys and (live := ledger.live_keys()):
        typer.echo(
            f"wattserve: {live} key(s) in {db} but --require-keys is off: requests without a "
            "key are served with no budget (revoked keys are refused)"
        )
    typer.echo(
        f"wattserve: fleet '{f.name}' ({len(router.backends)} backends, models: "
        f"{', '.join(router.models)}), policy {policy}, ledger {db}"
        + (f", shared state {state}" if state else "")
    )
    for site, why in blocked.items():
        typer.echo(
            f"wattserve: WARNING: at {site}, {why}: requests for it will wait --max-wait and get "
            "429; raise the site's power_cap_w (fleet file, or the admin API's set_cap)",
            err=True,
        )
    sock = None
    if port == 0:  # the kernel picks the port: bound here, so that the port shown is the one
        try:  # (aiohttp's own line, and this one, said port 0)
            sock = _bind_any_port(host, backlog)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:0: {exc.strerror or exc}", field="--host/--port"
            ) from None
        port = sock.getsockname()[1]
    auth = ' -H "Authorization: Bearer $KEY"' if require_keys else ""  # a key: keys create
    try_it = (
        f"try: curl http://{host}:{port}/v1/chat/completions{auth} -H 'Content-Type: "
        f'application/json\' -d \'{{"model": "{model}", "messages": [{{"role": '
        f'"user", "content": "Hello"}}], "max_tokens": 16}}\''
    )
    if importlib.util.find_spec("uvloop") is not None:  # a faster event loop, when installed
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        web.run_app(
            gateway.app(),
            host=None if sock else host,
            port=None if sock else port,
            sock=sock,
            print=lambda _started: typer.echo(try_it),  # once listening, not before
            shutdown_timeout=30,
            access_log=None,
            backlog=backlog,
            handler_cancellation=True,  # a client that leaves cancels its request's work
            # aiohttp has no timeout for a request's headers; its keep-alive timer, armed when
            # a connection opens and after each response, closes a connection still without a
            # whole request head: a client trickling its headers is dropped then, not at 75 s
            keepalive_timeout=max(1.0, body_timeout),
        )
    except OSError as exc:  # binding: a port in use, an address not on this machine
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", field="--host/--port"
        ) from None


def _bind_any_port(host: str, backlog: int) -> socket.socket:
    """A listening socket on `host` at a port the kernel picks (serve --port 0): every
    interface for "" (IPv6 and IPv4 where the system has both), else the first address `host`
    resolves to (one port cannot be picked for several sockets at once)."""
    if not host:
        both = socket.has_dualstack_ipv6()
        family = socket.AF_INET6 if both else socket.AF_INET
        return socket.create_server(("", 0), family=family, backlog=backlog, dualstack_ipv6=both)
    family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, 0), family=family, backlog=backlog)


@reports_errors
def usage_cmd(
    db: DbOption = DEFAULT_DB,
    by: Annotated[str, typer.Option(help="key, model, site, backend or day.")] = "model",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Summarise the ledger: requests, tokens, joules and dollars per key, model, site, backend
    or day (`usd` what serving cost, `billed usd` what keys were charged)."""
    from wattserve.serve.ledger import Ledger

    if by not in ("key", "model", "site", "backend", "day"):
        raise typer.BadParameter("use key, model, site, backend or day", param_hint="--by")
    if not db.exists():
        raise typer.BadParameter(f"no ledger at {db}", param_hint="--db")
    rows = Ledger(db, create=False).usage(by)
    if json_out:
        print_json(rows)
        return
    typer.echo(
        f"{by:24} {'requests':>9} {'ok':>7} {'in tok':>10} {'out tok':>10} "
        f"{'energy J':>11} {'usd':>10} {'billed usd':>11} {'mean TTFT s':>11}"
    )
    partial = guessed = False
    for r in rows:
        ttft = "-" if r["mean_ttft_s"] is None else f"{r['mean_ttft_s']:.3f}"
        billed = "-" if r["billed_usd"] is None else f"{r['billed_usd']:.6f}"  # no key billed
        energy = _known_sum(r["energy_j"], r["energy_unknown_requests"], ".2f")
        usd = _known_sum(r["usd"], r["usd_unknown_requests"], ".6f")
        partial = partial or energy.endswith("+?") or usd.endswith("+?")
        tokens_in = f"{r['prompt_tokens']}" + ("~" if r["prompt_tokens_estimated_requests"] else "")
        tokens_out = f"{r['completion_tokens']}" + (
            "~" if r["completion_tokens_estimated_requests"] else ""
        )
        guessed = guessed or "~" in tokens_in + tokens_out
        typer.echo(
            f"{printable(str(r['group'])):24} {r['requests']:>9} {r['ok'] or 0:>7} "
            f"{tokens_in:>10} {tokens_out:>10} "
            f"{energy:>11} {usd:>10} {billed:>11} {ttft:>11}"
        )
    if guessed:
        typer.echo(
            "~: some counts of the group are the gateway's guess, not a tokenizer's (a prompt at "
            "about 4 characters a token, an output in a server's chunks; --json: "
            "prompt_tokens_estimated_requests, completion_tokens_estimated_requests)"
        )
    if partial:
        typer.echo(
            "+?: some requests of the group have no figure (a backend that reports none); "
            "the sum counts the others (--json: energy_unknown_requests, usd_unknown_requests)"
        )


def _known_sum(total: float | None, unknown: int | None, fmt: str) -> str:
    """A column's sum as the usage table shows it: 'unknown' with no figure at all, '+?'
    after a sum that leaves requests without one out."""
    if total is None:
        return "unknown" if unknown else "-"
    return f"{total:{fmt}}" + ("+?" if unknown else "")


@keys_app.command("create")
@reports_errors
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    db: DbOption = DEFAULT_DB,
    admin: Annotated[bool, typer.Option(help="May change the fleet at run time.")] = False,
    budget_usd: Annotated[float | None, typer.Option(help="Dollar budget.")] = None,
    budget_j: Annotated[float | None, typer.Option(help="Energy budget, joules.")] = None,
    rps: Annotated[float | None, typer.Option(help="Requests per second limit.")] = None,
    metrics: Annotated[
        bool, typer.Option(help="May read /metrics and /v1/fleet when keys are required.")
    ] = False,
) -> None:
    """Create a key and print it (only this once)."""
    from wattserve.serve.ledger import Ledger

    for flag, value, low in (("--budget-usd", budget_usd, 0.0), ("--budget-j", budget_j, 0.0)):
        if value is not None and not low <= value < math.inf:  # NaN too
            raise ConfigError(f"must be a finite number, not negative, got {value}", field=flag)
    if rps is not None and not 0 < rps < math.inf:
        raise ConfigError(f"must be a positive finite number, got {rps}", field="--rps")

    # one spelling of a name: a composed and a decomposed é were two keys of one name
    name = unicodedata.normalize("NFC", name)
    if (problem := _name_problem(name)) is not None:
        raise ConfigError(problem, field="name")
    ledger = Ledger(db)
    # `usage --by key` groups by name: two live keys of one name would be summed as one
    key = ledger.create_key(
        name,
        admin=admin,
        budget_usd=budget_usd,
        budget_j=budget_j,
        rps=rps,
        metrics=metrics,
        unique_name=True,
    )
    typer.echo(key)


KEY_NAME_CHARS = 128
# letters that print as blank space though Unicode does not call them spaces: the Braille
# blank and the Hangul fillers (a name of them alone looked empty in `usage --by key`)
BLANK_LETTERS = dict.fromkeys(map(ord, "\u2800\u3164\u115f\u1160\uffa0"), " ")


def _name_problem(name: str) -> str | None:
    """Why a key's name cannot be taken, or None. It is a column of `usage --by key` and of
    the gateway's refusals: a name with a line break or a terminal's escape code forged rows
    of that table, an empty one left its row blank."""
    shown = name.translate(BLANK_LETTERS)
    if not shown.strip():
        return "a key needs a name: who or what it is for"
    if shown != shown.strip():  # 'alice ' beside 'alice': two keys that read as one
        return "no space at the start or end of a name"
    if len(name) > KEY_NAME_CHARS:
        return f"at most {KEY_NAME_CHARS} characters, got {len(name)}"
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:  # control and format characters: line breaks, escapes, bidi overrides
        return f"no control or format characters, got U+{ord(bad):04X} at {name.index(bad)}"
    return None


@keys_app.command("list")
@reports_errors
def keys_list(db: DbOption = DEFAULT_DB) -> None:
    """Keys with their budgets and spend (never the keys themselves)."""
    from wattserve.serve.ledger import Ledger

    print_json(Ledger(db, create=False).list_keys())


@keys_app.command("revoke")
@reports_errors
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id.")], db: DbOption = DEFAULT_DB
) -> None:
    """Revoke a key by id."""
    from wattserve.serve.ledger import Ledger

    ledger = Ledger(db, create=False)
    if not ledger.revoke(key_id):
        # a name given for the id: say which id it has (`keys list` shows both)
        named = [k["id"] for k in ledger.list_keys() if k["name"] == key_id and not k["revoked"]]
        hint = f"; {key_id!r:.100} is the name of key {named[0]}" if named else ""
        raise ConfigError(
            f"no key with id {key_id!r:.100}{hint} (`wattserve keys list` shows ids)",
            field="KEY_ID",
        )
    typer.echo(f"revoked {printable(key_id)}")
