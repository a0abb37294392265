"""The public front: `from wattserve import ...` and no work at import."""

from __future__ import annotations

import subprocess
import sys

import wattserve


def test_all_names_resolve() -> None:
    assert len(wattserve.__all__) == len(set(wattserve.__all__))
    for name in wattserve.__all__:
        assert getattr(wattserve, name) is not None, name
    assert wattserve.estimate("llama-3.1-8b", "h100-sxm").fits


def test_import_is_light() -> None:
    code = (
        "import sys, wattserve; "
        "print(sorted(m for m in ('scipy', 'aiohttp', 'torch', 'openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
