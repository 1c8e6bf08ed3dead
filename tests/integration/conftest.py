"""Live fault tests of the deployed worker, through the real broker and database.

Environment (set by molecule/worker/verify.yml):
    IT_AMQP_URL        app user's URL of the broker (published on 127.0.0.1)
    IT_DATABASE_URL    the worker's database (published on 127.0.0.1)
    IT_DB_HOST         container running PostgreSQL (stopped/started by a test)
    IT_WORKER_HOSTS    containers running the worker (comma-separated)
    IT_WORKER_NAME     runit service prefix (account-worker)
    IT_ACCOUNTS        account_uuid=host pairs seeded in the database
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pika
import psycopg
import pytest

REPORT = Path(__file__).resolve().parents[2] / "reports" / "worker-faults.json"


@dataclass
class Env:
    amqp_url: str
    database_url: str
    db_host: str
    worker_hosts: list[str]
    worker_name: str
    accounts: dict[str, str]
    results: list[dict] = field(default_factory=list)


@pytest.fixture(scope="session")
def env() -> Iterator[Env]:
    missing = [v for v in ("IT_AMQP_URL", "IT_DATABASE_URL", "IT_DB_HOST", "IT_WORKER_HOSTS") if not os.environ.get(v)]
    if missing:
        pytest.fail(f"integration environment not set: {', '.join(missing)}", pytrace=False)
    pairs = [p.split("=", 1) for p in os.environ.get("IT_ACCOUNTS", "").split(",") if "=" in p]
    e = Env(
        amqp_url=os.environ["IT_AMQP_URL"],
        database_url=os.environ["IT_DATABASE_URL"],
        db_host=os.environ["IT_DB_HOST"],
        worker_hosts=os.environ["IT_WORKER_HOSTS"].split(","),
        worker_name=os.environ.get("IT_WORKER_NAME", "account-worker"),
        accounts=dict(pairs),
    )
    yield e
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(e.results, indent=2))


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT.exists():
        terminalreporter.write_line("fault test                 sent  recorded  duplicates  dead-lettered")
        for r in json.loads(REPORT.read_text()):
            terminalreporter.write_line(
                f"{r['test']:<26} {r['sent']:>4}  {r['recorded']:>8}  {r['duplicates']:>10}  {r['dead_lettered']:>13}"
            )


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=60, check=check)


class Publisher:
    """Publishes jobs with publisher confirms: every job returned is confirmed by the broker."""

    def __init__(self, url: str) -> None:
        params = pika.URLParameters(url)
        params.client_properties = {"connection_name": "bundle-integration"}
        self.conn = pika.BlockingConnection(params)
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def job(self, message_id: str, account_uuid: str, **props) -> None:
        body = json.dumps({"apikey": "it", "account_uuid": account_uuid}).encode()
        self.ch.basic_publish(
            "jobs",
            "jobs",
            body,
            pika.BasicProperties(message_id=message_id, delivery_mode=2, content_type="application/json", **props),
            mandatory=True,
        )

    def raw(self, message_id: str, body: bytes) -> None:
        self.ch.basic_publish(
            "jobs", "jobs", body, pika.BasicProperties(message_id=message_id, delivery_mode=2), mandatory=True
        )

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


@pytest.fixture
def publisher(env: Env) -> Iterator[Publisher]:
    p = Publisher(env.amqp_url)
    yield p
    p.close()


def recorded(database_url: str, prefix: str) -> tuple[int, int]:
    """(distinct message ids, rows) recorded in job_runs for ids starting with prefix."""
    with psycopg.connect(database_url, connect_timeout=5) as db:
        row = db.execute(
            "SELECT count(DISTINCT message_id), count(*) FROM job_runs WHERE message_id LIKE %s", (prefix + "%",)
        ).fetchone()
    return int(row[0]), int(row[1])


def wait_recorded(database_url: str, prefix: str, expected: int, deadline_s: float) -> tuple[int, int]:
    deadline = time.monotonic() + deadline_s
    last = (0, 0)
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.OperationalError):  # briefly unreachable: keep the last count
            last = recorded(database_url, prefix)
        if last[0] >= expected:
            return last
        time.sleep(0.5)
    return last


def drain_dead_letters(url: str, prefix: str) -> list[tuple[str, dict]]:
    """Take every message of jobs.dlq whose message_id starts with prefix; leave the others."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    found, others = [], []
    while True:
        method, props, _ = ch.basic_get("jobs.dlq", auto_ack=False)
        if method is None:
            break
        if (props.message_id or "").startswith(prefix):
            found.append((props.message_id, props.headers or {}))
            ch.basic_ack(method.delivery_tag)
        else:
            others.append(method.delivery_tag)
    for tag in others:
        ch.basic_nack(tag, requeue=True)
    conn.close()
    return found


def run_id() -> str:
    return f"it-{uuid.uuid4().hex[:8]}-"
