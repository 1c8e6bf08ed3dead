"""The live suites wait for a Prometheus scrape newer than an event by reading the targets API's `lastScrape`:
its RFC 3339 times (nanoseconds, Z or an offset, Prometheus's zero time for a target never scraped) as epoch
seconds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from support.prometheus import scrape_started


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-03T21:40:01.123456789Z", datetime(2026, 12, 3, 21, 40, 1, 123456, tzinfo=UTC)),
        ("2026-12-03T21:40:01Z", datetime(2026, 12, 3, 21, 40, 1, tzinfo=UTC)),
        ("2026-12-03T22:40:01.5+01:00", datetime(2026, 12, 3, 21, 40, 1, 500000, tzinfo=UTC)),
    ],
)
def test_a_scrape_time_is_read_as_epoch_seconds(text: str, expected: datetime) -> None:
    assert scrape_started({"lastScrape": text}) == pytest.approx(expected.timestamp())


@pytest.mark.parametrize("target", [{"lastScrape": "0001-01-01T00:00:00Z"}, {"lastScrape": ""}, {}])
def test_a_target_never_scraped_reads_as_zero(target: dict) -> None:
    assert scrape_started(target) == 0.0
