"""Consumer (a) of bench/worker_throughput.py: the pika consume+ack ceiling.

Same client library, connection type and prefetch (100) as the worker, no work at
all: every delivery is acked on its own as it arrives.  Prints `first <t>` and
`done <t>` (time.monotonic(), comparable across processes on one machine) when the
first and the N-th message have been acked, then idles until SIGTERM so that the
harness stops every consumer the same way.

    python bench/raw_consumer.py AMQP_URL QUEUE N [PREFETCH]
"""

from __future__ import annotations

import signal
import sys
import time

import pika


def main(argv: list[str]) -> int:
    url, queue, total = argv[0], argv[1], int(argv[2])
    prefetch = int(argv[3]) if len(argv) > 3 else 100
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=prefetch)
    acked = 0

    def on_message(ch: object, method: object, properties: object, body: bytes) -> None:
        nonlocal acked
        channel.basic_ack(delivery_tag=method.delivery_tag)  # type: ignore[attr-defined]
        acked += 1
        if acked == 1:
            print(f"first {time.monotonic():.6f}", flush=True)
        if acked == total:
            print(f"done {time.monotonic():.6f}", flush=True)

    channel.basic_consume(queue=queue, on_message_callback=on_message, auto_ack=False)
    while not stopping:
        conn.process_data_events(time_limit=0.2)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
