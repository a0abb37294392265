"""Reading request traces: Azure LLM trace CSV, wattserve JSONL and Mooncake JSONL.

A trace is read through `textfile.read_text` (a regular file of at most MAX_TRACE_BYTES, in
UTF-8), so `/dev/zero`, a FIFO, a directory or a binary file is a ConfigError naming the file.
A malformed row is skipped and returned with its row number (its line in the file; a CSV
record's first line) and why; it never stops the read. A line longer than MAX_LINE_CHARS is a
malformed row, refused before it is parsed. Rows come back sorted by arrival (stable), Azure
ones in seconds since the earliest row kept.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattserve.core.textfile import load_json, read_text
from wattserve.core.yamlio import shown
from wattserve.errors import ConfigError

MAX_TRACE_BYTES = 64 << 20  # the published traces are under 1 MB; this is 2M+ Azure rows
MAX_TOKENS = 10_000_000  # tokens in one prompt or one output: far beyond any model's context
MAX_NAME = 256  # characters in a row's model, origin or slo name
# seconds from a trace's start to its last arrival (about 32 years): no trace spans more, and
# past it the arrivals are not offsets (Unix times, 1.7e9 s) or are absurd (1e308), which
# made a plan's rates vanish (a flow of 1e-308 req/s)
MAX_ARRIVAL_S = 1e9
# characters in one line of a trace: its rows are under 200 (a Mooncake row's hash_ids reach a
# few kB at a 100k-token prompt), and parsing a 60 MB row of `"x": [{}, {}, ...]` took 1.8 GB;
# a row of this length parses in under 10 MB
MAX_LINE_CHARS = 256 << 10
# malformed rows whose (row, why) is kept: every one is counted, but a 64 MiB file of 33
# million bad lines kept them all (7.5 GB) to print ten
MAX_BAD_ROWS_KEPT = 1_000


class BadRows(list[tuple[int, str]]):
    """Malformed rows as (row, why): the first MAX_BAD_ROWS_KEPT appended are kept (reports
    show ten), and `total` counts them all, kept or not (`len()` is what is kept: a length
    past the items would make list(), sorted() and indexing lie or allocate for nothing)."""

    dropped = 0  # rows counted but not kept

    def append(self, item: tuple[int, str]) -> None:
        if super().__len__() < MAX_BAD_ROWS_KEPT:
            super().append(item)
        else:
            self.dropped += 1

    def extend(self, items: Iterable[tuple[int, str]]) -> None:
        for item in items:
            self.append(item)

    @property
    def total(self) -> int:
        """Every malformed row, kept or not."""
        return len(self) + self.dropped


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One request of a trace; None: the row leaves it to the workload's classes."""

    row: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    model: str | None = None
    origin: str | None = None
    slo: str | None = None
    local_only: bool | None = None


def read_trace(path: Path) -> tuple[list[TraceRow], BadRows]:
    """The good rows of a trace (`.jsonl`: JSONL or Mooncake; anything else: Azure CSV),
    sorted by arrival, and the bad ones as (row, why)."""
    text = read_text(path, MAX_TRACE_BYTES)
    rows, bad = _jsonl_rows(text) if path.suffix == ".jsonl" else _azure_rows(text, str(path))
    rows.sort(key=lambda r: r.arrival_s)  # stable: rows at the same instant keep file order
    return rows, bad


def tokens(value: Any, name: str) -> int:
    """A token count from 1 to MAX_TOKENS: an integer, a whole float, or ASCII digits."""
    if value is None:
        raise ValueError(f"needs {name}")
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: token counts are whole numbers, not {shown(value)}")
    if not 1 <= value <= MAX_TOKENS:
        raise ValueError(f"{name} must be from 1 to {MAX_TOKENS:,}, got {shown(value)}")
    return value


_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: int() would take '1_000' and '١٢'


# -- Azure CSV ---------------------------------------------------------------------------------

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
# 2023-11-16 18:15:46.6805900 (Azure: 7 fraction digits), optionally with a zone
_TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?"
)


