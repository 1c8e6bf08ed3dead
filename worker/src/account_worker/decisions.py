"""Pure rules: what to do with a message given how its processing ended.

One type per outcome; the I/O side dispatches on them with `match`, and mypy --strict
checks that every outcome is handled (typing.assert_never).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, assert_never

from account_worker.errors import (
    BadApiKey,
    DatabaseUnavailable,
    InvalidMessage,
    PermanentJobError,
    RecordRejected,
    UnknownAccount,
)

MAX_REASON_LENGTH = 500


@dataclass(frozen=True)
class Ack:
    """The job's run is committed: reply (if asked) and ack; duplicate: it was recorded by an earlier delivery."""

    duplicate: bool = False
    verdict: ClassVar[str] = "ack"


# The two Acks there are, shared: one is handed out for every job done.
ACK = Ack()
ACK_DUPLICATE = Ack(duplicate=True)


@dataclass(frozen=True)
class Retry:
    """Park a copy with x-attempt = next_attempt in the retry queue for delay_ms, then ack."""

    next_attempt: int
    delay_ms: int
    reason: str
    verdict: ClassVar[str] = "retry"


class DeadLetterKind(StrEnum):
    """The class of a dead letter's reason; its value is the dead-letter metric's `reason` label.

    Those labels are what the monitoring rules and dashboards see: a value never changes.
    """

    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_ACCOUNT = "unknown_account"
    BAD_APIKEY = "bad_apikey"
    RECORD_REJECTED = "record_rejected"
    ACTION_FAILED = "action_failed"
    RETRIES_EXHAUSTED = "retries_exhausted"
    CRASHED_WORKER = "crashed_worker"


@dataclass(frozen=True)
class DeadLetter:
    """Publish a copy carrying the reason to the dead-letter exchange, then ack; `kind` classes the reason."""

    kind: DeadLetterKind
    reason: str
    verdict: ClassVar[str] = "dead_letter"


@dataclass(frozen=True)
class Requeue:
    """Give the message back to the queue (nack with requeue): infrastructure, not the message, failed."""

    reason: str
    verdict: ClassVar[str] = "requeue"


Decision = Ack | Retry | DeadLetter | Requeue
"""What happens to one delivery; `verdict` is the word log lines print."""


def reason_of(decision: Decision) -> str | None:
    """The reason a log line reports (an Ack has none)."""
    match decision:
        case Ack():
            return None
        case Retry(reason=reason) | DeadLetter(reason=reason) | Requeue(reason=reason):
            return reason
        case _:
            assert_never(decision)


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _bounded(reason: str) -> str:
    return reason[:MAX_REASON_LENGTH]


def decide(error: BaseException | None, attempt: int, max_attempts: int, retry_delay_ms: int) -> Decision:
    """Map the outcome of one message to a Decision.

    error is None when the job succeeded.  Poison (invalid message, unknown account,
    bad apikey, values the database rejects, a permanent action failure) is dead-lettered
    at once; other action failures (transient or unexpected) are retried while
    attempt < max_attempts; infrastructure (database down) is requeued and never
    dead-lettered.
    """
    if error is None:
        return ACK
    if isinstance(error, DatabaseUnavailable):
        return Requeue(f"database unavailable: {error}" if str(error) else "database unavailable")
    if isinstance(error, InvalidMessage):
        return DeadLetter(DeadLetterKind.INVALID_MESSAGE, _bounded(f"invalid message: {error.reason}"))
    if isinstance(error, UnknownAccount):
        return DeadLetter(DeadLetterKind.UNKNOWN_ACCOUNT, _bounded(f"unknown account: {error.account_uuid}"))
    if isinstance(error, BadApiKey):
        return DeadLetter(DeadLetterKind.BAD_APIKEY, "bad apikey")
    if isinstance(error, RecordRejected):
        return DeadLetter(DeadLetterKind.RECORD_REJECTED, _bounded(f"record rejected by the database: {error}"))
    what = f"action failed: {_describe(error)}"
    if isinstance(error, PermanentJobError):
        return DeadLetter(DeadLetterKind.ACTION_FAILED, _bounded(what))
    if attempt < max_attempts:
        return Retry(attempt + 1, retry_delay_ms, _bounded(what))
    return DeadLetter(
        DeadLetterKind.RETRIES_EXHAUSTED, _bounded(f"retries exhausted: {what} (attempt {attempt} of {max_attempts})")
    )
