"""YAML reading that remembers line numbers, so errors can name the file, line and field."""

from __future__ import annotations

import math
import re
import reprlib
from pathlib import Path
from typing import Any

import yaml

from wattserve.core.textfile import find_lone_surrogate, read_text
from wattserve.errors import ConfigError


class LineDict(dict[str, Any]):
    """A mapping from YAML that knows the line (1-based) of each key and of itself."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


# The pure-Python parser takes about 50 us a value and 0.5 us a character (libyaml's C parser
# is faster but overflows the C stack on deeply nested input), so these bounds keep the worst
# file a few seconds from an error; the largest real file (the built-in catalog) is 20 KiB and
# 1,500 values.
MAX_YAML_BYTES = 4 << 20
MAX_NODES = 50_000  # values written in the file, counted while it is parsed
MAX_VALUES = 1_000_000  # values a file may expand to, aliases included (no real file is near)
MAX_INT_DIGITS = 4_300  # Python's own limit on reading a decimal integer
_INT_LIMIT = 10**MAX_INT_DIGITS


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings remember their lines (constructor registered below) and that
    stops at MAX_NODES values."""

    nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConfigError(
                f"more than {MAX_NODES:,} values (no wattserve YAML file is near that)",
                line=self.line + 1,  # where the scanner is: at or just past the value
            )
        return super().compose_node(parent, index)

    merged = 0  # pairs merge keys copied, counted against MAX_VALUES

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """YAML merge keys (`<<: *base`, `<<: [*a, *b]`) as PyYAML reads them (the mapping's
        own keys win, then the first mapping listed), but each key kept once: PyYAML copies
        every merged pair, repeats included, so merges of merges grew exponentially (a
        "billion laughs" of 50 aliases a level). Copies count against MAX_VALUES."""
        merge: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.tag == "tag:yaml.org,2002:value":  # `=` as a key: PyYAML's text
                    key_node.tag = "tag:yaml.org,2002:str"
                own.append((key_node, value_node))
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for sub in reversed(sources):  # the first listed comes last, and so wins
                if not isinstance(sub, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping or list of mappings for merging, but found {sub.id}",
                        sub.start_mark,
                    )
                self.flatten_mapping(sub)
                self.merged += len(sub.value)
                if self.merged > MAX_VALUES:
                    raise ConfigError(
                        f"merge keys copy more than {MAX_VALUES:,} values",
                        line=node.start_mark.line + 1,
                    )
                merge.extend(sub.value)
        if not merge:
            node.value = own
            return
        pairs = merge + own
        last = {_merge_key(k): i for i, (k, _) in enumerate(pairs)}  # as a dict keeps them
        node.value = [pair for i, pair in enumerate(pairs) if last[_merge_key(pair[0])] == i]


def _merge_key(node: yaml.Node) -> object:
    """A merged key as written (a key the constructor refuses is left to it: kept apart)."""
    return (node.tag, node.value) if isinstance(node, yaml.ScalarNode) else id(node)


def _key(loader: _LineLoader, key_node: yaml.Node) -> str:
    """A mapping key as the dict stores it, as written: a number written otherwise than
    Python writes it back (`1.0e3`, `0x10`, `1_000`, `.5`) is refused, as it would name
    `1000.0`, `16`, `1000` or `0.5` where a trace row or header names it as written."""
    key = loader.construct_object(key_node, deep=True)
    line = key_node.start_mark.line + 1
    if isinstance(key, bool):  # YAML 1.1 reads `on:`, `no:` as booleans
        raise ConfigError(f"the key {key_node.value!r} reads as {key} in YAML: quote it", line=line)
    if not isinstance(key, str | int | float):
        raise ConfigError("mapping keys must be plain names", line=line)
    if not isinstance(key, str) and str(key) != key_node.value:
        raise ConfigError(
            f"the key {key_node.value!r:.80} reads as the number {key!r:.40} in YAML: quote it",
            line=line,
        )
    return str(key)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:  # a key written twice: YAML lets the last one win silently
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            line = key_node.start_mark.line + 1
            key = _key(loader, key_node)
            if key in seen:
                raise ConfigError(
                    f"{shown(key)} is given twice (first on line {seen[key]})", line=line
                )
            seen[key] = line
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        skey = _key(loader, key_node)
        out[skey] = loader.construct_object(value_node, deep=True)
        out.key_lines[skey] = key_node.start_mark.line + 1
    return out


