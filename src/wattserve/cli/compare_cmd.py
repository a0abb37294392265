"""`wattserve compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from wattserve.bench.compare import compare, lengths, pair, paired_table, spread, table
from wattserve.bench.results import load
from wattserve.cli.common import print_json, reports_errors
from wattserve.errors import ConfigError

# the files that hold a policy (simulate --json and --requests-out): --policy picks in them
POLICY_KINDS = frozenset({"simulate", "requests"})


@reports_errors
def compare_cmd(
    a: Annotated[Path, typer.Argument(help="The reference: a result file (e.g. the measurement).")],
    b: Annotated[Path, typer.Argument(help="The result held against it (e.g. the simulation).")],
    policy: Annotated[
        str | None, typer.Option(help="The policy to take from a simulate --compare list.")
    ] = None,
    ignore_lengths: Annotated[
        bool,
        typer.Option(
            "--ignore-lengths",
            help="Pair requests even when their prompt lengths say the files ran different "
            "traces (a warning instead of an error).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Side by side: any two of simulate --json, simulate --requests-out, bench --json,
    vllm bench serve results;
    error = (B - A) / A per metric, and request by request where both files list requests."""
    fa, fb = load(a, policy), load(b, policy)
    if policy is not None and not {fa.kind, fb.kind} & POLICY_KINDS:
        raise ConfigError(
            f"picks one policy of a simulate result (--json or --requests-out); {a} "
            f"({fa.kind}) and {b} ({fb.kind}) hold none: leave --policy out",
            field="--policy",
        )
    rows = compare(fa.figures, fb.figures)
    for f in (fa, fb):
        if f.note:
            typer.echo(f"note: {f.note}", err=True)
    listed = bool(fa.requests) and bool(fb.requests)
    pairing = pair(fa.requests, fb.requests)
    for check in lengths(pairing) if listed else []:
        if check.shifted and not check.different_traces:
            typer.echo(
                f"warning: every prompt of B is {check.shift:+.0f} tokens from its pair in A "
                "(the median): one side counts a chat template or its tokenizer differently "
                "(a server's usage, or the trace); the requests are the same",
                err=True,
            )
        if not check.disagree:
            continue
        if check.different_traces:
            what = (
                f"{a} and {b} look like different traces: {check.message()}; request by "
                "request, compare runs of the same trace"
            )
            if not ignore_lengths:
                raise ConfigError(f"{what} (--ignore-lengths pairs them anyway)")
            typer.echo(f"warning: {what}", err=True)
        elif check.name == "output":
            typer.echo(
                f"warning: {check.message()}: a server that stops at its end-of-sequence token "
                "answers shorter than the trace asks",
                err=True,
            )
        else:
            typer.echo(f"warning: {check.message()}", err=True)
    pairs = spread(pairing) if listed else []
    if listed and not pairing.pairs:
        typer.echo(
            f"warning: no request pairs: no completed request of {a} is at the same "
            f"{pairing.by} as one of {b}",
            err=True,
        )
    if json_out:
        out: dict[str, Any] = {
            "a": {"file": str(a), "kind": fa.kind},
            "b": {"file": str(b), "kind": fb.kind},
            "rows": rows,
            "per_request": pairs,
            "pairing": pairing.summary() if listed else None,
        }
        print_json(out)
        return
    typer.echo(f"A = {a} ({fa.label})\nB = {b} ({fb.label})\n")
    typer.echo(table(rows, "A", "B"))
    if listed:
        typer.echo("\n" + paired_table(pairs, pairing))
