"""Cluster tests: run by molecule/cluster/verify.yml with the CLUSTER_* environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cluster import Cluster

REPORT = Path(__file__).resolve().parents[2] / "reports" / "cluster-node-loss.json"


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if not os.environ.get("CLUSTER_NODES"):
        pytest.fail("CLUSTER_* environment not set (run through molecule/cluster/verify.yml)", pytrace=False)
    return Cluster.from_env()


@pytest.fixture(scope="session")
def report():
    results: list[dict] = []
    yield results
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(results, indent=2))


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT.exists():
        for r in json.loads(REPORT.read_text()):
            terminalreporter.write_line(" ".join(f"{k}={v}" for k, v in r.items()))
