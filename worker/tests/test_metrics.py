"""Worker metrics and readiness with a real Prometheus registry (the HTTP server: test_metrics_server.py)."""

from __future__ import annotations

import logging

import pika
import pytest
from prometheus_client import CollectorRegistry

from account_worker.batch import CRASHED_REASON
from account_worker.config import load_config
from account_worker.decisions import Ack, DeadLetter, DeadLetterKind, Requeue, Retry, decide
from account_worker.delivery import Delivery, Instruction
from account_worker.errors import (
    BadApiKey,
    InvalidMessage,
    PermanentJobError,
    RecordRejected,
    TransientJobError,
    UnknownAccount,
)
from account_worker.metrics import OTHER_REASON, reason_label
from account_worker.session import Session
from fakes import Method, RecordingConnection

LOG = logging.getLogger("account_worker")


def jobs(registry: CollectorRegistry, outcome: str, reason: str = "") -> float | None:
    return registry.get_sample_value("account_worker_jobs_total", {"outcome": outcome, "reason": reason})


def value(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


def delivery(tag: int, received_at: float = 0.0) -> Delivery:
    return Delivery(tag=tag, source=None, body=b"{}", message_id=f"m{tag}", received_at=received_at)


def test_every_outcome_series_exists_at_zero_before_the_first_job(registry, metrics):
    for outcome in ("done", "duplicate", "retried", "requeued"):
        assert jobs(registry, outcome) == 0
    for reason in ("invalid_message", "unknown_account", "bad_apikey", "crashed_worker", OTHER_REASON):
        assert jobs(registry, "dead_lettered", reason) == 0
    assert value(registry, "account_worker_last_success_timestamp_seconds") == 0


def test_each_decision_counts_under_its_own_outcome(registry, metrics, clock):
    decisions = [
        Ack(),
        Ack(),
        Ack(duplicate=True),
        Retry(2, 100, "action failed: TransientJobError: x"),
        DeadLetter(DeadLetterKind.INVALID_MESSAGE, "invalid message: not JSON"),
        DeadLetter(DeadLetterKind.UNKNOWN_ACCOUNT, "unknown account: u9"),
        DeadLetter(DeadLetterKind.CRASHED_WORKER, f"{CRASHED_REASON} (returned to the queue unsettled 3 times)"),
        Requeue("database unavailable"),
    ]
    for tag, decision in enumerate(decisions, start=1):
        metrics.received(delivery(tag))
        metrics.settled(delivery(tag, received_at=clock.now - 0.2), decision)
    assert jobs(registry, "done") == 2
    assert jobs(registry, "duplicate") == 1
    assert jobs(registry, "retried") == 1
    assert jobs(registry, "requeued") == 1
    assert jobs(registry, "dead_lettered", "invalid_message") == 1
    assert jobs(registry, "dead_lettered", "unknown_account") == 1
    assert jobs(registry, "dead_lettered", "crashed_worker") == 1
    assert jobs(registry, "dead_lettered", "bad_apikey") == 0
    # Requeued deliveries are not processing times.
    assert value(registry, "account_worker_job_duration_seconds_count") == 7
    assert value(registry, "account_worker_job_duration_seconds_sum") == pytest.approx(7 * 0.2)
    assert registry.get_sample_value("account_worker_job_duration_seconds_bucket", {"le": "0.1"}) == 0
    assert registry.get_sample_value("account_worker_job_duration_seconds_bucket", {"le": "0.25"}) == 7
    assert value(registry, "account_worker_jobs_in_flight") == 0
    assert value(registry, "account_worker_last_success_timestamp_seconds") == 1_700_000_000.0


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (InvalidMessage("not JSON"), "invalid_message"),
        (UnknownAccount("u9"), "unknown_account"),
        (BadApiKey(), "bad_apikey"),
        (RecordRejected("value too long"), "record_rejected"),
        (PermanentJobError("no such host"), "action_failed"),
        (TransientJobError("timeout"), "retries_exhausted"),
    ],
)
def test_every_dead_letter_reason_the_worker_gives_has_its_class(error, label):
    decision = decide(error, 5, 5, 1000)
    assert isinstance(decision, DeadLetter)
    assert reason_label(decision.kind) == label


# The label values the monitoring rules, dashboards and live tests know (roles/monitoring, tests/worker_monitoring).
EXPORTED_LABELS = {
    DeadLetterKind.INVALID_MESSAGE: "invalid_message",
    DeadLetterKind.UNKNOWN_ACCOUNT: "unknown_account",
    DeadLetterKind.BAD_APIKEY: "bad_apikey",
    DeadLetterKind.RECORD_REJECTED: "record_rejected",
    DeadLetterKind.ACTION_FAILED: "action_failed",
    DeadLetterKind.RETRIES_EXHAUSTED: "retries_exhausted",
    DeadLetterKind.CRASHED_WORKER: "crashed_worker",
}


