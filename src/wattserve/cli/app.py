"""The `wattserve` Typer application: one command per verb."""

from __future__ import annotations

import signal
from types import FrameType

import typer

from wattserve.cli.bench_cmd import bench_cmd
from wattserve.cli.calibrate_cmd import calibrate_cmd
from wattserve.cli.catalog_cmd import catalog_app, models_cmd
from wattserve.cli.compare_cmd import compare_cmd
from wattserve.cli.estimate_cmd import estimate_cmd
from wattserve.cli.plan_cmd import plan_cmd
from wattserve.cli.profile_cmd import profile_cmd
from wattserve.cli.rank_cmd import rank_cmd
from wattserve.cli.serve_cmd import keys_app, serve_cmd, usage_cmd
from wattserve.cli.simulate_cmd import simulate_cmd

app = typer.Typer(
    name="wattserve",
    help="Cost-, energy- and SLO-aware LLM inference across heterogeneous hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(show: bool) -> None:
    if show:
        from wattserve import __version__

        typer.echo(f"wattserve {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Cost-, energy- and SLO-aware LLM inference across heterogeneous hardware."""


app.command("estimate")(estimate_cmd)
app.command("rank")(rank_cmd)
app.command("calibrate")(calibrate_cmd)
app.command("profile")(profile_cmd)
app.command("models")(models_cmd)
app.command("simulate")(simulate_cmd)
app.command("plan")(plan_cmd)
app.command("serve")(serve_cmd)
app.command("usage")(usage_cmd)
app.command("bench")(bench_cmd)
app.command("compare")(compare_cmd)
app.add_typer(keys_app, name="keys")
app.add_typer(catalog_app, name="catalog")


def _terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (`timeout`, `kill`, a supervisor) ends a command as Ctrl-C does, through its
    clean-ups: a half-written `--requests-out` or a profile's staging folder is removed
    rather than left behind, as Python's default for SIGTERM (no clean-up) left them."""
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)  # serve and bench set their own in their loops
    app()
