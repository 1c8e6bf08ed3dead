"""A batch is a bulkhead: one message's failure is narrowed to it; a crash-loop message is stopped."""

from __future__ import annotations

import json
import logging

import psycopg
import pytest

from account_worker.batch import process_in_groups
from account_worker.config import load_config
from account_worker.db import Database
from account_worker.decisions import Ack, DeadLetter, DeadLetterKind
from account_worker.delivery import BatchResult, Delivery, DeliveryQueue
from account_worker.errors import DatabaseUnavailable, RecordRejected
from account_worker.isolation import narrow, split_by_returns
from account_worker.job_thread import Crashed, JobThread
from account_worker.store import Run
from fakes import Connector, FakeAction, FakeJobStore, FakeStore, batch_settings, process_batch

SOURCE = object()
SETTINGS = batch_settings(max_attempts=3, retry_delay_ms=1500, apikey="key", crash_limit=3)


def delivery(tag: int, account: str = "u1", *, mid: str | None = None, returned: int = 0) -> Delivery:
    return Delivery(
        tag=tag,
        source=SOURCE,
        body=json.dumps({"apikey": "key", "account_uuid": account}).encode(),
        message_id=mid or f"m{tag}",
        headers={"x-delivery-count": returned} if returned else None,
    )


@pytest.fixture
def store() -> FakeStore:
    return FakeStore({"u1": "host-1", "u2": "host-2"})


def outcome(result: BatchResult) -> list[str]:
    return [type(i.decision).__name__ for i in result.instructions]


# ---------------------------------------------------------------------------- narrowing


def test_narrow_is_one_call_when_nothing_fails():
    calls = []
    results, failed = narrow([1, 2, 3], lambda chunk: calls.append(list(chunk)) or len(chunk))
    assert (results, failed, calls) == ([3], [], [[1, 2, 3]])


def test_narrow_finds_the_culprits_in_order():
    def call(chunk):
        if 3 in chunk or 6 in chunk:
            raise RecordRejected("bad")
        return list(chunk)

    results, failed = narrow(list(range(8)), call)
    assert [x for part in results for x in part] == [0, 1, 2, 4, 5, 7]
    assert [item for item, _ in failed] == [3, 6]


def test_narrow_reraises_an_unclassified_error_that_fails_everything():
    def call(chunk):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        narrow([1, 2, 3], call)


def test_narrow_never_swallows_an_outage():
    def call(chunk):
        if len(chunk) == 1:
            raise DatabaseUnavailable("gone")
        raise RecordRejected("bad")

    with pytest.raises(DatabaseUnavailable):
        narrow([1, 2], call)


# ---------------------------------------------------------------------------- process_batch


def test_a_record_the_database_rejects_is_dead_lettered_alone(store):
    store.rejected.add("m4")
    batch = [delivery(t, "u1" if t % 2 else "u2") for t in range(1, 9)]
    result = process_batch(batch, store, FakeAction(), SETTINGS)
    assert outcome(result) == ["Ack"] * 3 + ["DeadLetter"] + ["Ack"] * 4
    assert result.instructions[3].decision == DeadLetter(
        DeadLetterKind.RECORD_REJECTED, "record rejected by the database: value out of range: m4"
    )
    assert set(store.runs) == {f"m{t}" for t in range(1, 9)} - {"m4"}
    assert not result.database_down


def test_an_unclassified_error_of_one_record_is_narrowed_to_it(store):
    store.rejected.add("m2")
    store.reject_with = ValueError("cannot adapt")
    result = process_batch([delivery(1), delivery(2), delivery(3)], store, FakeAction(), SETTINGS)
    assert outcome(result) == ["Ack", "DeadLetter", "Ack"]
    assert result.instructions[1].decision.reason == "record rejected by the database: ValueError: cannot adapt"


def test_an_error_of_every_record_that_is_not_a_rejection_is_a_bug_and_escapes(store):
    store.rejected.update({"m1", "m2"})
    store.reject_with = KeyError("bug")
    with pytest.raises(KeyError):
        process_batch([delivery(1), delivery(2)], store, FakeAction(), SETTINGS)


def test_an_account_the_lookup_rejects_fails_only_its_jobs(store):
    store.accounts["weird"] = "host-w"
    store.rejected.add("weird")
    result = process_batch([delivery(1), delivery(2, "weird"), delivery(3, "u2")], store, FakeAction(), SETTINGS)
    assert outcome(result) == ["Ack", "DeadLetter", "Ack"]
    assert result.instructions[1].decision.reason.startswith("record rejected by the database: ")


def test_an_outage_while_narrowing_requeues_everything(store):
    class DownOnRetry(FakeStore):
        def record_runs(self, runs):
            if len(runs) > 1:
                raise RecordRejected("bad")
            raise DatabaseUnavailable("gone")

    result = process_batch([delivery(1), delivery(2)], DownOnRetry(store.accounts), FakeAction(), SETTINGS)
    assert result.database_down and outcome(result) == ["Requeue", "Requeue"]


