"""What `calibrate` and `profile` write into a calibration file is what its readers take.

The text recorded from outside the fit (the measurements file's path in `source`, the model ids
of `measured`) is cut to one line of printable text of the length a reader allows
(`printable`), and the file's text is read back by `load_calibration` before it is written
(`calibration_text`): calibrate once reported "wrote calib.json, apply it with --calibration"
for a file that every reader then refused (a path holding a line break, a config file named
with 240 characters, the rows of 101 models).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from wattserve.core.coverage import MAX_MODELS, Coverage
from wattserve.core.params import Calibration, load_calibration
from wattserve.errors import CalibrationError, ConfigError

MAX_MODEL_ID = 200  # characters of a model id in `measured.models` (Coverage.from_json)
MAX_PATH_SHOWN = 300  # characters of the measurements path in a calibration's `source`


def printable(text: str, limit: int) -> str:
    """`text` as one line of printable text of at most `limit` characters: a control or
    invisible character (a line break, an escape, U+202E, a byte of a file name that no UTF-8
    names) becomes '?', and a longer text keeps its end (a path's file name), after '...'."""
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if len(shown) <= limit else "..." + shown[len(shown) - limit + 3 :]


def listed(coverage: Coverage) -> Coverage:
    """`coverage` with model ids a calibration file holds: each printable and at most
    MAX_MODEL_ID characters, and at most MAX_MODELS of them (the last saying how many more)."""
    ids = sorted({printable(m, MAX_MODEL_ID) for m in coverage.models})
    if len(ids) > MAX_MODELS:
        ids = [*ids[: MAX_MODELS - 1], f"and {len(ids) - MAX_MODELS + 1} more"]
    return replace(coverage, models=tuple(ids))


def calibration_text(calibration: Calibration) -> str:
    """The calibration file's text, once `load_calibration` has read it back; a text it
    refuses is a CalibrationError naming the field, and nothing is to be written."""
    text = calibration.dumps()
    with tempfile.TemporaryDirectory(prefix="wattserve-calibration-") as folder:
        path = Path(folder) / "calibration.json"
        path.write_text(text, encoding="utf-8")
        try:
            load_calibration(path)
        except ConfigError as exc:
            where = f"field '{exc.field}': " if exc.field else ""
            raise CalibrationError(
                f"the calibration came out as a file wattserve would not read back ({where}"
                f"{exc.detail}); nothing was written"
            ) from None
    return text
