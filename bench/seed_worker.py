"""Consumer (c) of bench/worker_throughput.py: the 2014 prototype's design, on RabbitMQ.

A polling loop: basic_get one message (the equivalent of prefetch 1: nothing is
buffered, every message costs a round trip), open a NEW PostgreSQL connection for it,
look the account's host up, insert the run into job_runs, commit, close, and
acknowledge ("delete") the message in `finally`.

Deliberately faithful, defects included: a job that fails (bad JSON, unknown account,
database down, ...) is acked anyway and so LOST - the prototype's "delete in finally".
It exists only as the baseline of the comparison; never use it for real work.

    python bench/seed_worker.py AMQP_URL DATABASE_URL QUEUE
"""

from __future__ import annotations

import json
import signal
import sys
import time

import pika
import psycopg

IDLE_SLEEP = 1.0  # the prototype slept when the queue was empty


def main(argv: list[str]) -> int:
    amqp_url, database_url, queue = argv[0], argv[1], argv[2]
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = conn.channel()
    while not stopping:
        method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is None:
            time.sleep(IDLE_SLEEP)
            continue
        try:
            job = json.loads(body)
            with psycopg.connect(database_url, application_name="bench-seed") as db:
                row = db.execute("SELECT host FROM accounts WHERE account_uuid = %s", (job["account_uuid"],)).fetchone()
                db.execute(
                    "INSERT INTO job_runs (message_id, account_uuid, host, status, attempts) "
                    "VALUES (%s, %s, %s, %s, 1)",
                    (properties.message_id, job["account_uuid"], row[0], "done"),
                )
        except Exception as exc:
            print(f"seed: job {properties.message_id} failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            channel.basic_ack(delivery_tag=method.delivery_tag)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
