"""Screenshots of Prometheus and Alertmanager in Debian's headless Chromium (Selenium through Debian's
chromedriver; nothing downloaded). Debian's Alertmanager ships no web UI, so its page is the API's
list of active alerts as the browser renders it."""

from __future__ import annotations

import os
import tempfile
import time
import urllib.parse
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from smoke_chromium import CHROMEDRIVER, CHROMIUM, flags


def available() -> bool:
    return all(os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


def screenshots(pages: dict[str, str], directory: Path, settle: float = 3.0) -> list[Path]:
    """Open each URL and save <name>.png under directory; returns the paths."""
    os.environ["SE_OFFLINE"] = "true"
    directory.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="mon-chromium-", ignore_cleanup_errors=True) as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in flags(profile):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(30)
            for name, url in pages.items():
                driver.get(url)
                time.sleep(settle)  # the graph draws after the page loads
                path = directory / f"{name}.png"
                driver.save_screenshot(str(path))
                saved.append(path)
        finally:
            driver.quit()
    return saved


def prometheus_graph(base: str, expr: str, range_: str = "10m") -> str:
    query = {"g0.expr": expr, "g0.tab": "0", "g0.range_input": range_}
    return f"{base}/graph?" + urllib.parse.urlencode(query)