def _construct_int(loader: _LineLoader, node: yaml.ScalarNode) -> int:
    """An integer, refused past MAX_INT_DIGITS digits (Python cannot even print it), or in a
    form only YAML 1.1 reads (see _yaml11_only)."""
    too_long = ConfigError(
        f"a number of more than {MAX_INT_DIGITS:,} digits", line=node.start_mark.line + 1
    )
    try:
        value = loader.construct_yaml_int(node)
    except ValueError:
        raise too_long from None
    _yaml11_only(node, value)
    if abs(value) >= _INT_LIMIT:  # written in hex, octal or binary: read, but no less absurd
        raise too_long
    return value


def _construct_float(loader: _LineLoader, node: yaml.ScalarNode) -> float:
    value: float = loader.construct_yaml_float(node)
    _yaml11_only(node, value)
    return value


def _yaml11_only(node: yaml.ScalarNode, value: float) -> None:
    """Refuse a number in a form YAML 1.1 reads and YAML 1.2 (and the CSV readers) do not:
    base 60 (`10:00` is 600), digits grouped by `_` (`6_00`), binary, and a leading zero (`010`
    is 8, in octal). Each was read without a word: `tdp_w: 10:00` was 600 W."""
    text = str(node.value).strip().lstrip("+-").lower()
    octal = len(text) > 1 and text[0] == "0" and text[1].isdigit() and "." not in text
    if ":" in text or "_" in text or text.startswith("0b") or octal:
        raise ConfigError(
            f"{node.value!r:.40} reads as {value:g} only in YAML 1.1 (base 60, grouped digits, "
            "binary or octal): write the number in decimal digits",
            line=node.start_mark.line + 1,
        )


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_LineLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
# YAML 1.1 reads `1e6` (no dot) as the string '1e6'; people write power caps and rates that way,
# so read it as the float YAML 1.2 and every other tool make of it.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml_text(text: str, path: str) -> Any:
    """Parse YAML text; a syntax error, or a key or text holding a lone UTF-16 surrogate (the
    escape "\\ud800"), becomes ConfigError with the file and line (and field)."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(
            f"larger than {MAX_YAML_BYTES >> 20} MiB, the limit for a YAML file", path=path
        )
    try:
        data = yaml.load(text, Loader=_LineLoader)
        _check_size(data)
        _check_characters(data)
        return data
    except RecursionError:
        raise ConfigError("nested too deeply", path=path) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        why = exc.problem or exc.context or "cannot be parsed"
        raise ConfigError(f"not valid YAML: {why}", path=path, line=line) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, ...)
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        why = f"character #x{char:04x} is not allowed" if isinstance(char, int) else exc.reason
        raise ConfigError(f"not valid YAML: {why}", path=path, line=line) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"not valid YAML: {first}", path=path) from None
    except ConfigError as exc:
        raise ConfigError(exc.detail, path=path, line=exc.line, field=exc.field) from None


def _check_size(data: Any) -> None:
    """Refuse a document whose aliases expand it past MAX_VALUES values ("billion laughs"):
    PyYAML shares an alias's value, so it loads small, but any walk over it (an error
    message, a copy) would take hours and gigabytes."""
    sizes: dict[int, int] = {}

    def size(v: Any) -> int:
        if not isinstance(v, dict | list):
            return 1
        known = sizes.get(id(v))
        if known is None:
            items = v.values() if isinstance(v, dict) else v
            known = sizes[id(v)] = 1 + sum(size(x) for x in items)
        return known

    if size(data) > MAX_VALUES:
        raise ConfigError(f"expands to more than {MAX_VALUES:,} values through its aliases")


def _check_characters(data: Any) -> None:
    """Refuse a key or text holding a lone UTF-16 surrogate: no character, so printing or
    writing it failed later with a traceback. Walked whole (each aliased value once): a file's
    50,000 values at most take milliseconds, against seconds to parse them."""
    found = find_lone_surrogate(data)
    if found is None:
        return
    line, node = None, data  # the line: of the innermost key on the way to it
    for step in found.at:
        if isinstance(node, LineDict):
            line = node.line_of(str(step))
        try:
            node = node[step]
        except TypeError:  # a set (!!set): its items have no line of their own
            break
    raise found.error(
        "or one escape, as \\U0001F600 (YAML joins no \\ud83d\\ude00 pair)", line=line
    )


NAME_RULE = "printable text of 1 to 200 characters, not beginning or ending with a space"


def is_name(name: object) -> bool:
    """Whether `name` may name a site, deployment or class: it is written back (plan --out,
    reports), printed on terminals and sent in HTTP headers, which drop surrounding spaces."""
    return (
        isinstance(name, str)
        and bool(name.strip())
        and name == name.strip()
        and len(name) <= 200
        and name.isprintable()
    )


def shown(value: Any) -> str:
    """A value for an error message, cut short (it may be huge or deeply nested)."""
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist = 3, 6, 6
_SHORT.maxstring = _SHORT.maxother = 80


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file of at most MAX_YAML_BYTES; a missing file is a ConfigError,
    not a traceback."""
    return load_yaml_text(read_text(path, MAX_YAML_BYTES), str(path))