# ---------------------------------------------------------------------------- crash-loop guard


def test_split_by_returns_sets_the_crashed_apart_and_the_suspects_alone_fewest_returns_first():
    batch = [delivery(1, returned=2), delivery(2), delivery(3, returned=3), delivery(4), delivery(5, returned=1)]
    crashed, groups = split_by_returns(batch, crash_limit=3)
    assert [(d.message_id, n) for d, n in crashed] == [("m3", 3)]
    assert [[d.message_id for d in group] for group in groups] == [["m2", "m4"], ["m5"], ["m1"]]
    assert split_by_returns([delivery(1, returned=1)], crash_limit=3)[1] == [[delivery(1, returned=1)]]


def test_a_message_returned_crash_limit_times_is_dead_lettered_unprocessed(store):
    action = FakeAction()
    result = process_batch([delivery(1), delivery(2, returned=3), delivery(3)], store, action, SETTINGS)
    assert outcome(result) == ["Ack", "DeadLetter", "Ack"]
    reason = result.instructions[1].decision.reason
    assert reason.startswith("crashed the worker")
    assert result.instructions[1].decision.kind is DeadLetterKind.CRASHED_WORKER
    assert [mid for mid, _ in action.calls] == ["m1", "m3"]


def test_returned_messages_are_processed_alone_after_the_fresh_ones(store):
    batch = [delivery(1, returned=2), delivery(2), delivery(3, returned=1), delivery(4), delivery(5, returned=9)]
    results = list(process_in_groups(batch, store, FakeAction(), SETTINGS))
    groups = [[i.delivery.message_id for i in r.instructions] for r in results]
    assert groups == [["m5"], ["m2", "m4"], ["m3"], ["m1"]]
    assert outcome(results[0]) == ["DeadLetter"]
    assert all(isinstance(i.decision, Ack) for r in results[1:] for i in r.instructions)
    assert store.commits == 3  # one transaction per group


def test_merged_result_keeps_delivery_order(store):
    batch = [delivery(1, returned=1), delivery(2), delivery(3, returned=4)]
    result = process_batch(batch, store, FakeAction(), SETTINGS)
    assert [i.delivery.tag for i in result.instructions] == [1, 2, 3]
    assert outcome(result) == ["Ack", "Ack", "DeadLetter"]


def test_database_down_in_one_group_requeues_the_groups_after_it(store):
    store.down_on.add("record_runs")
    batch = [delivery(1), delivery(2, returned=1), delivery(3, returned=2)]
    results = list(process_in_groups(batch, store, FakeAction(), SETTINGS))
    assert all(r.database_down for r in results)
    assert [outcome(r) for r in results] == [["Requeue"], ["Requeue", "Requeue"]]


def test_a_crash_on_a_suspect_comes_after_the_fresh_results_are_posted(env):
    """The job thread posts each group's result before the next group runs, the crash last."""
    cfg = load_config(env)
    posts: list = []
    deliveries = DeliveryQueue()
    for d in (delivery(1), delivery(2, "boom", returned=1), delivery(3)):
        deliveries.put(d)

    class Bug(BaseException):
        pass

    job_thread = JobThread(
        cfg,
        FakeJobStore({"u1": "h1", "boom": "h2"}),
        FakeAction({"boom": Bug("segfault-ish")}),
        deliveries,
        post=posts.append,
        is_current=lambda d: True,
        random=lambda: 0.0,
        logger=logging.getLogger("account_worker"),
    )
    job_thread.start()
    job_thread.join(5)
    assert not job_thread.is_alive()
    assert isinstance(posts[-1], Crashed) and isinstance(posts[-1].error, Bug)
    settled = [
        (i.delivery.message_id, type(i.decision))
        for p in posts[:-1]
        if hasattr(p, "instructions")
        for i in p.instructions
    ]
    assert settled == [("m1", Ack), ("m3", Ack)]


# ---------------------------------------------------------------------------- the psycopg adapter


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.NumericValueOutOfRange("integer out of range"),
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
        psycopg.errors.CheckViolation("new row violates check constraint"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ],
)
def test_database_adapter_classifies_data_errors_as_rejected_records(error):
    def responder(sql, params):
        if "INSERT" in sql:
            raise error
        return []

    connector = Connector(responder)
    db = Database("postgresql://x", connect=connector)
    with pytest.raises(RecordRejected):
        db.record_runs([Run("m1", "u1", "h", "done", 1)])
    assert [e.split(" ", 1)[0] for e in connector.conns[0].log] == ["INSERT"]  # refused whole: nothing committed
    assert not connector.conns[0].closed  # the connection stays: not an outage


def test_database_adapter_still_reports_an_outage_as_unavailable():
    def responder(sql, params):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    db = Database("postgresql://x", connect=Connector(responder))
    with pytest.raises(DatabaseUnavailable):
        db.record_runs([Run("m1", "u1", "h", "done", 1)])
