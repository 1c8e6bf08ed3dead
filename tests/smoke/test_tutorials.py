"""The six messaging patterns of RabbitMQ's tutorials, each on names of its own:
hello world, work queues, publish/subscribe, routing, topics and RPC."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from smoke_amqp import Cleanup, Connections, Inbox, consume, drain, wait_until
from smoke_settings import Target

Names = Callable[[str], str]


def test_hello_world(channel: BlockingChannel, name: str, target: Target) -> None:
    """One producer, one consumer, the default exchange routing by queue name."""
    channel.queue_declare(name, exclusive=True)
    channel.confirm_delivery()
    channel.basic_publish("", name, b"hello, broker")
    got = consume(channel, name, 1, target.timeout)
    assert [d.body for d in got] == [b"hello, broker"]
    assert got[0].routing_key == name


@dataclass
class TaskWorker:
    """A consumer (prefetch 1) that acks when told to, recording what it was given."""

    channel: BlockingChannel
    received: list[bytes] = field(default_factory=list)
    persistent: list[bool] = field(default_factory=list)
    unacked: list[int] = field(default_factory=list)
    acked: int = 0
    most_unacked: int = 0

    def on_message(self, _ch: BlockingChannel, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        self.received.append(body)
        self.persistent.append(props.delivery_mode == pika.DeliveryMode.Persistent.value)
        self.unacked.append(method.delivery_tag)
        self.most_unacked = max(self.most_unacked, len(self.unacked))

    def ack_all(self) -> None:
        for tag in self.unacked:
            self.channel.basic_ack(tag)
        self.acked += len(self.unacked)
        self.unacked.clear()


@dataclass
class SlowAndFast:
    """Drives two workers: the fast one finishes each task at once, the slow one
    takes as long as `slowness` of the fast one's tasks."""

    slow: TaskWorker
    fast: TaskWorker
    total: int
    slowness: int = 3
    fast_acked_at_slow_ack: int = 0

    @property
    def acked(self) -> int:
        return self.slow.acked + self.fast.acked

    def step(self) -> bool:
        """One round of work; True once every task is acked."""
        self.fast.ack_all()
        all_handed_out = len(self.slow.received) + len(self.fast.received) == self.total
        if self.slow.unacked and (self.fast.acked - self.fast_acked_at_slow_ack >= self.slowness or all_handed_out):
            self.slow.ack_all()
            self.fast_acked_at_slow_ack = self.fast.acked
        return self.acked == self.total


def test_work_queue_fair_dispatch(amqp: Connections, names: Names, cleanup: Cleanup, target: Target) -> None:
    """Persistent tasks on a durable queue shared by two workers on two connections
    with prefetch 1: a busy worker is not handed more, the idle one takes the rest,
    and every task is processed exactly once."""
    queue = cleanup.queue(names("tasks"))
    producer = amqp.open("producer").channel()
    producer.queue_declare(queue, durable=True)
    producer.confirm_delivery()
    tasks = [f"task-{i:02d}".encode() for i in range(12)]
    for body in tasks:
        producer.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))

    slow_conn, fast_conn = amqp.open("slow-worker"), amqp.open("fast-worker")
    slow, fast = TaskWorker(slow_conn.channel()), TaskWorker(fast_conn.channel())
    for worker in (slow, fast):  # the slow one subscribes first and gets the first task
        worker.channel.basic_qos(prefetch_count=1)
        worker.channel.basic_consume(queue, worker.on_message)
    run = SlowAndFast(slow, fast, len(tasks))

    done = wait_until(run.step, [slow_conn, fast_conn], target.timeout, step=0.02)
    assert done, f"only {run.acked} of {len(tasks)} tasks processed in {target.timeout:g} s"
    assert slow.received and fast.received, "both workers should have had work"
    assert sorted(slow.received + fast.received) == tasks, "a task was lost or processed twice"
    assert slow.most_unacked == 1 and fast.most_unacked == 1, "prefetch 1 not honoured"
    assert len(slow.received) < len(fast.received), "the busy worker was not spared (no fair dispatch)"
    assert all(slow.persistent + fast.persistent), "tasks lost their persistent delivery mode"
    assert producer.queue_declare(queue, passive=True).method.message_count == 0


def test_publish_subscribe(amqp: Connections, names: Names, cleanup: Cleanup, target: Target) -> None:
    """A fanout exchange copies each message to every bound queue."""
    publisher = amqp.open("publisher").channel()
    exchange = cleanup.exchange(names("fanout"))
    publisher.exchange_declare(exchange, "fanout")
    subscribers = []
    for label in ("sub-a", "sub-b"):
        ch = amqp.open(label).channel()
        queue = names(label)
        ch.queue_declare(queue, exclusive=True)
        ch.queue_bind(queue, exchange)
        subscribers.append((ch, queue))
    publisher.confirm_delivery()
    publisher.basic_publish(exchange, "ignored-by-fanout", b"to everyone")
    for ch, queue in subscribers:
        assert [d.body for d in consume(ch, queue, 1, target.timeout)] == [b"to everyone"], f"{queue} missed it"


