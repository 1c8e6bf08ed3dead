"""The delivery types the two threads exchange: a message as received, what to do with it.

A Delivery comes in from the I/O thread; the job thread answers with a BatchResult, one
Instruction (a decisions.Decision, and a reply for an Ack) per delivery it has decided.  No
pika here: the broker's objects stay opaque.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from account_worker.decisions import Decision, Requeue


class Delivery(NamedTuple):
    """One message as received.

    `tag` means something only on the channel it arrived on; `source` is that channel's
    session object (opaque here, compared by identity), so only that session can settle it.
    Immutable; a NamedTuple rather than a frozen dataclass because one is made for every
    message (a third of the cost to build, measured in bench/README.md).
    """

    tag: int
    source: object
    body: bytes
    message_id: str | None = None
    headers: Mapping[str, Any] | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    properties: Any = None  # the broker's properties object, kept opaque for republishing
    redelivered: bool = False  # the broker delivered it before (a consumer died or requeued it)
    received_at: float = 0.0  # time.monotonic() when it arrived (the processing-time metric)


class Instruction(NamedTuple):
    """What the I/O thread must do with one delivery; `reply` is set only for an Ack (sent before it).
    A NamedTuple for the reason Delivery is one."""

    delivery: Delivery
    decision: Decision
    reply: Mapping[str, str | int] | None = None


@dataclass(frozen=True)
class BatchResult:
    """Instructions for some deliveries, to carry out in order; database_down: pause consuming."""

    instructions: tuple[Instruction, ...]
    database_down: bool = False


def requeue_all(deliveries: Sequence[Delivery], reason: str, *, database_down: bool) -> BatchResult:
    """Give every delivery back to the queue: nothing acked, nothing dead-lettered."""
    decision = Requeue(reason)
    return BatchResult(tuple(Instruction(d, decision) for d in deliveries), database_down=database_down)


class DeliveryQueue:
    """The deliveries the I/O thread hands the job thread, oldest first.  `news` is set on every
    put, and by the pool's threads when an action finishes: the job thread waits on this one
    event for whichever comes first, never on a poll interval.

    One writer (the I/O thread) and one reader (the job thread): a deque, whose append and
    popleft are atomic, and the event; no lock and no notify per delivery as queue.Queue has
    (1.1 against 0.05 us a delivery put and taken).
    """

    def __init__(self) -> None:
        self._items: deque[Delivery] = deque()
        self.news = threading.Event()

    def put(self, item: Delivery) -> None:
        self._items.append(item)
        # Already set: the job thread has not cleared it yet and will look at the deque after it
        # does (Event.set takes a lock and notifies: skipped on the path of every delivery).
        if not self.news.is_set():
            self.news.set()

    def qsize(self) -> int:
        return len(self._items)

    def take(self, size: int, timeout: float = 0.0) -> list[Delivery]:
        """Up to `size` deliveries, oldest first, waiting up to `timeout` seconds for one if there is none."""
        items = self._items
        if not items and timeout > 0:
            self._wait(timeout)
        taken: list[Delivery] = []
        while items and len(taken) < size:
            taken.append(items.popleft())
        return taken

    def _wait(self, timeout: float) -> None:
        """Until a delivery is there or `timeout` passes (other news, a finished action, wakes it too early)."""
        deadline = time.monotonic() + timeout
        while not self._items:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.news.clear()
            if self._items:  # put between the look above and the clear: its set came before the clear
                return
            self.news.wait(remaining)
