"""Headless Chromium for the browser tests: Debian's `chromium` and `chromium-driver`
(installed by scripts/test), driven by Selenium. A test module calls `require()` first, so that
it is skipped, not failed, where the browser is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def require() -> Any:
    """The `selenium.webdriver` module; skips the calling module when a piece is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "needs Debian's chromium and chromium-driver (scripts/test)", allow_module_level=True
        )
    return webdriver


@contextmanager
def chrome(profile: Path) -> Iterator[Any]:
    """A headless Chromium with its own profile folder; its console log is kept, so that a test
    can read the page's JavaScript errors (`driver.get_log("browser")`)."""
    webdriver = require()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1300,1500",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_report(driver: Any, path: Path) -> list[Any]:
    """Open a report from disk; check every chart is drawn and the console has no error. The
    chart elements, for more checks."""
    from selenium.webdriver.common.by import By

    driver.get("about:blank")  # leave the earlier page (the dashboard polls a gateway)...
    driver.get_log("browser")  # ...and drop what it logged
    driver.get(path.as_uri())
    charts = driver.find_elements(By.CSS_SELECTOR, "div.ws-chart")
    assert charts, f"{path.name} has no chart"
    drawn = driver.find_elements(By.CSS_SELECTOR, "div.ws-chart .uplot canvas")
    assert len(drawn) == len(charts), f"{len(drawn)} of {len(charts)} charts drawn"
    assert "chart failed" not in driver.find_element(By.TAG_NAME, "body").text
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    return list(charts)
