"""The dashboard in a real browser (headless Chromium, see browser.py), against a real
gateway under load from `wattserve bench`. A screenshot is kept in $WATTSERVE_TEST_ARTIFACTS
(default test-artifacts/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import chrome, open_report, require
from serving import FAST_FLEET, gateway

from wattserve.serve.ledger import Ledger

REPO = Path(__file__).resolve().parents[1]
require()

from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chrome(tmp_path / "chrome-profile") as driver:
        yield driver


def fleet(url: str, key: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/fleet", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def test_dashboard_live_admin_and_refusal(browser: Any, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "dash.db")
    viewer, admin = ledger.create_key("viewer"), ledger.create_key("ops", admin=True)
    ledger.close()
    trace = tmp_path / "load.jsonl"
    trace.write_text(
        "".join(
            json.dumps({"arrival_s": i * 0.05, "prompt_tokens": 400, "output_tokens": 40}) + "\n"
            for i in range(160)
        )
    )
    with gateway(tmp_path, FAST_FLEET, name="dash") as s:
        browser.get(s.url + "/")

        def text(id_: str) -> str:  # read through JS: the page redraws its tables every second
            return str(
                browser.execute_script(
                    "var e = document.getElementById(arguments[0]); return e ? e.innerText : ''",
                    id_,
                )
            )

        def click(id_: str) -> None:
            for _ in range(20):
                try:
                    browser.find_element(By.ID, id_).click()
                    return
                except (StaleElementReferenceException, NoSuchElementException):
                    time.sleep(0.1)  # redrawn between finding and clicking: find it again
            raise AssertionError(f"could not click #{id_}")

        # a viewer's key: whether reading needs one depends on the gateway's key settings
        wait_for("the first poll", lambda: text("status") != "connecting…")
        browser.find_element(By.ID, "api-key").send_keys(viewer)
        click("use-key")
        wait_for("the totals", lambda: text("total-requests") == "0" and "live" in text("status"))
        idle_power = text("site-dc-now")

        load = subprocess.Popen(
            [sys.executable, "-m", "wattserve", "bench", "--url", s.url, "--trace", str(trace),
             "--api-key-env", "WS_DASH_KEY", "--out", str(tmp_path / "bench.json"),
             "--report", str(tmp_path / "bench.html")],
            env={**os.environ, "WS_DASH_KEY": viewer},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            first = int(wait_for("requests counted", lambda: int(text("total-requests")) or 0))
            wait_for(
                "the count to move", lambda: int(text("total-requests")) >= first + 10, timeout=60
            )
            wait_for("power under load", lambda: text("site-dc-now") != idle_power)
            first_row = browser.execute_script(
                "var r = document.querySelector('#recent tbody tr'); return r ? r.innerText : ''"
            )
            assert "fast/" in first_row or "edge-small/" in first_row, first_row
            assert "policy" in first_row  # why it went there
            assert "$" in text("total-usd") and "J" in text("total-energy")

            click("drain-fast")  # a viewer may not act
            wait_for("the refusal", lambda: "refused (403)" in text("admin-msg"))
            assert fleet(s.url, viewer)["targets"]["fast"]["drained"] is False

            key_box = browser.find_element(By.ID, "api-key")
            key_box.clear()
            key_box.send_keys(admin)
            click("use-key")
            click("drain-fast")
            wait_for("the drain", lambda: fleet(s.url, admin)["targets"]["fast"]["drained"])
            wait_for("the drained row", lambda: "drained" in text("target-fast"))
            browser.find_element(By.ID, "cap-dc").send_keys("1234")
            click("setcap-dc")
            wait_for(
                "the new cap", lambda: fleet(s.url, admin)["sites"]["dc"]["power_cap_w"] == 1234
            )
            wait_for("the cap on the page", lambda: "cap 1.23 kW" in text("site-dc-now"))
        finally:
            _, err = load.communicate(timeout=120)
        assert load.returncode in (0, 1) and "Traceback" not in err, err
        artifacts = Path(os.environ.get("WATTSERVE_TEST_ARTIFACTS", REPO / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    open_report(browser, tmp_path / "bench.html")  # the same charts, from the same module
