"""`wattserve simulate`."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from wattserve.cli.common import (
    as_flags,
    check_writable,
    print_json,
    reports_errors,
    save_text,
)
from wattserve.core.fleet import Fleet, load_fleet
from wattserve.core.governor import check_max_wait
from wattserve.core.policy import make_policy
from wattserve.core.records import RequestRecord
from wattserve.core.textfile import replacing
from wattserve.core.workload import Workload, load_workload
from wattserve.errors import ConfigError, printable
from wattserve.simulate import MIN_MAX_QUEUE_S, check_max_queue, comparison_table, simulate
from wattserve.simulate.html import render


def _bar(label: str) -> Any:
    if not sys.stderr.isatty():
        return None

    def show(frac: float) -> None:
        n = int(frac * 30)
        sys.stderr.write(f"\r{label:16} [{'#' * n}{'.' * (30 - n)}] {frac:4.0%}")
        if frac >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


@contextmanager
def _requests_file(path: Path | None) -> Iterator[Callable[[RequestRecord], None] | None]:
    """A writer of one JSON line per request into `path` (None: nothing is kept)."""
    if path is None:
        yield None
        return
    try:
        with replacing(path) as fh:  # the file appears whole, once the runs are done

            def write(rec: RequestRecord) -> None:
                fh.write(orjson.dumps(rec.as_json()) + b"\n")

            yield write
    except OSError as exc:  # the disk filled, or a device that takes no writes
        raise ConfigError(f"cannot write {path}: {exc.strerror}", field="--requests-out") from None


@reports_errors
def simulate_cmd(
    fleet: Annotated[Path, typer.Option(help="Fleet file (docs/fleet-file.md).")],
    trace: Annotated[Path, typer.Option(help="Azure trace CSV, JSONL, or a workload YAML.")],
    policy: Annotated[
        str | None,
        typer.Option(
            help="round_robin, least_loaded, cost, energy, slo, "
            "edge_first, weighted:m=w,..., or package.module:Class "
            "(default: the workload file's policy:, else least_loaded; not with --compare)."
        ),
    ] = None,
    compare: Annotated[
        str | None, typer.Option(help="Comma-separated policies to compare.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Only requests arriving in the first S seconds.")
    ] = None,
    rate_scale: Annotated[
        float, typer.Option(help="Replay X times faster (2 = twice the rate).")
    ] = 1.0,
    seed: Annotated[
        int, typer.Option(help="Seed for request classes, generators, tie-breaks.")
    ] = 0,
    model: Annotated[str | None, typer.Option(help="Model for trace rows that name none.")] = None,
    exact: Annotated[
        bool, typer.Option(help="Step every engine iteration (slow; for checking).")
    ] = False,
    governor: Annotated[
        bool, typer.Option(help="Enforce site power caps (--no-governor: only report).")
    ] = True,
    max_wait: Annotated[
        float, typer.Option(help="Longest a request waits for power or a link, s.")
    ] = 30.0,
    max_queue: Annotated[
        float,
        typer.Option(
            min=MIN_MAX_QUEUE_S,
            help="Refuse a request whose first token is predicted, or comes, later, s, as "
            "serve's --max-queue (30 s there); default: never, as an engine alone.",
        ),
    ] = math.inf,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON (a list with --compare).")
    ] = False,
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report.")] = None,
    requests_out: Annotated[
        Path | None,
        typer.Option(help="Write one JSON line per request (docs/simulate.md#--requests-out)."),
    ] = None,
) -> None:
    """What happens when FLEET serves TRACE under a routing policy and power caps."""
    check_max_wait(max_wait)
    check_max_queue(max_queue, "--max-queue")  # typer's min= lets NaN through
    if policy is not None and not policy.strip():  # it ran least_loaded without a word
        raise ConfigError(f"names no policy: {policy!r:.80}", field="--policy")
    if policy is not None and compare is not None:  # one of them would be ignored
        raise ConfigError(
            "give --policy or --compare, not both (--compare runs every policy it names)",
            field="--policy",
        )
    f = load_fleet(fleet)
    if model is not None and f.resolve_model(model) not in f.models:
        # every row that names no model would be rejected, and the run reported as if it ran
        raise ConfigError(
            f"{model!r:.80}: no deployment of {fleet} serves it; it serves "
            + ", ".join(sorted(f.models)),
            field="--model",
        )
    default_model = model or sorted(f.models)[0]
    summaries, outcomes = [], []

    def workload() -> Workload:
        return load_workload(
            trace,
            default_model=default_model,
            seed=seed,
            rate_scale=rate_scale,
            duration_s=duration,
        )

    with as_flags({"rate_scale": "--rate-scale", "duration": "--duration", "seed": "--seed"}):
        first = workload()  # read before any output is opened: an output may not be an input
    _check_classes(f, fleet, first)
    chosen = policy or first.policy or "least_loaded"
    policies = [p.strip() for p in compare.split(",")] if compare is not None else [chosen]
    if not all(policies):  # `--compare ''` ran the default policy without a word
        raise ConfigError(f"names an empty policy: {compare!r:.80}", field="--compare")
    with as_flags({"policy": "--compare" if compare is not None else "--policy"}):
        for name in policies:  # every one, before a run writes anything
            make_policy(name)
    twice = sorted({p for p in policies if policies.count(p) > 1})
    if twice:  # the same runs again, whose request lines `compare` could not tell apart
        raise ConfigError(f"names {', '.join(twice)} more than once", field="--compare")
    # every file read: the fleet's own inputs, the trace a workload file names
    inputs: tuple[Path | str, ...] = (fleet, trace, *f.files, first.trace)
    for flag, out_path, kind in (
        ("--requests-out", requests_out, "requests"),
        ("--report", report, "html"),
    ):
        if out_path is not None:
            check_writable(out_path, flag, inputs, kind=kind)
    if (
        requests_out is not None
        and report is not None
        and requests_out.resolve() == report.resolve()
    ):
        raise ConfigError(
            f"{report!s:.200} is also --requests-out; give two files", field="--report"
        )
    with _requests_file(requests_out) as on_request:
        for i, name in enumerate(policies):
            wl = first if i == 0 else workload()
            # An empty run would print a table of dashes and exit 0, as if it had worked.
            wl.require_requests(trace)
            summary, out = simulate(
                f,
                wl,
                name,
                governor=governor,
                exact=exact,
                seed=seed,
                max_wait_s=max_wait,
                max_queue_s=max_queue,
                progress=None if json_out else _bar(name),
                on_request=on_request,
            )
            if wl.bad_rows:
                summary["bad_trace_rows"] = wl.bad_rows.total
                summary["bad_trace_row_examples"] = wl.bad_rows[:10]
            summaries.append(summary)
            outcomes.append(out)
    table = comparison_table(summaries)
    if report is not None:
        save_text(
            report,
            render(f"wattserve simulate: {f.name} / {trace.name}", summaries, outcomes, table),
            "--report",
        )
    if json_out:
        print_json(summaries if compare else summaries[0])
        return
    typer.echo(table)
    for s in summaries:
        extras = []
        if s["rejected"]:
            extras.append("rejected: " + printable(_counts(s["rejected_by_reason"])))
        if s.get("bad_trace_rows"):
            extras.append(
                f"{s['bad_trace_rows']} malformed trace rows skipped, e.g. "
                + "; ".join(f"line {n}: {why}" for n, why in s["bad_trace_row_examples"][:3])
            )
        if s["outages"]:
            extras.append(
                "outages: " + _counts({k.replace("_", " "): n for k, n in s["outages"].items()})
            )
        for site, v in s["sites"].items():
            if v.get("cap_note"):
                extras.append(f"{site}: {v['cap_note']}")
            if v["cap_exceeded_s"]:
                extras.append(
                    f"{site} over its cap for {v['cap_exceeded_s']:.1f} s "
                    f"(by up to {v['max_excess_w']:.0f} W)"
                )
        if extras:
            typer.echo(f"{s['policy']}: " + "; ".join(extras))
    if report is not None:
        typer.echo(f"report: {report}")
    if requests_out is not None:
        typer.echo(f"requests: {requests_out}")


def _check_classes(f: Fleet, fleet: Path, wl: Workload) -> None:
    """A ConfigError, naming the workload file's class and field, when a class's model is one
    no deployment serves or an origin is no site of the fleet: every request of it would be
    rejected and the run reported as if it ran (as `--model` is refused). A trace row's own
    model or origin stays a rejected request (docs/workload.md)."""
    for i, c in enumerate(wl.classes):
        if c.model is not None and f.resolve_model(c.model) is None:
            raise ConfigError(
                f"{c.model!r:.80}: no deployment of {fleet} serves it; it serves "
                + ", ".join(sorted(f.models)),
                path=wl.source,
                line=c.model_line or None,
                field=f"classes[{i}].model",
            )
        for site, _ in c.origins:
            if site not in f.sites:
                raise ConfigError(
                    f"{site!r:.80} is no site of {fleet}; its sites: " + ", ".join(f.sites),
                    path=wl.source,
                    line=c.origins_line or None,
                    field=f"classes[{i}].origins",
                )


def _counts(by_what: dict[str, int]) -> str:
    """`{'site power cap': 20, 'site link down': 3}` as `site power cap 20, site link down 3`
    (a table's footnote, not a Python dict)."""
    return ", ".join(f"{what} {n:,}" for what, n in by_what.items())
