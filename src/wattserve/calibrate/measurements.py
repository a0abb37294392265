"""The measurements CSV that `calibrate` reads and `profile` writes.

Header: model,hardware,count,tensor_parallel,dtype,phase,batch,prompt_tokens,context_tokens,
seconds,watts, and optionally kv_dtype (the KV cache's format; empty: the weights' activation
format, as in a fleet file). Prefill rows give the seconds of one prefill of `prompt_tokens`
for `batch` sequences; decode rows the seconds of one decode step at `context_tokens`. `watts`
(mean power per device) may be empty, and so may the field a phase does not use
(`context_tokens` of a prefill row, `prompt_tokens` of a decode row). `model` is a built-in
model or a config.json path; a relative path is looked up next to the CSV first (so a folder of
measurements and the model configs they name can move together).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wattserve.core.deployment import default_kv_dtype
from wattserve.core.dtypes import DTYPES, PEAK_DTYPES, Dtype, parse_dtype
from wattserve.core.hardware import MAX_ID_CHARS as MAX_HARDWARE_ID
from wattserve.core.memory import MAX_STEP_BATCH
from wattserve.core.modelspec import builtin_model_id, builtin_model_ids
from wattserve.core.textfile import read_text
from wattserve.errors import ConfigError, closest

COLUMNS = (
    "model",
    "hardware",
    "count",
    "tensor_parallel",
    "dtype",
    "phase",
    "batch",
    "prompt_tokens",
    "context_tokens",
    "seconds",
    "watts",
)
OPTIONAL_COLUMNS = ("kv_dtype",)  # empty or absent: default_kv_dtype(dtype)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured step. `line` is its line in the CSV file."""

    model: str
    hardware: str
    count: int
    tensor_parallel: int
    dtype: Dtype
    phase: Literal["prefill", "decode"]
    batch: int
    prompt_tokens: int
    context_tokens: int
    seconds: float
    watts: float | None
    line: int = 0
    kv_dtype: Dtype | None = None  # None: what the weights' format implies

    @property
    def kv_format(self) -> Dtype:
        return self.kv_dtype or default_kv_dtype(self.dtype)

    @property
    def pipeline_parallel(self) -> int:
        return self.count // self.tensor_parallel


MAX_BATCH = MAX_STEP_BATCH  # no engine runs a million sequences in one step
# The fit's time grows with the rows and with the terms they carry the selection to: on the
# 2-vCPU development machine 1,000 distinct rows took 15-58 s of CPU, and 2,000 24-807 s
# (docs/calibration.md)
MAX_ROWS = 2000


def _int(
    row: dict[str, str],
    key: str,
    path: str,
    line: int,
    minimum: int = 1,
    maximum: int | None = None,
) -> int:
    raw = (row.get(key) or "").strip()
    huge = re.fullmatch(r"(-?)0*[1-9][0-9]{12,}", raw)  # a whole number past what _INT reads
    if huge is not None:
        shown = raw[:40] + ("..." if len(raw) > 40 else "")
        limit = MAX_COUNT if maximum is None else maximum
        raise ConfigError(
            f"must be at least {minimum}, got {shown}"
            if huge.group(1)
            else f"too large: must be at most {limit}, got {shown}",
            path=path,
            line=line,
            field=key,
        )
    if not _INT.fullmatch(raw):
        raise ConfigError(
            f"expected a whole number in ASCII digits, got {raw[:40]!r}",
            path=path,
            line=line,
            field=key,
        )
    value = int(raw)
    if value < minimum:
        raise ConfigError(
            f"must be at least {minimum}, got {value}", path=path, line=line, field=key
        )
    if maximum is not None and value > maximum:
        raise ConfigError(
            f"must be at most {maximum}, got {value}", path=path, line=line, field=key
        )
    return value