def _bound_queues(
    channel: BlockingChannel, exchange: str, bindings: dict[str, list[str]], names: Names
) -> dict[str, str]:
    """Declare an exclusive queue per label, bound with each of its keys; label -> queue name."""
    queues = {}
    for label, keys in bindings.items():
        queues[label] = names(label)
        channel.queue_declare(queues[label], exclusive=True)
        for key in keys:
            channel.queue_bind(queues[label], exchange, routing_key=key)
    return queues


def test_routing_direct(channel: BlockingChannel, names: Names, cleanup: Cleanup) -> None:
    """A direct exchange delivers on exact key matches only; a key bound by two
    queues reaches both; an unbound key reaches none (returned when mandatory)."""
    exchange = cleanup.exchange(names("direct"))
    channel.exchange_declare(exchange, "direct")
    queues = _bound_queues(channel, exchange, {"alerts": ["error"], "all": ["info", "warning", "error"]}, names)
    channel.confirm_delivery()
    for key in ("error", "info", "warning"):
        channel.basic_publish(exchange, key, key.encode(), mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish(exchange, "debug", b"debug", mandatory=True)
    channel.basic_publish(exchange, "Error", b"Error")  # keys are case-sensitive
    # Confirmed means enqueued: the queues hold exactly what was routed to them.
    assert drain(channel, queues["alerts"]) == [b"error"]
    assert drain(channel, queues["all"]) == [b"error", b"info", b"warning"]


def test_topics(channel: BlockingChannel, names: Names, cleanup: Cleanup) -> None:
    """`*` stands for exactly one dot-separated word, `#` for zero or more; a
    message matching several bindings of one queue arrives there once."""
    exchange = cleanup.exchange(names("topic"))
    channel.exchange_declare(exchange, "topic")
    queues = _bound_queues(channel, exchange, {"eu": ["*.eu.*"], "audit": ["audit.#", "*.*.critical"]}, names)
    expected = {
        "web.eu.critical": {"eu", "audit"},
        "audit.eu.login": {"eu", "audit"},
        "web.eu.login": {"eu"},
        "audit": {"audit"},  # '#' matches zero words
        "audit.db.us.slow": {"audit"},  # ... or several
        "web.us.critical": {"audit"},
        "audit.us.critical": {"audit"},  # matches both bindings, delivered once
        "web.eu": set(),  # '*' needs a word
        "web.eu.login.extra": set(),  # ... and exactly one
        "eu.web.login": set(),
        "db.us.slow": set(),
    }
    channel.confirm_delivery()
    for key in expected:
        channel.basic_publish(exchange, key, key.encode())
    got = {label: drain(channel, queue) for label, queue in queues.items()}
    for label in queues:
        wanted = [key.encode() for key, labels in expected.items() if label in labels]
        assert got[label] == wanted, f"queue {label!r} got {got[label]}, expected {wanted}"


def test_rpc(amqp: Connections, names: Names, target: Target) -> None:
    """A server consumes requests and answers on each request's reply_to with its
    correlation_id; the client matches replies to requests and ignores strangers."""
    server_conn, client_conn = amqp.open("rpc-server"), amqp.open("rpc-client")
    server = server_conn.channel()
    rpc_queue = names("rpc")
    server.queue_declare(rpc_queue, exclusive=True)
    server.basic_qos(prefetch_count=1)

    def serve(ch: BlockingChannel, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        reply = str(int(body) ** 2).encode()
        ch.basic_publish("", props.reply_to, reply, pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)

    server.basic_consume(rpc_queue, serve)

    client = client_conn.channel()
    reply_queue = names("reply")
    client.queue_declare(reply_queue, exclusive=True, auto_delete=True)
    replies = Inbox()
    client.basic_consume(reply_queue, replies.on_message)
    client.confirm_delivery()
    # A stray reply (say, to an earlier client's request) is already waiting.
    client.basic_publish("", reply_queue, b"-1", pika.BasicProperties(correlation_id="not-" + uuid.uuid4().hex))
    requests = {str(uuid.uuid4()): n for n in (3, 7, 12)}
    for correlation_id, n in requests.items():
        props = pika.BasicProperties(reply_to=reply_queue, correlation_id=correlation_id)
        client.basic_publish("", rpc_queue, str(n).encode(), props)

    def answers() -> dict[str, bytes]:
        return {
            d.properties.correlation_id: d.body for d in replies.deliveries if d.properties.correlation_id in requests
        }

    assert wait_until(lambda: len(answers()) == len(requests), [server_conn, client_conn], target.timeout), (
        f"{len(answers())} of {len(requests)} RPC replies within {target.timeout:g} s"
    )
    assert answers() == {cid: str(n**2).encode() for cid, n in requests.items()}
    strays = [d.body for d in replies.deliveries if d.properties.correlation_id not in requests]
    assert strays == [b"-1"], "the stray reply should have arrived and been told apart"
