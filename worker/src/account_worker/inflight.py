"""Recording in completion order when actions run concurrently (WORKER_CONCURRENCY > 1).

The job thread keeps up to `limit` actions in flight on the pool.  It takes deliveries
while there is room, does their database part first (decode, apikey, host and earlier-run
look-ups: batch.prepare, one query per take), submits their actions, and records the
actions that finished, in completion order: every wake-up records what finished since
the last one in one transaction (narrowed on failure, batch.record) and posts a
BatchResult for just those deliveries.  A slow action therefore holds back its own
delivery only: the others are recorded and acked as they finish.  A delivery whose
message is still running from an earlier take waits for that run and is answered by it
(a duplicate), as a repeat within one take is: one message, one action at a time.

Still true: nothing is acked before its run is committed (the I/O thread acts on the
posted results); the database connection stays on the job thread (actions never touch
it); a take holding a message the broker got back unsettled (a suspect) is processed
after everything in flight is recorded, by batch.process_in_groups as with concurrency 1
(the suspect alone, so a crash takes no neighbour along).  Once the database is found
down, every action still in flight is given back to the queue as it finishes,
unrecorded (it runs again later: at-least-once), until resume() is called.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future

from account_worker.actions import Action, Outcome
from account_worker.batch import BatchSettings, log_done, prepare, process_in_groups, record
from account_worker.delivery import BatchResult, Delivery, requeue_all
from account_worker.errors import DatabaseUnavailable
from account_worker.execution import Finished, Pending, finished_deliveries, next_duplicate, run_one
from account_worker.messages import delivery_count
from account_worker.store import Store

DOWN_REASON = "database unavailable"


class InFlight:
    """Actions submitted to the pool and not yet collected; the pool's threads only hand results over."""

    def __init__(self, pool: Executor, action: Action, news: threading.Event | None = None) -> None:
        self._pool = pool
        self._action = action
        self._finished: queue.Queue[Finished] = queue.Queue()
        self._news = news  # set when an action finishes (the job thread's one wake-up event)
        self.count = 0  # submitted and not collected (job thread only)

    def submit(self, pending: Pending) -> None:
        self.count += 1
        future = self._pool.submit(run_one, self._action, pending.job, pending.host)
        future.add_done_callback(lambda done: self._finish(Finished(pending, _result(done))))

    def _finish(self, finished: Finished) -> None:
        self._finished.put(finished)
        if self._news is not None:
            self._news.set()

    def collect(self, timeout: float) -> list[Finished]:
        """The finished actions: wait up to `timeout` (0: not at all) for one, then take all that are ready."""
        taken: list[Finished] = []
        try:
            taken.append(self._finished.get(timeout=timeout) if timeout > 0 else self._finished.get_nowait())
            while True:
                taken.append(self._finished.get_nowait())
        except queue.Empty:
            pass
        self.count -= len(taken)
        return taken


def _result(future: Future[Outcome | Exception]) -> Outcome | Exception:
    """run_one's value; a cancelled future or an error run_one let through becomes an error to classify."""
    if future.cancelled():
        return RuntimeError("action cancelled")
    error = future.exception()
    if error is None:
        return future.result()
    return error if isinstance(error, Exception) else RuntimeError(f"action ended by {type(error).__name__}")


class Recorder:
    """The job thread's side of concurrent processing: take, run on the pool, record in completion order."""

    def __init__(
        self,
        store: Store,
        action: Action,
        settings: BatchSettings,
        log: logging.Logger,
        *,
        pool: Executor,
        limit: int,
        post: Callable[[BatchResult], None],
        news: threading.Event | None = None,
    ) -> None:
        self._store = store
        self._action = action
        self._settings = settings
        self._log = log
        self._pool = pool
        self._limit = limit
        self._post = post
        self._flight = InFlight(pool, action, news)
        self._down = False  # the database was found down; cleared by resume()
        # The action in flight for each message_id: a later take's delivery of the same message
        # waits as its follower (answered by its run) instead of running it a second time.
        self._running: dict[str, Pending] = {}

    @property
    def in_flight(self) -> int:
        return self._flight.count

    @property
    def room(self) -> int:
        """How many more deliveries may be taken now (0 while the database is down)."""
        return 0 if self._down else max(0, self._limit - self._flight.count)

    @property
    def database_down(self) -> bool:
        return self._down

    def resume(self) -> None:
        """The database answers again: take and record as usual."""
        self._down = False

    def take(self, batch: Sequence[Delivery]) -> None:
        """Start a take: its database part now (what it decides posted at once), its actions on the pool."""
        if self._down:
            self._post(requeue_all(batch, DOWN_REASON, database_down=True))
            return
        if any(delivery_count(d.headers) for d in batch):
            self._alone(batch)
            return
        prepared = prepare(batch, self._store, self._settings, self._log)
        if isinstance(prepared, BatchResult):  # the database is down: all of it requeued
            self._down = True
            self._post(prepared)
            return
        if prepared.decided:
            self._post(BatchResult(prepared.decided))
        for pending in prepared.to_run:
            first = self._running.get(pending.job.message_id)
            if first is None:
                self._submit(pending)
            else:  # the same message is running from an earlier take: as in one take, it answers this one
                first.followers.append((pending.delivery, pending.job))
                first.followers.extend(pending.followers)

    def _submit(self, pending: Pending) -> None:
        self._running[pending.job.message_id] = pending
        self._flight.submit(pending)

    def _alone(self, batch: Sequence[Delivery]) -> None:
        """A take with suspects: record everything in flight, then process it as concurrency 1 does."""
        self.drain()
        if self._down:
            self._post(requeue_all(batch, DOWN_REASON, database_down=True))
            return
        for result in process_in_groups(batch, self._store, self._action, self._settings, self._log, pool=self._pool):
            self._post(result)
            if result.database_down:
                self._down = True

    def record_finished(self, timeout: float) -> int:
        """Record and post what finished (waiting up to `timeout` for something to); the number of actions collected."""
        finished = self._flight.collect(timeout)
        if not finished:
            return 0
        to_record: list[Finished] = []
        for item in finished:
            message_id = item.pending.job.message_id
            if self._running.get(message_id) is item.pending:
                del self._running[message_id]
            # Once the database is down (or this action met it down), no duplicate starts.
            successor = None if self._down or isinstance(item.result, DatabaseUnavailable) else next_duplicate(item)
            if successor is not None:
                self._submit(successor)
            to_record.append(item)
        if self._down:
            self._post(requeue_all(finished_deliveries(to_record), DOWN_REASON, database_down=True))
            return len(finished)
        recorded = record(to_record, self._store, self._settings, self._log)
        self._post(recorded)
        if recorded.database_down:
            self._down = True
        else:
            log_done(self._log, recorded.instructions)
        return len(finished)

    def drain(self) -> None:
        """Wait for every action in flight and record it (given back to the queue if the database is down)."""
        while self._flight.count:
            self.record_finished(timeout=1.0)
