"""The worker (façade, I/O thread, job thread) against an in-memory stand-in for pika's BlockingConnection."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from account_worker.config import load_config
from account_worker.delivery import Delivery, DeliveryQueue
from account_worker.errors import JobThreadCrashed, TransientJobError
from account_worker.job_thread import take_batch
from account_worker.runner import Runner
from fakes import Broker, FakeAction, FakeJobStore, wait_for


@pytest.fixture
def cfg(env):
    env.update({"WORKER_APIKEY": "key", "WORKER_MAX_ATTEMPTS": "3", "WORKER_SHUTDOWN_GRACE": "2"})
    return load_config(env)


def start(cfg, store, action, broker, connect=None):
    stop = threading.Event()
    runner = Runner(cfg, store, action, stop, connect=connect or broker.connect, random=lambda: 0.01)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("rc", runner.run()))
    thread.start()
    return stop, thread, outcome


def finish(stop, thread, outcome):
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    return outcome["rc"]


def test_processes_acks_retries_and_dead_letters(cfg):
    broker = Broker()
    store = FakeJobStore({"u1": "h1", "flaky": "h2"})
    broker.publish("ok")
    broker.publish("poison", body=b"not json")
    broker.publish("later", account="flaky")
    stop, thread, outcome = start(cfg, store, FakeAction({"flaky": TransientJobError("busy")}), broker)
    wait_for(lambda: len(broker.settled("ack")) == 3)
    assert finish(stop, thread, outcome) == 0
    assert sorted(broker.settled("ack")) == ["later", "ok", "poison"]
    routes = {(p[0], p[1]): p[3] for p in broker.published}
    assert routes[("jobs.dlx", "jobs")].headers["x-worker-reason"] == "invalid message: body is not JSON"
    assert routes[("", "jobs.retry")].headers["x-attempt"] == 2
    assert set(store.runs) == {"ok"}
    assert broker.prefetch == 200
    assert store.closed


def test_database_outage_holds_what_the_consumer_has_then_resumes(cfg):
    broker = Broker()
    store = FakeJobStore({"u1": "h1"})
    store.ping_failures = 2  # not consuming until the database answers
    store.down_on.add("record_runs")
    broker.publish("a")
    stop, thread, outcome = start(cfg, store, FakeAction(), broker)
    wait_for(lambda: "a" in broker.settled("given_back"))  # the failed batch: a new copy at the tail, acked
    store.down_on.add("ping")  # the database stays away: what arrives now is held, unacked
    broker.publish("b")
    wait_for(lambda: "b" in [p.message_id for p, _ in broker.connections[-1].ch.unacked.values()])
    assert not store.runs and broker.settled("nack") == []
    # The consumer stays (pika's cancel would reject what it has not dispatched, raising x-delivery-count).
    assert "cancel" not in broker.events
    store.down_on.clear()
    wait_for(lambda: {"a", "b"} <= set(store.runs))
    assert broker.events.count("consume") == 1
    assert finish(stop, thread, outcome) == 0
    assert not [p for p in broker.published if p[0] == "jobs.dlx"]


def test_connection_loss_reconnects_and_deduplicates(cfg):
    broker = Broker()
    store = FakeJobStore({"u1": "h1"})
    gate = threading.Event()

    def slow_action(job, host):
        gate.wait(5)
        return "done"

    broker.publish("x")
    stop, thread, outcome = start(cfg, store, slow_action, broker)
    wait_for(lambda: broker.connections and broker.connections[0].ch and broker.connections[0].ch.unacked)
    broker.drop_connection.set()  # connection dies while the job runs
    wait_for(lambda: len(broker.connections) == 2)
    gate.set()
    wait_for(lambda: broker.settled("ack") == ["x"])  # redelivery acked on the new channel
    assert finish(stop, thread, outcome) == 0
    assert list(store.runs) == ["x"]


def held_action():
    """An action that reports its start and then waits for release (at most 10 s): (action, started, release)."""
    started = threading.Event()
    release = threading.Event()

    def action(job, host):
        started.set()
        release.wait(10)
        return "done"

    return action, started, release


def test_graceful_shutdown_finishes_running_batch_and_requeues_buffered(cfg):
    broker = Broker()
    store = FakeJobStore({"u1": "h1"})
    action, started, release = held_action()
    cfg = load_config({**dict(cfg_env(cfg)), "WORKER_BATCH_SIZE": "1", "WORKER_SHUTDOWN_GRACE": "3"})
    for n in range(4):
        broker.publish(f"m{n}")
    stop, thread, outcome = start(cfg, store, action, broker)
    started.wait(5)
    wait_for(lambda: len(broker.connections[0].ch.unacked) == 4)
    stop.set()
    time.sleep(0.2)
    release.set()
    thread.join(5)
    assert outcome["rc"] == 0
    assert sorted(broker.settled("given_back")) == ["m1", "m2", "m3"]  # copies back in the queue
    assert sorted(broker.settled("ack")) == ["m0", "m1", "m2", "m3"] and broker.settled("nack") == []
    assert sorted(props.message_id for props, _ in broker.queue) == ["m1", "m2", "m3"]
    assert broker.connections[0].ch.unacked == {}


def test_shutdown_takes_one_grace_in_all_not_one_per_thread(cfg):
    """A job outlasting the grace: the I/O thread's drain spends the grace, and the runner then waits for the job
    thread only for what is left of it (nothing), not for a second grace, so the process stops within one."""
    broker = Broker()
    store = FakeJobStore({"u1": "h1"})
    action, started, release = held_action()
    cfg = load_config({**dict(cfg_env(cfg)), "WORKER_SHUTDOWN_GRACE": "0.3"})
    broker.publish("slow")
    stop = threading.Event()
    runner = Runner(cfg, store, action, stop, connect=broker.connect, random=lambda: 0.01)
    joins: list[float] = []
    join = runner._job.join
    runner._job.join = lambda timeout: joins.append(timeout) or join(timeout)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("rc", runner.run()))
    thread.start()
    started.wait(5)
    stop.set()
    thread.join(5)
    release.set()
    assert outcome["rc"] == 0
    assert joins == [0.0]  # the grace was spent by the I/O thread's drain, which ends only at its deadline
    assert broker.settled("ack") == []  # not finished within the grace: unacked, the broker redelivers it


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_an_idle_worker_lets_the_action_close_what_it_keeps_idle(cfg, concurrency):
    """With no jobs, the job thread calls the action's close_idle (the ssh action's idle connections are
    closed even when no further job comes); after a job, too."""

    class KeepsConnections(FakeAction):
        def __init__(self) -> None:
            super().__init__()
            self.idle_calls = 0

        def close_idle(self) -> None:
            self.idle_calls += 1

    broker = Broker()
    store = FakeJobStore({"u1": "h1"})
    action = KeepsConnections()
    cfg = load_config({**dict(cfg_env(cfg)), "WORKER_CONCURRENCY": concurrency})
    stop, thread, outcome = start(cfg, store, action, broker)
    wait_for(lambda: action.idle_calls >= 1)
    broker.publish("one")
    wait_for(lambda: broker.settled("ack") == ["one"])
    calls = action.idle_calls
    wait_for(lambda: action.idle_calls > calls)
    assert finish(stop, thread, outcome) == 0


def cfg_env(cfg):
    return {
        "WORKER_AMQP_URLS": ",".join(cfg.amqp_urls),
        "WORKER_DATABASE_URL": cfg.database_url,
        "WORKER_APIKEY": cfg.apikey or "",
    }


def test_take_batch_drains_without_waiting_and_skips_stale():
    old, current = object(), object()
    q = DeliveryQueue()
    for tag in range(1, 6):
        q.put(Delivery(tag, current if tag != 2 else old, b""))
    batch = take_batch(q, 3, 0.01, lambda d: d.source is current)
    assert [d.tag for d in batch] == [1, 3, 4]
    assert [d.tag for d in take_batch(q, 3, 0.01, lambda d: True)] == [5]
    assert take_batch(q, 3, 0.01, lambda d: True) == []


def test_the_delivery_queue_hands_over_in_order_and_wakes_a_waiting_take():
    q = DeliveryQueue()
    assert q.take(5) == [] and q.take(5, timeout=0.01) == []
    for tag in (1, 2, 3):
        q.put(Delivery(tag, None, b""))
    assert q.qsize() == 3 and q.news.is_set()
    assert [d.tag for d in q.take(2)] == [1, 2]
    assert [d.tag for d in q.take(2)] == [3]
    q.news.set()  # other news (an action finished) does not end the wait for a delivery
    threading.Timer(0.2, q.put, (Delivery(4, None, b""),)).start()
    started = time.monotonic()
    assert [d.tag for d in q.take(2, timeout=30)] == [4]
    assert time.monotonic() - started < 30, "the put did not wake the take"


def test_job_thread_bug_crashes_the_process_without_acking(cfg):
    broker = Broker()

    class BrokenStore(FakeJobStore):
        def lookup_hosts(self, account_uuids):
            raise RuntimeError("relation accounts does not exist")

    broker.publish("a")
    runner = Runner(cfg, BrokenStore({}), FakeAction(), threading.Event(), connect=broker.connect, random=lambda: 0.01)
    with pytest.raises(JobThreadCrashed):
        runner.run()
    assert broker.settled("ack") == []
    assert [m[0].message_id for m in broker.queue] == ["a"]  # returned to the queue by the closed channel


def test_result_for_a_delivery_from_a_dropped_connection_is_never_acked_on_the_new_one(cfg, caplog):
    """The old channel's tag 1 is the new channel's tag 1 too: acking it there would ack "new" unrecorded."""
    caplog.set_level(logging.DEBUG, logger="account_worker")
    broker = Broker()
    store = FakeJobStore({"u1": "h1"})
    started, release_old, release_new = threading.Event(), threading.Event(), threading.Event()
    reconnect = threading.Event()

    def action(job, host):
        if job.message_id == "old":
            started.set()
            release_old.wait(5)
        else:
            release_new.wait(5)
        return "done"

    def connect(cfg, stop, **kwargs):
        if broker.connections:
            reconnect.wait(5)
        return broker.connect(cfg, stop)

    broker.publish("old")
    stop, thread, outcome = start(cfg, store, action, broker, connect)
    try:
        started.wait(5)
        broker.drop_connection.set()  # the connection dies while "old" (tag 1) runs
        wait_for(lambda: not broker.connections[0].is_open)
        broker.publish("new", front=True)  # the new channel delivers "new" as tag 1, "old" as tag 2
        reconnect.set()
        wait_for(lambda: len(broker.connections) == 2 and broker.connections[1].ch and broker.connections[1].ch.unacked)
        release_old.set()  # the job thread posts the Ack for the old channel's tag 1
        wait_for(lambda: any(r.getMessage() == "stale_delivery_dropped" for r in caplog.records))
        time.sleep(0.1)
        assert broker.settled("ack") == []  # "new" is still running: nothing acked on the new channel
    finally:
        release_old.set()
        release_new.set()
        reconnect.set()
        stop.set()
    wait_for(lambda: sorted(broker.settled("ack")) == ["new", "old"])
    assert finish(stop, thread, outcome) == 0
    assert set(store.runs) == {"new", "old"}
    assert broker.settled("nack") == []


def test_connection_keeps_being_pumped_while_a_job_runs(cfg):
    """Heartbeats go out from process_data_events: a long job must not starve them."""
    broker = Broker()
    store = FakeJobStore({"u1": "h1"})
    started, release = threading.Event(), threading.Event()

    def action(job, host):
        started.set()
        release.wait(5)
        return "done"

    broker.publish("long")
    stop, thread, outcome = start(cfg, store, action, broker)
    try:
        started.wait(5)
        pumps = broker.connections[0].pumps
        wait_for(lambda: broker.connections[0].pumps >= pumps + 5)
        assert broker.settled("ack") == []  # not acked before its run is committed
    finally:
        release.set()
    wait_for(lambda: broker.settled("ack") == ["long"])
    assert finish(stop, thread, outcome) == 0


def test_consuming_starts_at_once_when_the_database_answered_before_the_broker(cfg):
    """The job thread reached the database (posting Resume) while the broker connection was still
    being made: no session existed to wake.  The I/O thread applies that report before its first
    pump, so the consumer starts then, not one poll interval (POLL_SECONDS) later."""
    broker = Broker()
    store = FakeJobStore({"u1": "h1"})
    broker.publish("first")
    resumed = threading.Event()
    pumps_at_consume: list[int] = []
    runner_box: dict = {}

    def connect(cfg, stop, **kwargs):
        wait_for(lambda: "io" in runner_box and not runner_box["io"]._inbox.empty())  # Resume is waiting
        resumed.set()
        conn = broker.connect(cfg, stop)
        channel = conn.channel

        def channel_recording_consume():
            ch = channel()
            consume = ch.basic_consume

            def basic_consume(queue, on_message_callback, auto_ack):
                pumps_at_consume.append(conn.pumps)
                return consume(queue, on_message_callback, auto_ack)

            ch.basic_consume = basic_consume
            return ch

        conn.channel = channel_recording_consume
        return conn

    stop = threading.Event()
    runner = Runner(cfg, store, FakeAction(), stop, connect=connect, random=lambda: 0.01)
    runner_box["io"] = runner._io
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("rc", runner.run()))
    thread.start()
    wait_for(lambda: broker.settled("ack") == ["first"])
    assert finish(stop, thread, outcome) == 0
    assert resumed.is_set()
    assert pumps_at_consume == [0]  # before the first pump: was [1] with the report applied after it
