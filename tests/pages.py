"""Reading the HTML reports in tests: the chart specs a page holds, and whether it needs the
network."""

from __future__ import annotations

import html
import json
import re
from typing import Any


def specs(text: str) -> list[dict[str, Any]]:
    """The JSON spec of every chart on the page, in order."""
    return [json.loads(html.unescape(m)) for m in re.findall(r'data-spec="([^"]*)"', text)]


def assert_self_contained(text: str) -> None:
    """Every script and style is inline: the page opens offline and can be mailed."""
    assert re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)\s*=", text, re.I) is None
    assert "uPlot" in text and "wsCharts" in text
