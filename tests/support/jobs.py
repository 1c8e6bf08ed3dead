"""Jobs in the worker's message format, published with publisher confirms."""

from __future__ import annotations

import contextlib
import json

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

EXCHANGE = "jobs"
ROUTING_KEY = "jobs"


def job_body(account_uuid: str, apikey: str) -> bytes:
    """The JSON body the worker expects."""
    return json.dumps({"apikey": apikey, "account_uuid": account_uuid}, separators=(",", ":")).encode()


def job_properties(message_id: str, **extra: object) -> pika.BasicProperties:
    """Persistent, JSON, identified by message_id; extra: reply_to, correlation_id, ..."""
    return pika.BasicProperties(
        content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent, message_id=message_id, **extra
    )


def publish_job(
    channel: BlockingChannel,
    message_id: str,
    account_uuid: str,
    *,
    apikey: str,
    exchange: str = EXCHANGE,
    routing_key: str = ROUTING_KEY,
    **extra: object,
) -> None:
    """Publish one job, mandatory. On a channel in confirm mode this returns once the broker
    confirmed it and raises NackError / UnroutableError otherwise."""
    channel.basic_publish(
        exchange, routing_key, job_body(account_uuid, apikey), job_properties(message_id, **extra), mandatory=True
    )


class JobPublisher:
    """A connection with one confirm-mode channel: every job it returns from is confirmed by the broker."""

    def __init__(self, url: str, connection_name: str, apikey: str) -> None:
        params = pika.URLParameters(url)
        params.client_properties = {"connection_name": connection_name}
        self.apikey = apikey
        self.conn = pika.BlockingConnection(params)
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def job(self, message_id: str, account_uuid: str, **extra: object) -> None:
        publish_job(self.ch, message_id, account_uuid, apikey=self.apikey, **extra)

    def raw(self, message_id: str, body: bytes) -> None:
        """A message with any body (poison), persistent, to the jobs exchange."""
        self.ch.basic_publish(
            EXCHANGE,
            ROUTING_KEY,
            body,
            pika.BasicProperties(message_id=message_id, delivery_mode=pika.DeliveryMode.Persistent),
            mandatory=True,
        )

    def close(self) -> None:
        # A test that waited long without pumping may find the broker closed the connection (heartbeats).
        if self.conn.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self.conn.close()


def drain_dead_letters(url: str, prefix: str, queue: str = "jobs.dlq") -> list[tuple[str, dict]]:
    """Take every message of the dead-letter queue whose message_id starts with prefix; leave the others.

    Returns (message_id, headers) of each one taken."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    found, others = [], []
    while True:
        method, props, _ = ch.basic_get(queue, auto_ack=False)
        if method is None:
            break
        if (props.message_id or "").startswith(prefix):
            found.append((props.message_id, props.headers or {}))
            ch.basic_ack(method.delivery_tag)
        else:
            others.append(method.delivery_tag)
    for tag in others:
        ch.basic_nack(tag, requeue=True)
    conn.close()
    return found