class Fields:
    """Typed access to the fields of one YAML mapping; errors name the file, line and field."""

    def __init__(self, d: LineDict, path: str, where: str) -> None:
        self.d, self.path, self.where = d, path, where

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(
            msg, path=self.path, line=self.d.line_of(key), field=f"{self.where}.{key}"
        )

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.d:
            if key not in allowed:
                raise self.err(key, f"unknown field; expected one of {', '.join(sorted(allowed))}")

    def text(self, key: str, default: str | None = None) -> str:
        v = self.d.get(key, default)
        if v is None:
            raise ConfigError(
                "missing", path=self.path, line=self.d.line, field=f"{self.where}.{key}"
            )
        if not isinstance(v, str) or not v:
            raise self.err(key, f"expected text, got {shown(v)}")
        return v

    def name(self, key: str, default: str | None = None) -> str:
        """Text that names something (a workload's class): printed in tables and reports and
        sent in headers, so `is_name` holds."""
        v = self.text(key, default)
        if not is_name(v):
            raise self.err(key, f"{v!r:.80} is not a name: {NAME_RULE}")
        return v

    def optional_text(self, key: str, default: str, lines: bool = False) -> str:
        """Text that may be empty; absent or null is `default`. Printable: an escape sequence,
        a BEL or a carriage return would reach the terminal as is (`catalog show`,
        `estimate --explain` print these), a bidirectional override would reorder what is
        shown; `lines` lets line breaks through (a note written as a YAML block)."""
        v = self.d.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self.err(key, f"expected text, got {shown(v)}")
        if not v.isprintable():
            allowed = "\n" if lines else ""
            found = ((i, c) for i, c in enumerate(v) if not c.isprintable() and c not in allowed)
            bad = next(found, None)
            if bad is not None:
                raise self.err(key, f"must be printable text: {bad[1]!r} at character {bad[0] + 1}")
        return v

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        positive: bool = False,
        most: float | None = None,
        unit: str = "",
    ) -> float | None:
        v = self.d.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.err(key, f"expected a number, got {shown(v)}")
        try:
            f = float(v)
        except OverflowError:
            raise self.err(key, f"too large: {shown(v)}") from None
        if not math.isfinite(f):
            raise self.err(key, f"expected a finite number, got {'NaN' if f != f else f}")
        if f < 0 or (positive and f == 0):
            raise self.err(key, f"must be {'positive' if positive else 'non-negative'}, got {v}")
        if most is not None and f > most:
            raise self.err(key, f"at most {most:g}{' ' + unit if unit else ''}, got {f:g}")
        return f

    def integer(self, key: str, default: int) -> int:
        v = self.d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self.err(key, f"expected a positive integer, got {shown(v)}")
        return v

    def flag(self, key: str, default: bool = False) -> bool:
        v = self.d.get(key, default)
        if not isinstance(v, bool):  # YAML's true/false, not "false" (a non-empty string)
            raise self.err(key, f"expected true or false, got {shown(v)}")
        return v

    def fraction(self, key: str, default: float) -> float:
        v = self.number(key, default)
        if v is None or v > 1:
            raise self.err(key, f"must be between 0 and 1, got {v}")
        return v
