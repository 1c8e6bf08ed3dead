"""Consumer (d) of bench/worker_throughput.py: the same job as a plain Celery task.

Celery's defaults throughout (prefork, concurrency = CPUs, prefetch multiplier 4,
ack on receipt, no result backend), except what a quorum queue needs: the queue is
`task_default_queue` declared with `task_default_queue_type = "quorum"` (Celery >= 5.5).
Celery then also turns off global QoS and, by itself, declares its native
delayed-delivery topology (28 `celery_delayed_*` quorum queues and their exchanges);
the benchmark deletes what this run created.

The task is what a typical Celery user writes: one module-level psycopg connection per
worker process, opened lazily in the child on its first task (a connection inherited
across fork would be shared), one transaction per task: look the host up, insert the
run, commit.

Configured by the harness through BENCH_AMQP_URL, BENCH_DATABASE_URL and
BENCH_CELERY_QUEUE.  Run: `celery -A celery_app worker` with bench/ on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
import threading

import psycopg
from celery import Celery

QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-celery")

app = Celery("bench_celery", broker=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.task_default_queue = QUEUE
app.conf.task_default_queue_type = "quorum"

_LOOKUP = "SELECT host FROM accounts WHERE account_uuid = %s"
_INSERT = (
    "INSERT INTO job_runs (message_id, account_uuid, host, status, attempts) "
    "VALUES (%s, %s, %s, 'done', 1) ON CONFLICT (message_id) DO NOTHING"
)
_conn: psycopg.Connection | None = None


def _db() -> psycopg.Connection:
    global _conn  # noqa: PLW0603 - one connection per worker process
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(os.environ["BENCH_DATABASE_URL"], application_name="bench-celery")
    return _conn


@app.task(name="bench.process_job")
def process_job(message_id: str, apikey: str, account_uuid: str) -> str:
    conn = _db()
    with conn.transaction():
        row = conn.execute(_LOOKUP, (account_uuid,)).fetchone()
        if row is None:
            raise LookupError(f"unknown account {account_uuid}")
        conn.execute(_INSERT, (message_id, account_uuid, row[0]))
    return "done"


def publish(prefix: str, count: int, threads: int = 8) -> None:
    """Harness helper: apply_async `count` tasks with publisher confirms, from a few threads.

    Confirms are switched on here only (the worker keeps Celery's defaults); each thread
    publishes through its own pooled producer (connection).
    """
    app.conf.broker_transport_options = {"confirm_publish": True}
    errors: list[BaseException] = []

    def part(start: int) -> None:
        try:
            with app.producer_pool.acquire(block=True) as producer:
                for i in range(start, count, threads):
                    message_id = f"{prefix}{i:07d}"
                    process_job.apply_async(
                        args=(message_id, "bench", ("1234", "5678")[i % 2]), task_id=message_id, producer=producer
                    )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=part, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "publish":
        sys.exit("usage: celery_app.py publish PREFIX COUNT")
    publish(sys.argv[2], int(sys.argv[3]))
