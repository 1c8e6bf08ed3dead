"""Cluster tests: run by molecule/resources/cluster_chaos.yml (production scenario), CLUSTER_* environment."""

from __future__ import annotations

import os

import pytest

from cluster import Cluster
from support.reports import REPORTS, read_report, write_report

REPORT = REPORTS / "cluster-node-loss.json"


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if not os.environ.get("CLUSTER_NODES"):
        pytest.fail("CLUSTER_* environment not set (run through molecule/resources/cluster_chaos.yml)", pytrace=False)
    return Cluster.from_env()


@pytest.fixture(scope="session")
def report():
    results: list[dict] = []
    yield results
    write_report(REPORT, results)


def pytest_terminal_summary(terminalreporter) -> None:
    for r in read_report(REPORT) or []:
        terminalreporter.write_line(" ".join(f"{k}={v}" for k, v in r.items()))
