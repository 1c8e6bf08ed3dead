"""Consumers (a) and (a0) of bench/worker_throughput.py: plain pika, consume and ack, no work.

Same client library and connection type as the worker. With ACK_EVERY > 1 (a, the
ceiling) it acks as the worker does: after each read from the socket, one
basic_ack(multiple=True) for everything delivered so far, and at the latest after
ACK_EVERY deliveries (keep it <= PREFETCH, or the broker stops sending). With
ACK_EVERY = 1 (a0) every delivery is acked on its own as it arrives.

Prints `first <t>` and `done <t>` (time.monotonic(), comparable across processes on
one machine) when the first and the N-th message have been acked, then idles until
SIGTERM so that the harness stops every consumer the same way.

    python bench/raw_consumer.py AMQP_URL QUEUE N [PREFETCH [ACK_EVERY]]    (defaults 100, 1)
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable

import pika


class Acker:
    """Settles deliveries of one channel in order.

    ack(tag, multiple) sends the frame; on_acked(total) is called after each one with the
    number of deliveries acked so far."""

    def __init__(self, ack: Callable[[int, bool], None], every: int, on_acked: Callable[[int], None]) -> None:
        if every < 1:
            raise ValueError("ack every must be >= 1")
        self._ack = ack
        self._every = every
        self._on_acked = on_acked
        self._last_tag = 0
        self.pending = 0
        self.acked = 0

    def delivered(self, tag: int) -> None:
        self._last_tag = tag
        self.pending += 1
        if self.pending >= self._every:
            self.flush()

    def flush(self) -> None:
        """Ack everything delivered so far: one frame (multiple=True unless acking one by one)."""
        if not self.pending:
            return
        self._ack(self._last_tag, self._every > 1)
        self.acked += self.pending
        self.pending = 0
        self._on_acked(self.acked)


class Marks:
    """Prints `first <t>` and `done <t>` once each, as the acked count passes 1 and total."""

    def __init__(self, total: int, out: Callable[[str], None]) -> None:
        self._total = total
        self._out = out
        self._first = self._done = False

    def __call__(self, acked: int) -> None:
        if acked >= 1 and not self._first:
            self._first = True
            self._out(f"first {time.monotonic():.6f}")
        if acked >= self._total and not self._done:
            self._done = True
            self._out(f"done {time.monotonic():.6f}")


def main(argv: list[str]) -> int:
    url, queue, total = argv[0], argv[1], int(argv[2])
    prefetch = int(argv[3]) if len(argv) > 3 else 100
    every = int(argv[4]) if len(argv) > 4 else 1
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=prefetch)
    acker = Acker(
        lambda tag, multiple: channel.basic_ack(delivery_tag=tag, multiple=multiple),
        every,
        Marks(total, lambda line: print(line, flush=True)),
    )

    def on_message(ch: object, method: object, properties: object, body: bytes) -> None:
        acker.delivered(method.delivery_tag)  # type: ignore[attr-defined]

    channel.basic_consume(queue=queue, on_message_callback=on_message, auto_ack=False)
    while not stopping:
        conn.process_data_events(time_limit=0.2)  # returns once what was read is dispatched
        acker.flush()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
