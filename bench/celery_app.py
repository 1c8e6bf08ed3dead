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

The SSH job of bench/ssh_throughput.py (b), `ssh_job`, is what a Celery user writes with
paramiko: look the account's host up, open an SSHClient (the pinned known_hosts, RejectPolicy,
the worker's key), run `true`, close it (one connection, with its handshake, per task),
record the run with its exit status and output.  BENCH_SSH_KEY_FILE, BENCH_SSH_KNOWN_HOSTS
and BENCH_SSH_USER configure it.

Configured by the harness through BENCH_AMQP_URL, BENCH_DATABASE_URL and
BENCH_CELERY_QUEUE.  Run: `celery -A celery_app worker` with bench/ on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
import threading

import paramiko
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


_INSERT_SSH = (
    "INSERT INTO job_runs (message_id, account_uuid, host, status, attempts, exit_status, stdout, stderr) "
    "VALUES (%s, %s, %s, 'done', 1, %s, %s, %s) ON CONFLICT (message_id) DO NOTHING"
)


@app.task(name="bench.ssh_job")
def ssh_job(message_id: str, apikey: str, account_uuid: str) -> str:
    conn = _db()
    with conn.transaction():
        row = conn.execute(_LOOKUP, (account_uuid,)).fetchone()
    if row is None:
        raise LookupError(f"unknown account {account_uuid}")
    host = row[0]
    hostname, _, port = host.partition(":")  # the sandbox's account host is 127.0.0.1:2222
    client = paramiko.SSHClient()
    client.load_host_keys(os.environ["BENCH_SSH_KNOWN_HOSTS"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            hostname,
            port=int(port or 22),
            username=os.environ.get("BENCH_SSH_USER", "account-jobs"),
            key_filename=os.environ["BENCH_SSH_KEY_FILE"],
            timeout=10,
            look_for_keys=False,
            allow_agent=False,
        )
        _, stdout, stderr = client.exec_command("true", timeout=60)
        out, err = stdout.read().decode(), stderr.read().decode()
        status = stdout.channel.recv_exit_status()
    finally:
        client.close()
    if status != 0:
        raise RuntimeError(f"true exited with {status} on {host}: {err}")
    with conn.transaction():
        conn.execute(_INSERT_SSH, (message_id, account_uuid, host, status, out, err))
    return "done"


def publish(
    prefix: str, count: int, threads: int = 8, task: str = "process_job", accounts: tuple[str, ...] = ()
) -> None:
    """Harness helper: apply_async `count` tasks with publisher confirms, from a few threads.

    Confirms are switched on here only (the worker keeps Celery's defaults); each thread
    publishes through its own pooled producer (connection).  `task`: process_job or ssh_job;
    `accounts`: alternated over (default the sandbox's 1234 and 5678).
    """
    chosen = {"process_job": process_job, "ssh_job": ssh_job}[task]
    names = accounts or ("1234", "5678")
    app.conf.broker_transport_options = {"confirm_publish": True}
    errors: list[BaseException] = []

    def part(start: int) -> None:
        try:
            with app.producer_pool.acquire(block=True) as producer:
                for i in range(start, count, threads):
                    message_id = f"{prefix}{i:07d}"  # as publishing.message_id (not imported: no pika here)
                    chosen.apply_async(
                        args=(message_id, "bench", names[i % len(names)]), task_id=message_id, producer=producer
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
    if len(sys.argv) not in (4, 6) or sys.argv[1] != "publish" or (len(sys.argv) == 6 and sys.argv[4] != "ssh"):
        sys.exit("usage: celery_app.py publish PREFIX COUNT [ssh ACCOUNT]")
    if len(sys.argv) == 6:
        publish(sys.argv[2], int(sys.argv[3]), task="ssh_job", accounts=(sys.argv[5],))
    else:
        publish(sys.argv[2], int(sys.argv[3]))
