"""The live suites wait for a Prometheus scrape newer than an event by reading the targets API's `lastScrape`:
its RFC 3339 times (nanoseconds, Z or an offset, Prometheus's zero time for a target never scraped) as epoch
seconds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from support import prometheus
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


def _target(url: str, started: str, health: str = "up") -> dict:
    return {"scrapeUrl": url, "lastScrape": started, "health": health, "lastError": "" if health == "up" else "x509"}


def test_waiting_for_fresh_scrapes_polls_until_every_target_is_newer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus.time, "sleep", lambda _: None)
    since = datetime(2026, 12, 4, 6, 0, 0, tzinfo=UTC).timestamp()
    answers = [
        [],  # Prometheus not answering with targets yet
        [_target("a", "2026-12-04T05:59:59Z"), _target("b", "2026-12-04T06:00:01Z")],
        [_target("a", "2026-12-04T06:00:02Z"), _target("b", "2026-12-04T06:00:01Z")],
    ]
    assert prometheus.wait_scraped(lambda: answers.pop(0), since, timeout=60) == [
        _target("a", "2026-12-04T06:00:02Z"),
        _target("b", "2026-12-04T06:00:01Z"),
    ]
    assert answers == []


def test_waiting_for_targets_up_names_the_one_still_down_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus.time, "sleep", lambda _: None)
    fresh = [_target("a", "2026-12-04T06:00:02Z"), _target("https://mq1:15691/metrics", "2026-12-04T06:00:02Z", "down")]
    since = datetime(2026, 12, 4, 6, 0, 0, tzinfo=UTC).timestamp()
    assert prometheus.wait_scraped(lambda: fresh, since, timeout=0) == fresh  # fresh is enough without `up`
    with pytest.raises(
        AssertionError, match=r"not scraped up again within 0 s: \['https://mq1:15691/metrics: down x509'\]"
    ):
        prometheus.wait_scraped(lambda: fresh, since, timeout=0, up=True)
