"""AMQP 0-9-1 through pika, as the application user: the connection, publisher
confirms and returns, a quorum queue, dead-lettering, refused logins."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from smoke_amqp import Cleanup, Connections, consume, drain, sasl_login, server_properties, text
from smoke_management import Management, Probe, poll, q
from smoke_settings import Target

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def test_server_announces_rabbitmq(connection: pika.BlockingConnection, broker: Probe) -> None:
    props = server_properties(connection)
    assert text(props.get("product")) == "RabbitMQ"
    version = text(props.get("version", ""))
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version), f"no broker version announced: {version!r}"
    assert version == broker.version, f"AMQP announces {version}, the management API {broker.version}"
    capabilities = {text(k): v for k, v in props.get("capabilities", {}).items()}
    for capability in ("publisher_confirms", "basic.nack", "consumer_cancel_notify", "authentication_failure_close"):
        assert capabilities.get(capability) is True, f"broker lacks capability {capability}"


def test_connection_is_listed_by_name(amqp: Connections, management: Management, target: Target) -> None:
    """Management lists the connection under its client-provided name, user and vhost."""
    amqp.open("listed")
    wanted = f"{amqp.name} listed"

    def ours() -> list[dict[str, Any]]:
        listed = management.json("connections", columns="user_provided_name,user,vhost")
        return [c for c in listed if c.get("user_provided_name") == wanted]

    found = poll(ours, timeout=max(target.timeout, 6.0))
    assert found, f"connection {wanted!r} not listed by the management API"
    assert (found[0]["user"], found[0]["vhost"]) == (target.user, target.vhost)


def test_publisher_confirms_round_trip(channel: BlockingChannel, name: str, target: Target) -> None:
    channel.queue_declare(name, exclusive=True)
    channel.confirm_delivery()
    body = json.dumps({"apikey": "smoke", "account_uuid": name, "text": "é✓"}).encode()
    message_id = str(uuid.uuid4())
    props = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message_id,
        headers={"x-smoke": name},
    )
    # With confirms on, basic_publish returns only once the broker acked it (NackError otherwise).
    channel.basic_publish("", name, body, props, mandatory=True)
    assert channel.queue_declare(name, passive=True).method.message_count == 1

    got = consume(channel, name, 1, target.timeout)
    assert len(got) == 1, "the published message did not come back"
    assert got[0].body == body
    assert got[0].properties.message_id == message_id
    assert got[0].properties.headers == {"x-smoke": name}
    assert got[0].properties.delivery_mode == 2
    assert channel.queue_declare(name, passive=True).method.message_count == 0


def test_mandatory_unroutable_is_returned(channel: BlockingChannel, names: Callable[[str], str]) -> None:
    channel.confirm_delivery()
    nowhere = names("nowhere")  # no queue of that name: the default exchange cannot route it
    channel.basic_publish("", nowhere, b"dropped silently")  # not mandatory: confirmed and dropped
    with pytest.raises(pika.exceptions.UnroutableError) as returned:
        channel.basic_publish("", nowhere, b"come back", mandatory=True)
    (message,) = returned.value.messages
    assert message.method.reply_code == 312
    assert message.method.reply_text == "NO_ROUTE"
    assert message.method.routing_key == nowhere
    assert message.body == b"come back"


def test_quorum_queue(
    channel: BlockingChannel, name: str, cleanup: Cleanup, management: Management, target: Target
) -> None:
    cleanup.queue(name)
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    info = management.json(f"queues/{q(target.vhost)}/{q(name)}")
    assert info["type"] == "quorum"
    assert info["durable"] is True

    channel.confirm_delivery()
    bodies = [f"quorum-{i}".encode() for i in range(3)]
    for body in bodies:
        channel.basic_publish("", name, body, PERSISTENT)
    assert channel.queue_declare(name, passive=True).method.message_count == 3

    # A rejected-and-requeued message comes back marked as redelivered.
    method, _props, body = channel.basic_get(name)
    assert method is not None and body == bodies[0]
    channel.basic_reject(method.delivery_tag, requeue=True)
    got = consume(channel, name, 3, target.timeout)
    assert sorted(d.body for d in got) == bodies
    first = next(d for d in got if d.body == bodies[0])
    assert first.redelivered


def test_dead_lettering(
    channel: BlockingChannel, names: Callable[[str], str], cleanup: Cleanup, target: Target
) -> None:
    dlx = cleanup.exchange(names("dlx"))
    dlq, work = names("dlq"), names("work")
    channel.exchange_declare(dlx, "fanout")
    channel.queue_declare(dlq, exclusive=True)
    channel.queue_bind(dlq, dlx)
    channel.queue_declare(work, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    channel.confirm_delivery()
    channel.basic_publish("", work, b"reject me", PERSISTENT)

    method, _props, body = channel.basic_get(work)
    assert method is not None and body == b"reject me"
    channel.basic_reject(method.delivery_tag, requeue=False)

    got = consume(channel, dlq, 1, target.timeout)
    assert len(got) == 1, f"the rejected message did not reach {dlq} via {dlx}"
    assert got[0].body == b"reject me"
    deaths = (got[0].properties.headers or {}).get("x-death")
    assert deaths, "dead-lettered message has no x-death header"
    death = deaths[0]
    assert text(death["reason"]) == "rejected"
    assert text(death["queue"]) == work
    assert death["count"] == 1
    assert [text(k) for k in death["routing-keys"]] == [work]
    assert drain(channel, work) == [], "the rejected message stayed in its queue"


def test_unknown_credentials_are_refused(params: pika.URLParameters) -> None:
    params.credentials = pika.PlainCredentials("smoke-nobody", "wrong-" + uuid.uuid4().hex)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params).close()


def test_guest_is_refused(params: pika.URLParameters) -> None:
    params.credentials = pika.PlainCredentials("guest", "guest")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params).close()


def test_anonymous_login_is_refused(target: Target) -> None:
    """RabbitMQ 4.0 offers the SASL mechanism ANONYMOUS by default, logging in as `guest`: the bundle turns it
    off (`anonymous_login_user = none`, ANONYMOUS not in `auth_mechanisms`). The same hand-made handshake with
    PLAIN and the application user's password is the control: it logs in."""
    mechanisms, answer = sasl_login(target, "ANONYMOUS", b"")
    assert "ANONYMOUS" not in mechanisms, f"the broker offers {mechanisms}"
    assert answer != "tune", f"an anonymous login was accepted (the broker offers {mechanisms})"
    password = unquote(urlsplit(target.amqp_url).password or "")
    if "PLAIN" in mechanisms and password:
        mechanisms, answer = sasl_login(target, "PLAIN", f"\0{target.user}\0{password}".encode())
        assert answer == "tune", f"the control login (PLAIN as {target.user}) was refused: {answer}"


def test_unknown_vhost_is_refused(params: pika.URLParameters, names: Callable[[str], str]) -> None:
    params.virtual_host = names("no-such-vhost")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        pika.BlockingConnection(params).close()
