"""What the live suites read from Prometheus's HTTP API and share."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def scrape_started(target: dict[str, Any]) -> float:
    """When an active target's last scrape started (the targets API's `lastScrape`, RFC 3339 with nanoseconds),
    as epoch seconds; 0 when it was never scraped or the field is missing."""
    match = _RFC3339.match(target.get("lastScrape", ""))
    if not match:
        return 0.0
    zone = "+00:00" if match[3] == "Z" else match[3]
    fraction = (match[2] or "0")[:6].ljust(6, "0")
    return max(datetime.fromisoformat(f"{match[1]}.{fraction}{zone}").timestamp(), 0.0)


def wait_scraped(
    targets: Callable[[], list[dict[str, Any]]], since: float, timeout: float, *, up: bool = False, poll: float = 0.5
) -> list[dict[str, Any]]:
    """Poll `targets()` (the active targets) until each has a scrape that started at `since` (epoch seconds) or
    later, and, with `up`, is up; return them.  At the deadline, AssertionError naming the targets still behind."""
    deadline = time.monotonic() + timeout
    while True:
        found = targets()
        behind = [t for t in found if scrape_started(t) < since or (up and t.get("health") != "up")]
        if found and not behind:
            return found
        if time.monotonic() >= deadline:
            late = [f"{t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError', '')}".rstrip() for t in behind]
            raise AssertionError(f"targets not scraped{' up' if up else ''} again within {timeout:.0f} s: {late}")
        time.sleep(poll)
