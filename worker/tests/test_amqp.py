from __future__ import annotations

import threading
from datetime import UTC, datetime

import pika
import pika.exceptions
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from account_worker import amqp
from account_worker.config import load_config
from account_worker.delivery import Delivery
from fakes import RecordingChannel


@pytest.fixture
def cfg(env):
    return load_config(env)


def test_connection_parameters(cfg):
    params = amqp.connection_parameters(cfg.amqp_urls[0], cfg)
    assert params.host == "rabbit1" and params.heartbeat == 30
    assert params.blocked_connection_timeout == 60
    assert params.client_properties["connection_name"].startswith("account-worker@")
    tls = amqp.connection_parameters(cfg.amqp_urls[1], cfg)
    assert tls.ssl_options is not None and tls.ssl_options.server_hostname == "rabbit2"
    assert tls.virtual_host == "vh"


def test_connect_tries_each_url_then_backs_off(cfg):
    attempts: list[str] = []
    waits: list[float] = []
    sentinel = object()

    def factory(params):
        attempts.append(params.host)
        if len(attempts) < 5:
            raise pika.exceptions.AMQPConnectionError("refused")
        return sentinel

    conn = amqp.connect(cfg, threading.Event(), factory=factory, sleep=waits.append, random=lambda: 0.5)
    assert conn is sentinel
    assert attempts == ["rabbit1", "rabbit2", "rabbit1", "rabbit2", "rabbit1"]
    assert waits == [0.25, 0.5]  # full jitter of 0.5*2**n, random fixed at 0.5


def test_connect_returns_none_when_stopped(cfg):
    stop = threading.Event()

    def factory(params):
        stop.set()
        raise pika.exceptions.AMQPConnectionError("refused")

    assert amqp.connect(cfg, stop, factory=factory, sleep=lambda s: None, random=lambda: 0) is None


def test_declare_topology(cfg):
    channel = RecordingChannel()
    amqp.declare_topology(channel, cfg)
    names = [c[0] for c in channel.calls]
    assert names == ["exchange_declare", "queue_declare", "queue_declare", "queue_declare", "queue_bind"]
    assert channel.calls[0][1] == {"exchange": "jobs.dlx", "exchange_type": "fanout", "durable": True}
    queues = {c[1]["queue"]: c[1]["arguments"] for c in channel.calls if c[0] == "queue_declare"}
    assert queues["jobs"]["x-queue-type"] == "quorum"
    assert queues["jobs"]["x-dead-letter-exchange"] == "jobs.dlx"
    assert queues["jobs"]["x-delivery-limit"] > cfg.max_attempts
    assert queues["jobs.retry"]["x-dead-letter-exchange"] == ""
    assert queues["jobs.retry"]["x-dead-letter-routing-key"] == "jobs"
    assert queues["jobs.dlq"] == {"x-queue-type": "quorum"}
    assert channel.calls[-1][1] == {"queue": "jobs.dlq", "exchange": "jobs.dlx", "routing_key": ""}


def original() -> Delivery:
    props = pika.BasicProperties(
        message_id="m1",
        headers={"x-attempt": 2, "trace": "t", "x-delivery-count": 2},
        expiration="60000",
        content_type="application/json",
        reply_to="r",
        correlation_id="c1",
    )
    return Delivery(5, object(), b'{"x":1}', "m1", props.headers, "r", "c1", props)


def test_publish_retry(cfg):
    channel = RecordingChannel()
    amqp.publish_retry(channel, cfg, original(), 3, 1500)
    ((name, kwargs),) = channel.calls
    assert name == "basic_publish"
    assert (kwargs["exchange"], kwargs["routing_key"], kwargs["mandatory"]) == ("", "jobs.retry", True)
    props = kwargs["properties"]
    assert props.expiration == "1500" and props.headers == {"x-attempt": 3, "trace": "t"}
    assert props.message_id == "m1" and props.delivery_mode == 2 and props.content_type == "application/json"
    assert kwargs["body"] == b'{"x":1}'


def test_publish_dead_letter_carries_reason(cfg):
    channel = RecordingChannel()
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    amqp.publish_dead_letter(channel, cfg, original(), "bad apikey", now)
    ((_, kwargs),) = channel.calls
    assert (kwargs["exchange"], kwargs["routing_key"], kwargs["mandatory"]) == ("jobs.dlx", "jobs", True)
    props = kwargs["properties"]
    assert props.headers["x-worker-reason"] == "bad apikey"
    assert props.headers["x-worker-failed-at"] == "2024-05-01T12:00:00+00:00"
    assert props.headers["x-original-queue"] == "jobs"
    assert props.headers["x-attempt"] == 2 and "x-delivery-count" not in props.headers
    assert props.expiration is None and props.correlation_id == "c1"


def test_a_delivery_takes_its_message_id_from_the_header_when_the_property_is_missing():
    method = pika.spec.Basic.Deliver(delivery_tag=7)
    by_header = amqp.delivery_from_pika(method, pika.BasicProperties(headers={"x-message-id": "m-h"}), b"{}", None)
    both = pika.BasicProperties(message_id="m-p", headers={"x-message-id": "m-h"})
    assert by_header.message_id == "m-h"
    assert amqp.delivery_from_pika(method, both, b"{}", None).message_id == "m-p"
    assert amqp.delivery_from_pika(method, pika.BasicProperties(), b"{}", None).message_id is None


def test_publish_reply():
    channel = RecordingChannel()
    amqp.publish_reply(channel, original(), {"account_uuid": "u", "host": "h", "status": "done", "message_id": "m1"})
    ((_, kwargs),) = channel.calls
    assert (kwargs["exchange"], kwargs["routing_key"]) == ("", "r")
    assert kwargs["properties"].correlation_id == "c1"
    assert kwargs["body"] == b'{"account_uuid":"u","host":"h","status":"done","message_id":"m1"}'


def test_a_copy_drops_headers_pika_cannot_encode_back(cfg):
    props = pika.BasicProperties(message_id="m1", headers={"ratio": 1.5, "huge": 2**70, "ok": "yes"})
    delivery = Delivery(tag=1, source=None, body=b"{}", message_id="m1", properties=props)
    channel = RecordingChannel()
    amqp.publish_dead_letter(channel, cfg, delivery, "invalid message: x")
    headers = channel.calls[0][1]["properties"].headers
    assert headers["ok"] == "yes" and "ratio" not in headers and "huge" not in headers
    assert headers["x-worker-dropped-headers"] == "huge,ratio"
    assert headers["x-worker-reason"] == "invalid message: x"
    channel.calls[0][1]["properties"].encode()


def test_connect_goes_on_after_a_handshake_that_timed_out(cfg):
    """pika raises its connection workflow's stack timeout unwrapped (not an AMQPError): seen when a
    node was slow to answer during a partition; it is one failed attempt, not a crash."""
    attempts: list[str] = []
    sentinel = object()

    def factory(params):
        attempts.append(params.host)
        if len(attempts) == 1:
            raise AMQPConnectorStackTimeout("Timeout during AMQP handshake")
        return sentinel

    conn = amqp.connect(cfg, threading.Event(), factory=factory, sleep=lambda s: None, random=lambda: 0)
    assert conn is sentinel
    assert attempts == ["rabbit1", "rabbit2"]