def _timestamp(text: str) -> dt.datetime:
    m = _TIMESTAMP.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"TIMESTAMP is not a date and time: {shown(text)}")
    fraction = (m[2] or ".0")[1:7].ljust(6, "0")  # datetime keeps microseconds
    zone = "+00:00" if m[3] == "Z" else m[3] or ""
    return dt.datetime.fromisoformat(f"{m[1]}.{fraction}{zone}")


def _too_long(line: str) -> str:
    return (
        f"malformed row: a line of {len(line):,} characters, over the {MAX_LINE_CHARS:,} "
        "a trace's line may have"
    )


def _capped_lines(text: str, bad: BadRows) -> Iterator[str]:
    """The lines of `text` as the csv module splits them (\\n, \\r\\n or \\r), a line past
    MAX_LINE_CHARS counted as a bad row and passed on empty (the csv module skips it, and its
    line count stays the file's)."""
    for n, line in enumerate(io.StringIO(text, newline=""), start=1):
        if len(line) > MAX_LINE_CHARS:
            bad.append((n, _too_long(line)))
            yield "\n"
        else:
            yield line


def _azure_rows(text: str, path: str) -> tuple[list[TraceRow], BadRows]:
    bad = BadRows()
    reader = csv.reader(_capped_lines(text, bad))
    try:
        columns = next(reader, [])
    except csv.Error as exc:
        raise ConfigError(f"the header is not CSV: {exc}", path=path, line=1) from None
    if bad:
        raise ConfigError(bad[0][1].removeprefix("malformed row: "), path=path, line=1)
    twice = sorted(c for c, n in Counter(columns).items() if n > 1)
    if twice:
        raise ConfigError(f"column {shown(twice[0])} is given twice", path=path, line=1)
    if not set(_AZURE_COLUMNS) <= set(columns):
        raise ConfigError(
            f"an Azure trace needs columns {', '.join(_AZURE_COLUMNS)}", path=path, line=1
        )
    at = [columns.index(c) for c in _AZURE_COLUMNS]
    timed: list[tuple[int, dt.datetime, int, int]] = []
    zoned: bool | None = None  # whether times carry a zone: the first good row decides
    while True:
        # a record is numbered by its first line (a quoted field may hold line breaks); the csv
        # module counts the lines it has read, the one it fails on not yet
        line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a field past the csv module's limit, a stray quote
            bad.append((line, f"malformed row: {exc}"))
            continue
        if not record:  # a blank line (or one too long, counted above)
            continue
        try:
            if len(record) <= max(at):
                raise ValueError(f"needs {len(_AZURE_COLUMNS)} fields")
            ts = _timestamp(record[at[0]])
            if zoned is not None and zoned != (ts.tzinfo is not None):
                which = "a time zone" if zoned else "no time zone"
                raise ValueError(f"TIMESTAMP must have {which}, as the rows before it")
            p = tokens(record[at[1]], "ContextTokens")
            o = tokens(record[at[2]], "GeneratedTokens")
        except (ValueError, OverflowError) as exc:
            bad.append((line, f"malformed row: {exc}"))
            continue
        zoned = ts.tzinfo is not None
        timed.append((line, ts, p, o))
    if not timed:
        bad.sort()
        return [], bad
    t0 = _span_start(timed)
    rows = []
    for line, t, p, o in timed:
        offset = (t - t0).total_seconds()
        if offset < 0:
            bad.append(
                (
                    line,
                    f"malformed row: {-offset:g} s before the first of the trace's other rows, "
                    f"over the {MAX_ARRIVAL_S:g} s a trace may span",
                )
            )
        elif offset > MAX_ARRIVAL_S:
            bad.append(
                (
                    line,
                    f"malformed row: {offset:g} s after the first row, over the "
                    f"{MAX_ARRIVAL_S:g} s a trace may span",
                )
            )
        else:
            rows.append(TraceRow(line, offset, p, o))
    bad.sort()
    return rows, bad


