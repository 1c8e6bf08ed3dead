from __future__ import annotations

import pytest

from account_worker.decisions import Ack, DeadLetter, DeadLetterKind, Requeue, Retry, decide, reason_of
from account_worker.errors import (
    BadApiKey,
    DatabaseUnavailable,
    InvalidMessage,
    PermanentJobError,
    RecordRejected,
    TransientJobError,
    UnknownAccount,
)


def test_success_acks():
    assert decide(None, 1, 5, 1000) == Ack()


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (InvalidMessage("body is not JSON"), DeadLetterKind.INVALID_MESSAGE, "invalid message: body is not JSON"),
        (UnknownAccount("u-9"), DeadLetterKind.UNKNOWN_ACCOUNT, "unknown account: u-9"),
        (BadApiKey(), DeadLetterKind.BAD_APIKEY, "bad apikey"),
        (
            PermanentJobError("host refused"),
            DeadLetterKind.ACTION_FAILED,
            "action failed: PermanentJobError: host refused",
        ),
        (
            RecordRejected("integer out of range"),
            DeadLetterKind.RECORD_REJECTED,
            "record rejected by the database: integer out of range",
        ),
    ],
)
def test_poison_is_dead_lettered_immediately(error, kind, reason):
    for attempt in (1, 4):
        assert decide(error, attempt, 5, 1000) == DeadLetter(kind, reason)


def test_transient_retries_with_next_attempt():
    decision = decide(TransientJobError("timeout"), 1, 5, 2500)
    assert isinstance(decision, Retry)
    assert (decision.next_attempt, decision.delay_ms) == (2, 2500)
    assert "timeout" in decision.reason
    later = decide(TransientJobError("timeout"), 4, 5, 2500)
    assert isinstance(later, Retry) and later.next_attempt == 5


def test_transient_exhausted_dead_letters():
    decision = decide(TransientJobError("timeout"), 5, 5, 2500)
    assert isinstance(decision, DeadLetter)
    assert decision.kind is DeadLetterKind.RETRIES_EXHAUSTED
    assert decision.reason.startswith("retries exhausted: ")
    assert "attempt 5 of 5" in decision.reason
    assert isinstance(decide(TransientJobError("x"), 9, 5, 0), DeadLetter)


def test_max_attempts_one_never_retries():
    assert isinstance(decide(TransientJobError("x"), 1, 1, 0), DeadLetter)


def test_unexpected_error_is_bounded_transient():
    assert isinstance(decide(KeyError("boom"), 1, 3, 10), Retry)
    final = decide(KeyError("boom"), 3, 3, 10)
    assert isinstance(final, DeadLetter)
    assert final.reason.startswith("retries exhausted: action failed: KeyError")


def test_database_unavailable_is_never_dead_lettered():
    for attempt in (1, 5, 50):
        assert decide(DatabaseUnavailable("down"), attempt, 5, 10) == Requeue("database unavailable: down")


def test_reason_is_bounded():
    decision = decide(PermanentJobError("x" * 5000), 1, 5, 10)
    assert isinstance(decision, DeadLetter) and len(decision.reason) <= 500
    retry = decide(TransientJobError("x" * 5000), 1, 5, 10)
    assert isinstance(retry, Retry) and len(retry.reason) <= 500


def test_log_lines_keep_the_verdict_words():
    decisions = [Ack(), Retry(2, 10, "r"), DeadLetter(DeadLetterKind.ACTION_FAILED, "d"), Requeue("q")]
    assert [d.verdict for d in decisions] == ["ack", "retry", "dead_letter", "requeue"]
    assert [reason_of(d) for d in decisions] == [None, "r", "d", "q"]
