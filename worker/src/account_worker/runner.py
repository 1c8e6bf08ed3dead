"""The worker façade: wires the I/O thread (io_thread.py) and the job thread (job_thread.py).

The caller's thread becomes the I/O thread; it owns pika.  The job thread owns the
database.  They share one buffer of deliveries (I/O -> job) and the I/O thread's inbox
of reports (job -> I/O, see job_thread.JobReport).
"""

from __future__ import annotations

import logging
import random as _random
import threading
from collections.abc import Callable
from typing import Any

from account_worker import amqp
from account_worker.actions import Action
from account_worker.config import Config
from account_worker.delivery import DeliveryQueue
from account_worker.io_thread import IOThread
from account_worker.job_thread import JobThread
from account_worker.logsetup import LOGGER_NAME, log_event
from account_worker.observe import NO_OBSERVER, Observer
from account_worker.store import JobStore


class Runner:
    def __init__(
        self,
        cfg: Config,
        store: JobStore,
        action: Action,
        stop: threading.Event,
        *,
        connect: Callable[..., Any] = amqp.connect,
        random: Callable[[], float] = _random.random,
        logger: logging.Logger | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._cfg = cfg
        self._log = logger or logging.getLogger(LOGGER_NAME)
        deliveries = DeliveryQueue()
        self._io = IOThread(cfg, stop, deliveries, connect=connect, random=random, logger=self._log, observer=observer)
        self._job = JobThread(
            cfg,
            store,
            action,
            deliveries,
            post=self._io.post,
            is_current=self._io.is_current,
            random=random,
            logger=self._log,
        )

    def run(self) -> int:
        """Run until stop is set; return 0. Raises JobThreadCrashed on a crash of the job thread."""
        log_event(self._log, logging.INFO, "worker_starting", queue=self._cfg.queue, config=repr(self._cfg))
        self._job.start()
        try:
            self._io.run(self._job)
        finally:
            self._job.stop()
            if self._job.is_alive():
                # One grace in all: what the I/O thread's drain left of it (no connection, no ack now;
                # a run that finishes meanwhile is still recorded, so its redelivery is a duplicate).
                self._job.join(self._io.grace_left())
        log_event(self._log, logging.INFO, "worker_stopped")
        return 0
