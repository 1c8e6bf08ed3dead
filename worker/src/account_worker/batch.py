"""The batch-processing core: deliveries in, instructions out.  No pika here.

process_batch() parses, checks apikeys, looks hosts up with one query, runs the
action per job and records every successful run in one transaction.  Only then
does it return instructions; the I/O thread carries them out (reply, retry,
dead-letter, ack) so nothing is acknowledged before the commit.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from account_worker.actions import Action
from account_worker.decisions import Ack, Decision, Requeue, decide, reason_of
from account_worker.errors import BadApiKey, DatabaseUnavailable, UnknownAccount
from account_worker.logsetup import LOGGER_NAME, log_event
from account_worker.messages import Job, parse_job
from account_worker.store import RecordedRun, Run, Store


@dataclass(frozen=True)
class Delivery:
    """One message as received.

    `tag` means something only on the channel it arrived on; `source` is that channel's
    session object (opaque here, compared by identity), so only that session can settle it.
    """

    tag: int
    source: object
    body: bytes
    message_id: str | None = None
    headers: Mapping[str, Any] | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    properties: Any = None  # the broker's properties object, kept opaque for republishing
    redelivered: bool = False  # the broker delivered it before (a consumer died or requeued it)


@dataclass(frozen=True)
class Instruction:
    """What the I/O thread must do with one delivery; `reply` is set only for an Ack (sent before it)."""

    delivery: Delivery
    decision: Decision
    reply: Mapping[str, str] | None = None


@dataclass(frozen=True)
class BatchResult:
    instructions: tuple[Instruction, ...]
    database_down: bool = False


@dataclass(frozen=True)
class BatchSettings:
    max_attempts: int = 5
    retry_delay_ms: int = 5000
    apikey: str | None = None


def _apikey_ok(expected: str | None, given: str) -> bool:
    if expected is None:
        return True
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _reply(delivery: Delivery, job: Job, run: RecordedRun) -> dict[str, str] | None:
    if not delivery.reply_to:
        return None
    return {"account_uuid": job.account_uuid, "host": run.host, "status": run.status, "message_id": job.message_id}


def requeue_all(deliveries: Sequence[Delivery], reason: str, *, database_down: bool) -> BatchResult:
    """Give every delivery back to the queue: nothing acked, nothing dead-lettered."""
    decision = Requeue(reason)
    return BatchResult(tuple(Instruction(d, decision) for d in deliveries), database_down=database_down)


def process_batch(
    deliveries: Sequence[Delivery],
    store: Store,
    action: Action,
    settings: BatchSettings,
    logger: logging.Logger | None = None,
) -> BatchResult:
    """Turn a batch of deliveries into instructions, one per delivery, in delivery order.

    If the database is unavailable at any point, every delivery of the batch is
    requeued (nothing acked, nothing dead-lettered) and database_down is set.
    """
    log = logger or logging.getLogger(LOGGER_NAME)
    decided: dict[int, Instruction] = {}
    jobs: list[tuple[int, Job]] = []

    def fail(index: int, error: BaseException, attempt: int = 1, job: Job | None = None) -> None:
        decision = decide(error, attempt, settings.max_attempts, settings.retry_delay_ms)
        delivery = deliveries[index]
        log_event(
            log,
            logging.WARNING,
            "job_failed",
            message_id=job.message_id if job else delivery.message_id,
            account_uuid=job.account_uuid if job else None,
            attempt=attempt,
            decision=decision.verdict,
            reason=reason_of(decision),
        )
        decided[index] = Instruction(delivery, decision)

    for index, delivery in enumerate(deliveries):
        try:
            job = parse_job(delivery.body, delivery.message_id, delivery.headers)
        except Exception as exc:  # noqa: BLE001 - InvalidMessage, classified by decide()
            fail(index, exc)
            continue
        if not _apikey_ok(settings.apikey, job.apikey):
            fail(index, BadApiKey(), job.attempt, job)
            continue
        jobs.append((index, job))

    if jobs:
        try:
            hosts = store.lookup_hosts(sorted({job.account_uuid for _, job in jobs}))
            # Only a redelivered job can have run before: look those up, so that they have no
            # second side effect. For the others the INSERT ... ON CONFLICT still deduplicates.
            redelivered = sorted({job.message_id for index, job in jobs if deliveries[index].redelivered})
            done_before = store.find_runs(redelivered) if redelivered else {}
        except DatabaseUnavailable as exc:
            return requeue_all(deliveries, f"database unavailable: {exc}", database_down=True)
    else:
        hosts, done_before = {}, {}

    to_record: list[Run] = []
    first_index: dict[str, int] = {}  # message_id -> index of the delivery whose action ran
    waiting: list[tuple[int, Job]] = []  # deliveries whose outcome is the recorded run

    for index, job in jobs:
        host = hosts.get(job.account_uuid)
        if host is None:
            fail(index, UnknownAccount(job.account_uuid), job.attempt, job)
            continue
        if job.message_id in done_before or job.message_id in first_index:
            waiting.append((index, job))  # redelivery or duplicate in this batch: no second side effect
            continue
        try:
            status = action(job, host)
            if not isinstance(status, str) or not status:
                raise TypeError(f"action returned {status!r}, expected a non-empty status string")
        except DatabaseUnavailable as exc:
            return requeue_all(deliveries, f"database unavailable: {exc}", database_down=True)
        except Exception as exc:  # noqa: BLE001 - classified by decide()
            fail(index, exc, job.attempt, job)
            continue
        first_index[job.message_id] = index
        waiting.append((index, job))
        to_record.append(Run(job.message_id, job.account_uuid, host, status, job.attempt))

    try:
        recorded = store.record_runs(to_record) if to_record else []
    except DatabaseUnavailable as exc:
        return requeue_all(deliveries, f"database unavailable: {exc}", database_down=True)

    runs: dict[str, RecordedRun] = dict(done_before)
    runs.update((run.message_id, run) for run in recorded)
    duplicates = 0
    for index, job in waiting:
        run = runs.get(job.message_id)
        if run is None:  # the store did not confirm the record: do not ack
            return requeue_all(deliveries, f"run for {job.message_id} not recorded", database_down=True)
        duplicate = run.already_done or first_index.get(job.message_id) != index
        duplicates += duplicate
        log_event(
            log,
            logging.DEBUG,
            "job_duplicate" if duplicate else "job_done",
            message_id=job.message_id,
            account_uuid=job.account_uuid,
            host=run.host,
            status=run.status,
            attempt=job.attempt,
        )
        decided[index] = Instruction(deliveries[index], Ack(), _reply(deliveries[index], job, run))
    if waiting:
        log_event(
            log,
            logging.INFO,
            "batch_done",
            jobs=len(waiting),
            duplicates=duplicates,
            other=len(deliveries) - len(waiting),
        )

    return BatchResult(tuple(decided[i] for i in range(len(deliveries))))