@pytest.mark.parametrize("kind", list(DeadLetterKind), ids=str)
def test_every_dead_letter_kind_counts_under_its_exported_label(registry, metrics, kind):
    assert reason_label(kind) == EXPORTED_LABELS[kind]
    metrics.settled(delivery(1), DeadLetter(kind, "whatever the text says"))
    assert jobs(registry, "dead_lettered", EXPORTED_LABELS[kind]) == 1
    others = {label for label in EXPORTED_LABELS.values() if label != EXPORTED_LABELS[kind]} | {OTHER_REASON}
    assert all(jobs(registry, "dead_lettered", label) == 0 for label in others)


def test_the_dead_letter_labels_are_the_ones_exported_before_kinds_other_included_at_zero(registry, metrics):
    assert set(EXPORTED_LABELS) == set(DeadLetterKind)
    exported = {
        sample.labels["reason"]
        for family in registry.collect()
        if family.name == "account_worker_jobs"
        for sample in family.samples
        if sample.labels.get("outcome") == "dead_lettered" and sample.name == "account_worker_jobs_total"
    }
    assert exported == {*EXPORTED_LABELS.values(), OTHER_REASON}
    assert OTHER_REASON not in {reason_label(kind) for kind in DeadLetterKind}


def test_in_flight_follows_received_and_settled_and_resets_on_connection_loss(registry, metrics):
    for tag in range(1, 4):
        metrics.received(delivery(tag))
    assert value(registry, "account_worker_jobs_in_flight") == 3
    metrics.settled(delivery(1), Ack())
    assert value(registry, "account_worker_jobs_in_flight") == 2
    metrics.connected(False)
    assert value(registry, "account_worker_jobs_in_flight") == 0


def test_reconnects_count_connections_after_the_first(registry, metrics):
    metrics.connected(True)
    assert value(registry, "account_worker_amqp_reconnects_total") == 0
    assert value(registry, "account_worker_amqp_connected") == 1
    metrics.connected(False)
    assert value(registry, "account_worker_amqp_connected") == 0
    metrics.connected(True)
    metrics.connected(False)
    metrics.connected(True)
    assert value(registry, "account_worker_amqp_reconnects_total") == 2


def test_ready_only_when_connected_consuming_and_database_answers(registry, metrics):
    assert metrics.ready() == (False, "not connected to the broker; not consuming; database unreachable")
    metrics.connected(True)
    metrics.consuming(True)
    assert metrics.ready() == (False, "database unreachable")
    metrics.database(True)
    assert metrics.ready() == (True, "ready")
    assert value(registry, "account_worker_ready") == 1
    metrics.database(False)
    assert metrics.ready() == (False, "database unreachable")
    metrics.database(True)
    metrics.consuming(False)
    assert metrics.ready() == (False, "not consuming")
    metrics.consuming(True)
    metrics.connected(False)  # a lost connection also ends the consumer
    assert metrics.ready() == (False, "not connected to the broker; not consuming")
    assert value(registry, "account_worker_ready") == 0


def test_session_reports_each_settlement_to_the_observer(env, registry, metrics):
    cfg = load_config(env)
    conn = RecordingConnection()
    session = Session(conn, cfg, LOG, cfg.secrets(), metrics)
    got: list[Delivery] = []
    session.consume(lambda d: got.append(d) or True)
    assert value(registry, "account_worker_consuming") == 1
    callback = next(kw["on_message_callback"] for name, kw in conn.ch.calls if name == "basic_consume")
    for tag in range(1, 6):
        callback(conn.ch, Method(tag), pika.BasicProperties(message_id=f"m{tag}"), b"{}")
    assert value(registry, "account_worker_jobs_in_flight") == 5
    session.settle(
        [
            Instruction(got[0], Ack()),
            Instruction(got[1], Ack(duplicate=True)),
            Instruction(got[2], Retry(2, 10, "action failed: x")),
            Instruction(got[3], DeadLetter(DeadLetterKind.BAD_APIKEY, "bad apikey")),
            Instruction(got[4], Requeue("database unavailable")),
        ]
    )
    assert [jobs(registry, o) for o in ("done", "duplicate", "retried", "requeued")] == [1, 1, 1, 1]
    assert jobs(registry, "dead_lettered", "bad_apikey") == 1
    assert value(registry, "account_worker_jobs_in_flight") == 0
    assert value(registry, "account_worker_job_duration_seconds_count") == 4
    session.cancel("test")
    assert value(registry, "account_worker_consuming") == 0
