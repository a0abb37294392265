"""Reading the files a user names (measurements, model configs, calibrations, fleet and
hardware YAML): only regular files, of bounded size, in UTF-8 (a byte-order mark is dropped),
and JSON of bounded depth whose objects give each key once and whose text is all characters
(no lone UTF-16 surrogate, see `find_lone_surrogate`). Anything else is a ConfigError naming the
file, never a traceback or a read without end (`/dev/zero`). And writing the files a command
produces whole or not at all (`replacing`)."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple

from wattserve.errors import ConfigError

MAX_BYTES = 64 << 20  # no measurements, config or fleet file a person writes is this large

# names of the standard streams: a command asked to write one writes to the stream it has open
# (reopening the name would truncate a file the stream is redirected to: `--out /dev/stdout > X`)
STREAM_NAMES = {
    "/dev/stdout": 1,
    "/dev/fd/1": 1,
    "/proc/self/fd/1": 1,
    "/dev/stderr": 2,
    "/dev/fd/2": 2,
    "/proc/self/fd/2": 2,
}


def read_text(path: str | Path, limit: int = MAX_BYTES) -> str:
    """The text of a regular file of at most `limit` bytes."""
    p = Path(path)
    try:
        st = p.stat()
        if not p.is_file():
            raise ConfigError("not a regular file", path=str(p))
        if st.st_size > limit:
            raise ConfigError(f"larger than {limit >> 20} MiB ({st.st_size} bytes)", path=str(p))
        with p.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", path=str(p)) from None
    if len(raw) > limit:
        raise ConfigError(f"larger than {limit >> 20} MiB", path=str(p))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            path=str(p),
            line=line,
        ) from None


def parse_json(text: str, path: str) -> Any:
    """Parse JSON text; a syntax error, nesting too deep or a number too long to read is a
    ConfigError."""
    try:
        return load_json(text, path)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None


def load_json(text: str, path: str, line: int | None = None) -> Any:
    """Parse JSON text, leaving a syntax error (json.JSONDecodeError) to the caller (it may
    try JSON lines next); nesting too deep, an integer of more digits than Python reads
    (4,300), an object giving a key twice (json.loads keeps the last silently) or a text
    holding a lone UTF-16 surrogate is a ConfigError naming the file and the line (`line`: the
    text's first line in the file), and for a surrogate the field."""
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError:
        raise
    except _Twice as twice:
        found = _twice_at(text)
        key, at, first = found if found is not None else (twice.key, None, None)
        if at is not None and first is not None and line is not None:
            at, first = at + line - 1, first + line - 1
        raise ConfigError(
            f"{_shown(key)} is given twice" + (f" (first on line {first})" if first else ""),
            path=path,
            line=at if at is not None else line,
        ) from None
    except RecursionError:
        raise ConfigError("not valid JSON: nested too deeply", path=path, line=line) from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise ConfigError("a number of more than 4,300 digits", path=path, line=line) from None
    # only an escape makes a surrogate (UTF-8 text holds none), so the data is walked only when
    # the text holds one outside a pair: a scan of the text, about 2% of reading a JSONL trace
    if _SURROGATE_ESCAPE.search(text) and _SURROGATE_ESCAPE.search(_PAIR.sub("", text)):
        lone = find_lone_surrogate(data)
        if lone is not None:
            at = _surrogate_line(text)
            if at is not None and line is not None:
                at += line - 1
            raise lone.error(
                "or a pair of escapes (\\ud83d\\ude00 is U+1F600)",
                path=path,
                line=at if at is not None else line,
            )
    return data


class _Twice(Exception):
    """A key an object gives twice, met while json.loads builds it; its line is found after."""

    def __init__(self, key: str) -> None:
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Twice(key)
            seen.add(key)
    return out


# one decoder for every call: json.loads builds a new one per call when given a hook, half the
# time of reading a short JSON line (a JSONL trace's row)
_DECODER = json.JSONDecoder(object_pairs_hook=_unique)


def _shown(text: str) -> str:
    """Text for an error message: quoted, escaped (a surrogate or a control character shows as
    its escape) and cut short."""
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."


# json's own string reader (C), which typeshed does not declare: (text, index after the opening
# quote, strict) -> (the string, index after its closing quote)
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_TOKEN = re.compile(r'["{}\[\],]')


def _twice_at(text: str) -> tuple[str, int, int] | None:
    """The first key an object of `text` gives twice, the line it is given again on and the
    line it was first given on; None when the walk cannot tell (a string that does not end)."""
    stack: list[dict[str, int] | None] = []  # an open object's keys and lines; None: an array
    key_next = False
    pos = counted = 0
    line = 1
    while (m := _TOKEN.search(text, pos)) is not None:
        char, pos = m.group(), m.end()
        if char == '"':
            try:
                value, pos = _scanstring(text, pos, False)
            except ValueError:
                return None
            keys = stack[-1] if stack else None
            if key_next and keys is not None:
                line += text.count("\n", counted, m.start())  # counted once: no n^2 on big files
                counted = m.start()
                if value in keys:
                    return value, line, keys[value]
                keys[value] = line
            key_next = False
        elif char in "{[":
            stack.append({} if char == "{" else None)
            key_next = char == "{"
        elif char in "}]":
            if stack:
                stack.pop()
            key_next = False
        else:  # a comma: in an object, a key comes next
            key_next = bool(stack) and stack[-1] is not None
    return None


# -- lone surrogates ----------------------------------------------------------------------------
# JSON's "\ud800" and YAML's "\ud800" escapes decode to a lone UTF-16 surrogate: a Python str
# that no UTF-8 text can hold, so the command that read it failed later with a traceback when it
# printed or wrote it. UTF-8 decoding (read_text) never yields one: only an escape can.

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # JSON's, paired or not
# a high and a low escape that make one character (U+1F600 is \ud83d\ude00); a pair right after
# a backslash is kept, as that backslash may make it text rather than an escape (\\ud83d...)
_PAIR = re.compile(r"\\(?<!\\\\)u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_CONTAINERS = (dict, list, tuple, set, frozenset)  # YAML's !!set and !!pairs give sets, tuples


class LoneSurrogate(NamedTuple):
    """The first text in parsed JSON or YAML (in document order) that holds a lone surrogate."""

    at: tuple[str | int, ...]  # the keys and list indexes to it, the key itself for a key
    text: str
    is_key: bool

    @property
    def field(self) -> str | None:
        """The field, as errors name it (`hardware.h100-sxm.source`, `classes[0].model`); for
        a key, the mapping that holds it; None at the top."""
        parts = self.at[:-1] if self.is_key else self.at
        name = "".join(f"[{p}]" if isinstance(p, int) else f".{p!s:.60}" for p in parts)
        name = name.removeprefix(".")
        if len(name) > 200:  # deep nesting: the end, nearest the text
            name = "..." + name[-197:]
        return name or None

    def error(self, hint: str, *, path: str | None = None, line: int | None = None) -> ConfigError:
        """The ConfigError to raise; `hint`: how else to write a character past U+FFFF."""
        char = _SURROGATE.search(self.text)
        code = f"U+{ord(char.group()):04X}, " if char is not None else ""
        return ConfigError(
            f"{'the key ' if self.is_key else ''}{_shown(self.text)} holds {code}a lone UTF-16 "
            f"surrogate (half of a pair, no character): write the character itself, {hint}",
            path=path,
            line=line,
            field=self.field,
        )


def find_lone_surrogate(data: Any) -> LoneSurrogate | None:
    """The first key or text value in `data` (parsed JSON or YAML) holding a lone UTF-16
    surrogate, or None. Walked without recursion (JSON nests up to Python's recursion limit)
    and each container once (YAML aliases share one)."""
    if isinstance(data, str):
        return LoneSurrogate((), data, False) if _has_surrogate(data) else None
    if not isinstance(data, _CONTAINERS):
        return None
    path: list[str | int] = []  # the keys to the container on top of `stack`
    stack = [_items(data)]
    seen = {id(data)}
    while stack:
        for key, value in stack[-1]:
            if isinstance(key, str) and _has_surrogate(key):
                return LoneSurrogate((*path, key), key, True)
            if isinstance(value, str):
                if _has_surrogate(value):
                    return LoneSurrogate((*path, key), value, False)
            elif isinstance(value, _CONTAINERS) and id(value) not in seen:
                seen.add(id(value))
                path.append(key)
                stack.append(_items(value))
                break
        else:
            stack.pop()
            if path:
                path.pop()
    return None


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None  # isascii(): a flag read


def _items(container: Any) -> Iterator[tuple[Any, Any]]:
    """A container's (key, value) pairs: a list's, tuple's or set's keyed by position."""
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


def _surrogate_line(text: str) -> int | None:
    """The line of the first string of valid JSON `text` that holds a lone surrogate."""
    pos = 0
    while (start := text.find('"', pos)) != -1:  # outside strings, `"` only opens one
        value, pos = _scanstring(text, start + 1, False)
        if _has_surrogate(value):
            return text.count("\n", 0, start) + 1
    return None


# named pipes opened for writing when an output was checked (`hold_pipe`), by absolute path
_HELD_PIPES: dict[str, int] = {}


def hold_pipe(path: str | Path) -> bool:
    """Open the named pipe `path` for writing without waiting, and keep it open for
    `replacing`: False where no process reads it (a write would wait for ever). Kept, not
    closed: a reader that saw the check's descriptor close would take it for the end."""
    key = os.path.abspath(path)
    if key in _HELD_PIPES:
        return True
    try:
        fd = os.open(key, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader
            return False
        raise
    os.set_blocking(fd, True)
    _HELD_PIPES[key] = fd
    return True


@contextmanager
def replacing(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary handle whose bytes become `path` only once all are written: they go to a
    temporary file beside it, renamed over it at the end, so a write that fails (a full disk,
    a size limit, an interrupt) leaves the file that was there as it was and no part of the
    new one. A path that is not a regular file (`/dev/null`, a pipe) is written directly, and
    so is a writable file in a folder that takes no new file; a read-only file is refused, as
    open() would refuse it. A standard stream's name (`/dev/stdout`) is written through the
    stream itself, after what it holds. OSError is the caller's to report."""
    given = Path(path)
    key = os.path.abspath(given)
    stream = STREAM_NAMES.get(key)
    if stream is not None:
        text = sys.stdout if stream == 1 else sys.stderr
        if text is not None:  # None: closed (`>&-`); the dup below says so, as an OSError
            text.flush()  # its own text first, in order
        with os.fdopen(os.dup(stream), "wb") as handle:
            yield handle
        return
    held = _HELD_PIPES.pop(key, None)
    if held is not None:  # opened when checked (`hold_pipe`): its reader saw no end between
        with os.fdopen(held, "wb") as handle:
            yield handle
        return
    if given.exists() and not given.is_file():  # /dev/stdout (a pipe), /dev/null, a FIFO
        with given.open("wb") as handle:
            yield handle
        return
    if given.is_symlink():
        try:
            os.path.realpath(given, strict=True)
        except OSError as exc:  # a loop would be replaced by a file; a dangling link is written
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(given)) from None
    target = Path(os.path.realpath(given))  # a symlink keeps pointing at the file it named
    if target.exists() and not os.access(target, os.W_OK):  # read-only stays read-only
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(given))
    try:
        fd, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except PermissionError:
        if not target.exists():
            raise
        # a writable file in a folder we may not add to: written in place, as open() would
        with target.open("wb") as handle:
            yield handle
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.chmod(part, target.stat().st_mode & 0o7777 if target.exists() else _new_file_mode())
        os.replace(part, target)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise


def _new_file_mode() -> int:
    """The mode a new file gets from open(): 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
