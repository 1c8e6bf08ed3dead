"""Pure rules: what to do with a message given how its processing ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from account_worker.errors import (
    BadApiKey,
    DatabaseUnavailable,
    InvalidMessage,
    PermanentJobError,
    TransientJobError,
    UnknownAccount,
)

MAX_REASON_LENGTH = 500


class Verdict(enum.Enum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    REQUEUE = "requeue"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str | None = None
    next_attempt: int | None = None
    delay_ms: int | None = None

    @classmethod
    def ack(cls) -> Decision:
        return cls(Verdict.ACK)

    @classmethod
    def dead_letter(cls, reason: str) -> Decision:
        return cls(Verdict.DEAD_LETTER, reason=reason[:MAX_REASON_LENGTH])

    @classmethod
    def retry(cls, next_attempt: int, delay_ms: int, reason: str) -> Decision:
        return cls(Verdict.RETRY, reason=reason[:MAX_REASON_LENGTH], next_attempt=next_attempt, delay_ms=delay_ms)

    @classmethod
    def requeue(cls, reason: str = "database unavailable") -> Decision:
        return cls(Verdict.REQUEUE, reason=reason)


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def decide(error: BaseException | None, attempt: int, max_attempts: int, retry_delay_ms: int) -> Decision:
    """Map the outcome of one message to a Decision.

    error is None when the job succeeded.  Poison (invalid message, unknown account,
    bad apikey, permanent failure) is dead-lettered at once; transient and unexpected
    failures are retried while attempt < max_attempts; infrastructure (database down)
    is requeued and never dead-lettered.
    """
    if error is None:
        return Decision.ack()
    if isinstance(error, DatabaseUnavailable):
        return Decision.requeue(f"database unavailable: {error}" if str(error) else "database unavailable")
    if isinstance(error, InvalidMessage):
        return Decision.dead_letter(f"invalid message: {error.reason}")
    if isinstance(error, UnknownAccount):
        return Decision.dead_letter(f"unknown account: {error.account_uuid}")
    if isinstance(error, BadApiKey):
        return Decision.dead_letter("bad apikey")
    if isinstance(error, PermanentJobError):
        return Decision.dead_letter(f"permanent failure: {_describe(error)}")
    if isinstance(error, TransientJobError):
        what = f"transient failure: {_describe(error)}"
    else:
        what = f"unexpected error: {_describe(error)}"
    if attempt < max_attempts:
        return Decision.retry(attempt + 1, retry_delay_ms, what)
    return Decision.dead_letter(f"retries exhausted: {what} (attempt {attempt} of {max_attempts})")
