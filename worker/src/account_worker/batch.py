"""The batch core: deliveries in, one instruction per delivery out, after one commit.  No pika here.

process_in_groups() is the job thread's entry: it splits a batch by how often the broker
got each delivery back unsettled (quorum queues' x-delivery-count: the worker crashed or
was stopped with it in flight) and processes each group in two phases, which inflight.py
also uses for concurrent processing:

* prepare(): parse, check apikeys, look the hosts and the earlier runs up with one query
  each; invalid messages, unknown accounts and jobs recorded before (a redelivery, or a
  sender's repeat of a message_id) are decided here, without running anything;
* record(): once the actions ran (execution.py), record every successful run in one
  transaction and instruct each delivery.

Only then are the instructions returned; the I/O thread carries them out (reply, retry,
dead-letter, ack), so nothing is acknowledged before the commit.  A batch is a bulkhead,
never a shared fate: a failure that is not infrastructure (the database refusing one
message's values, say) is narrowed down to the messages causing it (isolation.py), and
only those are dead-lettered.  A message that came back unsettled is processed alone, and
once it has come back `crash_limit` times it is dead-lettered as having crashed the worker.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from account_worker.actions import Action, default_action
from account_worker.config import Config
from account_worker.decisions import ACK, ACK_DUPLICATE, Ack, DeadLetter, DeadLetterKind, Requeue, decide, reason_of
from account_worker.delivery import BatchResult, Delivery, Instruction, requeue_all
from account_worker.errors import BadApiKey, DatabaseUnavailable, InvalidMessage, RecordRejected, UnknownAccount
from account_worker.execution import Finished, Pending, finished_deliveries, run_actions, run_followers
from account_worker.isolation import as_rejected, narrow, split_by_returns
from account_worker.logsetup import LOGGER_NAME, log_event
from account_worker.messages import Job, delivery_count, parse_job, shown_message_id
from account_worker.store import RecordedRun, Run, Store


@dataclass(frozen=True)
class BatchSettings:
    """The settings the core reads, taken from Config (which holds their defaults)."""

    max_attempts: int
    retry_delay_ms: int
    apikey: str | None
    crash_limit: int  # returns to the queue (x-delivery-count) after which a message is dead-lettered
    # Look every job's message_id up in job_runs before its action runs, so that a repeat of a
    # recorded job (a sender's second publish, a copy the worker gave back) is not run again.
    # False only for an action without side effects (the built-in one): then only redeliveries
    # are looked up, and the INSERT's ON CONFLICT answers a repeat with the run recorded first.
    look_up_every_run: bool = True

    @classmethod
    def from_config(cls, cfg: Config, action: Action | None = None) -> BatchSettings:
        return cls(
            max_attempts=cfg.max_attempts,
            retry_delay_ms=cfg.retry_delay_ms,
            apikey=cfg.apikey,
            crash_limit=cfg.crash_limit,
            look_up_every_run=action is not default_action,
        )


CRASHED_REASON = "crashed the worker"


@dataclass(frozen=True)
class Prepared:
    """A group after its database look-ups: what is decided without running, and the actions to run."""

    decided: tuple[Instruction, ...]
    to_run: tuple[Pending, ...]


def process_in_groups(
    deliveries: Sequence[Delivery],
    store: Store,
    action: Action,
    settings: BatchSettings,
    logger: logging.Logger | None = None,
    *,
    pool: Executor | None = None,
) -> Iterator[BatchResult]:
    """Process a batch as results to carry out one after the other, each settling some deliveries.

    First the deliveries the broker got back unsettled `crash_limit` times, dead-lettered
    unprocessed; then every delivery seen for the first time, together; then each one the
    broker got back fewer times, alone, fewest returns first: if one of those crashes the
    worker, the results yielded before it are already settled, and it took no neighbour
    along.  Once the database is unavailable, what is left is requeued (database_down set).
    """
    log = logger or logging.getLogger(LOGGER_NAME)
    crashed, groups = split_by_returns(deliveries, settings.crash_limit)
    if crashed:
        yield BatchResult(tuple(_crash_loop_stopped(delivery, returned, log) for delivery, returned in crashed))
    for number, group in enumerate(groups):
        returned = delivery_count(group[0].headers)
        if returned:
            log_event(
                log,
                logging.WARNING,
                "processing_alone",
                message_id=shown_message_id(group[0].message_id),
                delivery_count=returned,
                crash_limit=settings.crash_limit,
            )
        result = _process_group(group, store, action, settings, log, pool=pool)
        yield result
        if result.database_down:
            rest = [d for later in groups[number + 1 :] for d in later]
            if rest:
                yield requeue_all(rest, "database unavailable", database_down=True)
            return


def prepare(
    deliveries: Sequence[Delivery], store: Store, settings: BatchSettings, log: logging.Logger
) -> Prepared | BatchResult:
    """Parse, check apikeys, look hosts and earlier runs up (batched); a BatchResult if the database is down.

    Decided here: invalid messages, bad apikeys, unknown accounts, values the database
    refuses, and jobs recorded before (acked as duplicates, no second side effect).
    """
    decided: list[Instruction] = []
    jobs: list[tuple[int, Job]] = []
    failed: set[int] = set()

    def fail(index: int, error: BaseException, attempt: int = 1, job: Job | None = None) -> None:
        failed.add(index)
        decided.append(_failed(deliveries[index], error, settings, log, attempt=attempt, job=job))

    for index, delivery in enumerate(deliveries):
        try:
            job = parse_job(
                delivery.body,
                delivery.message_id,
                delivery.headers,
                reply_to=delivery.reply_to,
                correlation_id=delivery.correlation_id,
            )
        except InvalidMessage as exc:
            fail(index, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a contract gap is still the message's fault
            fail(index, InvalidMessage(f"cannot be parsed: {type(exc).__name__}"))
            continue
        if not _apikey_ok(settings.apikey, job.apikey):
            fail(index, BadApiKey(), job.attempt, job)
            continue
        jobs.append((index, job))

    try:
        hosts, done_before = _look_up(deliveries, jobs, store, fail, every_run=settings.look_up_every_run)
    except DatabaseUnavailable as exc:
        return requeue_all(deliveries, f"database unavailable: {exc}", database_down=True)

    to_run: dict[str, Pending] = {}  # message_id -> the first delivery of that message: its action runs
    for index, job in jobs:
        if index in failed:
            continue
        host = hosts.get(job.account_uuid)
        if host is None:
            fail(index, UnknownAccount(job.account_uuid), job.attempt, job)
            continue
        delivery = deliveries[index]
        before = done_before.get(job.message_id)
        if before is not None:  # recorded before: no second side effect
            decided.append(_acked(delivery, job, before, True, log))
        elif job.message_id in to_run:  # duplicate within this group: only runs if the first one failed
            to_run[job.message_id].followers.append((delivery, job))
        else:
            to_run[job.message_id] = Pending(delivery, job, host)
    return Prepared(tuple(decided), tuple(to_run.values()))


def record(finished: Sequence[Finished], store: Store, settings: BatchSettings, log: logging.Logger) -> BatchResult:
    """Record the successful runs among `finished` in one transaction (narrowed on failure); instruct each.

    A failed action's delivery gets its decision; its followers (if the caller left any) are
    given back to the queue.  If an action or the record met the database down, every
    delivery of `finished` is requeued (database_down set): nothing is acked unrecorded.
    """
    instructions: list[Instruction] = []
    to_record: list[Run] = []
    ran: list[Pending] = []
    for item in finished:
        pending, result = item.pending, item.result
        job = pending.job
        if isinstance(result, DatabaseUnavailable):
            return requeue_all(finished_deliveries(finished), "database unavailable", database_down=True)
        if isinstance(result, Exception):
            instructions.append(_failed(pending.delivery, result, settings, log, attempt=job.attempt, job=job))
            decision = Requeue("its first delivery in the batch failed")
            instructions.extend(Instruction(fd, decision) for fd, _ in pending.followers)
            continue
        ran.append(pending)
        to_record.append(
            Run(
                job.message_id,
                job.account_uuid,
                pending.host,
                result.status,
                job.attempt,
                result.exit_status,
                result.stdout,
                result.stderr,
            )
        )
    try:
        batches, refused = narrow(to_record, store.record_runs) if to_record else ([], [])
    except DatabaseUnavailable as exc:
        return requeue_all(finished_deliveries(finished), f"database unavailable: {exc}", database_down=True)
    rejected = {run.message_id: as_rejected(exc) for run, exc in refused} if refused else {}
    runs = {run.message_id: run for recorded in batches for run in recorded}
    for pending in ran:
        message_id = pending.job.message_id
        error = rejected.get(message_id) if rejected else None
        run = runs.get(message_id)
        if error is None and run is None:  # the store did not confirm the record: do not ack
            return requeue_all(finished_deliveries(finished), f"run for {message_id} not recorded", database_down=True)
        if run is not None and error is None and not pending.followers:  # the usual case, kept cheap
            instructions.append(_acked(pending.delivery, pending.job, run, run.already_done, log))
            continue
        for delivery, job, first in (
            (pending.delivery, pending.job, True),
            *[(d, j, False) for d, j in pending.followers],
        ):
            if error is not None:
                instructions.append(_failed(delivery, error, settings, log, attempt=job.attempt, job=job))
            elif run is not None:
                instructions.append(_acked(delivery, job, run, run.already_done or not first, log))
    return BatchResult(tuple(instructions))


def log_done(log: logging.Logger, instructions: Sequence[Instruction]) -> None:
    """The batch_done line: jobs acked (duplicates among them) and the others."""
    done = duplicates = 0
    for instruction in instructions:
        decision = instruction.decision
        if isinstance(decision, Ack):
            done += 1
            duplicates += decision.duplicate
    if done:
        log_event(log, logging.INFO, "batch_done", jobs=done, duplicates=duplicates, other=len(instructions) - done)


def _crash_loop_stopped(delivery: Delivery, returned: int, log: logging.Logger) -> Instruction:
    decision = DeadLetter(
        DeadLetterKind.CRASHED_WORKER, f"{CRASHED_REASON} (returned to the queue unsettled {returned} times)"
    )
    log_event(
        log,
        logging.ERROR,
        "crash_loop_stopped",
        message_id=shown_message_id(delivery.message_id),
        delivery_count=returned,
        decision=decision.verdict,
        reason=decision.reason,
    )
    return Instruction(delivery, decision)


def _process_group(
    deliveries: Sequence[Delivery],
    store: Store,
    action: Action,
    settings: BatchSettings,
    log: logging.Logger,
    *,
    pool: Executor | None = None,
) -> BatchResult:
    """Deliveries processed together: one look-up, one record (narrowed on failure), in delivery order."""
    prepared = prepare(deliveries, store, settings, log)
    if isinstance(prepared, BatchResult):
        return prepared
    calls = [(0, p.job, p.host) for p in prepared.to_run]
    finished: list[Finished] = []
    failed: list[Finished] = []
    for pending, result in zip(prepared.to_run, run_actions(action, calls, pool), strict=True):
        if isinstance(result, Exception):
            if isinstance(result, DatabaseUnavailable):
                return requeue_all(deliveries, "database unavailable", database_down=True)
            if pending.followers:
                failed.append(Finished(pending, result))
        finished.append(Finished(pending, result))
    for item in failed:
        after = run_followers(action, item)
        if any(isinstance(f.result, DatabaseUnavailable) for f in after):
            return requeue_all(deliveries, "database unavailable", database_down=True)
        finished.extend(after)
    recorded = record(finished, store, settings, log)
    if recorded.database_down:
        return requeue_all(deliveries, _reason(recorded), database_down=True)
    done = _in_order(deliveries, prepared.decided, recorded.instructions)
    log_done(log, done.instructions)
    return done


def _look_up(
    deliveries: Sequence[Delivery],
    jobs: Sequence[tuple[int, Job]],
    store: Store,
    fail: Callable[[int, BaseException, int, Job], None],
    *,
    every_run: bool = True,
) -> tuple[dict[str, str], dict[str, RecordedRun]]:
    """Hosts of the jobs' accounts and the runs recorded before, so that those jobs have no second side effect.

    every_run: every job's message_id is looked up (a redelivery or a sender's repeat may have
    run); else only the redelivered ones (for an action without side effects: the INSERT ...
    ON CONFLICT deduplicates the others).  A value the database refuses fails the jobs
    carrying it (narrowed down), not the batch.  Raises DatabaseUnavailable.
    """
    if not jobs:
        return {}, {}
    found, refused = narrow(sorted({job.account_uuid for _, job in jobs}), store.lookup_hosts)
    hosts = {uuid: host for part in found for uuid, host in part.items()}
    bad_accounts = {uuid: as_rejected(exc) for uuid, exc in refused}
    wanted = sorted({job.message_id for index, job in jobs if every_run or deliveries[index].redelivered})
    done_before: dict[str, RecordedRun] = {}
    bad_ids: dict[str, RecordRejected] = {}
    if wanted:
        found_runs, refused_ids = narrow(wanted, store.find_runs)
        done_before = {mid: run for part in found_runs for mid, run in part.items()}
        bad_ids = {mid: as_rejected(exc) for mid, exc in refused_ids}
    for index, job in jobs:
        error = bad_accounts.get(job.account_uuid) or bad_ids.get(job.message_id)
        if error is not None:
            fail(index, error, job.attempt, job)
    return hosts, done_before


def _failed(
    delivery: Delivery,
    error: BaseException,
    settings: BatchSettings,
    log: logging.Logger,
    *,
    attempt: int = 1,
    job: Job | None = None,
) -> Instruction:
    decision = decide(error, attempt, settings.max_attempts, settings.retry_delay_ms)
    log_event(
        log,
        logging.WARNING,
        "job_failed",
        message_id=job.message_id if job else shown_message_id(delivery.message_id),
        account_uuid=job.account_uuid if job else None,
        attempt=attempt,
        decision=decision.verdict,
        reason=reason_of(decision),
    )
    return Instruction(delivery, decision)


def _acked(delivery: Delivery, job: Job, run: RecordedRun, duplicate: bool, log: logging.Logger) -> Instruction:
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
    return Instruction(delivery, ACK_DUPLICATE if duplicate else ACK, _reply(delivery, job, run))


def _reply(delivery: Delivery, job: Job, run: RecordedRun) -> dict[str, str | int] | None:
    if not delivery.reply_to:
        return None
    reply: dict[str, str | int] = {
        "account_uuid": job.account_uuid,
        "host": run.host,
        "status": run.status,
        "message_id": job.message_id,
    }
    if run.exit_status is not None:
        reply["exit_status"] = run.exit_status
    if run.stdout is not None:
        reply["stdout"] = run.stdout
    if run.stderr is not None:
        reply["stderr"] = run.stderr
    return reply


def _apikey_ok(expected: str | None, given: str) -> bool:
    if expected is None:
        return True
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _reason(result: BatchResult) -> str:
    decision = result.instructions[0].decision if result.instructions else None
    return decision.reason if isinstance(decision, Requeue) else "database unavailable"


def _in_order(deliveries: Sequence[Delivery], *parts: Sequence[Instruction]) -> BatchResult:
    by_delivery = {id(i.delivery): i for part in parts for i in part}
    return BatchResult(tuple(by_delivery[id(d)] for d in deliveries))
