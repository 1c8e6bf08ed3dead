"""The crash-loop guard on the real broker, and the operators' DLQ tools on a deployed worker host."""

from __future__ import annotations

import json
import time
import uuid

import pika
import psycopg

from deployment import Env
from support.containers import run_in
from support.db import wait_recorded
from support.jobs import JobPublisher, drain_dead_letters

DLQ_TOOL = "/opt/account-worker/venv/bin/account-worker-dlq"
X_ATTEMPT_REASON = "invalid message: header x-attempt must be between 1 and 1000"


def _headers(url: str, queue: str, *, requeue_with: str) -> dict:
    """Take the queue's first message, read its headers, give it back: 'nack' or by closing the connection."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    method, props, _ = ch.basic_get(queue, auto_ack=False)
    assert method is not None, f"{queue} is empty"
    if requeue_with == "nack":
        ch.basic_nack(method.delivery_tag, requeue=True)
    conn.close()  # unacked messages go back to the queue: what a crashed worker does
    return dict(props.headers or {})


def _sv(env: Env, command: str) -> None:
    for host in env.worker_hosts:
        run_in(host, "sh", "-c", f"sv {command} /etc/service/{env.worker_name}-*")


def _consumers(url: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    count = conn.channel().queue_declare("jobs", passive=True).method.consumer_count
    conn.close()
    return count


def test_a_message_returned_unsettled_crash_limit_times_is_dead_lettered_alone(env: Env, publisher: JobPublisher):
    """Three returns of a message (a worker dying with it in flight) make it 'crashed the worker'.

    The workers are stopped while a stand-in consumer takes the suspect and dies three times
    (closes its connection without settling), exactly as a crashing worker would; then the
    workers start: the suspect is dead-lettered unprocessed, its neighbours are recorded.
    """
    prefix = f"crash-{uuid.uuid4().hex[:8]}-"
    account = sorted(env.accounts)[0]
    probe = f"it-dc-{uuid.uuid4().hex[:8]}"
    observed: dict[str, object] = {}
    _sv(env, "stop")
    try:
        deadline = time.monotonic() + 30
        while _consumers(env.amqp_url) and time.monotonic() < deadline:
            time.sleep(0.5)
        # What the broker does with x-delivery-count on a nack and on a closed connection.
        publisher.ch.queue_declare(probe, durable=True, arguments={"x-queue-type": "quorum"})
        publisher.ch.basic_publish("", probe, b"{}", pika.BasicProperties(message_id="probe"), mandatory=True)
        observed["first delivery"] = _headers(env.amqp_url, probe, requeue_with="nack").get("x-delivery-count")
        observed["after a nack"] = _headers(env.amqp_url, probe, requeue_with="close").get("x-delivery-count")
        observed["after a close"] = _headers(env.amqp_url, probe, requeue_with="close").get("x-delivery-count")
        publisher.ch.queue_delete(probe)

        publisher.job(f"{prefix}suspect", account)
        counts = [_headers(env.amqp_url, "jobs", requeue_with="close").get("x-delivery-count") for _ in range(3)]
        observed["suspect's count per delivery"] = counts
        for n in range(5):
            publisher.job(f"{prefix}neighbour-{n}", account)
    finally:
        _sv(env, "start")

    got = wait_recorded(env.database_url, f"{prefix}neighbour-", 5, deadline_s=60)
    dead: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    while not dead and time.monotonic() < deadline:
        dead.update(drain_dead_letters(env.amqp_url, prefix))
        time.sleep(0.3)
    with psycopg.connect(env.database_url) as db:
        suspect_rows = db.execute("SELECT count(*) FROM job_runs WHERE message_id = %s", (f"{prefix}suspect",))
        suspect_recorded = suspect_rows.fetchone()[0]
    reason = dead.get(f"{prefix}suspect", {}).get("x-worker-reason")
    env.results.append(
        {
            "test": "crash-loop guard",
            "sent": 6,
            "recorded": got.distinct,
            "duplicates": got.duplicates,
            "dead_lettered": len(dead),
            "x_delivery_count": observed,
            "reason": reason,
        }
    )
    print(f"\ncrash-loop guard: x-delivery-count {observed}; suspect reason {reason!r}")
    assert counts[0] is None or counts[0] == 0, "a first delivery carries no count"
    assert observed["after a close"], "the broker does not count returns: the guard cannot work"
    assert (got.distinct, got.duplicates) == (5, 0), "a neighbour was not recorded"
    assert set(dead) == {f"{prefix}suspect"}, f"dead-lettered: {sorted(dead)}"
    assert reason and reason.startswith("crashed the worker"), reason
    assert suspect_recorded == 0


def _dlq_tool(env: Env, *args: str) -> dict:
    host = env.worker_hosts[0]
    command = ["chpst", "-u", env.worker_name, "-e", f"/etc/{env.worker_name}/env", DLQ_TOOL, *args, "--json"]
    out = run_in(host, *command).stdout
    return json.loads(out.strip().splitlines()[-1])


def _dlq_depth(url: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    depth = conn.channel().queue_declare("jobs.dlq", passive=True).method.message_count
    conn.close()
    return depth


def test_dlq_summary_reads_without_consuming_and_replay_moves_with_the_attempt_reset(
    env: Env, publisher: JobPublisher
) -> None:
    prefix = f"dlq-{uuid.uuid4().hex[:8]}-"
    account = sorted(env.accounts)[0]
    replayable, kept = 10, 5
    before = _dlq_depth(env.amqp_url)
    for n in range(replayable):  # dead-lettered for a bad attempt counter; fine once replay resets it
        publisher.job(f"{prefix}replay-{n:02d}", account, headers={"x-attempt": 5000})
    for n in range(kept):
        publisher.job(f"{prefix}keep-{n:02d}", f"{prefix}no-such-account")
    deadline = time.monotonic() + 60
    while _dlq_depth(env.amqp_url) < before + replayable + kept and time.monotonic() < deadline:
        time.sleep(0.5)

    first = _dlq_tool(env, "summary")
    second = _dlq_tool(env, "summary")
    depth_after_summaries = _dlq_depth(env.amqp_url)
    dry = _dlq_tool(env, "replay", "--message-id-prefix", f"{prefix}replay-", "--dry-run")
    moved = _dlq_tool(env, "replay", "--message-id-prefix", f"{prefix}replay-")
    got = wait_recorded(env.database_url, f"{prefix}replay-", replayable, deadline_s=60)
    with psycopg.connect(env.database_url) as db:
        attempts = db.execute(
            "SELECT DISTINCT attempts FROM job_runs WHERE message_id LIKE %s", (f"{prefix}replay-%",)
        ).fetchall()
    left = drain_dead_letters(env.amqp_url, prefix)
    env.results.append(
        {
            "test": "dlq summary + replay",
            "sent": replayable + kept,
            "recorded": got.distinct,
            "duplicates": got.duplicates,
            "dead_lettered": len(left),
            "summary_total": first["total"],
            "moved": moved["moved"],
            "kept": moved["kept"],
        }
    )
    print(
        f"\nDLQ tools: summary total {first['total']} (twice: {second['total']}), depth {depth_after_summaries}; "
        f"dry run would move {dry['moved']}; replay moved {moved['moved']}, kept {moved['kept']}; "
        f"recorded {got.distinct}, attempts {attempts}; left in the DLQ with the prefix {len(left)}"
    )
    assert first["total"] == second["total"] == depth_after_summaries >= before + replayable + kept
    assert not first["max_delivery_count"] and not second["max_delivery_count"], "a summary gave messages back"
    assert first["reasons"].get(X_ATTEMPT_REASON, 0) >= replayable
    assert sum(v for k, v in first["reasons"].items() if k.startswith(f"unknown account: {prefix}")) == kept
    assert first["oldest"] <= first["newest"]
    assert dry["moved"] == moved["moved"] == replayable
    assert (got.distinct, got.duplicates) == (replayable, 0)
    assert attempts == [(1,)], "the attempt counter was not reset"
    assert sorted(mid for mid, _ in left) == [f"{prefix}keep-{n:02d}" for n in range(kept)]
