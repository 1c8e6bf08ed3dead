"""The production scenario's tests: run by molecule/production/verify.yml with the PROD_* environment."""

from __future__ import annotations

import os

import pytest

from production import Deployment


@pytest.fixture(scope="session")
def deployment() -> Deployment:
    if not os.environ.get("PROD_INVENTORY"):
        pytest.fail("PROD_* environment not set (run through molecule/production/verify.yml)", pytrace=False)
    return Deployment.from_env()
