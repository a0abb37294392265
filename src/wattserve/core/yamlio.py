"""YAML reading that remembers line numbers, so errors can name the file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wattserve.errors import ConfigError


class LineDict(dict[str, Any]):
    """A mapping from YAML that knows the line (1-based) of each key and of itself."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings remember their lines (constructor registered below)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float):
            raise ConfigError("mapping keys must be plain names", line=key_node.start_mark.line + 1)
        skey = str(key)
        out[skey] = loader.construct_object(value_node, deep=True)
        out.key_lines[skey] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml_text(text: str, path: str) -> Any:
    """Parse YAML text; a syntax error becomes ConfigError with the file and line."""
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not valid YAML: {exc.problem}", path=path, line=line) from None
    except ConfigError as exc:
        raise ConfigError(str(exc), path=path, line=exc.line) from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file; a missing file is a ConfigError, not a traceback."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", path=str(p)) from None
    return load_yaml_text(text, str(p))
