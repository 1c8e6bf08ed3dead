"""The job thread: wait for the database, take deliveries, process them, post the results.

With WORKER_CONCURRENCY 1 it takes a batch, processes it (batch.process_in_groups) and
posts its results before taking the next.  With more, it keeps up to that many actions
in flight and records them in completion order (inflight.Recorder): a slow job holds back
only its own delivery.

It owns the database and never touches pika.  Everything it has to say to the I/O
thread is a JobReport handed to `post` (which queues it and wakes the I/O thread):
a BatchResult to carry out, Resume once the database answers, Crashed on a bug.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from account_worker.actions import Action
from account_worker.backoff import backoff_delay
from account_worker.batch import BatchSettings, process_in_groups
from account_worker.config import Config
from account_worker.delivery import BatchResult, Delivery, DeliveryQueue, requeue_all
from account_worker.errors import DatabaseUnavailable
from account_worker.inflight import Recorder
from account_worker.logsetup import log_event
from account_worker.redact import redact
from account_worker.store import JobStore

# A database outage is waited out with the jobs safely queued in the broker; a
# low cap on the ping interval resumes work within seconds of its return.
DB_BACKOFF_CAP = 5.0

# How long one wait for the first delivery of a batch lasts (the stop flag is checked between waits).
BATCH_WAIT_SECONDS = 0.2


@dataclass(frozen=True)
class Resume:
    """The database is reachable: (re)start consuming."""


@dataclass(frozen=True)
class Crashed:
    """The job thread hit a bug; the I/O thread raises JobThreadCrashed."""

    error: BaseException


JobReport = BatchResult | Resume | Crashed


def take_batch(
    deliveries: DeliveryQueue, size: int, timeout: float, is_current: Callable[[Delivery], bool]
) -> list[Delivery]:
    """Wait up to `timeout` for one delivery, then take without waiting up to `size`; skip stale ones."""
    batch = [d for d in deliveries.take(size, timeout) if is_current(d)]
    while len(batch) < size:  # stale ones were skipped: fill their places
        more = deliveries.take(size - len(batch))
        if not more:
            break
        batch.extend(d for d in more if is_current(d))
    return batch


class JobThread:
    """The job thread and its stop flag; start() runs it, stop() asks it to finish its batch and return."""

    def __init__(
        self,
        cfg: Config,
        store: JobStore,
        action: Action,
        deliveries: DeliveryQueue,
        *,
        post: Callable[[JobReport], None],
        is_current: Callable[[Delivery], bool],
        random: Callable[[], float],
        logger: logging.Logger,
    ) -> None:
        self._cfg = cfg
        self._store = store
        self._action = action
        self._deliveries = deliveries
        # Set on each delivery put and each finished action.
        self._news = deliveries.news
        self._post = post
        self._is_current = is_current
        self._random = random
        self._log = logger
        self._secrets = cfg.secrets()
        self._settings = BatchSettings.from_config(cfg, action)
        # An action holding resources between jobs (the ssh action's connections) may offer
        # close_idle(): called whenever the job thread finds nothing to do.
        close_idle = getattr(action, "close_idle", None)
        self._close_idle: Callable[[], object] | None = close_idle if callable(close_idle) else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job", daemon=True)
        # Actions run on up to cfg.concurrency threads; the job thread records each run (in
        # completion order) before the I/O thread acks it.
        self._pool = (
            ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="action")
            if cfg.concurrency > 1
            else None
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            if not self._wait_for_database():
                return
            self._post(Resume())
            if self._pool is not None:
                self._run_concurrent(self._pool)
                return
            while not self._stop.is_set():
                batch = take_batch(self._deliveries, self._cfg.batch_size, BATCH_WAIT_SECONDS, self._is_current)
                if not batch:
                    self._idle()
                    continue
                if self._stop.is_set():
                    self._post(requeue_all(batch, "shutting down", database_down=False))
                    return
                database_down = False
                # Each group's result is posted before the next group runs: if one crashes the
                # process, what was decided before it is settled (the I/O thread applies reports
                # in order, the crash last).
                for result in process_in_groups(
                    batch, self._store, self._action, self._settings, self._log, pool=self._pool
                ):
                    self._post(result)
                    database_down = database_down or result.database_down
                if database_down:
                    log_event(self._log, logging.WARNING, "database_unavailable", requeued=len(batch))
                    if not self._wait_for_database():
                        return
                    self._post(Resume())
        except BaseException as exc:  # noqa: BLE001 - reported to the I/O thread, which exits 1
            log_event(self._log, logging.ERROR, "job_thread_crashed", exc_info=True)
            self._post(Crashed(exc))
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._store.close()

    def _run_concurrent(self, pool: ThreadPoolExecutor) -> None:
        """Take while there is room, record what finished; on stop, let what is in flight finish.

        The I/O thread bounds the drain: it waits for this thread up to the shutdown grace.
        """
        recorder = Recorder(
            self._store,
            self._action,
            self._settings,
            self._log,
            pool=pool,
            limit=self._cfg.concurrency,
            post=self._post,
            news=self._news,
        )
        try:
            while not self._stop.is_set():
                # One event for both kinds of news (a delivery put, an action finished): cleared
                # before the queues are looked at, so news arriving meanwhile wakes the next wait.
                self._news.clear()
                room = min(self._cfg.batch_size, recorder.room)
                batch = take_batch(self._deliveries, room, 0, self._is_current) if room else []
                if batch and self._stop.is_set():
                    self._post(requeue_all(batch, "shutting down", database_down=False))
                    break
                if batch:
                    recorder.take(batch)
                collected = recorder.record_finished(0)
                quiet = not batch and not collected and not recorder.database_down
                if quiet and not self._news.wait(BATCH_WAIT_SECONDS):
                    self._idle()
                if recorder.database_down:
                    recorder.drain()  # what is still running is given back as it finishes
                    log_event(self._log, logging.WARNING, "database_unavailable")
                    if not self._wait_for_database():
                        return
                    recorder.resume()
                    self._post(Resume())
        finally:
            if self._stop.is_set():
                recorder.drain()

    def _idle(self) -> None:
        """Nothing arrived or finished for a while: let the action release what it keeps idle."""
        if self._close_idle is None:
            return
        try:
            self._close_idle()
        except Exception as exc:  # noqa: BLE001 - tidying up must not stop the worker
            log_event(self._log, logging.WARNING, "close_idle_failed", error=f"{type(exc).__name__}: {exc}")

    def _wait_for_database(self) -> bool:
        """Ping until the database answers (capped backoff + jitter); False if told to stop."""
        attempt = 0
        while not self._stop.is_set():
            try:
                self._store.ping()
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
                if self._stop.wait(delay):
                    return False
        return False