def _float(row: dict[str, str], key: str, path: str, line: int) -> float | None:
    raw = (row.get(key) or "").strip()
    if not raw:
        return None
    if not _NUMBER.fullmatch(raw):
        raise ConfigError(f"expected a number, got {raw[:40]!r}", path=path, line=line, field=key)
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"must be a positive number, got {raw}", path=path, line=line, field=key)
    lo, hi, unit = _RANGES[key]
    if not lo <= value <= hi:
        raise ConfigError(
            f"must be from {lo:g} to {hi:g} {unit}, got {raw}", path=path, line=line, field=key
        )
    return value


# Numbers as a CSV writer prints them, in ASCII: int() and float() would also take '1_000',
# '+5', Arabic-Indic digits and 'nan', none of which a measuring script writes on purpose.
_INT = re.compile(r"-?[0-9]{1,12}")
MAX_COUNT = 10**12 - 1  # the largest count _INT reads: no token count or batch comes near it
# One way to match each text: `[0-9]+\.?[0-9]*` could split a run of digits between its two
# parts at every place, and a field of 30,000 digits and a letter took 18 s to refuse.
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,4})?")

# What a measured step can be: from a nanosecond to a day; per device from a milliwatt (an edge
# accelerator idles at a few watts) to a megawatt (a wafer-scale system draws tens of kW).
_RANGES = {"seconds": (1e-9, 86400.0, "seconds"), "watts": (1e-3, 1e6, "W per device")}


# the longest id a row may name: a hardware id as a catalog's, a model a built-in id or a
# config path (PATH_MAX on Linux is 4,096 bytes)
MAX_ID_CHARS = {"model": 4096, "hardware": MAX_HARDWARE_ID}


def _plain_text(row: dict[str, str], path: str, line: int) -> None:
    """Refuse a field holding a control or invisible character: an escape prints into the
    terminal with the error that quotes it (one clears the screen), and an id holding U+202E
    or a no-break space prints as a known id yet is refused as unknown."""
    for key, value in row.items():
        text = (value or "").strip()  # a tab around a number is only space
        hidden = next((c for c in text if not c.isprintable()), None)
        if hidden is not None:
            raise ConfigError(
                f"{text!r:.80} holds U+{ord(hidden):04X}, a control or invisible "
                "character: write the field as plain text",
                path=path,
                line=line,
                field=key,
            )


def _id_text(row: dict[str, str], key: str, path: str, line: int) -> str:
    """The row's model or hardware: not empty, and no longer than an id or a path can be."""
    text = (row.get(key) or "").strip()
    if not text:
        raise ConfigError("must not be empty", path=path, line=line, field=key)
    if len(text) > MAX_ID_CHARS[key]:
        raise ConfigError(
            f"{len(text):,} characters; an id or path is at most {MAX_ID_CHARS[key]:,}",
            path=path,
            line=line,
            field=key,
        )
    return text


def _dtype(
    row: dict[str, str], key: str, path: str, line: int, allowed: tuple[Dtype, ...]
) -> Dtype:
    raw = (row.get(key) or "").strip()
    try:
        return parse_dtype(raw, key, allowed)
    except ConfigError:  # its message quotes the whole field: 100,000 characters of it
        raise ConfigError(
            f"{raw!r:.40} is not a dtype; use one of {', '.join(allowed)}",
            path=path,
            line=line,
            field=key,
        ) from None


