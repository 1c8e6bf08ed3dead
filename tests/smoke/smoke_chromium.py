"""Debian's headless Chromium as Selenium starts it here: the management UI test (`test_browser.py`) and
the monitoring suite's screenshots (`tests/worker_monitoring/browser.py`) pass the same flags."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


def flags(profile: str, *extra: str) -> list[str]:
    """The flags for one browser with its own throwaway profile directory."""
    return [*FLAGS, f"--user-data-dir={profile}", *extra]
