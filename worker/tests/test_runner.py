"""The two-thread runner against an in-memory stand-in for pika's BlockingConnection."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass

import pika
import pika.exceptions
import pytest

from account_worker.batch import Delivery
from account_worker.config import load_config
from account_worker.errors import DatabaseUnavailable, TransientJobError
from account_worker.runner import JobThreadCrashed, Runner, take_batch
from test_batch import FakeAction, FakeStore


@dataclass
class Method:
    delivery_tag: int
    redelivered: bool = False


class FakeChannel:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.consumer = None
        self.next_tag = 0
        self.unacked: dict[int, tuple] = {}

    def confirm_delivery(self):
        pass

    def basic_qos(self, prefetch_count):
        self.broker.prefetch = prefetch_count

    def basic_consume(self, queue, on_message_callback, auto_ack):
        assert auto_ack is False
        self.consumer = on_message_callback
        self.broker.events.append("consume")
        return "ctag"

    def basic_cancel(self, tag):
        self.consumer = None
        self.broker.events.append("cancel")

    def _settle(self, tag: int, requeue: bool | None) -> None:
        assert threading.current_thread() is self.broker.io_thread, "pika used off the I/O thread"
        message = self.unacked.pop(tag)  # KeyError == unknown tag == 406 on a real broker
        if requeue:
            self.broker.redelivered.add(message[0].message_id)
            self.broker.queue.append(message)
            self.broker.events.append(("nack", message[0].message_id))
        else:
            self.broker.events.append(("ack", message[0].message_id))

    def basic_ack(self, delivery_tag, multiple=False):
        if not multiple:
            self._settle(delivery_tag, None)
            return
        assert delivery_tag in self.unacked  # an unknown tag is a 406 on a real broker
        for tag in sorted(t for t in self.unacked if t <= delivery_tag):
            self._settle(tag, None)

    def basic_nack(self, delivery_tag, requeue):
        self._settle(delivery_tag, requeue)

    def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False):
        self.broker.published.append((exchange, routing_key, body, properties))

    def deliver(self) -> None:
        while self.consumer and self.broker.queue and len(self.unacked) < self.broker.prefetch:
            props, body = self.broker.queue.pop(0)
            self.next_tag += 1
            self.unacked[self.next_tag] = (props, body)
            self.consumer(self, Method(self.next_tag, props.message_id in self.broker.redelivered), props, body)


class FakeConnection:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.is_open = True
        self.callbacks: list = []
        self.lock = threading.Lock()
        self.ch: FakeChannel | None = None

    def channel(self):
        self.ch = FakeChannel(self.broker)
        return self.ch

    def add_callback_threadsafe(self, callback):
        if not self.is_open:
            raise pika.exceptions.ConnectionWrongStateError()
        with self.lock:
            self.callbacks.append(callback)

    def process_data_events(self, time_limit=0):
        self.broker.io_thread = threading.current_thread()
        if self.broker.drop_connection.is_set():
            self.broker.drop_connection.clear()
            self.close()
            raise pika.exceptions.StreamLostError("connection reset")
        with self.lock:
            callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()
        if self.ch:
            self.ch.deliver()
        time.sleep(0.005)

    def close(self):
        if self.is_open and self.ch:
            for message in self.ch.unacked.values():  # broker requeues unacked on close
                self.broker.redelivered.add(message[0].message_id)
                self.broker.queue.append(message)
            self.ch.unacked.clear()
        self.is_open = False


class Broker:
    def __init__(self) -> None:
        self.queue: list[tuple] = []
        self.redelivered: set[str] = set()  # message ids the broker delivered before
        self.published: list[tuple] = []
        self.events: list = []
        self.prefetch = 0
        self.connections: list[FakeConnection] = []
        self.drop_connection = threading.Event()
        self.io_thread: threading.Thread | None = None

    def publish(self, message_id, account="u1", apikey="key", body=None):
        raw = body if body is not None else json.dumps({"apikey": apikey, "account_uuid": account}).encode()
        self.queue.append((pika.BasicProperties(message_id=message_id), raw))

    def connect(self, cfg, stop, **kwargs):
        conn = FakeConnection(self)
        self.connections.append(conn)
        return conn

    def settled(self, kind):
        return [e[1] for e in self.events if isinstance(e, tuple) and e[0] == kind]


class PingStore(FakeStore):
    def __init__(self, accounts):
        super().__init__(accounts)
        self.ping_failures = 0
        self.closed = False

    def record_runs(self, runs):
        if "record_runs" in self.down_on:
            self.down_on.add("ping")  # the database is down for everyone now
        return super().record_runs(runs)

    def ping(self):
        if "ping" in self.down_on:
            raise DatabaseUnavailable("still down")
        if self.ping_failures:
            self.ping_failures -= 1
            raise DatabaseUnavailable("down")

    def close(self):
        self.closed = True


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.fixture
def cfg(env):
    env.update({"WORKER_APIKEY": "key", "WORKER_MAX_ATTEMPTS": "3", "WORKER_SHUTDOWN_GRACE": "2"})
    return load_config(env)


def start(cfg, store, action, broker):
    stop = threading.Event()
    runner = Runner(cfg, store, action, stop, connect=broker.connect, random=lambda: 0.01)
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
    store = PingStore({"u1": "h1", "flaky": "h2"})
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
    assert broker.prefetch == 100
    assert store.closed


def test_database_outage_requeues_then_resumes(cfg):
    broker = Broker()
    store = PingStore({"u1": "h1"})
    store.ping_failures = 2  # not consuming until the database answers
    store.down_on.add("record_runs")
    broker.publish("a")
    stop, thread, outcome = start(cfg, store, FakeAction(), broker)
    wait_for(lambda: "a" in broker.settled("nack"))
    assert broker.settled("ack") == []
    assert "cancel" in broker.events
    store.down_on.clear()
    wait_for(lambda: broker.settled("ack") == ["a"])
    assert broker.events.count("consume") == 2
    assert finish(stop, thread, outcome) == 0
    assert set(store.runs) == {"a"}
    assert not [p for p in broker.published if p[0] == "jobs.dlx"]


def test_connection_loss_reconnects_and_deduplicates(cfg):
    broker = Broker()
    store = PingStore({"u1": "h1"})
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


def test_graceful_shutdown_finishes_running_batch_and_requeues_buffered(cfg):
    broker = Broker()
    store = PingStore({"u1": "h1"})
    started = threading.Event()
    release = threading.Event()

    def action(job, host):
        started.set()
        release.wait(5)
        return "done"

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
    assert broker.settled("ack") == ["m0"]
    assert sorted(broker.settled("nack")) == ["m1", "m2", "m3"]
    assert broker.connections[0].ch.unacked == {}


def cfg_env(cfg):
    return {
        "WORKER_AMQP_URLS": ",".join(cfg.amqp_urls),
        "WORKER_DATABASE_URL": cfg.database_url,
        "WORKER_APIKEY": cfg.apikey or "",
    }


def test_take_batch_drains_without_waiting_and_skips_stale():
    q: queue.Queue = queue.Queue()
    for tag in range(1, 6):
        q.put(Delivery(tag, 2 if tag != 2 else 1, b""))
    batch = take_batch(q, 3, 0.01, lambda d: d.generation == 2)
    assert [d.tag for d in batch] == [1, 3, 4]
    assert [d.tag for d in take_batch(q, 3, 0.01, lambda d: True)] == [5]
    assert take_batch(q, 3, 0.01, lambda d: True) == []


def test_job_thread_bug_crashes_the_process_without_acking(cfg):
    broker = Broker()

    class BrokenStore(PingStore):
        def lookup_hosts(self, account_uuids):
            raise RuntimeError("relation accounts does not exist")

    broker.publish("a")
    runner = Runner(cfg, BrokenStore({}), FakeAction(), threading.Event(), connect=broker.connect, random=lambda: 0.01)
    with pytest.raises(JobThreadCrashed):
        runner.run()
    assert broker.settled("ack") == []
    assert [m[0].message_id for m in broker.queue] == ["a"]  # returned to the queue by the closed channel
