"""Ledger paths that went wrong (session 36's probe, fixed in session 37): a `--db` that is a
dangling symbolic link made its target with the umask's mode (0644: key hashes and spend
readable by all), not the ledger's 0600; a damaged ledger's error named no file; a path
with '?' or '#' was read as a URI's query and called "not a wattserve ledger"; a ledger on
a read-only mount was called "not a wattserve ledger" too."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattserve.cli.app import app
from wattserve.serve.ledger import Ledger

runner = CliRunner()


def test_a_dangling_link_as_db_makes_its_target_private(tmp_path: Path) -> None:
    target = tmp_path / "real.db"
    link = tmp_path / "link.db"
    link.symlink_to(target)
    result = runner.invoke(app, ["keys", "create", "a", "--db", str(link)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_damaged_ledger_is_named_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    led = Ledger(db)
    led.create_key("a")
    led.db.close()
    with db.open("r+b") as handle:  # past the header: the schema's and tables' pages
        handle.seek(4096)
        handle.write(b"\xff" * 16384)
    for args in (["usage"], ["keys", "list"], ["keys", "create", "b"]):
        result = runner.invoke(app, [*args, "--db", str(db)])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert f"{db}: cannot read the ledger: database disk image is malformed" in (
            result.output
        ), (args, result.output)


def test_a_path_with_uri_characters_is_a_ledger(tmp_path: Path) -> None:
    db = tmp_path / "we?ird#1.db"
    Ledger(db).db.close()
    result = runner.invoke(app, ["usage", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "requests" in result.output
    result = runner.invoke(app, ["keys", "list", "--db", str(db)])
    assert result.exit_code == 0, result.output


def test_a_ledger_on_a_read_only_mount_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    Ledger(folder / "ledger.db").db.close()
    mounted = (
        shutil.which("mount") is not None
        and os.geteuid() == 0
        and subprocess.run(["mount", "--bind", str(folder), str(folder)], check=False).returncode
        == 0
    )
    if not mounted:
        pytest.skip("needs root and bind mounts to make a read-only folder")
    try:
        remount = ["mount", "-o", "remount,bind,ro", str(folder)]
        if subprocess.run(remount, check=False).returncode != 0:
            pytest.skip("cannot remount read-only here")
        for args in (["usage"], ["keys", "list"], ["keys", "create", "b"]):
            result = runner.invoke(app, [*args, "--db", str(folder / "ledger.db")])
            assert result.exit_code == 2, (args, result.output)
            assert "read-only" in result.output, (args, result.output)
            assert "not a wattserve ledger" not in result.output
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("\u2800\u2800", "a key needs a name"),  # the Braille blank prints as space
        ("\u3164", "a key needs a name"),  # the Hangul filler too
        ("alice ", "no space at the start or end"),
        ("\u00a0bob", "no space at the start or end"),
    ],
)
def test_a_key_name_that_reads_blank_or_padded_is_refused(
    tmp_path: Path, name: str, problem: str
) -> None:
    result = runner.invoke(app, ["keys", "create", name, "--db", str(tmp_path / "l.db")])
    assert result.exit_code == 2, result.output
    assert problem in result.output


def test_composed_and_decomposed_spellings_are_one_name(tmp_path: Path) -> None:
    db = str(tmp_path / "l.db")
    assert runner.invoke(app, ["keys", "create", "caf\u00e9", "--db", db]).exit_code == 0
    result = runner.invoke(app, ["keys", "create", "cafe\u0301", "--db", db])
    assert result.exit_code == 2, result.output
    assert "exists" in result.output


def test_revoking_by_name_says_which_id_the_name_has(tmp_path: Path) -> None:
    db = str(tmp_path / "l.db")
    assert runner.invoke(app, ["keys", "create", "alice", "--db", db]).exit_code == 0
    kid = Ledger(db, create=False).list_keys()[0]["id"]
    result = runner.invoke(app, ["keys", "revoke", "alice", "--db", db])
    assert result.exit_code == 2 and f"'alice' is the name of key {kid}" in result.output
    assert runner.invoke(app, ["keys", "revoke", kid, "--db", db]).exit_code == 0