def _span_start(timed: list[tuple[int, dt.datetime, int, int]]) -> dt.datetime:
    """The time the trace starts: the earliest of the most rows that lie within MAX_ARRIVAL_S
    of each other (a tie: those holding the file's first good row, else the earliest), so a
    stray 1970-01-01 among 2023 rows is the row left out, not every other one."""
    ts = sorted(t for _, t, _, _ in timed)
    secs = [(t - ts[0]).total_seconds() for t in ts]
    first = (timed[0][1] - ts[0]).total_seconds()
    best, best_n, best_first = 0, 0, False
    j = 0
    for i, s in enumerate(secs):  # the window [s, s + MAX_ARRIVAL_S]: rows i to j - 1
        while j < len(secs) and secs[j] - s <= MAX_ARRIVAL_S:
            j += 1
        holds_first = s <= first <= s + MAX_ARRIVAL_S
        if j - i > best_n or (j - i == best_n and holds_first and not best_first):
            best, best_n, best_first = i, j - i, holds_first
        if j == len(secs):  # every later window holds fewer rows
            break
    return ts[best]


# -- JSONL (wattserve's and Mooncake's) --------------------------------------------------------


def _seconds(obj: dict[str, Any], key: str, per_s: float = 1.0) -> float:
    v = obj.get(key)
    if v is None:
        raise ValueError(f"needs {key}")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key} must be a number, not {shown(v)}")
    try:
        s = float(v) / per_s
    except OverflowError:
        raise ValueError(f"{key} is too large: {shown(v)}") from None
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"{key} must be a finite number >= 0, not {shown(v)}")
    if s > MAX_ARRIVAL_S:
        raise ValueError(
            f"{key} must be at most {MAX_ARRIVAL_S:g} s from the trace's start, not {shown(v)}"
        )
    return s


def _name(obj: dict[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > MAX_NAME:
        raise ValueError(f"{key} must be text of at most {MAX_NAME} characters, not {shown(v)}")
    if not v.isprintable():  # no site or model is named so (core.sites); and bench sends an
        # origin as a header, where a line break would start a header of the row's choosing
        raise ValueError(f"{key} must be printable text (no control characters), not {shown(v)}")
    if v != v.strip():  # nothing is named so (core.sites), and a header would drop the spaces
        raise ValueError(f"{key} must not begin or end with a space, not {shown(v)}")
    return v


def _jsonl_row(line: int, text: str) -> TraceRow:
    try:
        obj = load_json(text, "", line)  # a key given twice is a bad row, not the last one
    except json.JSONDecodeError as exc:  # its "line 1" would be the row's, not the file's
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except ConfigError as exc:  # nested too deeply, a key twice, a number past 4,300 digits,
        field = "" if exc.field is None else f"{exc.field}: "  # a lone surrogate's
        raise ValueError(field + exc.detail) from None
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    if "input_length" in obj:  # Mooncake: timestamp in ms, input/output_length
        if obj.get("timestamp") is None:
            raise ValueError("needs timestamp (in ms: a row with input_length is Mooncake's)")
        arrival = _seconds(obj, "timestamp", 1000.0)
        prompt = tokens(obj.get("input_length"), "input_length")
        output = tokens(obj.get("output_length"), "output_length")
    else:  # wattserve's: arrival_s (a bare `timestamp` in seconds stands in for it)
        arrival = _seconds(
            obj, "timestamp" if "arrival_s" not in obj and "timestamp" in obj else "arrival_s"
        )
        prompt = tokens(obj.get("prompt_tokens"), "prompt_tokens")
        output = tokens(obj.get("output_tokens"), "output_tokens")
    local_only = obj.get("local_only")
    if local_only is not None and not isinstance(local_only, bool):
        raise ValueError(f"local_only must be true or false, not {shown(local_only)}")
    return TraceRow(
        line,
        arrival,
        prompt,
        output,
        _name(obj, "model"),
        _name(obj, "origin"),
        _name(obj, "slo"),
        local_only,
    )


def _jsonl_rows(text: str) -> tuple[list[TraceRow], BadRows]:
    good: list[TraceRow] = []
    bad = BadRows()
    # newline=None: \n, \r\n and \r end a line, as a file opened as text (not U+2028)
    for line, row in enumerate(io.StringIO(text, newline=None), start=1):
        if len(row) > MAX_LINE_CHARS:  # refused unparsed: see MAX_LINE_CHARS
            bad.append((line, _too_long(row)))
            continue
        if not row.strip():
            continue
        try:
            good.append(_jsonl_row(line, row.removesuffix("\n")))
        except ValueError as exc:  # json.JSONDecodeError is one
            bad.append((line, f"malformed row: {exc}"))
    return good, bad
