from __future__ import annotations

import pytest

BASE_ENV = {
    "WORKER_AMQP_URLS": "amqp://worker:s3cret@rabbit1:5672/%2F,amqps://worker:s3cret@rabbit2/vh",
    "WORKER_DATABASE_URL": "postgresql://worker:dbpass@db.example:5432/accounts",
}


@pytest.fixture
def env() -> dict[str, str]:
    return dict(BASE_ENV)