def parse_row(row: dict[str, str], path: str, line: int) -> Measurement:
    _plain_text(row, path, line)
    model = _id_text(row, "model", path, line)
    hardware = _id_text(row, "hardware", path, line)
    phase = (row.get("phase") or "").strip().lower()  # any case, as its dtype is read
    if phase not in ("prefill", "decode"):
        raise ConfigError(
            f"must be 'prefill' or 'decode', got {phase!r:.40}", path=path, line=line, field="phase"
        )
    count = _int(row, "count", path, line)
    tp = _int(row, "tensor_parallel", path, line)
    if count % tp:
        raise ConfigError(
            f"count ({count}) must be a multiple of tensor_parallel ({tp})",
            path=path,
            line=line,
            field="count",
        )
    dtype = _dtype(row, "dtype", path, line, DTYPES)
    kv_dtype = None
    if (row.get("kv_dtype") or "").strip():
        kv_dtype = _dtype(row, "kv_dtype", path, line, PEAK_DTYPES)
    # a phase's unused field may be empty: decode rows need no prompt_tokens, prefill rows
    # no context_tokens (then the whole context is the prompt)
    prompt_raw = (row.get("prompt_tokens") or "").strip()
    context_raw = (row.get("context_tokens") or "").strip()
    needed, what = (
        ("prompt_tokens", "the prompt it prefills")
        if phase == "prefill"
        else ("context_tokens", "the context the step extends")
    )
    if not (prompt_raw if phase == "prefill" else context_raw):
        raise ConfigError(
            f"a {phase} row needs its {needed} ({what}); only the other field may be empty",
            path=path,
            line=line,
            field=needed,
        )
    if phase == "prefill":
        prompt = _int(row, "prompt_tokens", path, line, minimum=1)
        context = _int(row, "context_tokens", path, line, minimum=0) if context_raw else prompt
        if context < prompt:
            raise ConfigError(
                f"a prefill's context ({context}) holds its prompt ({prompt}) and any cached "
                "prefix, so it cannot be shorter; leave it empty for no cached prefix",
                path=path,
                line=line,
                field="context_tokens",
            )
    else:  # a decode step extends a context of at least one token (its prompt's)
        context = _int(row, "context_tokens", path, line, minimum=1)
        prompt = _int(row, "prompt_tokens", path, line, minimum=0) if prompt_raw else context
        if prompt > context:
            raise ConfigError(
                f"a decode step's context ({context}) holds its prompt ({prompt}), so it cannot "
                "be shorter; leave prompt_tokens empty when unknown",
                path=path,
                line=line,
                field="context_tokens",
            )
    seconds = _float(row, "seconds", path, line)
    if seconds is None:
        raise ConfigError("must not be empty", path=path, line=line, field="seconds")
    return Measurement(
        model=model,
        hardware=hardware,
        count=count,
        tensor_parallel=tp,
        dtype=dtype,
        phase=phase,  # type: ignore[arg-type]
        batch=_int(row, "batch", path, line, maximum=MAX_BATCH),
        prompt_tokens=prompt,
        context_tokens=context,
        seconds=seconds,
        watts=_float(row, "watts", path, line),
        line=line,
        kv_dtype=kv_dtype,
    )


