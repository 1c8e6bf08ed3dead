"""Live monitoring tests: run by molecule/worker/verify.yml with the MON_* environment."""

from __future__ import annotations

import os

import pytest

from monitoring import Monitoring
from support.reports import REPORTS, read_report, write_report

REPORT = REPORTS / "monitoring.json"


@pytest.fixture(scope="session")
def mon() -> Monitoring:
    if not os.environ.get("MON_PROMETHEUS_URL"):
        pytest.fail("MON_* environment not set (run through molecule/worker/verify.yml)", pytrace=False)
    return Monitoring.from_env()


@pytest.fixture(scope="session")
def report():
    results: dict[str, object] = {}
    yield results
    write_report(REPORT, results)


def pytest_terminal_summary(terminalreporter) -> None:
    for key, value in (read_report(REPORT) or {}).items():
        terminalreporter.write_line(f"{key}={value}")
