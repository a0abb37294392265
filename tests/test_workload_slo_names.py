"""An SLO class's name in a workload's `slos:` block: a bad one is reported at its own line
(it had been reported at the `slos:` line), and a name written as a number is refused unless
written as Python writes it back (`1e3` had named the class '1000.0', which rows naming `1e3`
did not find)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattserve.core.workload import load_slos, load_workload
from wattserve.errors import ConfigError

HEAD = "generator: {kind: poisson, duration_s: 10}\nslos:\n  chat: {ttft_s: 1.0}\n"
CLASS = (
    "classes:\n  - {name: c, model: llama-3.1-8b, rate_rps: 1, slo: chat,\n"
    "     prompt_tokens: {dist: fixed, value: 10}, output_tokens: {dist: fixed, value: 5}}\n"
)


@pytest.mark.parametrize(
    ("entry", "said"),
    [('  " padded": {ttft_s: 1.0}\n', "is not a name"), ("  tight: 0.5\n", "must be [{]ttft_s")],
)
def test_a_bad_slo_entry_is_reported_at_its_line(tmp_path: Path, entry: str, said: str) -> None:
    wl = tmp_path / "w.yaml"
    wl.write_text(HEAD + entry + CLASS)
    with pytest.raises(ConfigError, match=rf"w.yaml:4\b.*{said}"):
        load_workload(wl, default_model=None)
    with pytest.raises(ConfigError, match=rf"w.yaml:4\b.*{said}"):
        load_slos(wl)


def test_an_slo_named_as_a_number_is_read_as_written_or_refused(tmp_path: Path) -> None:
    wl = tmp_path / "w.yaml"
    wl.write_text(HEAD + "  1e3: {ttft_s: 2.0}\n" + CLASS)
    with pytest.raises(ConfigError, match=r"w.yaml:4: the key '1e3' reads as the number 1000.0"):
        load_slos(wl)
    wl.write_text(HEAD + "  '1e3': {ttft_s: 2.0}\n  7: {ttft_s: 3.0}\n" + CLASS)
    slos = load_slos(wl)
    assert slos["1e3"].ttft_s == 2.0 and slos["7"].ttft_s == 3.0
