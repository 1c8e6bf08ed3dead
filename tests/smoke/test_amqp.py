"""AMQP 0-9-1 through pika, as the application user."""

from __future__ import annotations

import json
import uuid

import pika
import pytest


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_server_is_rabbitmq(connection: pika.BlockingConnection) -> None:
    props = connection._impl.server_properties  # noqa: SLF001 - pika exposes it only here
    assert _text(props.get("product")) == "RabbitMQ"
    assert _text(props.get("version", "")).split(".")[0].isdigit(), "no broker version announced"


def test_round_trip_with_publisher_confirms(channel, name: str) -> None:
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.confirm_delivery()
    body = json.dumps({"apikey": "smoke", "account_uuid": name, "n": "é✓"}).encode()
    message_id = str(uuid.uuid4())
    props = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message_id,
        headers={"x-smoke": name},
    )
    # With confirms on, basic_publish raises unless the broker confirmed it.
    channel.basic_publish("", queue, body, props, mandatory=True)

    received = []

    def on_message(ch, method, properties, payload):
        received.append((properties, payload))
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    channel.basic_consume(queue, on_message, auto_ack=False)
    channel.connection.call_later(10, channel.stop_consuming)
    channel.start_consuming()

    assert len(received) == 1, "the published message did not come back"
    properties, payload = received[0]
    assert payload == body
    assert properties.message_id == message_id
    assert properties.headers == {"x-smoke": name}
    assert properties.delivery_mode == 2
    assert channel.queue_declare(queue=queue, passive=True).method.message_count == 0


def test_quorum_queue(channel, name: str) -> None:
    channel.queue_declare(queue=name, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        channel.confirm_delivery()
        channel.basic_publish("", name, b"quorum", pika.BasicProperties(delivery_mode=2))
        method, _, body = None, None, None
        for _ in range(50):
            method, _, body = channel.basic_get(name)
            if method:
                break
            channel.connection.sleep(0.1)
        assert method is not None, "message not delivered from the quorum queue"
        assert body == b"quorum"
        channel.basic_ack(method.delivery_tag)
    finally:
        channel.queue_delete(name)


def test_unknown_credentials_are_refused(params) -> None:
    params.credentials = pika.PlainCredentials("smoke-nobody", "wrong-" + uuid.uuid4().hex)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params).close()
