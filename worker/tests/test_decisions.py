from __future__ import annotations

import pytest

from account_worker.decisions import Decision, Verdict, decide
from account_worker.errors import (
    BadApiKey,
    DatabaseUnavailable,
    InvalidMessage,
    PermanentJobError,
    TransientJobError,
    UnknownAccount,
)


def test_success_acks():
    assert decide(None, 1, 5, 1000) == Decision.ack()


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (InvalidMessage("body is not JSON"), "invalid message: body is not JSON"),
        (UnknownAccount("u-9"), "unknown account: u-9"),
        (BadApiKey(), "bad apikey"),
        (PermanentJobError("host refused"), "permanent failure: PermanentJobError: host refused"),
    ],
)
def test_poison_is_dead_lettered_immediately(error, reason):
    for attempt in (1, 4):
        decision = decide(error, attempt, 5, 1000)
        assert decision.verdict is Verdict.DEAD_LETTER
        assert decision.reason == reason


def test_transient_retries_with_next_attempt():
    decision = decide(TransientJobError("timeout"), 1, 5, 2500)
    assert decision.verdict is Verdict.RETRY
    assert (decision.next_attempt, decision.delay_ms) == (2, 2500)
    assert "timeout" in (decision.reason or "")
    assert decide(TransientJobError("timeout"), 4, 5, 2500).next_attempt == 5


def test_transient_exhausted_dead_letters():
    decision = decide(TransientJobError("timeout"), 5, 5, 2500)
    assert decision.verdict is Verdict.DEAD_LETTER
    assert decision.reason is not None
    assert decision.reason.startswith("retries exhausted: ")
    assert "attempt 5 of 5" in decision.reason
    assert decide(TransientJobError("x"), 9, 5, 0).verdict is Verdict.DEAD_LETTER


def test_max_attempts_one_never_retries():
    assert decide(TransientJobError("x"), 1, 1, 0).verdict is Verdict.DEAD_LETTER


def test_unexpected_error_is_bounded_transient():
    assert decide(KeyError("boom"), 1, 3, 10).verdict is Verdict.RETRY
    final = decide(KeyError("boom"), 3, 3, 10)
    assert final.verdict is Verdict.DEAD_LETTER
    assert "unexpected error: KeyError" in (final.reason or "")


def test_database_unavailable_is_never_dead_lettered():
    for attempt in (1, 5, 50):
        decision = decide(DatabaseUnavailable("down"), attempt, 5, 10)
        assert decision.verdict is Verdict.REQUEUE


def test_reason_is_bounded():
    decision = decide(PermanentJobError("x" * 5000), 1, 5, 10)
    assert decision.reason is not None and len(decision.reason) <= 500
