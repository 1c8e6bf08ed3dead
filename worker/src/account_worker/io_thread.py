"""The I/O thread: connection lifecycle, consuming, and carrying out the job thread's reports.

It owns pika.  Per connection it opens a Session (session.py) and keeps pumping
process_data_events() so heartbeats flow while jobs run; deliveries go into the
buffer the job thread takes batches from.  Reports from the job thread arrive in
its inbox and are applied here, woken through add_callback_threadsafe - the only
pika call made off this thread (Session.wake).

Across connections it keeps one thing: whether the database is away.  The first
consumer starts once the job thread has reached the database.  When the database
goes away later the consumer stays: the deliveries it holds (at most the prefetch)
wait in the buffer, unacked and safe in the broker, until the job thread is back
(its Resume).  Cancelling would be worse: pika gives the undispatched deliveries
back with basic.reject, which raises their x-delivery-count, and with several
instances finding the outage one after another a message would hop between them
until the crash-loop guard took it for a crash (RabbitMQ before 4.3 counts every
return).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, assert_never

from account_worker import amqp
from account_worker.config import Config
from account_worker.delivery import BatchResult, Delivery, DeliveryQueue
from account_worker.errors import JobThreadCrashed
from account_worker.job_thread import Crashed, JobReport, JobThread, Resume
from account_worker.logsetup import log_event
from account_worker.observe import NO_OBSERVER, Observer
from account_worker.session import Session

POLL_SECONDS = 0.2
SHUTDOWN_POLL_SECONDS = 0.05


class IOThread:
    """The I/O thread: run() on the caller's thread serves connections until stop; post() is the job thread's way in."""

    def __init__(
        self,
        cfg: Config,
        stop: threading.Event,
        deliveries: DeliveryQueue,
        *,
        connect: Callable[..., Any],
        random: Callable[[], float],
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._cfg = cfg
        self._stop = stop
        self._deliveries = deliveries
        self._connect = connect
        self._random = random
        self._log = logger
        self._clock = clock
        self._observer = observer
        self._secrets = cfg.secrets()
        self._inbox: queue.Queue[JobReport] = queue.Queue()
        self._session: Session | None = None  # the open connection's session; read by the job thread
        self._paused = True  # no consumer until the job thread has reached the database
        self._deadline: float | None = None  # the end of the shutdown grace, once shutting down began

    # ------------------------------------------------------------------ called from the job thread

    def post(self, report: JobReport) -> None:
        """Queue a report and wake the I/O thread to apply it."""
        self._inbox.put(report)
        session = self._session
        if session is not None:
            session.wake(functools.partial(self._apply_reports, session))

    def grace_left(self) -> float:
        """Seconds of the shutdown grace still to come: all of it unless shutting down began on a connection."""
        if self._deadline is None:
            return self._cfg.shutdown_grace
        return max(0.0, self._deadline - self._clock())

    def is_current(self, delivery: Delivery) -> bool:
        """False for a delivery whose connection is gone (not worth processing: it will be redelivered)."""
        session = self._session
        return session is not None and session.owns(delivery)

    # ------------------------------------------------------------------ the I/O thread

    def run(self, job: JobThread) -> None:
        """Connect, serve, reconnect after a loss, until stop is set. Raises JobThreadCrashed."""
        while not self._stop.is_set():
            conn = self._connect(self._cfg, self._stop, random=self._random, logger=self._log)
            if conn is None:
                break
            try:
                self._serve(conn, job)
            except amqp.CONNECTION_ERRORS as exc:
                log_event(self._log, logging.WARNING, "amqp_connection_lost", error=f"{type(exc).__name__}: {exc}")
                self._drop_buffered()

    def _serve(self, conn: Any, job: JobThread) -> None:
        try:
            session = Session(conn, self._cfg, self._log, self._secrets, self._observer)
            self._session = session
            self._observer.connected(True)
            while not self._stop.is_set():
                # Reports first: a Resume posted while there was no session (the job thread reached
                # the database before this connection was up) woke nobody; consuming starts now,
                # not one POLL_SECONDS later.
                self._apply_reports(session)
                if not self._paused:
                    session.consume(self._on_delivery)
                session.pump(POLL_SECONDS)
                if not job.is_alive():
                    self._apply_reports(session)
                    raise JobThreadCrashed("job thread exited unexpectedly")
            self._shutdown(session, job)
        finally:
            self._session = None
            self._observer.connected(False)
            if conn.is_open:
                with contextlib.suppress(*amqp.CONNECTION_ERRORS):
                    conn.close()

    def _on_delivery(self, delivery: Delivery) -> bool:
        """Buffer a delivery for the job thread (while the database is away too); refuse it (the session gives
        it back) while stopping."""
        if self._stop.is_set():
            return False
        self._deliveries.put(delivery)
        return True

    def _take_buffered(self) -> list[Delivery]:
        return self._deliveries.take(self._deliveries.qsize())

    def _drop_buffered(self) -> None:
        """The connection is gone: its tags are dead, buffered deliveries will be redelivered."""
        dropped = len(self._take_buffered())
        if dropped:
            log_event(self._log, logging.INFO, "buffered_deliveries_dropped", count=dropped)

    def _stop_consuming(self, session: Session, reason: str) -> None:
        """Cancel the consumer and requeue what the job thread has not taken yet."""
        session.cancel(reason)
        session.requeue(self._take_buffered())

    def _apply_reports(self, session: Session) -> None:
        while True:
            try:
                report = self._inbox.get_nowait()
            except queue.Empty:
                return
            match report:
                case Crashed(error=error):
                    raise JobThreadCrashed(f"job thread crashed: {type(error).__name__}: {error}") from error
                case Resume():
                    self._observer.database(True)
                    if self._paused:
                        self._paused = False
                        log_event(self._log, logging.INFO, "database_ready")
                case BatchResult(instructions=instructions, database_down=database_down):
                    self._observer.database(not database_down)
                    if database_down and not self._paused:
                        self._paused = True
                        log_event(
                            self._log,
                            logging.WARNING,
                            "database_unavailable_holding",
                            buffered=self._deliveries.qsize(),
                        )
                    session.settle(instructions)
                case _:
                    assert_never(report)

    def _shutdown(self, session: Session, job: JobThread) -> None:
        """Stop consuming, requeue what was not started, let the jobs in flight finish within the grace."""
        log_event(self._log, logging.INFO, "shutdown_started", grace=self._cfg.shutdown_grace)
        deadline = self._deadline = self._clock() + self._cfg.shutdown_grace
        job.stop()
        self._stop_consuming(session, "shutdown")
        while job.is_alive() and self._clock() < deadline:
            session.pump(SHUTDOWN_POLL_SECONDS)
            self._apply_reports(session)
        self._apply_reports(session)
        session.requeue(self._take_buffered())
        if job.is_alive():
            log_event(self._log, logging.WARNING, "shutdown_grace_exceeded", note="unfinished jobs are redelivered")
