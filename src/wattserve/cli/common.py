"""What every command shares: error reporting, JSON printing and writing output files."""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer

from wattserve.core.textfile import STREAM_NAMES, hold_pipe, replacing
from wattserve.errors import ConfigError, WattserveError, printable

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def as_flags(flags: Mapping[str, str]) -> Iterator[None]:
    """A ConfigError that names an API parameter (`flags`' keys) named by the flag a user of
    the command line typed instead (`rate_scale` as `--rate-scale`); one about a file's field
    is left as it is."""
    try:
        yield
    except ConfigError as exc:
        flag = None if exc.path is not None or exc.field is None else flags.get(exc.field)
        if flag is None:
            raise
        raise ConfigError(exc.detail, field=flag) from None


@contextmanager
def file_flags(files: Mapping[str, Iterable[Path | str | None]]) -> Iterator[None]:
    """A ConfigError about a file one of these flags named, which names no field in it (no
    such file, not a regular file, not UTF-8), names the flag too. A folder given as a model
    is read as its config.json, which is then the file the error names."""
    try:
        yield
    except ConfigError as exc:
        if exc.field is not None or exc.path is None:
            raise
        for flag, paths in files.items():
            for given in paths:
                named = None if given is None or not str(given) else os.path.normpath(given)
                if named is not None and os.path.normpath(exc.path) in (
                    named,
                    os.path.join(named, "config.json"),
                ):
                    raise ConfigError(
                        exc.detail, path=exc.path, line=exc.line, field=flag
                    ) from None
        raise


def input_flags(
    model: str | None, calibration: Path | None, hardware_file: list[Path] | None
) -> AbstractContextManager[None]:
    """`file_flags` for the files estimate and rank read: the model, the calibration and the
    hardware files."""
    return file_flags(
        {"--model": [model], "--calibration": [calibration], "--hardware-file": hardware_file or []}
    )


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a WattserveError into one line on stderr and exit status 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except WattserveError as exc:
            typer.echo(f"error: {printable(str(exc))}", err=True)  # names from files and flags
            raise typer.Exit(2) from None
        except sqlite3.Error as exc:  # a ledger the code did not see coming: one line
            typer.echo(f"error: the ledger database: {exc}", err=True)
            raise typer.Exit(1) from None
        except BrokenPipeError:  # `| head` stopped reading: not an error worth a word
            # what is still buffered would fail again at exit: stdout goes nowhere from here
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None  # as a shell reports SIGPIPE (128 + 13)
        except OSError as exc:  # an output that failed mid-write: a full disk
            where = f" ({exc.filename})" if exc.filename else ""
            typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def print_json(data: Any) -> None:
    """Print `data` as strict JSON. A NaN or an infinity (which no JSON reader takes) is a
    WattserveError naming where it is, found before the first byte is written: not a
    traceback from json.dump after half an object."""
    check_finite(data)
    json.dump(data, sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def check_finite(data: Any) -> None:
    """A WattserveError naming the first NaN or infinity in a result (`data`, its JSON form),
    whichever form it is printed in: text printed `$ per 1M out tokens: inf` with exit 0."""
    where = non_finite_at(data)
    if where is not None:
        raise WattserveError(
            f"the result's {where[0]} came out as {where[1]}: a figure behind it is out of "
            "any physical range (check the --calibration, --hardware-file or fleet values)"
        )


def non_finite_at(data: Any, at: str = "") -> tuple[str, float] | None:
    """The path (`sites.dc.carbon_g`) and value of the first NaN or infinity in `data`."""
    if isinstance(data, float) and not math.isfinite(data):
        return at or "value", data
    items: Any = ()
    if isinstance(data, dict):
        items = ((f"{at}.{k}" if at else str(k), v) for k, v in data.items())
    elif isinstance(data, list | tuple):
        items = ((f"{at}[{i}]", v) for i, v in enumerate(data))
    for sub, value in items:
        found = non_finite_at(value, sub)
        if found is not None:
            return found
    return None


def _head(text: str) -> str:
    return text.lstrip("\ufeff \t\r\n").lower()


# what an earlier output of each kind begins with, in its first 4 KiB: a file that is none of
# them (a measurements CSV, a calibration) is refused rather than replaced (check_writable)
OUTPUT_KINDS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "html": ("an HTML report", lambda t: _head(t).startswith(("<!doctype html", "<html"))),
    "bench": (
        "a wattserve bench result",
        lambda t: re.search(r'"tool"\s*:\s*"wattserve bench"', t) is not None,
    ),
    "requests": (
        "a --requests-out file",
        lambda t: _head(t).startswith("{") and '"row"' in t.split("\n", 1)[0],
    ),
}


