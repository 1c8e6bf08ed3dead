"""The two threads: the I/O thread owns pika, the job thread owns the database.

I/O thread (the caller of Runner.run): connects, consumes, puts deliveries into a
queue.Queue, keeps pumping process_data_events() so heartbeats flow while jobs run,
and carries out the instructions the job thread hands back.

Job thread: takes a batch, runs process_batch() (which commits before returning)
and posts the result; the results are applied by the I/O thread, woken with
connection.add_callback_threadsafe - the only pika call made off the I/O thread.

Every delivery carries the generation of the channel it came on; a result for an
older generation is dropped (its tag is dead; the broker redelivers the message and
job_runs deduplicates it).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random as _random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from account_worker import amqp
from account_worker.backoff import backoff_delay
from account_worker.batch import ActionFn, BatchResult, BatchSettings, Delivery, Instruction, Store, process_batch
from account_worker.config import Config
from account_worker.decisions import Decision, Verdict
from account_worker.errors import DatabaseUnavailable
from account_worker.logsetup import LOGGER_NAME, log_event
from account_worker.redact import redact

# A database outage is waited out with the jobs safely queued in the broker; a
# low cap on the ping interval resumes work within seconds of its return.
DB_BACKOFF_CAP = 5.0

POLL_SECONDS = 0.2


class Database(Store, Protocol):
    def ping(self) -> None: ...

    def close(self) -> None: ...


class JobThreadCrashed(RuntimeError):
    """The job thread hit a bug; the process exits non-zero and runit restarts it."""


@dataclass(frozen=True)
class _Resume:
    """The database is reachable: (re)start consuming."""


@dataclass(frozen=True)
class _Fatal:
    error: BaseException


def take_batch(
    deliveries: queue.Queue[Delivery], size: int, timeout: float, is_current: Callable[[Delivery], bool]
) -> list[Delivery]:
    """Block up to `timeout` for one delivery, then drain without waiting up to `size`; skip stale ones."""
    batch: list[Delivery] = []
    try:
        first = deliveries.get(timeout=timeout)
    except queue.Empty:
        return batch
    if is_current(first):
        batch.append(first)
    while len(batch) < size:
        try:
            item = deliveries.get_nowait()
        except queue.Empty:
            break
        if is_current(item):
            batch.append(item)
    return batch


class Runner:
    def __init__(
        self,
        cfg: Config,
        database: Database,
        action: ActionFn,
        stop: threading.Event,
        *,
        connect: Callable[..., Any] = amqp.connect,
        random: Callable[[], float] = _random.random,
        logger: logging.Logger | None = None,
    ) -> None:
        self._cfg = cfg
        self._db = database
        self._action = action
        self._stop = stop
        self._connect = connect
        self._random = random
        self._log = logger or logging.getLogger(LOGGER_NAME)
        self._secrets = cfg.secrets()
        self._settings = BatchSettings(cfg.max_attempts, cfg.retry_delay_ms, cfg.apikey)

        self._deliveries: queue.Queue[Delivery] = queue.Queue()
        self._results: queue.Queue[BatchResult | _Resume | _Fatal] = queue.Queue()
        self._job_stop = threading.Event()
        self._job_thread = threading.Thread(target=self._job_loop, name="job", daemon=True)

        # I/O-thread state (the job thread only reads _generation and _conn).
        self._generation = 0
        self._conn: Any = None
        self._channel: Any = None
        self._consumer_tag: str | None = None
        self._paused = True  # until the job thread has reached the database

    # ------------------------------------------------------------------ I/O thread

    def run(self) -> int:
        """Run until stop is set; return 0. Raises on a crash of the job thread."""
        log_event(self._log, logging.INFO, "worker_starting", queue=self._cfg.queue, config=repr(self._cfg))
        self._job_thread.start()
        try:
            while not self._stop.is_set():
                conn = self._connect(self._cfg, self._stop, random=self._random, logger=self._log)
                if conn is None:
                    break
                try:
                    self._serve(conn)
                except amqp.CONNECTION_ERRORS as exc:
                    log_event(self._log, logging.WARNING, "amqp_connection_lost", error=f"{type(exc).__name__}: {exc}")
                    self._forget_connection()
        finally:
            self._job_stop.set()
            if self._job_thread.is_alive():
                self._job_thread.join(self._cfg.shutdown_grace)
        log_event(self._log, logging.INFO, "worker_stopped")
        return 0

    def _serve(self, conn: Any) -> None:
        self._generation += 1
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            if self._cfg.declare_topology:
                amqp.declare_topology(channel, self._cfg)
            channel.basic_qos(prefetch_count=self._cfg.prefetch)
            self._conn, self._channel = conn, channel
            while not self._stop.is_set():
                if not self._paused and self._consumer_tag is None:
                    self._start_consuming()
                conn.process_data_events(time_limit=POLL_SECONDS)
                self._drain_results()
                if not self._job_thread.is_alive():
                    self._drain_results()
                    raise JobThreadCrashed("job thread exited unexpectedly")
            self._shutdown(conn)
        finally:
            self._conn = None
            self._channel = None
            self._consumer_tag = None
            if conn.is_open:
                with contextlib.suppress(*amqp.CONNECTION_ERRORS):
                    conn.close()

    def _forget_connection(self) -> None:
        """The channel is gone: its tags are dead, buffered deliveries will be redelivered."""
        self._generation += 1
        self._conn = None
        self._channel = None
        self._consumer_tag = None
        dropped = len(self._take_all_buffered())
        if dropped:
            log_event(self._log, logging.INFO, "buffered_deliveries_dropped", count=dropped)

    def _start_consuming(self) -> None:
        self._consumer_tag = self._channel.basic_consume(
            queue=self._cfg.queue, on_message_callback=self._on_message, auto_ack=False
        )
        log_event(self._log, logging.INFO, "consuming", queue=self._cfg.queue, prefetch=self._cfg.prefetch)

    def _stop_consuming(self, reason: str) -> None:
        """Cancel the consumer (pika nacks its undispatched messages) and requeue the buffered ones."""
        if self._consumer_tag is not None and self._channel is not None:
            tag, self._consumer_tag = self._consumer_tag, None
            self._channel.basic_cancel(tag)
            log_event(self._log, logging.INFO, "consuming_stopped", reason=reason)
        self._nack_buffered()

    def _nack_buffered(self) -> None:
        for delivery in self._take_all_buffered():
            if delivery.generation == self._generation and self._channel is not None:
                self._channel.basic_nack(delivery_tag=delivery.tag, requeue=True)

    def _take_all_buffered(self) -> list[Delivery]:
        taken: list[Delivery] = []
        while True:
            try:
                taken.append(self._deliveries.get_nowait())
            except queue.Empty:
                return taken

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if self._paused or self._stop.is_set():
            channel.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
            return
        self._deliveries.put(amqp.delivery_from_pika(method, properties, body, self._generation))

    def _drain_results(self) -> None:
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Fatal):
                raise JobThreadCrashed(f"job thread crashed: {type(item.error).__name__}: {item.error}") from item.error
            if isinstance(item, _Resume):
                if self._paused:
                    self._paused = False
                    log_event(self._log, logging.INFO, "database_ready")
                continue
            if item.database_down and not self._paused:
                self._paused = True
                self._stop_consuming("database unavailable")
            self._execute_batch(item.instructions)

    def _execute_batch(self, instructions: Sequence[Instruction]) -> None:
        """Carry out a batch's instructions in delivery order, acking runs of ACKs with one frame.

        Deliveries are settled strictly in order on a channel (batches are executed in the order
        they were taken), so when an ACK is reached every lower tag of this channel is already
        settled or is part of the pending run: basic_ack(multiple=True) on the highest tag of the
        run acks exactly that run. Pending acks are flushed before any other verdict.
        """
        pending: int | None = None
        for instruction in instructions:
            delivery = instruction.delivery
            if self._channel is None or delivery.generation != self._generation:
                log_event(self._log, logging.DEBUG, "stale_delivery_dropped", message_id=delivery.message_id)
                continue
            if instruction.decision.verdict is Verdict.ACK:
                self._reply(instruction)
                pending = delivery.tag
                continue
            if pending is not None:
                self._channel.basic_ack(delivery_tag=pending, multiple=True)
                pending = None
            self._execute(instruction)
        if pending is not None and self._channel is not None:
            self._channel.basic_ack(delivery_tag=pending, multiple=True)

    def _reply(self, instruction: Instruction) -> None:
        delivery = instruction.delivery
        if instruction.reply is not None and delivery.reply_to:
            try:
                amqp.publish_reply(self._channel, delivery, instruction.reply)
            except amqp.PUBLISH_ERRORS as exc:
                log_event(self._log, logging.WARNING, "reply_failed", message_id=delivery.message_id, error=repr(exc))

    def _execute(self, instruction: Instruction) -> None:
        delivery, decision = instruction.delivery, instruction.decision
        channel = self._channel
        if channel is None or delivery.generation != self._generation:
            log_event(self._log, logging.DEBUG, "stale_delivery_dropped", message_id=delivery.message_id)
            return
        self._reply(instruction)
        verdict = decision.verdict
        if verdict is Verdict.ACK:
            channel.basic_ack(delivery_tag=delivery.tag)
        elif verdict is Verdict.REQUEUE:
            channel.basic_nack(delivery_tag=delivery.tag, requeue=True)
        elif verdict is Verdict.RETRY:
            assert decision.next_attempt is not None and decision.delay_ms is not None
            self._republish_then_ack(
                delivery,
                lambda: amqp.publish_retry(channel, self._cfg, delivery, decision.next_attempt, decision.delay_ms),
                "job_retry_scheduled",
                next_attempt=decision.next_attempt,
                delay_ms=decision.delay_ms,
            )
        elif verdict is Verdict.DEAD_LETTER:
            reason = redact(decision.reason or "unspecified", self._secrets)
            self._republish_then_ack(
                delivery,
                lambda: amqp.publish_dead_letter(channel, self._cfg, delivery, reason),
                "job_dead_lettered",
                reason=reason,
            )

    def _republish_then_ack(self, delivery: Delivery, publish: Callable[[], None], event: str, **fields: Any) -> None:
        try:
            publish()  # confirm mode: returns once the broker has the copy
        except amqp.PUBLISH_ERRORS as exc:
            log_event(
                self._log,
                logging.ERROR,
                "republish_failed",
                message_id=delivery.message_id,
                intended=event,
                error=repr(exc),
            )
            self._channel.basic_nack(delivery_tag=delivery.tag, requeue=True)
            return
        self._channel.basic_ack(delivery_tag=delivery.tag)
        log_event(self._log, logging.INFO, event, message_id=delivery.message_id, **fields)

    def _shutdown(self, conn: Any) -> None:
        """Stop consuming, requeue what was not started, let the running batch finish within the grace."""
        log_event(self._log, logging.INFO, "shutdown_started", grace=self._cfg.shutdown_grace)
        deadline = time.monotonic() + self._cfg.shutdown_grace
        self._job_stop.set()
        self._stop_consuming("shutdown")
        while self._job_thread.is_alive() and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
            self._drain_results()
        self._drain_results()
        self._nack_buffered()
        if self._job_thread.is_alive():
            log_event(self._log, logging.WARNING, "shutdown_grace_exceeded", note="unfinished batch is redelivered")

    # ------------------------------------------------------------------ job thread

    def _post(self, item: BatchResult | _Resume | _Fatal) -> None:
        self._results.put(item)
        conn = self._conn
        if conn is not None:
            # A closed connection raises; the I/O loop drains the queue on its own anyway.
            with contextlib.suppress(Exception):
                conn.add_callback_threadsafe(self._drain_results)

    def _is_current(self, delivery: Delivery) -> bool:
        return delivery.generation == self._generation

    def _job_loop(self) -> None:
        try:
            if not self._wait_for_database():
                return
            self._post(_Resume())
            while not self._job_stop.is_set():
                batch = take_batch(self._deliveries, self._cfg.batch_size, POLL_SECONDS, self._is_current)
                if not batch:
                    continue
                if self._job_stop.is_set():
                    self._post(_requeue(batch, "shutting down"))
                    return
                result = process_batch(batch, self._db, self._action, self._settings, self._log)
                self._post(result)
                if result.database_down:
                    log_event(self._log, logging.WARNING, "database_unavailable", requeued=len(batch))
                    if not self._wait_for_database():
                        return
                    self._post(_Resume())
        except BaseException as exc:  # noqa: BLE001 - reported to the I/O thread, which exits 1
            log_event(self._log, logging.ERROR, "job_thread_crashed", exc_info=True)
            self._post(_Fatal(exc))
        finally:
            self._db.close()

    def _wait_for_database(self) -> bool:
        """Ping until the database answers (capped backoff + jitter); False if told to stop."""
        attempt = 0
        while not self._job_stop.is_set():
            try:
                self._db.ping()
                return True
            except DatabaseUnavailable as exc:
                delay = backoff_delay(attempt, base=0.5, cap=DB_BACKOFF_CAP, random=self._random)
                attempt += 1
                log_event(
                    self._log,
                    logging.WARNING,
                    "database_unreachable",
                    error=redact(str(exc), self._secrets),
                    retry_in=f"{delay:.2f}s",
                )
                if self._job_stop.wait(delay):
                    return False
        return False


def _requeue(batch: Sequence[Delivery], reason: str) -> BatchResult:
    decision = Decision.requeue(reason)
    return BatchResult(tuple(Instruction(d, decision) for d in batch))
