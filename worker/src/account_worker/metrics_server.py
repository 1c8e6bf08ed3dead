"""The HTTP server of one worker instance (WORKER_METRICS_PORT): /metrics, /ready, and the database probe.

The server runs in its own threads and only reads the state WorkerMetrics (metrics.py)
keeps.  While no batch has shown the database's state for WORKER_METRICS_DATABASE_CHECK
seconds (an idle worker), a probe thread pings the database on a connection of its own.
No HTTP request ever makes a query.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, make_wsgi_app

from account_worker.config import Config
from account_worker.logsetup import log_event
from account_worker.metrics import WorkerMetrics

PROBE_TICK_SECONDS = 1.0


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
