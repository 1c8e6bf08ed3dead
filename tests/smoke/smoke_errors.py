"""How the suite fails: one line that says why, no traceback wall."""

from __future__ import annotations

from typing import NoReturn

import pytest


class SmokeError(Exception):
    """A failure whose message is the whole story: reported without a traceback."""


def tls_reason(error: str) -> str:
    """What an SSL error means for the operator."""
    if "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error:
        return "TLS certificate verification failed (set SMOKE_CA_FILE to the CA that signed the broker's certificate)"
    if "WRONG_VERSION_NUMBER" in error or "wrong version number" in error:
        return "TLS handshake failed: the port does not speak TLS (plain amqp:// or http:// port?)"
    return f"TLS handshake failed: {error}"


def fail(reason: str) -> NoReturn:
    """Fail the running test with `reason` alone, even from inside an `except` block
    (the exception being handled is not chained into the report)."""
    raise pytest.fail.Exception(reason, pytrace=False) from None
