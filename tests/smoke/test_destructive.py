"""Durability across a broker restart. Restarts the broker: only with --destructive
(or SMOKE_DESTRUCTIVE=1) and an operator-given SMOKE_RESTART_COMMAND, for example
`podman exec sandbox-broker systemctl restart rabbitmq-server`."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pika
import pika.exceptions
import pytest

from smoke_amqp import Cleanup, Connections, SmokeError, drain
from smoke_errors import fail
from smoke_settings import Extras, Target

pytestmark = pytest.mark.destructive


def _restart(extras: Extras) -> None:
    if not extras.restart_command:
        fail("--destructive needs SMOKE_RESTART_COMMAND, the command that restarts the broker")
    command = " ".join(extras.restart_command)
    try:
        result = subprocess.run(
            extras.restart_command, capture_output=True, text=True, timeout=extras.restart_timeout, check=False
        )
    except FileNotFoundError:
        fail(f"SMOKE_RESTART_COMMAND: {extras.restart_command[0]} not found")
    except subprocess.TimeoutExpired:
        fail(f"{command!r} did not finish within {extras.restart_timeout:g} s")
    if result.returncode != 0:
        fail(f"{command!r} exited {result.returncode}: {result.stderr.strip()[-500:]}")


def _reconnect(amqp: Connections, timeout: float) -> pika.BlockingConnection:
    """The broker's first connection after the restart (it takes a while to boot)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return amqp.open("after-restart")
        except SmokeError as exc:
            if time.monotonic() >= deadline:
                fail(f"broker not back {timeout:g} s after the restart: {exc}")
            time.sleep(1)


def test_persistent_messages_survive_a_restart(
    extras: Extras, amqp: Connections, names: Callable[[str], str], cleanup: Cleanup, target: Target
) -> None:
    queue = cleanup.queue(names("durable"))
    channel = amqp.open("before-restart").channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.confirm_delivery()
    bodies = [f"survivor-{i}".encode() for i in range(5)]
    for body in bodies:
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
    amqp.close_all()

    _restart(extras)

    channel = _reconnect(amqp, extras.restart_timeout).channel()
    # Right after a restart the queue may still be electing its leader.
    deadline = time.monotonic() + target.timeout
    count = -1
    while time.monotonic() < deadline:
        try:
            count = channel.queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                fail(f"durable queue {queue} did not survive the restart")
            channel = channel.connection.channel()
        if count == len(bodies):
            break
        time.sleep(0.5)
    assert count == len(bodies), f"{count} of {len(bodies)} persistent messages survived the restart"
    assert drain(channel, queue) == bodies
