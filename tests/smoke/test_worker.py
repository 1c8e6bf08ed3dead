"""The account worker end to end, when the operator configured it: a job goes in
through the worker's exchange, its reply comes back on our own reply queue.

Needs SMOKE_WORKER_EXCHANGE, SMOKE_WORKER_ROUTING_KEY, SMOKE_WORKER_ACCOUNT_UUID and
SMOKE_WORKER_EXPECT_HOST (SMOKE_WORKER_APIKEY when the worker checks one); the job
is real: the worker records it (job_runs) like any other.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pika
import pika.exceptions

from smoke_amqp import Connections, Inbox, wait_until
from smoke_errors import fail
from smoke_settings import Worker


def test_worker_replies_to_a_job(worker: Worker, amqp: Connections, names: Callable[[str], str]) -> None:
    conn = amqp.open("worker-job")
    channel = conn.channel()
    reply_queue = names("worker-reply")
    channel.queue_declare(reply_queue, exclusive=True, auto_delete=True)
    replies = Inbox()
    channel.basic_consume(reply_queue, replies.on_message)
    channel.confirm_delivery()

    message_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    body = json.dumps({"apikey": worker.apikey, "account_uuid": worker.account_uuid}).encode()
    props = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message_id,
        correlation_id=correlation_id,
        reply_to=reply_queue,
    )
    try:
        channel.basic_publish(worker.exchange, worker.routing_key, body, props, mandatory=True)
    except pika.exceptions.UnroutableError:
        fail(f"exchange {worker.exchange!r} routes {worker.routing_key!r} to no queue (is the worker's queue bound?)")

    def ours() -> list[bytes]:
        return [d.body for d in replies.deliveries if d.properties.correlation_id == correlation_id]

    if not wait_until(lambda: bool(ours()), [conn], worker.timeout):
        fail(
            f"no reply from the worker within {worker.timeout:g} s (is it running? a job it rejects "
            "goes to its dead-letter queue unanswered: check the account uuid and apikey)"
        )
    reply = json.loads(ours()[0])
    assert reply["account_uuid"] == worker.account_uuid
    assert reply["host"] == worker.expect_host
    assert isinstance(reply.get("status"), str) and reply["status"], f"reply without a status: {reply}"
    assert reply.get("message_id", message_id) == message_id
