"""The outputs the docs quote from estimate, rank and calibrate are what those commands print.

Each quoted command is run through the CLI and its quoted output compared line by line: in
full where the doc shows all of it, in order where the doc elides lines with `...`. These
outputs are deterministic (the built-in catalog, models and example files), so a change to the
model or the catalog that moves them fails here until the doc is rerun.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
ELIDED = "..."


def _run(cmd: str, tmp_path: Path) -> str:
    """Run one `wattserve ...` command line from the repository root; files it names go to tmp."""
    args = shlex.split(cmd)
    assert args[0] == "wattserve", cmd
    # outputs (and the calibration files written then read) live in tmp_path, not the checkout
    args = [str(tmp_path / a) if a.endswith(".json") and "/" not in a else a for a in args[1:]]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, f"{cmd}: exit {result.exit_code}\n{result.output}"
    return str(result.output)


def _fenced(doc: str) -> list[str]:
    """The text of every fenced block, whatever its language tag."""
    blocks: list[str] = []
    inside: list[str] | None = None
    for line in doc.splitlines():
        if line.startswith("```"):
            if inside is None:
                inside = []
            else:
                blocks.append("\n".join(inside) + "\n")
                inside = None
        elif inside is not None:
            inside.append(line)
    return blocks


def _console_blocks(doc: str) -> list[tuple[str, list[str]]]:
    """`$ wattserve ...` lines in fenced blocks, each with the lines printed after it."""
    out: list[tuple[str, list[str]]] = []
    for block in _fenced(doc):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            lines = chunk.rstrip("\n").splitlines()
            cmd = lines[0]
            body = lines[1:]
            while cmd.endswith("\\") and body:  # a command continued on the next line
                cmd = cmd[:-1].rstrip() + " " + body.pop(0).strip()
            if cmd.startswith("wattserve "):
                out.append((cmd, body))
    return out


def _captioned_blocks(doc: str) -> list[tuple[str, list[str]]]:
    """rank.md's form: `wattserve ...` (with a caption line or none), then the output block."""
    pattern = r"`(wattserve [^`]+)`[^\n`]*(?:\n[^\n`]*)?:\n\n```\n(.*?)```"
    return [(m[0], m[1].rstrip("\n").splitlines()) for m in re.findall(pattern, doc, re.S)]


def _assert_quoted(cmd: str, quoted: list[str], printed: str) -> None:
    got = [line.rstrip() for line in printed.rstrip("\n").splitlines()]
    want = [line.rstrip() for line in quoted]
    if not any(line.strip() == ELIDED for line in want):
        assert got == want, f"{cmd}: the doc's output differs from what it prints"
        return
    at = 0  # every quoted line, in order; `...` stands for any lines
    for line in want:
        if line.strip() == ELIDED:
            continue
        assert line in got[at:], f"{cmd}: quoted line not printed (in order): {line!r}"
        at = got.index(line, at) + 1


def _cases() -> list[tuple[str, str, list[str]]]:
    cases: list[tuple[str, str, list[str]]] = []
    for name in ("README.md", "docs/calibration.md"):
        doc = (ROOT / name).read_text()
        cases += [(name, cmd, body) for cmd, body in _console_blocks(doc) if body]
    rank_doc = (ROOT / "docs/rank.md").read_text()
    cases += [("docs/rank.md", cmd, body) for cmd, body in _captioned_blocks(rank_doc)]
    return cases


CASES = _cases()


def test_the_docs_quote_the_commands_checked_here() -> None:
    # a reworded doc that this parser no longer finds must not pass by checking nothing
    docs = {doc for doc, _, _ in CASES}
    assert docs == {"README.md", "docs/calibration.md", "docs/rank.md"}
    assert len(CASES) >= 10


def _writer_of(doc: str, calibration: str) -> str:
    """The calibrate command of the same doc that writes the calibration an estimate reads."""
    for d, cmd, _ in CASES:
        if d == doc and cmd.startswith("wattserve calibrate") and f"-o {calibration}" in cmd:
            return cmd
    raise AssertionError(f"{doc}: no calibrate command writes {calibration}")


@pytest.mark.parametrize(
    ("doc", "cmd", "quoted"), CASES, ids=[f"{d}:{c[10:60]}" for d, c, _ in CASES]
)
def test_quoted_output_is_printed(doc: str, cmd: str, quoted: list[str], tmp_path: Path) -> None:
    reads = re.search(r"--calibration (\S+\.json)", cmd)
    if reads:
        _run(_writer_of(doc, reads.group(1)), tmp_path)
    _assert_quoted(cmd, quoted, _run(cmd, tmp_path))
