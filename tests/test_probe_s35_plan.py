"""What a hostile-input probe of `plan` and `rank` found (2026-12-06): each case failed before
its fix."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from wattserve.cli.app import app
from wattserve.core.workload import load_workload
from wattserve.errors import UnknownNameError
from wattserve.plan.problem import flows_of

SITES = "sites:\n  dc: {kind: datacenter, power_cap_w: 100000}\n"


def _plan(tmp_path: Path, workload: str, *args: str) -> tuple[int, str]:
    (tmp_path / "w.yaml").write_text(workload)
    (tmp_path / "s.yaml").write_text(SITES)
    files = ["--workload", str(tmp_path / "w.yaml"), "--sites", str(tmp_path / "s.yaml")]
    options = ["--hardware", "l4", "--capacity", "analytic", *args]
    r = CliRunner().invoke(app, ["plan", *files, *options])
    return r.exit_code, r.output


def test_a_local_only_request_that_names_no_site_is_left_out_of_a_plan(tmp_path: Path) -> None:
    """plan sized a fleet for local-only requests that name no origin site, which simulate and
    serve refuse wherever the fleet stands (its verify round said 0% and asked for more
    rounds); they are now left out with a note, as requests past the context window are."""
    code, out = _plan(
        tmp_path,
        "generator: {kind: poisson, duration_s: 60}\n"
        "classes:\n  - {name: c, model: llama-3.1-8b, rate_rps: 2, prompt_tokens: 500,"
        " output_tokens: 100, local_only: 1}\n",
    )
    assert code == 2, out
    assert "no requests over a positive span" in out
    assert "local-only request(s) that name no origin site" in out
    (tmp_path / "t.jsonl").write_text(
        "".join(
            f'{{"arrival_s": {i}, "prompt_tokens": 100, "output_tokens": 20'
            + (', "local_only": true}\n' if i % 2 else "}\n")
            for i in range(20)
        )
    )
    workload = load_workload(tmp_path / "t.jsonl", default_model="llama-3.1-8b")
    flows, left_out = flows_of(workload, "llama-3.1-8b")
    assert sum(f.rate_rps for f in flows) * 19 == 10  # the ten that may go anywhere
    assert left_out == (
        "10 local-only request(s) that name no origin site (row 2, row 4, row 6, row 8, row "
        "10, ...): simulate and serve refuse them (give the rows an origin, or the workload's "
        "class origins:)",
    )


def test_a_class_name_is_printable_text(tmp_path: Path) -> None:
    """A workload class named with an escape character reached the terminal raw in plan's
    verify lines; trace rows' and sites' names were already refused so."""
    for bad in ('"ch\\x1bat"', '" chat"', '"chat\\u200f"'):
        code, out = _plan(
            tmp_path,
            "generator: {kind: poisson, duration_s: 60}\n"
            f"classes:\n  - {{name: {bad}, model: llama-3.1-8b, rate_rps: 2}}\n",
        )
        assert code == 2 and "field 'classes[0].name'" in out and "is not a name" in out, out
        assert "\x1b" not in out


def test_an_unknown_id_with_control_characters_is_shown_escaped() -> None:
    """`rank --model $'llama\\a\\b...'` printed the BEL and backspaces: on a terminal the
    message read as another model's."""
    text = str(UnknownNameError("model", "llama\a\b\b\bx", ["llama-2-7b"]))
    assert text.startswith("unknown model 'llama\\x07\\x08\\x08\\x08x'.")
    assert str(UnknownNameError("model", "gpt-9", [])).startswith("unknown model 'gpt-9'.")
    r = CliRunner().invoke(app, ["rank", "--model", "llama\a\bx"])
    assert r.exit_code == 2 and "\a" not in r.output and "'llama\\x07\\x08x'" in r.output
