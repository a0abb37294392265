"""`wattserve compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattserve.bench.compare import compare, paired, paired_table, table
from wattserve.bench.results import load
from wattserve.cli.common import print_json, reports_errors


@reports_errors
def compare_cmd(
    a: Annotated[Path, typer.Argument(help="The reference: a result file (e.g. the measurement).")],
    b: Annotated[Path, typer.Argument(help="The result held against it (e.g. the simulation).")],
    policy: Annotated[
        str | None, typer.Option(help="The policy to take from a simulate --compare list.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Side by side: any two of simulate --json, bench --json, vllm bench serve results;
    error = (B - A) / A per metric, and request by request where both files list requests."""
    fa, fb = load(a, policy), load(b, policy)
    rows = compare(fa.figures, fb.figures)
    pairs = paired(fa.requests, fb.requests)
    for f in (fa, fb):
        if f.note:
            typer.echo(f"note: {f.note}", err=True)
    if json_out:
        print_json(
            {
                "a": {"file": str(a), "kind": fa.kind},
                "b": {"file": str(b), "kind": fb.kind},
                "rows": rows,
                "per_request": pairs,
            }
        )
        return
    typer.echo(f"A = {a} ({fa.label})\nB = {b} ({fb.label})\n")
    typer.echo(table(rows, "A", "B"))
    if pairs:
        typer.echo("\n" + paired_table(pairs))
