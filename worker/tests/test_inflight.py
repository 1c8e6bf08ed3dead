"""Concurrent processing (WORKER_CONCURRENCY > 1): runs recorded and acked in completion order.

The Recorder against a FakeStore and a real thread pool, then the whole worker (Runner)
against the in-memory broker.  A slow job is one whose action waits for an Event the test
sets: the assertions are about order (what is recorded while it still runs), not time.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from account_worker.config import load_config
from account_worker.decisions import Ack, DeadLetter, Requeue, Retry
from account_worker.delivery import BatchResult, Delivery, DeliveryQueue
from account_worker.errors import TransientJobError
from account_worker.inflight import Recorder
from account_worker.runner import Runner
from fakes import Broker, FakeJobStore, FakeStore, GatedAction, batch_settings, wait_for

SOURCE = object()
SETTINGS = batch_settings(max_attempts=3, retry_delay_ms=1000, apikey="key")


def delivery(tag: int, account: str = "u1", *, mid: str | None = None, headers=None) -> Delivery:
    body = json.dumps({"apikey": "key", "account_uuid": account}).encode()
    return Delivery(tag=tag, source=SOURCE, body=body, message_id=mid or f"m{tag}", headers=headers)


class Posted(list):
    """The BatchResults the recorder posted, with the decision each message got."""

    def decisions(self) -> dict[str, object]:
        return {i.delivery.message_id: i.decision for result in self for i in result.instructions}

    def acked(self) -> list[str]:
        return [mid for mid, decision in self.decisions().items() if isinstance(decision, Ack)]


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


@pytest.fixture
def store() -> FakeStore:
    return FakeStore({"u1": "host-1", "slow": "host-slow", "flaky": "host-f"})


def recorder(store, action, pool, posted, limit=4) -> Recorder:
    return Recorder(store, action, SETTINGS, logging.getLogger("t"), pool=pool, limit=limit, post=posted.append)


def record_until(s: Recorder, predicate) -> None:
    wait_for(lambda: s.record_finished(0.05) >= 0 and predicate())


def test_runs_are_recorded_and_acked_in_completion_order_while_a_slow_one_runs(store, pool):
    gate = threading.Event()
    action = GatedAction({"slow": gate})
    posted = Posted()
    s = recorder(store, action, pool, posted)
    s.take([delivery(1, "slow"), delivery(2), delivery(3), delivery(4)])
    record_until(s, lambda: len(posted.acked()) == 3)
    assert sorted(posted.acked()) == ["m2", "m3", "m4"]
    assert "m1" in action.started and "m1" not in store.runs and s.in_flight == 1
    assert s.room == 3  # the finished ones made room: the next take may start
    gate.set()
    record_until(s, lambda: s.in_flight == 0)
    assert posted.acked()[-1] == "m1" and sorted(store.runs) == ["m1", "m2", "m3", "m4"]
    assert all(not r.database_down for r in posted)


def test_a_repeat_in_a_later_take_waits_for_the_running_one_and_is_answered_by_it(store, pool):
    gate = threading.Event()
    action = GatedAction({"slow": gate})
    posted = Posted()
    s = recorder(store, action, pool, posted)
    s.take([delivery(1, "slow", mid="same")])
    wait_for(lambda: "same" in action.started)
    s.take([delivery(2, "slow", mid="same"), delivery(3)])  # not recorded yet: the look-up finds nothing
    record_until(s, lambda: "m3" in store.runs)
    gate.set()
    record_until(s, lambda: s.in_flight == 0)
    assert action.calls.count(("same", "host-slow")) == 1
    by_tag = {i.delivery.tag: i.decision for result in posted for i in result.instructions}
    assert by_tag == {1: Ack(), 2: Ack(duplicate=True), 3: Ack()}


def test_a_repeat_runs_after_all_when_the_running_one_fails(store, pool):
    gate = threading.Event()
    calls: list[str] = []

    def action(job, host):
        calls.append(job.message_id)
        if len(calls) == 1:
            gate.wait(10)
            raise TransientJobError("try again")
        return "done"

    posted = Posted()
    s = recorder(store, action, pool, posted)
    s.take([delivery(1, "flaky", mid="same")])
    wait_for(lambda: calls == ["same"])
    s.take([delivery(2, "flaky", mid="same")])
    gate.set()
    record_until(s, lambda: s.in_flight == 0 and "same" in store.runs)
    by_tag = {i.delivery.tag: i.decision for result in posted for i in result.instructions}
    assert isinstance(by_tag[1], Retry) and by_tag[2] == Ack()
    assert calls == ["same", "same"]


def test_room_bounds_what_is_in_flight(store, pool):
    gate = threading.Event()
    posted = Posted()
    s = recorder(store, GatedAction({"slow": gate}), pool, posted, limit=2)
    s.take([delivery(1, "slow"), delivery(2, "slow")])
    assert s.room == 0
    gate.set()
    s.drain()
    assert s.room == 2 and sorted(posted.acked()) == ["m1", "m2"]


def test_jobs_finishing_together_are_recorded_together_and_a_refused_one_is_narrowed(store, pool):
    gate = threading.Event()
    action = GatedAction({"u1": gate})
    posted = Posted()
    s = recorder(store, action, pool, posted)
    s.take([delivery(n) for n in range(1, 5)])
    store.rejected = {"m3"}
    gate.set()
    wait_for(lambda: len(action.calls) == 4)
    commits = store.commits
    s.drain()
    decisions = posted.decisions()
    assert isinstance(decisions["m3"], DeadLetter) and "value out of range" in decisions["m3"].reason
    assert sorted(posted.acked()) == ["m1", "m2", "m4"] and "m3" not in store.runs
    assert store.commits - commits <= 3  # narrowed by halves, not one transaction per job


def test_database_down_mid_flight_gives_the_running_jobs_back_unrecorded(store, pool):
    gate = threading.Event()
    posted = Posted()
    s = recorder(store, GatedAction({"slow": gate}), pool, posted)
    s.take([delivery(1, "slow"), delivery(2, "slow"), delivery(3)])
    record_until(s, lambda: posted.acked() == ["m3"])
    store.down_on = {"record_runs"}
    gate.set()
    s.drain()
    assert s.database_down and s.room == 0
    decisions = posted.decisions()
    assert all(isinstance(decisions[m], Requeue) for m in ("m1", "m2"))
    assert any(r.database_down for r in posted) and sorted(store.runs) == ["m3"]
    s.take([delivery(4)])  # taken while down (a race with the pause): given back at once, not run
    assert isinstance(posted.decisions()["m4"], Requeue) and s.in_flight == 0
    store.down_on = set()
    s.resume()
    s.take([delivery(5)])
    s.drain()
    assert "m5" in posted.acked()


def test_a_suspect_waits_for_everything_in_flight_then_runs_alone(store, pool):
    gate = threading.Event()
    action = GatedAction({"slow": gate})
    posted = Posted()
    s = recorder(store, action, pool, posted)
    s.take([delivery(1, "slow")])
    suspect = delivery(2, mid="suspect", headers={"x-delivery-count": 1})
    taking = threading.Thread(target=s.take, args=([suspect, delivery(3)],))
    taking.start()
    wait_for(lambda: "m1" in action.started)
    assert "suspect" not in action.started  # not while m1 is in flight
    gate.set()
    taking.join(5)
    order = [i.delivery.message_id for r in posted for i in r.instructions]
    assert order == ["m1", "m3", "suspect"]  # the clean one first, then the suspect in a result of its own
    assert [len(r.instructions) for r in posted][-1] == 1


def test_a_duplicate_in_a_take_runs_only_when_its_first_delivery_failed(store, pool):
    action = GatedAction({}, {"flaky": TransientJobError("boom")})
    posted = Posted()
    s = recorder(store, action, pool, posted)
    s.take([delivery(1, "u1", mid="a"), delivery(2, "u1", mid="a"), delivery(3, "flaky", mid="b")])
    s.drain()
    calls = [mid for mid, _ in action.calls]
    assert calls.count("a") == 1
    by_tag = {i.delivery.tag: i.decision for r in posted for i in r.instructions}
    assert by_tag[1] == Ack(False) and by_tag[2] == Ack(True) and isinstance(by_tag[3], Retry)


def test_a_failed_first_delivery_hands_over_to_its_duplicate(store, pool):
    flaky = {"n": 0}

    class FailsOnce(GatedAction):
        def __call__(self, job, host):
            flaky["n"] += 1
            if flaky["n"] == 1:
                raise TransientJobError("first fails")
            return super().__call__(job, host)

    posted = Posted()
    s = recorder(store, FailsOnce({}), pool, posted)
    s.take([delivery(1, mid="a"), delivery(2, mid="a"), delivery(3, mid="a")])
    s.drain()
    by_tag = {i.delivery.tag: i.decision for r in posted for i in r.instructions}
    assert isinstance(by_tag[1], Retry) and by_tag[2] == Ack(False) and by_tag[3] == Ack(True)
    assert flaky["n"] == 2


# ---------------------------------------------------------------------------- the whole worker


@pytest.fixture
def cfg(env):
    env.update({"WORKER_APIKEY": "key", "WORKER_CONCURRENCY": "4", "WORKER_SHUTDOWN_GRACE": "3"})
    return load_config(env)


def start(cfg, store, action, broker):
    stop = threading.Event()
    runner = Runner(cfg, store, action, stop, connect=broker.connect, random=lambda: 0.01)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("rc", runner.run()))
    thread.start()
    return stop, thread, outcome


def test_a_slow_job_does_not_delay_the_acks_of_the_others(cfg):
    broker = Broker()
    store = FakeJobStore({"u1": "h1", "slow": "h-slow"})
    gate = threading.Event()
    action = GatedAction({"slow": gate})
    broker.publish("slow", account="slow")
    for n in range(20):
        broker.publish(f"q{n:02d}")
    stop, thread, outcome = start(cfg, store, action, broker)
    try:
        wait_for(lambda: len(broker.settled("ack")) == 20)
        assert "slow" not in broker.settled("ack") and "slow" in action.started and "slow" not in store.runs
    finally:
        gate.set()
    wait_for(lambda: "slow" in broker.settled("ack"))
    stop.set()
    thread.join(5)
    assert outcome["rc"] == 0 and len(store.runs) == 21
    assert sorted(broker.settled("ack")) == sorted({"slow", *(f"q{n:02d}" for n in range(20))})


def test_on_stop_the_jobs_in_flight_finish_and_are_acked_and_the_rest_given_back(cfg):
    broker = Broker()
    store = FakeJobStore({"u1": "h1", "slow": "h-slow"})
    gate = threading.Event()
    action = GatedAction({"slow": gate})
    for n in range(4):
        broker.publish(f"s{n}", account="slow")
    for n in range(6):
        broker.publish(f"b{n}")
    stop, thread, outcome = start(cfg, store, action, broker)
    wait_for(lambda: len(action.started) == 4)  # four slow ones fill the bound: the rest waits, buffered
    stop.set()
    wait_for(lambda: len(broker.settled("given_back")) == 6)
    gate.set()
    thread.join(5)
    assert outcome["rc"] == 0
    assert sorted(store.runs) == ["s0", "s1", "s2", "s3"]
    assert sorted(broker.settled("given_back")) == [f"b{n}" for n in range(6)]
    assert sorted(broker.settled("ack")) == sorted(["s0", "s1", "s2", "s3", *(f"b{n}" for n in range(6))])
    assert broker.connections[0].ch.unacked == {}


def test_database_down_while_jobs_run_requeues_them_then_resumes(cfg):
    broker = Broker()
    store = FakeJobStore({"u1": "h1", "slow": "h-slow"})
    gate = threading.Event()
    action = GatedAction({"slow": gate})
    broker.publish("s0", account="slow")
    stop, thread, outcome = start(cfg, store, action, broker)
    wait_for(lambda: "s0" in action.started)
    store.down_on = {"record_runs"}
    gate.set()
    wait_for(lambda: "s0" in broker.settled("given_back"))
    assert "s0" not in store.runs
    store.down_on = set()
    wait_for(lambda: "s0" in store.runs)  # given back, consumed again once the database answers
    stop.set()
    thread.join(5)
    assert outcome["rc"] == 0 and store.runs["s0"].status == "done"


def test_results_are_batch_results_for_just_the_finished_jobs(store, pool):
    gate = threading.Event()
    posted = Posted()
    s = recorder(store, GatedAction({"slow": gate}), pool, posted)
    s.take([delivery(1, "slow"), delivery(2)])
    record_until(s, lambda: bool(posted))
    assert all(isinstance(r, BatchResult) for r in posted)
    assert [i.delivery.message_id for i in posted[0].instructions] == ["m2"]
    gate.set()
    s.drain()


def test_the_job_thread_has_one_event_for_a_delivery_and_a_finished_action(store, pool):
    """What the concurrent loop waits on: set by a delivery put and by an action finishing (not a poll)."""
    deliveries = DeliveryQueue()
    assert not deliveries.news.is_set()
    deliveries.put(delivery(1))
    assert deliveries.news.is_set()
    deliveries.news.clear()
    gate = threading.Event()
    posted = Posted()
    s = Recorder(store, GatedAction({"slow": gate}), SETTINGS, logging.getLogger("t"), pool=pool, limit=4,
                 post=posted.append, news=deliveries.news)  # fmt: skip
    s.take([delivery(2, "slow")])
    assert not deliveries.news.wait(0.05), "news before the action finished"
    gate.set()
    assert deliveries.news.wait(5), "the finished action did not wake the job thread"
    assert s.record_finished(0) == 1 and posted.acked() == ["m2"]