def check_writable(
    path: Path,
    flag: str,
    inputs: tuple[Path | str, ...] = (),
    *,
    makes_folder: bool = False,
    kind: str | None = None,
) -> None:
    """Refuse an output path that plainly cannot be written, or that is one of the command's
    `inputs` (writing it would destroy it), before the work that fills it (save_text still
    reports what only the write finds). `makes_folder`: the writer creates a missing folder.
    `kind` (OUTPUT_KINDS): an existing file that is not an earlier output of that kind is
    refused, as calibrate refuses to replace what is not a calibration."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's symlink loop
        raise ConfigError(
            f"cannot write {path!s:.200}: a loop of symbolic links", field=flag
        ) from None
    for source in inputs:
        try:
            same = bool(source) and Path(source).resolve() == target
        except (OSError, RuntimeError):  # an input that loops: reading it says so
            same = False
        if same:
            raise ConfigError(f"{path!s:.200} is an input of this command", field=flag)
    if str(path) in ("", "."):  # `-o ""` arrives as Path("."): say what was given
        raise ConfigError("an empty path (or the current folder), not a file", field=flag)
    if path.is_dir():
        raise ConfigError(f"cannot write {path!s:.200}: a folder, not a file", field=flag)
    if not makes_folder and not path.parent.is_dir():
        raise ConfigError(f"cannot write {path!s:.200}: no folder {path.parent}", field=flag)
    if path.exists() and not os.access(path, os.W_OK):  # as the write will find, before the work
        raise ConfigError(f"cannot write {path!s:.200}: Permission denied", field=flag)
    stream = os.path.abspath(path) in STREAM_NAMES  # written through the stream itself
    if not stream and _is_fifo(path) and not hold_pipe(path):
        # `--report ff` of a named pipe no process reads: the write waited for ever
        raise ConfigError(
            f"cannot write {path!s:.200}: a pipe that no process reads (the write would "
            "wait for ever)",
            field=flag,
        )
    if kind is not None and not stream and path.is_file():
        _check_replaceable(path, flag, kind)
    if _is_stdout(path):  # `... --json > X --out X`: the file replaced, what was printed lost
        raise ConfigError(
            f"{path!s:.200} is also where standard output goes; give another file", field=flag
        )


def _is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False


def _check_replaceable(path: Path, flag: str, kind: str) -> None:
    """Refuse to replace a non-empty file that is not an earlier output of `kind`."""
    what, looks_like = OUTPUT_KINDS[kind]
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {path!s:.200}: {exc.strerror}", field=flag) from None
    if head.strip() and not looks_like(head):
        raise ConfigError(
            f"{path!s:.200} is not {what}; the write would replace it: remove it or give "
            "another file",
            field=flag,
        )


def _is_stdout(path: Path) -> bool:
    """Whether `path` is the regular file standard output is redirected to, under another
    name (`--out X > X`; `--out /dev/stdout > X` asks for standard output, and is not)."""
    if os.path.abspath(path) in STREAM_NAMES:  # writing one is asking for it (replacing)
        return False
    try:
        out = os.fstat(sys.stdout.fileno())
        return stat.S_ISREG(out.st_mode) and os.path.samestat(out, path.stat())
    except (OSError, ValueError, AttributeError):  # no such file, or no real stdout (tests)
        return False


def save_text(path: Path, text: str, flag: str) -> None:
    """Write an output file whole or not at all (`replacing`); a path that cannot be written is
    an error naming the flag."""
    try:
        with replacing(path) as handle:
            handle.write(text.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}", field=flag) from None


# SI prefixes are case-sensitive: m is milli and M mega, so `1mW` is refused, not read as 1 MW.
_PREFIXES = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "g": 1e9, "G": 1e9, "T": 1e12}


def parse_watts(text: str, flag: str) -> float:
    """'1MW', '500 kW', '2.5e6' -> watts; anything else is a ConfigError naming `flag`."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(?:([a-zA-Z]?)[wW])?\s*", text)
    if m is not None and m.group(2) == "m":
        raise ConfigError(
            f"'{text}': m is milli (a thousandth of a watt); write {m.group(1)}MW for megawatts",
            field=flag,
        )
    try:
        if m is None:
            raise ValueError
        value = float(m.group(1)) * _PREFIXES[m.group(2) or ""]
    except (ValueError, KeyError):
        raise ConfigError(
            f"'{text}' is not a power: write a positive finite number, e.g. 1MW, 500kW or 250000",
            field=flag,
        ) from None
    if value == math.inf:
        raise ConfigError(f"'{text}' is too large a power", field=flag)
    if not 0 < value < math.inf:  # negative, zero or NaN
        raise ConfigError(f"must be a positive finite power, got '{text}'", field=flag)
    return value


def check_regular_output(
    path: Path | None, flag: str, trace: Path, kind: str | None = None
) -> None:
    """An output file that can be written, checked before the work (a bench run or a fit can
    take hours): not a folder, in a folder that exists, not the trace, not a device or a pipe
    (/dev/full would fail the write, a pipe with no reader would hang it); `trace`: the input;
    `kind` as check_writable's."""
    if path is None:
        return
    check_writable(path, flag, (trace,), kind=kind)
    if path.exists() and not path.is_file():
        raise ConfigError(f"cannot write {path!s:.200}: not a regular file", field=flag)
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise ConfigError(f"cannot write {path!s:.200}: permission denied", field=flag)
