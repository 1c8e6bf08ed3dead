"""What the worker tells its instrumentation, and when: one small interface, few call sites.

The I/O thread calls an Observer where it dispatches a decision (session.py) and where the
connection, the consumer or the database's state changes (session.py, io_thread.py).  The
default observer does nothing; metrics.py implements it with Prometheus.  An observer
must not block: it is called on the I/O thread.
"""

from __future__ import annotations

from typing import Protocol

from account_worker.decisions import Decision
from account_worker.delivery import Delivery


class Observer(Protocol):
    def received(self, delivery: Delivery) -> None:
        """A delivery arrived on the current connection (in flight until settled or the connection is lost)."""

    def settled(self, delivery: Delivery, decision: Decision) -> None:
        """A delivery of the current connection was settled as `decision` (Requeue: given back to the queue)."""

    def connected(self, up: bool) -> None:
        """The AMQP connection was established (True) or lost/closed (False)."""

    def consuming(self, on: bool) -> None:
        """The consumer started (True) or was cancelled (False)."""

    def database(self, up: bool) -> None:
        """The database was seen answering (True) or unavailable (False)."""


class NullObserver:
    """The observer when metrics are off."""

    def received(self, delivery: Delivery) -> None:
        pass

    def settled(self, delivery: Delivery, decision: Decision) -> None:
        pass

    def connected(self, up: bool) -> None:
        pass

    def consuming(self, on: bool) -> None:
        pass

    def database(self, up: bool) -> None:
        pass


NO_OBSERVER: Observer = NullObserver()
