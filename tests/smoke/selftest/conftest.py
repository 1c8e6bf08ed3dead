"""The self-tests start the smoke suite themselves, in a subprocess, with the settings each test gives;
the suite's session-wide probe and its after-the-last-test check (tests/smoke/conftest.py, autouse) are
not theirs to run, so this directory replaces both with nothing."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def broker() -> None:
    """The suite's probe of the broker under test: the subprocesses run it, each with its own settings."""


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> None:
    """The suite's check for leftovers: each subprocess runs it for its own run."""