def read_measurements(path: str | Path) -> list[Measurement]:
    """Parse the CSV; any malformed row raises ConfigError naming the file, line and field."""
    p = Path(path)
    lines = _Starts(io.StringIO(read_text(p), newline=""))
    reader = csv.DictReader(lines)
    rows: list[Measurement] = []
    try:
        header = [h.strip() for h in reader.fieldnames or []]
        if not header:  # "missing column(s) model, hardware, ..." said less than this
            raise ConfigError(
                f"an empty file: the header must be {','.join(COLUMNS)}", path=str(p), line=1
            )
        absent = [c for c in COLUMNS if c not in header]
        if absent:
            raise ConfigError(
                f"missing column(s) {', '.join(absent)}; the header must be {','.join(COLUMNS)}",
                path=str(p),
                line=1,
            )
        known = COLUMNS + OPTIONAL_COLUMNS
        unknown = [h for h in header if h not in known]
        if unknown:  # a misspelt kv_dtype column was read as absent: bf16 for an fp8 run
            near = [f"{h!r:.40} (did you mean {' or '.join(closest(h, known))}?)"
                    if closest(h, known) else f"{h!r:.40}" for h in unknown[:5]]  # fmt: skip
            raise ConfigError(
                f"unknown column(s) {', '.join(near)}; the columns are {','.join(known)}",
                path=str(p),
                line=1,
            )
        twice = sorted(h for h, n in Counter(header).items() if n > 1)  # not header.count: n^2
        if twice:
            raise ConfigError(f"column(s) named twice: {', '.join(twice)}", path=str(p), line=1)
        reader.fieldnames = header
        lines.first = None
        for row in reader:
            line = lines.first or reader.line_num  # the row's first line, which errors name
            lines.first = None
            if None in row:  # DictReader files the fields past the header under None
                raise ConfigError(
                    f"{len(header) + len(row[None])} fields where the header names {len(header)}",
                    path=str(p),
                    line=line,
                )
            broken = next(
                (h for h in header if "\n" in (row[h] or "") or "\r" in (row[h] or "")), None
            )
            if broken is not None:  # no field holds a line: a quote left open swallowed some
                raise ConfigError(
                    f"holds a line break (a quote opened on line {line} and closed on line "
                    f"{reader.line_num}, or never closed)",
                    path=str(p),
                    line=line,
                    field=broken,
                )
            given = sum(row[h] is not None for h in header)  # DictReader fills a short row
            if given < len(header):  # with None: it read as the first empty field's error
                raise ConfigError(
                    f"{given} fields where the header names {len(header)}", path=str(p), line=line
                )
            if len(rows) == MAX_ROWS:
                raise ConfigError(
                    f"more than {MAX_ROWS} rows: average repeated measurements of one shape "
                    "into one row (the fit's time grows with the rows)",
                    path=str(p),
                    line=line,
                )
            rows.append(parse_row(row, str(p), line))
    except csv.Error as exc:  # raised while reading the row after the last one read
        raise ConfigError(
            f"not a readable CSV: {exc}", path=str(p), line=lines.first or reader.line_num
        ) from None
    if not rows:
        raise ConfigError("no measurement rows", path=str(p))
    return [_beside(m, p.parent) for m in rows]


class _Starts:
    """The CSV's lines as the reader takes them, noting where the next record starts: the
    first line that is not blank (the reader skips blank lines between rows; a quoted field
    may span lines, and a quote never closed runs to the end of the file)."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.n = 0  # lines taken
        self.first: int | None = None  # where the record being read began

    def __iter__(self) -> _Starts:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.n += 1
        if self.first is None and line.strip("\r\n"):
            self.first = self.n
        return line


def _beside(m: Measurement, folder: Path) -> Measurement:
    """`m` with a relative model path resolved against `folder` when the file, or a folder
    holding its config.json, is there. A built-in id in another case (`Llama-3.1-8B`) is
    looked for there too, as `load_model` looks for it in the working folder: it had been
    read beside the CSV only when run from the CSV's own folder (one file, two fits)."""
    exact = m.model in builtin_model_ids()
    case_variant = not exact and m.model.lower() in builtin_model_ids()
    if exact or Path(m.model).is_absolute():
        return m
    if not case_variant and builtin_model_id(m.model) is not None:  # a repository alias
        return m
    there = folder / m.model
    try:
        beside = there.is_file() or (there / "config.json").is_file()
    except OSError:  # a name too long to be a path: load_model says it is unknown
        return m
    return dataclasses.replace(m, model=str(there)) if beside else m


def write_measurements(path: str | Path, rows: list[Measurement]) -> None:
    kv = any(m.kv_dtype for m in rows)  # the optional column only where a row sets it
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS + OPTIONAL_COLUMNS if kv else COLUMNS)
        for m in rows:
            writer.writerow(
                [
                    m.model,
                    m.hardware,
                    m.count,
                    m.tensor_parallel,
                    m.dtype,
                    m.phase,
                    m.batch,
                    m.prompt_tokens,
                    m.context_tokens,
                    f"{m.seconds:.6g}",
                    "" if m.watts is None else f"{m.watts:.4g}",
                    *([m.kv_dtype or ""] if kv else []),
                ]
            )
