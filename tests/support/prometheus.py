"""What the live suites read from Prometheus's HTTP API and share."""

from __future__ import annotations

import re
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
