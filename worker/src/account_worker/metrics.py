"""Prometheus metrics and readiness of one worker instance (WORKER_METRICS_PORT).

WorkerMetrics is the Observer (observe.py) the I/O thread calls: counters and plain
attributes, nothing that blocks.  Whether the database answers is what the I/O thread
last saw (every batch result and every resume tell it).  The HTTP server that serves
this state (/metrics, /ready) and the probe that keeps the database state fresh while
the worker is idle are in metrics_server.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import assert_never

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from account_worker.decisions import Ack, DeadLetter, DeadLetterKind, Decision, Requeue, Retry
from account_worker.delivery import Delivery

OUTCOMES = ("done", "duplicate", "retried", "requeued", "dead_lettered")

# A dead letter's `reason` label is its kind (decisions.DeadLetterKind).  "other" was the label
# of a reason of no known class before dead letters carried a kind; no dead letter gets it now,
# and its series stays exported (at 0) so the label set the monitoring sees does not change.
OTHER_REASON = "other"

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def reason_label(kind: DeadLetterKind) -> str:
    """The bounded label value of a dead letter (its reason text carries ids and messages)."""
    return kind.value


class WorkerMetrics:
    """The Prometheus observer of one worker; all its methods are cheap and never block."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._connected = False
        self._consuming = False
        self._connections = 0
        self._in_flight = 0
        self._database_up = False
        self._database_seen = -float("inf")  # clock() of the last observation of the database
        self._last_success = 0.0

        self.jobs = Counter(
            "account_worker_jobs",
            "Deliveries settled, by outcome (dead-lettered ones by reason class)",
            ["outcome", "reason"],
            registry=registry,
        )
        self._done = self.jobs.labels("done", "")
        self._duplicate = self.jobs.labels("duplicate", "")
        self._retried = self.jobs.labels("retried", "")
        self._requeued = self.jobs.labels("requeued", "")
        self._dead = {kind: self.jobs.labels("dead_lettered", reason_label(kind)) for kind in DeadLetterKind}
        self.jobs.labels("dead_lettered", OTHER_REASON)
        self.duration = Histogram(
            "account_worker_job_duration_seconds",
            "Seconds from a delivery's arrival to its settlement (done, duplicate, retried, dead-lettered)",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.reconnects = Counter(
            "account_worker_amqp_reconnects", "AMQP connections established after the first", registry=registry
        )
        gauges: Iterable[tuple[str, str, Callable[[], float]]] = (
            ("account_worker_jobs_in_flight", "Deliveries received and not settled yet", lambda: self._in_flight),
            ("account_worker_amqp_connected", "1 while connected to a broker", lambda: self._connected),
            ("account_worker_consuming", "1 while the consumer runs", lambda: self._consuming),
            ("account_worker_database_up", "1 while the database was last seen answering", lambda: self._database_up),
            ("account_worker_ready", "1 while ready (see /ready)", lambda: self.ready()[0]),
            (
                "account_worker_last_success_timestamp_seconds",
                "Unix time of the last job settled as done or duplicate (0: none yet)",
                lambda: self._last_success,
            ),
        )
        for name, doc, read in gauges:
            Gauge(name, doc, registry=registry).set_function(read)

    # ------------------------------------------------------------------ Observer (the I/O thread)

    def received(self, delivery: Delivery) -> None:
        self._in_flight += 1

    def settled(self, delivery: Delivery, decision: Decision) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        match decision:
            case Ack(duplicate=duplicate):
                (self._duplicate if duplicate else self._done).inc()
                self._last_success = self._wall_clock()
            case Retry():
                self._retried.inc()
            case DeadLetter(kind=kind):
                self._dead[kind].inc()
            case Requeue():
                self._requeued.inc()
                return
            case _:
                assert_never(decision)
        if delivery.received_at:
            self.duration.observe(max(0.0, self._clock() - delivery.received_at))

    def connected(self, up: bool) -> None:
        self._connected = up
        if up:
            self._connections += 1
            if self._connections > 1:
                self.reconnects.inc()
        else:
            self._consuming = False
            self._in_flight = 0  # the broker has them back

    def consuming(self, on: bool) -> None:
        self._consuming = on

    def database(self, up: bool) -> None:
        self._database_up = up
        self._database_seen = self._clock()

    # ------------------------------------------------------------------ readers (any thread)

    def database_age(self) -> float:
        """Seconds since the database was last observed (infinite before the first observation)."""
        return self._clock() - self._database_seen

    def ready(self) -> tuple[bool, str]:
        """(ready, why): connected, consuming and the database answering."""
        missing = [
            what
            for what, ok in (
                ("not connected to the broker", self._connected),
                ("not consuming", self._consuming),
                ("database unreachable", self._database_up),
            )
            if not ok
        ]
        return (not missing, "; ".join(missing) or "ready")
