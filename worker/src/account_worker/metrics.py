"""Prometheus metrics and readiness of one worker instance (WORKER_METRICS_PORT).

WorkerMetrics is the Observer (observe.py) the I/O thread calls: counters and plain
attributes, nothing that blocks.  The HTTP server (/metrics, /ready) runs in its own
thread and only reads that state.  Whether the database answers is what the I/O
thread last saw (every batch result and every resume tell it); while no batch has
told it for WORKER_METRICS_DATABASE_CHECK seconds (an idle worker), a probe thread
pings the database on a connection of its own.  No HTTP request ever makes a query.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, assert_never
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)

from account_worker.config import Config
from account_worker.decisions import Ack, DeadLetter, DeadLetterKind, Decision, Requeue, Retry
from account_worker.delivery import Delivery
from account_worker.logsetup import log_event

OUTCOMES = ("done", "duplicate", "retried", "requeued", "dead_lettered")

# A dead letter's `reason` label is its kind (decisions.DeadLetterKind).  "other" was the label
# of a reason of no known class before dead letters carried a kind; no dead letter gets it now,
# and its series stays exported (at 0) so the label set the monitoring sees does not change.
OTHER_REASON = "other"

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

PROBE_TICK_SECONDS = 1.0


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


class DatabaseProbe:
    """Pings the database on its own connection while nothing else has shown its state recently."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        ping: Callable[[], None],
        close: Callable[[], None],
        interval: float,
        logger: logging.Logger,
    ) -> None:
        self._metrics = metrics
        self._ping = ping
        self._close = close
        self._interval = interval
        self._log = logger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-db-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> None:
        """One probe: ping if the last observation is older than the interval."""
        if self._metrics.database_age() < self._interval:
            return
        try:
            self._ping()
        except Exception as exc:  # noqa: BLE001 - any failure means "not answering"
            self._metrics.database(False)
            log_event(self._log, logging.DEBUG, "metrics_database_probe_failed", error=type(exc).__name__)
        else:
            self._metrics.database(True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.check()
                self._stop.wait(PROBE_TICK_SECONDS)
        finally:
            self._close()


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def make_app(registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI application: /ready answers 200 or 503 with the reason; everything else is /metrics."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/ready":
            ok, why = ready()
            body = f"{why}\n".encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
            return [body]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    return app


@dataclass
class Instrumentation:
    """A running metrics server, its probe and the observer to give the worker."""

    metrics: WorkerMetrics
    server: WSGIServer
    probe: DatabaseProbe
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.probe.stop()
        self.server.shutdown()
        self.server.server_close()


def new_registry() -> CollectorRegistry:
    """A registry with the process metrics (process_start_time_seconds: restarts) and the Python version."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def serve(
    cfg: Config,
    port: int,
    ping: Callable[[], None],
    close: Callable[[], None],
    logger: logging.Logger,
) -> Instrumentation:
    """Bind the HTTP server (OSError if the port is taken), start it and the probe; the caller closes it."""
    registry = new_registry()
    metrics = WorkerMetrics(registry)
    server_class = _ThreadingServer6 if ":" in cfg.metrics_address else _ThreadingServer
    server = make_server(
        cfg.metrics_address, port, make_app(registry, metrics.ready), server_class, handler_class=_Handler
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    probe = DatabaseProbe(metrics, ping, close, cfg.metrics_database_check, logger)
    probe.start()
    log_event(logger, logging.INFO, "metrics_serving", address=cfg.metrics_address, port=port)
    return Instrumentation(metrics, server, probe, thread)
