"""The deployed worker loses nothing: restarts, kill -9, a database outage, poison messages."""

from __future__ import annotations

import json
import time
import uuid

import pika
import pytest

from deployment import Env
from streams import FAULTS, accounts, report, stream_with_fault
from support.containers import run_in, start_service, stop_service
from support.db import recorded, wait_recorded
from support.jobs import JobPublisher, drain_dead_letters

STREAM = 1000


def run_id() -> str:
    return f"it-{uuid.uuid4().hex[:8]}-"


def _supervised(env: Env, host: str) -> list[str]:
    out = run_in(host, "sh", "-c", f"sv status /etc/service/{env.worker_name}-*").stdout
    return [line for line in out.splitlines() if line.startswith("run:")]


def test_job_with_reply_to_gets_the_accounts_host(env: Env, publisher: JobPublisher) -> None:
    reply_queue = publisher.ch.queue_declare("", exclusive=True).method.queue
    for account_uuid, host in env.accounts.items():
        correlation_id = str(uuid.uuid4())
        message_id = f"{run_id()}reply"
        publisher.job(message_id, account_uuid, reply_to=reply_queue, correlation_id=correlation_id)
        deadline = time.monotonic() + 30
        reply = None
        while reply is None and time.monotonic() < deadline:
            method, props, body = publisher.ch.basic_get(reply_queue, auto_ack=True)
            if method:
                reply = (props, json.loads(body))
            else:
                publisher.conn.sleep(0.1)
        assert reply is not None, f"no reply for account {account_uuid} within 30 s"
        props, payload = reply
        assert props.correlation_id == correlation_id
        assert payload["account_uuid"] == account_uuid
        assert payload["host"] == host
        assert payload["status"] == "done"


def test_poison_messages_are_dead_lettered_with_a_reason(env: Env, publisher: JobPublisher) -> None:
    prefix = run_id()
    publisher.raw(f"{prefix}not-json", b"{not json")
    publisher.raw(f"{prefix}wrong-type", json.dumps({"apikey": "it", "account_uuid": 1234}).encode())
    publisher.raw(f"{prefix}missing", json.dumps({"apikey": "it"}).encode())
    publisher.job(f"{prefix}unknown-account", "no-such-account")
    publisher.job(f"{prefix}good", sorted(env.accounts)[0])  # the worker keeps running after poison

    assert wait_recorded(env.database_url, f"{prefix}good", 1, deadline_s=30)[0] == 1
    deadline = time.monotonic() + 30
    dead: dict[str, dict] = {}
    while len(dead) < 4 and time.monotonic() < deadline:
        dead.update(dict(drain_dead_letters(env.amqp_url, prefix)))
        time.sleep(0.3)
    assert set(dead) == {f"{prefix}{s}" for s in ("not-json", "wrong-type", "missing", "unknown-account")}
    reasons = {mid.removeprefix(prefix): headers["x-worker-reason"] for mid, headers in dead.items()}
    assert "JSON" in reasons["not-json"]
    assert "account_uuid" in reasons["wrong-type"]
    assert "account_uuid" in reasons["missing"]
    assert "unknown account" in reasons["unknown-account"]
    assert recorded(env.database_url, prefix) == (1, 1), "a poison message was recorded as a job run"
    for host in env.worker_hosts:
        assert len(_supervised(env, host)) >= 1


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_worker_fault_during_a_stream_loses_nothing(env: Env, publisher: JobPublisher, fault: str) -> None:
    stream_with_fault(env, publisher, run_id(), fault, count=STREAM)


def test_database_down_for_20_seconds_delays_but_loses_nothing(env: Env, publisher: JobPublisher) -> None:
    prefix = run_id()
    sent = 200
    stop_service(env.db_host, "postgresql")
    try:
        cycle = accounts(env)
        for n in range(sent):
            publisher.job(f"{prefix}{n:05d}", next(cycle))
        time.sleep(20)
    finally:
        start_service(env.db_host, "postgresql")
    distinct, rows, dead = report(env, "database down 20 s", prefix, sent)
    assert (distinct, rows, dead) == (sent, sent, 0)


def test_every_instance_consumes_again(env: Env) -> None:
    """After the faults above, every instance on every host is back on the queue (horizontal scale)."""
    instances = sum(len(_supervised(env, host)) for host in env.worker_hosts)
    assert instances >= 2 * len(env.worker_hosts)
    conn = pika.BlockingConnection(pika.URLParameters(env.amqp_url))
    deadline = time.monotonic() + 30
    consumers = 0
    while time.monotonic() < deadline:
        consumers = conn.channel().queue_declare("jobs", passive=True).method.consumer_count
        if consumers >= instances:
            break
        conn.sleep(1)
    conn.close()
    assert consumers == instances
