"""Every verb's HTML report opened from disk in headless Chromium (see browser.py): each chart
is drawn, the console has no error, hovering a chart shows values. Screenshots are kept in
$WATTSERVE_TEST_ARTIFACTS (default test-artifacts/). The `bench --report` page is opened by
test_dashboard.py, which runs bench against a gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chrome, open_report, require

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
require()

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

# The report of each verb, from the command line as a user runs it (small, fast inputs).
COMMANDS: dict[str, list[str]] = {
    "simulate": [
        "simulate", "--fleet", str(EXAMPLES / "fleet-hetero.yaml"),
        "--trace", str(EXAMPLES / "workload-synthetic.yaml"), "--compare", "cost,energy",
    ],
    "rank": [
        "rank", "--model", "llama-3.1-70b",
        "--hardware", "h100-sxm,mi300x,l4,groq-cloud,jetson-orin-nano-8gb",
    ],
    "rank-edge": ["rank", "--edge"],
    "plan": [
        "plan", "--workload", str(EXAMPLES / "workload-multisite.yaml"),
        "--sites", str(EXAMPLES / "sites-two-dc-edge.yaml"),
        "--hardware", "h100-sxm,l4,jetson-agx-orin-64gb", "--capacity", "analytic",
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reports")
    out = {}
    for name, args in COMMANDS.items():
        path = folder / f"{name}.html"
        p = subprocess.run(
            [sys.executable, "-m", "wattserve", *args, "--report", str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        out[name] = path
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chrome(tmp_path_factory.mktemp("chrome-profile")) as driver:
        yield driver


@pytest.mark.parametrize("name", list(COMMANDS))
def test_report_draws_every_chart_without_errors(
    name: str, reports: dict[str, Path], browser: Any
) -> None:
    charts = open_report(browser, reports[name])

    # hover the middle of each chart: its legend shows a value in its unit
    shown = 0
    for chart in charts:
        over = chart.find_element(By.CSS_SELECTOR, ".u-over")
        ActionChains(browser).move_to_element(over).perform()
        values = [v.text for v in chart.find_elements(By.CSS_SELECTOR, ".u-legend .u-value")]
        shown += any(v not in ("", "–") for v in values[1:])
    assert shown == len(charts), f"hover values shown in {shown} of {len(charts)} charts"

    artifacts = Path(os.environ.get("WATTSERVE_TEST_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(artifacts / f"report-{name}.png"))


def test_ticks_are_written_in_their_unit(reports: dict[str, Path], browser: Any) -> None:
    browser.get(reports["rank"].as_uri())
    fmt = [
        browser.execute_script("return wsCharts.fmt(arguments[0], arguments[1])", unit, v)
        for unit, v in (("s", 1760.0), ("s", 0.25), ("$", 0.12), ("W", 2400.0), ("J", 0.6))
    ]
    assert fmt == ["29:20", "250 ms", "$0.12", "2.4 kW", "0.6 J"]
