"""Headless Chromium for the page tests: Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium, offline (no driver download, no browser phoning home), a fresh profile each time.

Screenshots go to ``$IOT_ARTEFACTS`` (default: a new folder under /tmp); the folder is printed
at the end of the test run (conftest's "test artefacts")."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


def why_no_browser() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        return f"browser tests need Debian's chromium and chromium-driver ({', '.join(missing)} missing; " \
               "make install as root installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "browser tests need selenium (pip install -e '.[test]')"
    return None


def artefacts_dir(config) -> Path:
    d = getattr(config, "artefacts_dir", None)
    if d is None:
        d = Path(os.environ.get("IOT_ARTEFACTS") or tempfile.mkdtemp(prefix="iot-artefacts-"))
        d.mkdir(parents=True, exist_ok=True)
        config.artefacts_dir = d
    return d


class Browser:
    def __init__(self, config):
        os.environ.setdefault("SE_OFFLINE", "true")          # Selenium Manager: never download
        os.environ.setdefault("SE_AVOID_STATS", "true")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        self.profile = tempfile.mkdtemp(prefix="iot-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for f in FLAGS:
            opts.add_argument(f)
        opts.add_argument(f"--user-data-dir={self.profile}")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(30)
        self.config = config
        self.shots: list[Path] = []

    def get(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, pred, timeout: float = 20.0, what: str = "the page"):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                v = pred(self.driver)
                if v:
                    return v
            except Exception as exc:  # noqa: BLE001 - elements come and go while the page refreshes
                last = exc
            if time.monotonic() > deadline:
                self.screenshot(f"timeout-{int(time.time())}")
                raise AssertionError(f"waiting for {what}: not within {timeout:g} s (last error: {last!r})")
            time.sleep(0.2)

    def css(self, sel: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, sel)

    def one(self, sel: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, sel)

    def click(self, sel: str, timeout: float = 10.0) -> None:
        """Click an element, finding it again if the page re-rendered it meanwhile (the page
        refreshes itself every few seconds)."""
        def go(d):
            self.one(sel).click()
            return True
        self.wait(go, timeout, f"a click on {sel}")

    def table(self, sel: str) -> dict:
        """The rows of a table that have ``data-mac``: MAC -> cell texts, read in one step (the
        page may replace its rows between two separate reads)."""
        rows = self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr[data-mac]'))"
            ".map(tr => [tr.dataset.mac, Array.from(tr.cells).map(td => td.innerText.trim())]);", sel)
        return {mac: cells for mac, cells in rows}

    def texts(self, sel: str) -> list[list[str]]:
        """Each row's cell texts of ``sel`` (a tbody's rows), read in one step."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]))"
            ".map(tr => Array.from(tr.cells).map(td => td.innerText.trim()));", sel)

    def text(self, sel: str) -> str:
        return self.driver.execute_script("const e = document.querySelector(arguments[0]);"
                                          "return e ? e.innerText : null;", sel) or ""

    def set_width(self, width: int, mobile: bool | None = None) -> None:
        """Lay the page out as a window ``width`` CSS pixels wide (a phone below 700)."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 700 if mobile is None else mobile})

    def scroll_width(self) -> int:
        """How wide the page's content is (wider than the window: it scrolls sideways)."""
        return self.driver.execute_script("return Math.max(document.documentElement.scrollWidth, "
                                          "document.body.scrollWidth)")

    def screenshot(self, name: str, width: int = 1400) -> Path:
        """A screenshot of the whole page (beyond the window) laid out ``width`` CSS pixels wide,
        kept as an artefact."""
        import base64
        d = artefacts_dir(self.config)
        path = d / f"{name}.png"
        try:
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 700})
            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": int(min(max(size["height"], 600), 8000)), "deviceScaleFactor": 1,
                "mobile": width < 700})
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png",
                                                                          "captureBeyondViewport": True})
            path.write_bytes(base64.b64decode(shot["data"]))
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.shots.append(path)
        arts = getattr(self.config, "artefacts", None)
        if arts is not None:
            arts.append(str(path))
        return path

    def screenshots(self, name: str) -> list[Path]:
        """:meth:`screenshot` as a desk (1400 px) and as a phone (400 px, ``NAME-400``) see the page."""
        return [self.screenshot(name), self.screenshot(f"{name}-400", width=400)]

    def console_errors(self) -> list:
        """Script errors and content-security-policy violations (not failed requests: a refused
        pin is an HTTP error the page expects)."""
        try:
            return [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"
                    and e.get("source") != "network"]
        except Exception:  # noqa: BLE001 - not every driver keeps the log
            return []

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser(request):
    reason = why_no_browser()
    if reason:
        pytest.skip(reason)
    b = Browser(request.config)
    try:
        yield b
    finally:
        b.quit()
