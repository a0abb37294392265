"""What a hostile-input probe of `plan` and `rank` found (2026-12-06): each case failed before
its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve.cli.app import app
from wattserve.core.workload import load_workload
from wattserve.errors import ConfigError, UnknownNameError, printable
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


def test_verify_does_not_replay_what_the_plan_left_out(tmp_path: Path) -> None:
    """A review's case: plan left out the local-only requests that name no site, but --verify
    replayed them; simulate refused them, so the class never passed and every round added
    replicas for traffic no fleet serves ($0.56/h became $2.24/h, NOT VERIFIED, exit 4)."""
    (tmp_path / "half.jsonl").write_text(
        "".join(
            f'{{"arrival_s": {i * 0.5}, "prompt_tokens": 100, "output_tokens": 20'
            + (', "local_only": true}\n' if i % 2 else "}\n")
            for i in range(40)
        )
    )
    trace = ["--workload", str(tmp_path / "half.jsonl"), "--model", "llama-3.1-8b"]
    options = ["--hardware", "l4", "--capacity", "analytic", "--verify", "--max-rounds", "2"]
    r = CliRunner().invoke(app, ["plan", *trace, *options])
    assert r.exit_code == 0, r.output
    assert "verified: every class met its SLO in simulation (round 0)" in r.output
    assert "local-only request(s) that name no origin site" in r.output


@pytest.mark.parametrize(
    ("workload", "field"),
    [
        ("slos:\n  'gold ': {ttft_s: 3}\n", "slos"),  # the gateway's header drops the space
        ('slos:\n  "go\\ald": {ttft_s: 3}\n', "slos"),  # no header may carry it
        ('classes:\n  - {name: c, origins: {"ed\\a\\bge": 1}}\n', "classes[0].origins"),
        ("classes:\n  - {name: c, origins: {' edge': 1}}\n", "classes[0].origins"),
    ],
)
def test_slo_classes_and_origin_sites_are_names(tmp_path: Path, workload: str, field: str) -> None:
    """A slos: key and a class's origins: key are sent in headers and printed, as site and
    class names are: simulate served 'gold ' where the gateway, given the same file, refused
    every request ('gold' is not a class of 'gold ')."""
    (tmp_path / "w.yaml").write_text("generator: {kind: poisson, duration_s: 5}\n" + workload)
    with pytest.raises(ConfigError) as e:
        load_workload(tmp_path / "w.yaml", default_model="llama-3.1-8b")
    assert e.value.field == field and "is not a" in str(e.value) and "\a" not in str(e.value)


def test_a_control_character_in_an_error_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    """Every CLI error is printed through `printable`: a policy, dtype or class SLO named with
    a BEL and backspaces printed them raw."""
    assert printable("co\ast\x1b[2J and \udcff\n") == "co\\x07st\\x1b[2J and \\udcff\\n"
    (tmp_path / "t.jsonl").write_text('{"arrival_s": 0, "prompt_tokens": 9, "output_tokens": 9}\n')
    fleet = str(Path(__file__).parent.parent / "examples" / "fleet-hetero.yaml")
    for args in (
        ["simulate", "--fleet", fleet, "--trace", str(tmp_path / "t.jsonl"), "--policy", "co\ast"],
        ["rank", "--model", "llama-3.1-8b", "--dtype", "bf\a16"],
    ):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and "\a" not in r.output and "\\x07" in r.output, r.output
