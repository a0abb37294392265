"""`wattserve compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattserve.bench.compare import (
    compare,
    load_raw,
    metrics,
    paired,
    paired_table,
    per_request,
    table,
)
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
    kind_a, label_a, raw_a = load_raw(a, policy)
    kind_b, label_b, raw_b = load_raw(b, policy)
    rows = compare(metrics(raw_a), metrics(raw_b))
    pairs = paired(per_request(raw_a), per_request(raw_b))
    if json_out:
        print_json(
            {
                "a": {"file": str(a), "kind": kind_a},
                "b": {"file": str(b), "kind": kind_b},
                "rows": rows,
                "per_request": pairs,
            }
        )
        return
    typer.echo(f"A = {a} ({label_a})\nB = {b} ({label_b})\n")
    typer.echo(table(rows, "A", "B"))
    if pairs:
        typer.echo("\n" + paired_table(pairs))
