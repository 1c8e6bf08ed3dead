from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from account_worker.metrics import WorkerMetrics
from fakes import Clock

BASE_ENV = {
    "WORKER_AMQP_URLS": "amqp://worker:s3cret@rabbit1:5672/%2F,amqps://worker:s3cret@rabbit2/vh",
    "WORKER_DATABASE_URL": "postgresql://worker:dbpass@db.example:5432/accounts",
}


@pytest.fixture
def env() -> dict[str, str]:
    return dict(BASE_ENV)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(registry: CollectorRegistry, clock: Clock) -> WorkerMetrics:
    """The worker's metrics on a registry of their own, with a fake clock and a fixed wall clock."""
    return WorkerMetrics(registry, clock=clock, wall_clock=lambda: 1_700_000_000.0)
